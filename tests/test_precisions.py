"""Every precision runs on CPU; offload keeps the numbers; precision agreement."""

from __future__ import annotations

import json
import logging
import math

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


@pytest.fixture(scope="module")
def predictions(smol_dir, tiny_task, tmp_path_factory):
    out = tmp_path_factory.mktemp("preds")
    paths = {}
    for p in PRECISIONS:
        info = predict_task(smol_dir, p, tiny_task, out / f"{p}.parquet", out / f"{p}.json")
        paths[p] = (out / f"{p}.parquet", info)
    return paths


def test_each_precision_produces_predictions(predictions):
    for p, (parquet, info) in predictions.items():
        df = pl.read_parquet(parquet)
        assert df.height == 24 and df["loglikelihood"].is_finite().all(), p
        assert info["precision"] == p and info["device_map"]


def test_int8_and_nf4_are_really_quantised(smol_dir):
    import bitsandbytes as bnb

    for p, cls in (("int8", bnb.nn.Linear8bitLt), ("nf4", bnb.nn.Linear4bit)):
        model, _, _ = load_model(smol_dir, p)
        assert any(isinstance(m, cls) for m in model.modules()), p


def test_precisions_stay_close_to_fp32_on_smollm2(predictions):
    ref = pl.read_parquet(predictions["fp32"][0])["loglikelihood"]
    for p in ("bf16", "fp16", "int8"):
        d = (pl.read_parquet(predictions[p][0])["loglikelihood"] - ref).abs()
        assert d.max() < 3.0, (p, d.max())  # same model, coarser arithmetic
    assert (pl.read_parquet(predictions["bf16"][0])["loglikelihood"] - ref).abs().max() > 0


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
