"""The workflow end to end with real Snakemake: exact job lists, a full run, and
incremental reruns after each kind of config change (with and without .snakemake/)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import polars as pl
import pytest
import yaml

from llmboard.settings import load_settings

from conftest import save_tiny, source_key
from workspace import Workspace

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
        rows = [
            {
                "q": f"What is {a} and {a + offset}?",
                "options": [str(2 * a + offset), "no", str(a)],
                "gold": a % 3,
            }
            for a in range(1, 9)
        ]
        (tasks / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tasks / f"{name}.yaml").write_text(TASK_TMPL.format(name=name, data=f"{name}.jsonl"))
    (tasks / "grp.yaml").write_text(
        "group: grp\naggregate: {metric: acc}\nsubgroups:\n  grp_a: [sub_a]\n  grp_b: [sub_b]\n"
    )
    return tasks


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("ws")
    w = Workspace(root)
    w.tasks = _make_tasks(root)
    w.models = {
        arch: save_tiny(arch, root / f"src-{arch}", tokenizer_dir, seed=i)
        for i, arch in enumerate(("llama", "gpt2", "qwen2"))
    }
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
    return source_key(ws.models[model])


def plan_of(ws, cfg=None):
    from llmboard.workflow.plan import build_plan

    return build_plan(load_settings(cfg or ws.base), ws.tasks, root=ws.wd)


def batches(plan) -> list[tuple]:
    """(model, precision, items) of every inference job the plan makes."""
    return sorted((b.model, b.precision, b.items) for b in plan.infer_jobs.values())


def computed_files(ws) -> dict:
    """Every prediction and score file with its mtime: what a run wrote or left alone."""
    res = ws.wd / "results"
    return {
        str(p.relative_to(ws.wd)): p.stat().st_mtime_ns
        for d in ("predictions", "scores")
        if (res / d).exists()
        for p in (res / d).rglob("*")
        if p.is_file() and p.parent.name != "_jobs"
    }


def run_and_diff(ws) -> set[str]:
    """Run the workflow; return the prediction/score files it wrote (new or rewritten)."""
    before = computed_files(ws)
    ws.last_run = ws.snakemake()
    after = computed_files(ws)
    assert set(before) <= set(after)
    return {f for f, t in after.items() if before.get(f) != t}


def expected_files(ws, cfg, runs, tasks) -> set[str]:
    from llmboard.tasks.scoring import scorer_version, scorer_version_of

    plan = plan_of(ws, cfg)
    # the workspace's scorer may be edited: its score files carry its own hash
    here, there = scorer_version(), scorer_version_of(ws.wf / "llmboard" / "tasks")
    out = set()
    for m, p in runs:
        for t in tasks:
            out |= set(plan.prediction_files(m, p, t)) | set(plan.prediction_files(m, p, t, "json"))
            out.add(plan.score_file(m, p, t).replace(f"-{here}.json", f"-{there}.json"))
    return out


def test_dry_run_exact_job_list(ws, tmp_path):
    from llmboard.tasks.scoring import scorer_version
    from llmboard.workflow.plan import coverage_key

    k = key(ws, "llama")
    m = "tiny-llama"
    plan = plan_of(ws)
    # one inference job per shard slot, each loading the model once: the group's
    # members and add's shard 0 in one, add's shard 1 in the other
    assert batches(plan) == [
        (m, "fp32", (("add", 0, 2), ("sub_a", 0, 1), ("sub_b", 0, 1))),
        (m, "fp32", (("add", 1, 2),)),
    ]
    assert [b.items for b in plan.score_jobs.values()] == [("add", "sub_a", "sub_b")]
    from llmboard.hashing import sha256_file, sha256_json

    # a task's key: its definition's hash and its data file's content
    h = {
        t: sha256_json(
            {
                "task": plan.tasks[t].hash,
                "data": {
                    "sha256": sha256_json({f"{t}.jsonl": sha256_file(ws.tasks / f"{t}.jsonl")})
                },
            }
        )[:12]
        for t in ("add", "sub_a", "sub_b")
    }
    assert (
        plan.prediction_file(m, "fp32", "add", 1)
        == f"results/predictions/{m}/{k}/fp32/add/{h['add']}/1-of-2.parquet"
    )
    scores = sorted(
        f"results/scores/{m}/{k}/fp32/{t}/{h[t]}-{scorer_version()}.json"
        for t in ("add", "sub_a", "sub_b")
    )
    assert plan.score_files() == scores
    expected = {
        ("fetch", f"resources/checkpoints/{m}/{k}"),
        ("convert", f"resources/models/{m}/{k}"),
        *{("infer", plan.infer_receipt(b)) for b in plan.infer_jobs.values()},
        *{("score", plan.score_receipt(b)) for b in plan.score_jobs.values()},
        ("leaderboard", f"results/boards/{coverage_key(scores)}/leaderboard.parquet"),
        (
            "precision_agreement",
            f"results/boards/{coverage_key(scores)}/precision_agreement.parquet",
        ),
        ("publish_leaderboard", "results/leaderboard.parquet"),
        ("report", "results/.report-staging"),
        ("publish_report", "results/report/index.html"),
    }
    assert {(r, o) for r, o in ws.planned_jobs() if r != "all"} == expected
    assert plan.board_files("leaderboard", [".parquet"]) == [
        f"results/boards/{coverage_key(scores)}/leaderboard.parquet"
    ]
    # jobs of at most N task shards, when asked
    small = plan_of(ws, {**ws.base, "inference": {"tasks_per_job": 2}})
    assert [len(b.items) for b in small.infer_jobs.values()] == [2, 1, 1]


def test_full_run_then_incremental_changes(ws):
    aggregates = [
        "leaderboard",
        "precision_agreement",
        "publish_leaderboard",
        "report",
        "publish_report",
    ]
    # ---- a full run from nothing
    written = run_and_diff(ws)
    assert written == expected_files(
        ws, ws.base, [("tiny-llama", "fp32")], ["add", "sub_a", "sub_b"]
    )
    # the inference jobs' progress reaches the terminal (Snakemake's stderr), not only
    # their logs; add's shard 0 computes sub_a's and sub_b's requests in the same call
    shown = re.findall(
        r"\[infer tiny-llama fp32\] \d/\d (\w+) shard \d/\d: (\d+)/(\d+) requests.*, done in",
        ws.last_run.stderr,
    )
    assert {t for t, done, total in shown if done == total} == {"add", "sub_a", "sub_b"}
    assert re.search(r"\d/3 add shard 0/2: 60/60 requests, [\d,]+ tok/s, done", ws.last_run.stderr)
    board = ws.wd / "results"
    long = pl.read_parquet(board / "leaderboard.parquet")
    assert {
        "model",
        "precision",
        "task",
        "metric",
        "value",
        "stderr",
        "n",
        "checkpoint_sha256",
        "dataset_fingerprint",
        "task_hash",
        "git_commit",
        "torch",
    } <= set(long.columns)
    assert set(long["task"]) == {"add", "sub_a", "sub_b", "grp", "grp_a", "grp_b"}
    grp = long.filter((pl.col("task") == "grp") & (pl.col("metric") == "acc"))
    subs = long.filter(pl.col("task").is_in(["sub_a", "sub_b"]) & (pl.col("metric") == "acc"))
    assert grp["value"][0] == pytest.approx(subs["value"].mean())  # equal sizes: plain mean
    md = (board / "leaderboard.md").read_text()
    assert md.splitlines()[0] == ("| rank | model | prompting | precision | average | add | grp |")
    wide = pl.read_csv(board / "leaderboard.csv")
    assert wide.columns[:5] == ["rank", "model", "prompting", "precision", "average"]
    # no part-written files anywhere, and the job receipts are gone once used
    assert not [p for p in ws.wd.rglob("*.part")]
    assert not [p for p in ws.wd.rglob("_jobs/*.json")]

    # ---- nothing to do on a rerun
    assert ws.planned_jobs() == set()

    # ---- settings that do not change numbers re-run nothing
    ws.write_config(
        {
            **ws.base,
            "inference": {
                "token_budget": 256,
                "threads": 2,
                "tasks_per_job": 1,
                "draft_tokens": 0,
            },
            "log_level": "DEBUG",
        }
    )
    assert ws.planned_jobs() == set()

    # ---- add a model: exactly its jobs plus the leaderboard, with and without .snakemake/
    cfg = {
        **ws.base,
        "models": {**ws.base["models"], "tiny-gpt2": {"source": str(ws.models["gpt2"])}},
    }
    ws.write_config(cfg)
    for meta in (True, False):
        if not meta:
            shutil.rmtree(ws.wd / ".snakemake")
        jobs = ws.planned_jobs()
        assert sorted(r for r, _ in jobs) == sorted(
            ["fetch", "convert", "infer", "infer", "score", *aggregates]
        ), jobs
        assert all("tiny-llama" not in o for r, o in jobs), jobs
    assert run_and_diff(ws) == expected_files(
        ws, cfg, [("tiny-gpt2", "fp32")], ["add", "sub_a", "sub_b"]
    )
    long = pl.read_parquet(board / "leaderboard.parquet")
    assert set(long["model"]) == {"tiny-llama", "tiny-gpt2"}

    # ---- change a task's prompt: only that task's jobs, for every model
    add_yaml = ws.tasks / "add.yaml"
    add_yaml.write_text(add_yaml.read_text().replace("Answer:", "A:"))
    jobs = ws.planned_jobs()
    assert sorted(r for r, _ in jobs) == sorted(["infer"] * 4 + ["score"] * 2 + aggregates)
    assert {it[0] for *_, items in batches(plan_of(ws, cfg)) for it in items} == {"add"}
    both = [("tiny-llama", "fp32"), ("tiny-gpt2", "fp32")]
    assert run_and_diff(ws) == expected_files(ws, cfg, both, ["add"])

    # ---- correct a task's data file in place (a question's typo, a gold label): that
    # task re-runs for every model, and only it; the board publishes the corrected data
    data = ws.tasks / "sub_a.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[0]["q"] = rows[0]["q"].replace("What is", "What's")
    rows[1]["gold"] = (rows[1]["gold"] + 1) % 3
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    jobs = ws.planned_jobs()
    assert sorted(r for r, _ in jobs) == sorted(["infer"] * 2 + ["score"] * 2 + aggregates)
    assert {it[0] for *_, items in batches(plan_of(ws, cfg)) for it in items} == {"sub_a"}
    assert run_and_diff(ws) == expected_files(ws, cfg, both, ["sub_a"])
    for m, p in both:
        (parquet,) = plan_of(ws, cfg).prediction_files(m, p, "sub_a")
        preds = pl.read_parquet(ws.wd / parquet)
        assert preds.filter(pl.col("doc_id") == 1)["gold"].to_list() == [rows[1]["gold"]] * 3
        assert preds.filter(pl.col("doc_id") == 0)["context"][0].startswith("Question: What's")
    from llmboard.cli import main as cli

    assert cli(["verify", str(ws.wd / "results"), "--tasks-dir", str(ws.tasks)]) == 0

    # ---- change how a metric is computed: re-score from stored predictions only
    scoring = ws.wf / "llmboard" / "tasks" / "metrics.py"
    scoring.write_text(scoring.read_text() + "\n# a changed scorer\n")
    jobs = ws.planned_jobs()
    assert sorted(r for r, _ in jobs) == sorted(["score"] * 2 + aggregates)
    written = run_and_diff(ws)
    assert written and all(f.startswith("results/scores/") for f in written)

    # ---- add a precision: exactly its jobs, and the agreement table compares it with fp32
    cfg2 = {**cfg, "precisions": ["fp32", "bf16"]}
    ws.write_config(cfg2)
    jobs = ws.planned_jobs()
    assert sorted(r for r, _ in jobs) == sorted(["infer"] * 4 + ["score"] * 2 + aggregates)
    assert all("/bf16/" in o for r, o in jobs if r in ("infer", "score"))
    new = [("tiny-llama", "bf16"), ("tiny-gpt2", "bf16")]
    assert run_and_diff(ws) == expected_files(ws, cfg2, new, ["add", "sub_a", "sub_b"])
    agree = pl.read_parquet(board / "precision_agreement.parquet")
    assert set(agree["precision"]) == {"bf16"} and set(agree["reference"]) == {"fp32"}
    assert agree.height == 2 * 3  # two models x three tasks
    assert "| tiny-gpt2 | add | bf16 | fp32 |" in (board / "precision_agreement.md").read_text()

    # ---- remove a model: leaderboard without it, its predictions kept
    ws.write_config(ws.base)
    jobs = ws.planned_jobs()
    assert sorted(r for r, _ in jobs) == sorted(aggregates)
    assert run_and_diff(ws) == set()
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
    proc = subprocess.Popen(
        [ws_cmd for ws_cmd in ws.command("--cores", "1")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    preds = ws.wd / f"results/predictions/tiny-llama/{key(ws, 'llama')}/fp32/mul"
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
    """The published boards, rebuilt by another process (another hash seed) in another
    working folder from the same score and prediction files, are the same bytes."""
    # the killed-run test ran another config, then set this one back: its board was built
    # before (older than the published copies), yet it is what gets published again
    assert ("publish_leaderboard", "results/leaderboard.parquet") in ws.planned_jobs()
    ws.snakemake()
    assert set(pl.read_parquet(ws.wd / "results/leaderboard.parquet")["task"]) == {
        "add",
        "sub_a",
        "sub_b",
        "grp",
        "grp_a",
        "grp_b",
    }
    other = tmp_path / "elsewhere"
    shutil.copytree(ws.wd, other, ignore=shutil.ignore_patterns(".snakemake", "logs"))
    published = [
        f"results/{table}{ext}"
        for table, exts in (
            ("leaderboard", (".parquet", ".csv", ".md")),
            ("precision_agreement", (".parquet", ".md")),
        )
        for ext in exts
    ]
    shutil.rmtree(other / "results" / "boards")
    for f in published:
        (other / f).unlink()
    cmd = [*ws.command("--cores", "1", *published)]
    cmd[cmd.index("--directory") + 1] = str(other)
    cmd[cmd.index("--configfile") + 1] = str(other / "config.yaml")
    env = {**os.environ, "PYTHONHASHSEED": "4321", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "rule infer" not in run.stdout + run.stderr  # nothing but the boards was rebuilt
    for f in published:
        if f.endswith(".parquet") and (other / f).read_bytes() != (ws.wd / f).read_bytes():
            a, b = pl.read_parquet(other / f), pl.read_parquet(ws.wd / f)
            assert a.columns == b.columns and a.height == b.height, f
            assert [c for c in a.columns if not a[c].equals(b[c])] == [], f
        assert (other / f).read_bytes() == (ws.wd / f).read_bytes(), f


def test_failing_task_keeps_the_rest_of_its_job(tmp_path, tokenizer_dir):
    """One bad task in a job: the others' predictions are written and kept, the error names
    the task and the row, and the rerun computes only the task that failed."""
    ws = Workspace(tmp_path)
    ws.tasks = _make_tasks(tmp_path)
    rows = [json.loads(line) for line in (ws.tasks / "mul.jsonl").read_text().splitlines()]
    good = "".join(json.dumps(r) + "\n" for r in rows)
    del rows[2]["options"]
    (ws.tasks / "mul.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ws.models = {"llama": save_tiny("llama", tmp_path / "src", tokenizer_dir)}
    cfg = {
        "models": {"tiny-llama": {"source": str(ws.models["llama"])}},
        "precisions": ["fp32"],
        "tasks": {"add": None, "mul": None},
        "tasks_dir": str(ws.tasks),
        "inference": {"token_budget": 512, "threads": 1},
    }
    ws.write_config(cfg)
    assert [b[2] for b in batches(plan_of(ws, cfg))] == [(("add", 0, 1), ("mul", 0, 1))]
    run = ws.snakemake(check=False)
    assert run.returncode != 0
    log = next((ws.wd / "logs/infer").rglob("*.log")).read_text()
    assert "1 of 2 items failed" in log and "mul shard 0/1" in log
    # the job says how its OpenMP threads wait (inference.threads), decided before torch
    assert "OpenMP wait policy: libgomp's default" in log or "from the environment" in log
    assert "mul.yaml: doc_to_choice on doc 2 did not give a list" in log
    # a user's mistake: its message where the person looks, and no Python stack
    assert "mul.yaml: doc_to_choice on doc 2 did not give a list" in run.stderr
    assert "Traceback" not in log and "Traceback" not in run.stderr
    kept = computed_files(ws)
    assert set(kept) == {
        f
        for f in expected_files(ws, cfg, [("tiny-llama", "fp32")], ["add"])
        if "/predictions/" in f
    }
    (ws.tasks / "mul.jsonl").write_text(good)
    assert [b[2] for b in batches(plan_of(ws, cfg))] == [(("mul", 0, 1),)]
    written = run_and_diff(ws)
    assert written == expected_files(ws, cfg, [("tiny-llama", "fp32")], ["add", "mul"]) - set(kept)


def test_jobs_are_found_by_part_and_chunks_do_not_move(tmp_path):
    """A job re-planned mid-run (a cluster node parses the Snakefile again, or a retry
    after some items were written) keeps its part and is left with what is missing;
    one chunk finishing never changes another chunk's items or id."""
    from llmboard.workflow.plan import build_plan

    tasks = _make_tasks(tmp_path)
    (tmp_path / "m.safetensors").write_bytes(b"stand-in")
    cfg = {
        "models": {"m": {"source": str(tmp_path / "m.safetensors")}},
        "precisions": ["fp32"],
        "tasks": {"add": None, "mul": None, "grp": None},
        "tasks_dir": str(tasks),
        "inference": {"tasks_per_job": 2},
    }
    plan = build_plan(load_settings(cfg), tasks, root=tmp_path)
    assert {k[2]: b.items for k, b in plan.infer_jobs.items()} == {
        "0.0": (("add", 0, 1), ("mul", 0, 1)),
        "0.1": (("sub_a", 0, 1), ("sub_b", 0, 1)),
    }
    for t in ("add", "sub_b"):  # one item of each chunk is written
        for ext in ("parquet", "json"):
            f = tmp_path / plan.prediction_file("m", "fp32", t, 0, ext)
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"")
    later = build_plan(load_settings(cfg), tasks, root=tmp_path)
    assert {k[2]: b.items for k, b in later.infer_jobs.items()} == {
        "0.0": (("mul", 0, 1),),
        "0.1": (("sub_a", 0, 1),),
    }
    assert [i.spec["task"] for i in later.infer_items("m", "fp32", "0.1", str(tmp_path))] == [
        "sub_a"
    ]
    assert later.infer_items("m", "fp32", "9.9", str(tmp_path)) == []  # nothing left: a no-op job


def test_jobs_command_lists_what_a_run_computes(tmp_path, capsys):
    from llmboard.cli import main as cli

    tasks = _make_tasks(tmp_path)
    (tmp_path / "m.safetensors").write_bytes(b"stand-in")
    cfg = {
        "models": {"m": {"source": str(tmp_path / "m.safetensors")}},
        "precisions": ["fp32"],
        "tasks": {"add": {"shards": 2}, "grp": None},
        "tasks_dir": str(tasks),
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert cli(["jobs", "--config", str(tmp_path / "config.yaml"), "--workdir", str(tmp_path)]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [(w[0], w[1], w[2], w[3], w[5:]) for w in lines[:-1]] == [
        ("infer", "m", "fp32", "0.0", ["add[0/2]", "sub_a", "sub_b"]),
        ("infer", "m", "fp32", "1.0", ["add[1/2]"]),
        ("score", "m", "fp32", "all", ["add", "sub_a", "sub_b"]),
    ]
    assert lines[-1][:3] == ["2", "inference", "job(s),"]
