"""bench/gpu_check end to end on the CPU (tiny models), run as on the GPU machine
(``python -m bench.gpu_check`` from the repo root) with the packages that machine lacks
hidden: the check that proves the GPU path cannot rot between GPU runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

GPU_CHECK = [sys.executable, "-m", "bench.gpu_check"]  # from the repo root (cwd=REPO)
ABSENT = ("polars", "snakemake", "jsonschema", "datasets", "gguf", "bitsandbytes")

# Put first on PYTHONPATH: these packages look uninstalled, as on the GPU machine. A
# stub module that raises would still be *found*, and transformers would then take
# bitsandbytes or gguf for installed; hiding them from the path finder is what absence is.
HIDE = f"""
import sys
from importlib.machinery import PathFinder

ABSENT = {ABSENT!r}


class _Absent(PathFinder):
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top in ABSENT or top.startswith(("snakemake_", "_polars", "jsonschema_")):
            return None
        return super().find_spec(fullname, path, target)


sys.meta_path[:] = [_Absent if f is PathFinder else f for f in sys.meta_path]
"""


@pytest.fixture(scope="module")
def hidden_env(tmp_path_factory) -> dict:
    hide = tmp_path_factory.mktemp("hide")
    (hide / "sitecustomize.py").write_text(HIDE)
    path = os.pathsep.join(p for p in (str(hide), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """The kit as `prepare` writes it here, less the wheels (no network in the tests)."""
    kit = tmp_path_factory.mktemp("kit")
    cmd = [*GPU_CHECK, "prepare", "--out", str(kit), "--no-wheels"]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=300)
    return kit


@pytest.fixture(scope="module")
def report(tmp_path_factory, kit, hidden_env) -> dict:
    out = tmp_path_factory.mktemp("gpu_check")
    run = subprocess.run(
        [*GPU_CHECK, "run", "--tiny", "--tokenizer", str(kit / "tokenizer")]
        + ["--contexts", "4", "--out", str(out)],  # 16 requests: the plain pass is the cost
        cwd=REPO,
        env=hidden_env,
        capture_output=True,
        text=True,
        timeout=900,  # a guard, not a target: ~5 min on 2 idle cores
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "0 failed" in run.stdout
    return json.loads((out / "gpu_check.json").read_text())


def test_prepare_writes_the_tokenizer(kit):
    files = json.loads((kit / "kit.json").read_text())["files"]
    assert {"tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"} <= set(files)
    assert not (kit / "wheels").exists()


def rows(report: dict, check: int) -> list[dict]:
    return [r for r in report["rows"] if r["check"] == check]


def test_the_hidden_packages_really_are_missing(hidden_env):
    probe = "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in sys.argv[1:]))"
    run = subprocess.run([sys.executable, "-c", probe, *ABSENT], env=hidden_env, timeout=60)
    assert run.returncode == 0


def test_runs_without_the_gpu_machines_missing_packages(report):
    assert report["environment"]["absent_packages_imported"] == []
    assert report["failed"] == 0
    for r in rows(report, 2):
        if r["name"].startswith(("int8", "nf4")):
            assert r["status"] == "skipped" and "bitsandbytes" in r["note"]


def test_every_check_reports_and_cuda_only_ones_are_skipped(report):
    assert {r["check"] for r in report["rows"]} == set(range(1, 12))
    # check 11 needs the workflow's wheelhouse, which a bare GPU machine lacks
    (workflow,) = rows(report, 11)
    assert workflow["status"] == "skipped" and "snakemake" in workflow["note"]
    for check in (4, 5):
        assert rows(report, check)
        assert all(
            r["status"] == "skipped" and "needs CUDA" in r["note"] for r in rows(report, check)
        )
    # both tiny architectures (tied and untied output head) went through checks 1-3, 7, 8
    for check in (1, 3, 7, 8, 9):
        assert {r["name"].split("/")[1] for r in rows(report, check)} == {
            "tiny-llama",
            "tiny-qwen2",
        }


def test_engine_equals_plain_forward_in_fp32(report):
    for r in rows(report, 1):
        f = r["figures"]
        assert r["status"] == "pass" and r["name"].endswith("/fp32")
        assert f["max_abs_dll"] < 1e-4 and f["greedy_flips"] == 0
        # contexts are shared: the engine runs fewer tokens than the requests hold
        assert f["engine_forward_tokens"] < f["request_tokens"]
        # lm-eval's batched algorithm ran beside it (baselines.py; on the CPU at batch 4,
        # on the GPU at 32 and "auto"), with the same numbers
        assert f["lmeval_4"]["batch_size"] == 4
        assert f["max_abs_dll_vs_lmeval_4"] < 1e-4 and f["greedy_flips_vs_lmeval_4"] == 0


def test_bf16_is_close_to_fp32(report):
    for r in rows(report, 2):
        if r["name"].startswith("bf16"):
            f = r["figures"]
            assert f["finite"] and f["pick_agreement"] >= 0.9 and 0 < f["mean_abs_dll"] < 0.5


def test_cpu_disk_split_keeps_the_numbers(report):
    for r in rows(report, 3):
        f = r["figures"]
        assert f["modules_per_device"]["disk"] > 0 and f["max_abs_dll"] < 1e-5


def test_invariant_mode_is_exact_on_the_cpu(report):
    """Check 9 on the CPU: invariant mode identical at every budget and shard count (its
    row passes only then), in fp32 and bf16, for both architectures."""
    assert len(rows(report, 9)) == 4
    for r in rows(report, 9):
        f = r["figures"]
        assert r["status"] == "pass", r
        for what in ("loglikelihood", "generation"):
            same, n = f[f"invariant_{what}_identical"].split("/")
            assert same == n and int(n) > 0


def test_gpu_slots_are_held_one_after_the_other(report):
    [r] = rows(report, 6)
    a, b = sorted(r["figures"]["holders"], key=lambda h: h["start"])
    assert a["end"] <= b["start"]  # one slot, two processes: never at the same time
    assert a["cuda_visible_devices"] == b["cuda_visible_devices"] == "0"
    assert a["pid"] != b["pid"]


def test_fewshot_prefixes_are_computed_once_and_change_no_number(report):
    for r in rows(report, 7):
        f = r["figures"]
        assert r["status"] == "pass"
        # two subjects' ~600-token prefixes once each, not once per request
        assert f["forward_tokens_unshared"] > 4 * f["forward_tokens_shared"]
        if r["name"].endswith("/fp32"):
            assert f["max_abs_dll_vs_plain"] < 1e-4 and f["greedy_flips"] == 0
            assert f["max_abs_dll_vs_lmeval_4"] < 1e-4 and f["speedup_vs_lmeval_4"] > 0
        else:
            assert f["shared_mean_err_vs_fp32"] <= 1.5 * f["plain_mean_err_vs_fp32"] + 1e-4


def test_generation_equals_transformers_generate(report):
    for r in rows(report, 8):
        f = r["figures"]
        assert r["status"] == "pass" and f["prefix_tokens"] > 500
        if r["name"].endswith("/fp32"):
            assert f["same_text"] == f["prompts"] and f["generated_tokens"] > 0
            assert f["same_text_as_lmeval"] == f["prompts"]
            # lm-eval's batch decodes until its last row stops: at least as many tokens
            assert f["lmeval_generated_tokens"] >= f["generated_tokens"]


def test_the_scale_check_runs_the_7b_code_on_the_tiny_shape(report):
    """Check 10 on the CPU: the tiny Qwen2 shape through the 7B check's code (bf16;
    int8 and nf4 skipped without bitsandbytes); GPU-only figures absent."""
    by_name = {r["name"]: r for r in rows(report, 10)}
    assert set(by_name) == {f"scale/tiny-qwen2/{p}" for p in ("bf16", "int8", "nf4")}
    r = by_name["scale/tiny-qwen2/bf16"]
    f = r["figures"]
    assert r["status"] == "pass", r
    assert f["loglikelihood"]["tok_per_s"] > 0 and f["generated_tok_per_s"] > 0
    assert 0 < f["body_parameters"] < 10**6 and "body_mfu" not in f
    for p in ("int8", "nf4"):
        assert by_name[f"scale/tiny-qwen2/{p}"]["status"] == "skipped"
