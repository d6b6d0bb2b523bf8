"""``run``: build the setup, run every check on every model, write gpu_check.json and .txt."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

from .common import (
    CHECKS,
    GPU_MODELS,
    MODELS,
    TINY_MODELS,
    ModelSpec,
    Row,
    Setup,
    Timer,
    failed,
    log,
)
from .engine import engine_rows, model_runs
from .generation import generation_rows
from .invariance import invariance_rows
from .kit import activate_wheels, bnb_status
from .models import save_random_model
from .oom import oom_rows
from .plan import plan_rows
from .precision import precision_rows
from .prefix import prefix_rows
from .report import environment, table
from .scale import scale_rows
from .slots import slot_rows
from .split import split_rows
from .workflow import workflow_rows
from .workload import make_fewshot_requests, make_generation_requests, make_requests


def make_setup(args, work: Path) -> Setup:
    import torch

    from llmboard.settings import schema_default

    if not (Path(args.tokenizer) / "tokenizer.json").exists():
        raise SystemExit(f"--tokenizer {args.tokenizer}: no tokenizer.json (run `prepare` first)")
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    names = args.models or (TINY_MODELS if args.tiny or not cuda else GPU_MODELS)
    checks = set(args.only.split(",")) if args.only else set(CHECKS)
    if unknown := checks - set(CHECKS):
        raise SystemExit(f"--only: unknown checks {sorted(unknown)}; choose from {CHECKS}")
    contexts = args.contexts or (96 if cuda and not args.tiny else 6)
    budget = args.token_budget or (8192 if cuda else schema_default("inference", "token_budget"))
    requests, groups = make_requests(contexts)
    big = cuda and not args.tiny
    fewshot, fewshot_groups = make_fewshot_requests(4 if big else 2, 24 if big else 8)
    generation = make_generation_requests(16 if big else 3, 32 if big else 8)
    # in GiB, as the memory plan reads gpu_memory_gb
    gpu_gb = torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None
    return Setup(
        device,
        [MODELS[n] for n in names],
        checks,
        budget,
        requests,
        groups,
        Path(args.tokenizer),
        work,
        bnb_status() if checks & {"quant", "scale"} else "not asked for",
        gpu_gb,
        fewshot,
        fewshot_groups,
        generation,
    )


def guarded(check: str, name: str, make_rows) -> list[Row]:
    """A check that raises becomes one failed row: the others still run, the JSON is written."""
    try:
        return make_rows()
    except Exception as e:
        return [failed(check, name, e)]


def model_rows(setup: Setup, spec: ModelSpec, first: bool) -> list[Row]:
    """Checks 1-5 and 7-9 on one model; its folder is removed after (3 GB at 1.5B)."""
    folder = setup.work / spec.name
    with Timer(setup.timings, f"{spec.name} build"):
        save_random_model(spec, setup.tokenizer_dir, folder, setup.device)
    runs, errors = model_runs(setup, spec, folder)
    rows = guarded("engine", f"engine/{spec.name}", partial(engine_rows, setup, spec, runs, errors))
    rows += guarded(
        "precision", f"precision/{spec.name}", partial(precision_rows, setup, spec, runs, errors)
    )
    if "split" in setup.checks:
        ref = runs.get(("engine", setup.split_precision()))
        rows += guarded(
            "split", f"split/{spec.name}", partial(split_rows, setup, spec, folder, ref)
        )
    if "plan" in setup.checks:
        make = partial(plan_rows, setup, spec, folder, runs, errors)
        rows += guarded("plan", f"memory plan/{spec.name}", make)
    if "oom" in setup.checks and first:  # the small model suffices
        rows += guarded("oom", f"oom/{spec.name}", partial(oom_rows, setup, spec, folder))
    if "prefix" in setup.checks:
        rows += guarded("prefix", f"prefix/{spec.name}", partial(prefix_rows, setup, spec, folder))
    if "generation" in setup.checks:
        make = partial(generation_rows, setup, spec, folder)
        rows += guarded("generation", f"generation/{spec.name}", make)
    if "invariance" in setup.checks:
        make = partial(invariance_rows, setup, spec, folder)
        rows += guarded("invariance", f"invariance/{spec.name}", make)
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def run_checks(setup: Setup) -> list[Row]:
    rows: list[Row] = []
    # checks 6, 10 and 11 build their own models: without 1-5 and 7-9 none is built here
    per_model = setup.checks - {"slots", "scale", "workflow"}
    for i, spec in enumerate(setup.models if per_model else []):
        rows += guarded("engine", f"build/{spec.name}", partial(model_rows, setup, spec, i == 0))
    if "slots" in setup.checks:
        rows += slot_rows(setup)
    if "scale" in setup.checks:
        rows += guarded("scale", "scale", partial(scale_rows, setup))
    if "workflow" in setup.checks:
        rows += guarded("workflow", "workflow", partial(workflow_rows, setup))
    return sorted(rows, key=lambda r: r.check)


def cmd_run(args) -> int:
    t0 = time.perf_counter()
    wheels = activate_wheels(Path(args.wheels) if args.wheels else None)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        setup = make_setup(args, Path(work))
        log.info("%s: %d requests, budget %d", setup.device, len(setup.requests), setup.budget)
        rows = run_checks(setup)
    setup.timings["total"] = round(time.perf_counter() - t0, 2)
    report = {
        "environment": environment(setup, wheels),
        "timings_s": setup.timings,
        "rows": [asdict(r) for r in rows],
        "failed": sum(r.status == "fail" for r in rows),
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    text = table(rows)
    (out / "gpu_check.txt").write_text(text + "\n")
    print(text)
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in setup.timings.items()))
    print(f"{report['failed']} failed, written to {out / 'gpu_check.json'}")
    return 1 if report["failed"] else 0
