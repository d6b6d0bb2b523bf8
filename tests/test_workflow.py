"""The workflow end to end with real Snakemake: exact job lists, a full run, and
incremental reruns after each kind of config change (with and without .snakemake/)."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from conftest import save_tiny
from workspace import Workspace

from llmboard.sources import parse_source
from llmboard.tasks import load_task

pytestmark = pytest.mark.slow

TASK_TMPL = """task: {name}
dataset: {{source: {data}}}
doc_to_text: "Question: {{{{q}}}}\\nAnswer:"
doc_to_choice: "{{{{options}}}}"
doc_to_target: gold
metrics: [acc, acc_norm]
primary_metric: acc_norm
"""


def _make_tasks(root):
    tasks = root / "tasks"
    tasks.mkdir()
    for name, offset in (("add", 0), ("mul", 3), ("sub_a", 5), ("sub_b", 7)):
        rows = [{"q": f"What is {a} and {a + offset}?", "options": [str(2 * a + offset), "no", str(a)],
                 "gold": a % 3} for a in range(1, 9)]
        (tasks / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tasks / f"{name}.yaml").write_text(TASK_TMPL.format(name=name, data=f"{name}.jsonl"))
    (tasks / "grp.yaml").write_text(
        "group: grp\naggregate: {metric: acc}\nsubgroups:\n  grp_a: [sub_a]\n  grp_b: [sub_b]\n")
    return tasks


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("ws")
    w = Workspace(root)
    w.tasks = _make_tasks(root)
    w.models = {arch: save_tiny(arch, root / f"src-{arch}", tokenizer_dir, seed=i)
                for i, arch in enumerate(("llama", "gpt2", "qwen2"))}
    w.base = {
        "models": {"tiny-llama": {"source": str(w.models["llama"])}},
        "precisions": ["fp32"],
        "tasks": {"add": {"shards": 2}, "grp": None},
        "tasks_dir": str(w.tasks),
        "inference": {"token_budget": 512, "threads": 1},
    }
    w.write_config(w.base)
    return w


def key(ws, model):
    return parse_source({"source": str(ws.models[model])}).key()


def thash(ws, name, **over):
    return load_task(ws.tasks / f"{name}.yaml", over).hash


def test_dry_run_exact_job_list(ws, tmp_path):
    from llmboard.workflow import build_plan, coverage_key, scorer_version

    k = key(ws, "llama")
    h = {t: thash(ws, t) for t in ("add", "sub_a", "sub_b")}
    sv = scorer_version()
    m = "tiny-llama"
    scores = sorted(f"results/scores/{m}/fp32/{t}/{h[t]}-{sv}.json" for t in ("add", "sub_a", "sub_b"))
    expected = {
        ("fetch", f"resources/checkpoints/{m}/{k}"),
        ("convert", f"resources/models/{m}/{k}"),
        ("infer", f"results/predictions/{m}/fp32/add/{h['add']}/0-of-2.parquet"),
        ("infer", f"results/predictions/{m}/fp32/add/{h['add']}/1-of-2.parquet"),
        # one job for the whole group: the model loads once for both members
        ("infer_grp", f"results/predictions/{m}/fp32/sub_a/{h['sub_a']}/0-of-1.parquet"),
        *{("score", s) for s in scores},
        ("leaderboard", f"results/boards/{coverage_key(scores)}/leaderboard.parquet"),
        ("precision_agreement", f"results/boards/{coverage_key(scores)}/precision_agreement.parquet"),
        ("publish_leaderboard", "results/leaderboard.parquet"),
        ("all", ""),
    }
    got = ws.planned_jobs()
    got = {(r, o) for r, o in got} | ({("all", "")} if True else set())
    assert got == expected
    plan = build_plan(ws.base, ws.tasks)
    assert plan.board_prefix() == f"results/boards/{coverage_key(scores)}/leaderboard"


def test_full_run_then_incremental_changes(ws):
    # ---- a full run from nothing
    ws.snakemake()
    board = ws.wd / "results"
    long = pl.read_parquet(board / "leaderboard.parquet")
    assert {"model", "precision", "task", "metric", "value", "stderr", "n", "checkpoint_sha256",
            "dataset_fingerprint", "task_hash", "git_commit", "torch"} <= set(long.columns)
    assert set(long["task"]) == {"add", "sub_a", "sub_b", "grp", "grp_a", "grp_b"}
    grp = long.filter((pl.col("task") == "grp") & (pl.col("metric") == "acc"))
    subs = long.filter(pl.col("task").is_in(["sub_a", "sub_b"]) & (pl.col("metric") == "acc"))
    assert grp["value"][0] == pytest.approx(subs["value"].mean())  # equal sizes: plain mean
    md = (board / "leaderboard.md").read_text()
    assert md.splitlines()[0] == "| rank | model | precision | average | add | grp |"
    wide = pl.read_csv(board / "leaderboard.csv")
    assert wide.columns[:4] == ["rank", "model", "precision", "average"]
    # no part-written files anywhere
    assert not [p for p in ws.wd.rglob("*.part")]

    # ---- nothing to do on a rerun
    assert ws.planned_jobs() == set()

    # ---- settings that do not change numbers re-run nothing
    ws.write_config({**ws.base, "inference": {"token_budget": 256, "threads": 2}, "log_level": "DEBUG"})
    assert ws.planned_jobs() == set()

    # ---- add a model: exactly its jobs plus the leaderboard, with and without .snakemake/
    cfg = {**ws.base, "models": {**ws.base["models"], "tiny-gpt2": {"source": str(ws.models["gpt2"])}}}
    ws.write_config(cfg)
    expected_rules = sorted(["fetch", "convert", "infer", "infer", "infer_grp", "score", "score",
                             "score", "leaderboard", "precision_agreement", "publish_leaderboard"])
    for meta in (True, False):
        if not meta:
            shutil.rmtree(ws.wd / ".snakemake")
        jobs = ws.planned_jobs()
        assert sorted(r for r, _ in jobs) == expected_rules, jobs
        assert all("tiny-llama" not in o for r, o in jobs), jobs
    ws.snakemake()
    long = pl.read_parquet(board / "leaderboard.parquet")
    assert set(long["model"]) == {"tiny-llama", "tiny-gpt2"}

    # ---- change a task's prompt: only that task's jobs, for every model
    add_yaml = ws.tasks / "add.yaml"
    add_yaml.write_text(add_yaml.read_text().replace("Answer:", "A:"))
    jobs = ws.planned_jobs()
    assert sorted(r for r, _ in jobs) == sorted(["infer"] * 4 + ["score"] * 2 +
                                                ["leaderboard", "precision_agreement",
                                                 "publish_leaderboard"])
    assert all("/add/" in o for r, o in jobs if r in ("infer", "score"))
    ws.snakemake()

    # ---- change how a metric is computed: re-score from stored predictions only
    scoring = ws.wf / "llmboard" / "scoring.py"
    scoring.write_text(scoring.read_text() + "\n# a changed scorer\n")
    jobs = ws.planned_jobs()
    assert sorted({r for r, _ in jobs}) == ["leaderboard", "precision_agreement",
                                            "publish_leaderboard", "score"]
    ws.snakemake()

    # ---- add a precision: exactly its jobs, and the agreement table compares it with fp32
    ws.write_config({**cfg, "precisions": ["fp32", "bf16"]})
    jobs = ws.planned_jobs()
    assert sorted(r for r, _ in jobs) == sorted(["infer"] * 4 + ["infer_grp"] * 2 + ["score"] * 6 +
                                                ["leaderboard", "precision_agreement",
                                                 "publish_leaderboard"])
    assert all("/bf16/" in o for r, o in jobs if r in ("infer", "infer_grp", "score"))
    ws.snakemake()
    agree = pl.read_parquet(board / "precision_agreement.parquet")
    assert set(agree["precision"]) == {"bf16"} and set(agree["reference"]) == {"fp32"}
    assert agree.height == 2 * 3  # two models x three tasks
    assert "| tiny-gpt2 | add | bf16 | fp32 |" in (board / "precision_agreement.md").read_text()

    # ---- remove a model: leaderboard without it, its predictions kept
    ws.write_config(ws.base)
    jobs = ws.planned_jobs()
    assert sorted(r for r, _ in jobs) == ["leaderboard", "precision_agreement", "publish_leaderboard"]
    ws.snakemake()
    long = pl.read_parquet(board / "leaderboard.parquet")
    assert set(long["model"]) == {"tiny-llama"}
    assert list((ws.wd / "results/predictions/tiny-gpt2").rglob("*.parquet"))


def test_killed_run_resumes_without_recomputing_finished_shards(ws):
    """SIGKILL snakemake and its jobs mid-run; the rerun computes only what is missing."""
    import os
    import signal
    import subprocess
    import time

    cfg = {**ws.base, "tasks": {"mul": {"shards": 4}}}
    ws.write_config(cfg)
    proc = subprocess.Popen([ws_cmd for ws_cmd in ws.command("--cores", "1")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    preds = ws.wd / "results/predictions/tiny-llama/fp32/mul"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(preds.rglob("*.json"))) < 2:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = sorted(preds.rglob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    assert 2 <= len(written) < 4
    # every info file stands for complete predictions; nothing half-written
    for info in written:
        assert info.with_suffix(".parquet").exists()
    # with one core, a shard is registered as finished before the next one starts;
    # the newest may have been cut between its last write and that registration
    done = {p: p.stat().st_mtime_ns for p in written[:-1]}
    assert not list(ws.wd.rglob("*.part"))
    ws.snakemake("--unlock")  # a SIGKILLed snakemake leaves its lock behind
    ws.snakemake("--rerun-incomplete")
    after = {p: p.stat().st_mtime_ns for p in preds.rglob("*.json")}
    assert len(after) == 4
    assert all(after[p] == t for p, t in done.items())  # finished shards kept as they were
    ws.write_config(ws.base)


def test_leaderboard_rebuild_is_byte_identical(ws, tmp_path):
    from llmboard.leaderboard import write_leaderboard

    scores = sorted(str(p) for p in (ws.wd / "results/scores").rglob("*.json"))
    groups = {"grp": {"metric": "acc", "subgroups": {"grp_a": ["sub_a"], "grp_b": ["sub_b"]}}}
    write_leaderboard(scores, str(tmp_path / "a"), ["add", "grp"], groups)
    write_leaderboard(list(reversed(scores)), str(tmp_path / "b"), ["add", "grp"], groups)
    for ext in ("parquet", "csv", "md"):
        assert (tmp_path / f"a.{ext}").read_bytes() == (tmp_path / f"b.{ext}").read_bytes()


def test_verify_reports_stale_provenance(tmp_path, tokenizer_dir, capsys):
    from llmboard.cli import main as cli

    # a workspace of its own: the module's one holds scores superseded on purpose
    ws = Workspace(tmp_path)
    ws.tasks = _make_tasks(tmp_path)
    ws.models = {"llama": save_tiny("llama", tmp_path / "src", tokenizer_dir)}
    ws.write_config({"models": {"tiny-llama": {"source": str(ws.models["llama"])}},
                     "precisions": ["fp32"], "tasks": {"add": None, "grp": None},
                     "tasks_dir": str(ws.tasks), "inference": {"token_budget": 512, "threads": 1}})
    ws.snakemake()
    args = ["verify", str(ws.wd / "results"), "--tasks-dir", str(ws.tasks)]
    assert cli(args) == 0
    assert "OK" in capsys.readouterr().out
    # a task file edited after scoring
    sub = ws.tasks / "sub_a.yaml"
    original = sub.read_text()
    sub.write_text(original.replace("Answer:", "Answer :"))
    assert cli(args) == 1
    out = capsys.readouterr().out
    assert "stale: " in out and "sub_a.yaml now hashes to" in out
    sub.write_text(original)
    # weights changed on disk after scoring
    model_dir = next((ws.wd / "resources/models/tiny-llama").iterdir())
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert cli(args) == 1
    assert "stale: checkpoint sha256 is now" in capsys.readouterr().out
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert cli(args) == 0
