"""Check 11 (workflow): the workflow itself, end to end, as a user runs it: ``snakemake``
on a local random-weight checkpoint and ``.jsonl`` tasks (multiple choice and
generation), fetch, convert, inference jobs that get their GPU through
``CUDA_VISIBLE_DEVICES`` from the memory plan, score, board, and ``llmboard verify`` on
what it wrote. It needs the packages of ``kit.WORKFLOW_PACKAGES``: on the GPU machine the
kit's workflow wheelhouse, installed by ``install-wheels`` (docs/gpu.md); without them
the row is skipped, so the other checks run on a bare machine."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from .common import MODELS, REPO, Row, Setup, Timer, skipped, verdict
from .kit import WORKFLOW_PACKAGES
from .models import save_random_model

NAME = "workflow/snakemake end to end"
PRECISIONS = ("fp32", "bf16")
TASKS = {"wf_choice": {"shards": 2}, "wf_gen": None}
SHARDS_PER_PRECISION = sum((o or {}).get("shards", 1) for o in TASKS.values())
# within one device call (600 s) with room for the model's build and the rest of `run`
SNAKEMAKE_TIMEOUT_S, VERIFY_TIMEOUT_S = 360, 120
RULES = ("fetch", "convert", "infer", "score", "leaderboard", "publish_leaderboard")
MC_TASK = """task: wf_choice
dataset: {source: wf_choice.jsonl}
doc_to_text: "Question: {{q}}\\nAnswer:"
doc_to_choice: "{{options}}"
doc_to_target: gold
metrics: [acc, acc_norm]
primary_metric: acc_norm
"""
GEN_TASK = """task: wf_gen
dataset: {source: wf_gen.jsonl}
output_type: generate_until
doc_to_text: "Q: {{q}}\\nA:"
doc_to_target: "{{answer}}"
generation_kwargs: {until: ["\\n"], max_gen_toks: 16}
metric_list:
  - {metric: exact_match, aggregation: mean, higher_is_better: true}
"""


def workflow_rows(setup: Setup) -> list[Row]:
    # their import names are their distribution names
    missing = [m for m in WORKFLOW_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        why = f"{', '.join(missing)} not installed (install the kit's workflow wheelhouse)"
        return [skipped("workflow", NAME, why)]
    with Timer(setup.timings, "workflow"):
        figs = run_workflow(setup)
    ok = (
        figs["returncode"] == 0
        and set(RULES) <= set(figs["rules_run"])
        and figs["board_rows"] == len(PRECISIONS)
        and figs["verify_returncode"] == 0
        and figs["shards"] == len(PRECISIONS) * SHARDS_PER_PRECISION
        # every job got one GPU slot from the plan, set before torch started
        and figs["cuda_visible_devices"] == ["0"]
        and (not setup.cuda or figs["devices"] == ["cuda"])
    )
    target = (
        f"rules {', '.join(RULES)} ran; a board row per precision; `llmboard verify` passes; "
        "each inference job had CUDA_VISIBLE_DEVICES=0"
    )
    if setup.cuda:
        target += " and its weights on cuda"
    return [Row(11, NAME, verdict(ok), figs, target)]


def run_workflow(setup: Setup) -> dict:
    """The workflow in a folder of its own, with the repo's Snakefile; its figures."""
    import yaml  # transformers' own dependency: on the GPU machine too

    work = setup.work / "workflow"
    tasks = write_tasks(work / "tasks")
    spec = MODELS["smollm2-135m" if setup.cuda else "tiny-llama"]
    source = save_random_model(spec, setup.tokenizer_dir, work / "checkpoint", setup.device)
    config = {
        "models": {"random": {"source": str(source)}},
        "precisions": list(PRECISIONS),
        "tasks": TASKS,
        "tasks_dir": str(tasks),
        # plan GPU jobs over one local GPU slot (the GPU machine's one GPU, its memory as
        # torch reports it; on the CPU the same locking, with no CUDA behind it)
        "resources": {"gpu_memory_gb": setup.gpu_memory_gb or 80, "local_gpus": 1},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    cmd += ["--directory", str(work), "--configfile", str(work / "config.yaml")]
    # greedy: the ILP scheduler needs pulp, left out of the wheelhouse (kit.py)
    cmd += ["--cores", "4", "--resources", "gpu=1", "--scheduler", "greedy"]
    cmd.append("publish_leaderboard")  # the board; the HTML report needs packages not carried
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    t0 = time.perf_counter()
    done = _run(cmd, work, env, SNAKEMAKE_TIMEOUT_S)
    wall = time.perf_counter() - t0
    jobs = [
        _job(p)
        for p in sorted((work / "results/predictions").rglob("*.json"))
        if p.parent.name != "_jobs"  # a job's own record; its shards' are what we want
    ]
    figs = {
        "returncode": done.returncode,
        "wall_s": round(wall, 1),
        "rules_run": sorted(set(re.findall(r"^(?:local)?rule (\w+):$", done.stderr, re.M))),
        "shards": len(jobs),
        "cuda_visible_devices": sorted({str(j["cuda_visible_devices"]) for j in jobs}),
        "devices": sorted({d for j in jobs for d in j["devices"]}),
        "board_rows": _board_rows(work / "results/leaderboard.csv"),
        "jobs": jobs,
        "snakemake_log_tail": (done.stdout + done.stderr)[-3000:] if done.returncode else "",
    }
    # `llmboard verify` as a user runs it, from the run's folder
    verify = [sys.executable, "-m", "llmboard.cli", "verify", "results", "--tasks-dir", str(tasks)]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    checked = _run(verify, work, env, VERIFY_TIMEOUT_S)
    figs["verify_returncode"] = checked.returncode
    figs["verify_tail"] = (checked.stdout + checked.stderr)[-1500:]
    figs["verify"] = "OK" if checked.returncode == 0 else "failed (verify_tail)"
    return figs


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """A command's result; one that runs out of time is killed and reads as failed, with
    what it printed, so the row and the JSON are still written."""
    try:
        return subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        out = [
            x.decode(errors="replace") if isinstance(x, bytes) else x or ""
            for x in (e.stdout, e.stderr)
        ]
        return subprocess.CompletedProcess(
            cmd, -9, out[0], out[1] + f"\ntimed out after {timeout} s"
        )


def write_tasks(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    choice = [
        {"q": f"What is {a} plus {a + 1}?", "options": [str(2 * a + 1), "no", str(a)], "gold": 0}
        for a in range(1, 9)
    ]
    gen = [{"q": f"{a} + {a}", "answer": str(2 * a)} for a in range(1, 5)]
    for name, rows, text in (("wf_choice", choice, MC_TASK), ("wf_gen", gen, GEN_TASK)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / f"{name}.yaml").write_text(text)
    return folder


def _job(info_file: Path) -> dict:
    info = json.loads(info_file.read_text())
    placement = info.get("device_map") or {}
    return {
        "shard": f"{info.get('task')}/{info.get('precision')}/{info.get('shard')}",
        "cuda_visible_devices": info.get("cuda_visible_devices"),
        # accelerate's device map: "cpu", "disk", or a GPU as an index or "cuda:<i>"
        "devices": sorted(
            {"cpu" if str(d) in ("cpu", "disk") else "cuda" for d in placement.values()}
        ),
        "seconds": info.get("seconds"),
        "peak_memory": info.get("peak_memory"),
    }


def _board_rows(csv: Path) -> int:
    return max(len(csv.read_text().strip().splitlines()) - 1, 0) if csv.exists() else 0
