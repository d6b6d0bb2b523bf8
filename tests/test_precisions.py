"""Every precision runs on CPU; offload keeps the numbers; precision agreement."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter

import polars as pl
import pytest
import torch

from llmboard.inference.loading import load_model
from llmboard.results.agreement import compare
from llmboard.tasks.definitions import load_task

from conftest import predict_task

PRECISIONS = ["fp32", "bf16", "fp16", "int8", "nf4"]


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    rows = [
        {"q": f"What is {a} times {b}?", "options": [str(a * b), str(a + b), "seven"], "gold": 0}
        for a, b in [(2, 3), (4, 5), (6, 7), (8, 9), (3, 3), (5, 5), (7, 2), (9, 1)]
    ]
    (root / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "t.yaml").write_text(
        'task: times\ndataset: {source: d.jsonl}\ndoc_to_text: "Q: {{q}}\\nA:"\n'
        'doc_to_choice: "{{options}}"\ndoc_to_target: gold\nmetrics: [acc, acc_norm]\n'
    )
    return load_task(root / "t.yaml")


def _parameters(model) -> Counter:
    """(parameter class, dtype) -> how many parameters: bitsandbytes' quantised weights
    are their own classes (Int8Params, Params4bit)."""
    return Counter(
        (type(p).__name__, str(p.dtype).removeprefix("torch.")) for p in model.parameters()
    )


@pytest.fixture(scope="module")
def predictions(smol_dir, tiny_task, tmp_path_factory):
    """Each precision's predictions, made as an inference job makes them (the backend's
    loader, then ``predict_shard``), with what its model was made of: parameter classes
    and dtypes, module classes, and the number of decoder layers."""
    from llmboard.inference.api import LoadOptions, load_backend
    from llmboard.inference.predictions import predict_shard
    from llmboard.settings import schema_default

    backend = schema_default("inference", "backend")
    options = LoadOptions(token_budget=schema_default("inference", "token_budget"))
    out = tmp_path_factory.mktemp("preds")
    paths = {}
    for p in PRECISIONS:
        lm, _, context = load_backend(backend, smol_dir, p, options)
        before = _parameters(lm.model)
        info = predict_shard(
            lm, context, tiny_task, 0, 1, out / f"{p}.parquet", out / f"{p}.json", seed=1234
        )
        assert _parameters(lm.model) == before, p  # predicting casts nothing
        loaded = {
            "parameters": before,
            "modules": Counter(type(m).__name__ for m in lm.model.modules()),
            "decoder_layers": lm.model.config.num_hidden_layers,
        }
        paths[p] = (out / f"{p}.parquet", info, loaded)
        del lm
    return paths


def test_each_precision_produces_predictions(predictions):
    for p, (parquet, info, _) in predictions.items():
        df = pl.read_parquet(parquet)
        assert df.height == 24 and df["loglikelihood"].is_finite().all(), p
        assert info["precision"] == p and info["device_map"]


def test_each_precision_loads_its_dtypes(predictions):
    """fp32, bf16, fp16: every parameter in that dtype. int8, nf4: every linear layer of
    every decoder layer (q, k, v, o, gate, up, down) is bitsandbytes' (Linear8bitLt with
    int8 weights; Linear4bit with nf4 weights packed two to a uint8), and the rest
    (embeddings, norms) in bf16, their compute dtype."""
    for p, dtype in (("fp32", "float32"), ("bf16", "bfloat16"), ("fp16", "float16")):
        params = predictions[p][2]["parameters"]
        assert params == {("Parameter", dtype): sum(params.values())}, (p, params)
    for p, layer, weights in (
        ("int8", "Linear8bitLt", ("Int8Params", "int8")),
        ("nf4", "Linear4bit", ("Params4bit", "uint8")),
    ):
        loaded = predictions[p][2]
        linear = 7 * loaded["decoder_layers"]  # SmolLM2-135M: 30 layers, 210 weights
        params = loaded["parameters"]
        assert loaded["modules"][layer] == linear, (p, loaded["modules"])
        assert set(params) == {weights, ("Parameter", "bfloat16")}, (p, params)
        assert params[weights] == linear, (p, params)


# The most |log-likelihood - fp32's| may move over the 24 requests of tiny_task on
# SmolLM2-135M. Measured on the reference 2-core CPU: max 0.173 (bf16), 0.0147 (fp16),
# 0.832 (int8), 1.94 (nf4) nats; means 0.059, 0.0058, 0.33, 0.71. Each bound is about
# 3.5x the measured max. fp16's bound is below bf16's measured error: fp16 silently
# run as bf16 fails it.
MAX_ABS_DLL = {"bf16": 0.6, "fp16": 0.05, "int8": 3.0, "nf4": 7.0}


def test_precisions_stay_close_to_fp32_and_differ_from_it_on_smollm2(predictions):
    ref = pl.read_parquet(predictions["fp32"][0])["loglikelihood"]
    worst = {}
    for p, bound in MAX_ABS_DLL.items():
        worst[p] = (pl.read_parquet(predictions[p][0])["loglikelihood"] - ref).abs().max()
        assert worst[p] < bound, (p, worst[p])  # same model, coarser arithmetic
        assert worst[p] > 0, p  # not fp32's numbers: run in fp32, it would be exactly 0
    # fp16 keeps 10 mantissa bits to bf16's 7 (measured: 12x closer to fp32)
    assert worst["fp16"] < worst["bf16"], worst


def test_precision_agreement_table(predictions):
    preds = {("smol", p, "times"): [str(predictions[p][0])] for p in PRECISIONS}
    df = compare(preds)
    assert df["precision"].to_list() == ["bf16", "fp16", "int8", "nf4"]
    assert set(df["reference"]) == {"fp32"}
    for r in df.iter_rows(named=True):
        assert 0 <= r["flip_rate"] <= 1 and r["max_abs_dll"] >= r["mean_abs_dll"] > 0
        assert r["n_docs"] == 8 and (
            math.isnan(r["delta_acc_stderr"]) or r["delta_acc_stderr"] >= 0
        )
    # a precision compared with itself: nothing flips, nothing moves
    same = compare(
        {
            ("smol", "fp32", "times"): [str(predictions["fp32"][0])],
            ("smol", "bf16", "times"): [str(predictions["fp32"][0])],
        }
    )
    assert same["flip_rate"][0] == 0 and same["max_abs_dll"][0] == 0 and same["delta_acc"][0] == 0


def test_paired_stderr_by_hand(tmp_path):
    # 4 docs, 2 choices; reference right on docs 0,1; other right on docs 0,2
    def frame(lls):
        return pl.DataFrame(
            {
                "doc_id": [0, 0, 1, 1, 2, 2, 3, 3],
                "choice": [0, 1] * 4,
                "gold": [0] * 8,
                "choice_chars": [1] * 8,
                "loglikelihood": lls,
            }
        )

    frame([-1.0, -2, -1, -2, -2, -1, -2, -1]).write_parquet(tmp_path / "a.parquet")
    frame([-1.0, -2, -2, -1, -1, -2, -2, -1]).write_parquet(tmp_path / "b.parquet")
    r = compare(
        {
            ("m", "fp32", "t"): [str(tmp_path / "a.parquet")],
            ("m", "bf16", "t"): [str(tmp_path / "b.parquet")],
        }
    ).row(0, named=True)
    diffs = [0, -1, 1, 0]
    sd = math.sqrt(sum(x * x for x in diffs) / 3)
    assert r["flip_rate"] == 0.5 and r["delta_acc"] == 0
    assert r["delta_acc_stderr"] == pytest.approx(sd / 2)


def test_cpu_and_disk_offload_same_logits(tiny_dirs, tmp_path):
    d = tiny_dirs["qwen2"]
    ids = torch.tensor([[1, 400, 2000, 31, 7, 9000]])
    plain, _, _ = load_model(d, "fp32")
    manifest = json.loads((d / "manifest.json").read_text())
    # room for about half the weights in memory: the rest goes to disk
    off, _, placement = load_model(
        d,
        "fp32",
        max_memory={"cpu": manifest["bytes_total"] // 2},
        offload_folder=str(tmp_path / "offload"),
    )
    assert "disk" in placement.placement.values()
    with torch.inference_mode():
        assert torch.equal(plain(ids).logits, off(ids).logits)


def test_fp16_on_cpu_is_warned_about(tiny_dirs, caplog):
    with caplog.at_level(logging.WARNING, logger="llmboard.inference.loading"):
        load_model(tiny_dirs["llama"], "fp16")
    assert any("fp16 on CPU" in r.getMessage() for r in caplog.records)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8"])
def test_gpu_precisions(precision, smol_dir, tiny_task, tmp_path):
    info = predict_task(smol_dir, precision, tiny_task, tmp_path / "p.parquet", tmp_path / "p.json")
    assert any(v.startswith("cuda") or v == "0" for v in info["device_map"].values())
    assert pl.read_parquet(tmp_path / "p.parquet")["loglikelihood"].is_finite().all()


@pytest.mark.gpu
@gpu
def test_gpu_plus_cpu_split_same_logits(smol_dir):
    ids = torch.tensor([[1, 400, 2000, 31, 7, 9000]])
    single, _, _ = load_model(smol_dir, "fp32", device_map={"": 0})
    # GPU 0 gets room for about half the layers; accelerate puts the rest on the CPU
    split, _, placement = load_model(
        smol_dir, "fp32", device_map="auto", max_memory={0: "300MiB", "cpu": "8GiB"}
    )
    assert {"cpu"} <= set(placement.placement.values()) and any(
        v in ("0", "cuda:0") for v in placement.placement.values()
    )
    with torch.inference_mode():
        a = single(ids.to(0)).logits.float().cpu()
        b = split(ids.to(0)).logits.float().cpu()
    assert (a - b).abs().max() < 1e-3
