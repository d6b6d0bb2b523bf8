"""Check 3 (split): a device_map spilling layers off the GPU (on the CPU: to disk) gives
the one-device numbers."""

from __future__ import annotations

from pathlib import Path

from .common import ModelSpec, Row, Run, Setup, Timer, abs_diffs, failed, greedy_flips, verdict
from .models import free_memory, load, run_engine

SPLIT_TOL = 1e-3  # offloaded layers run on the same device: the numbers should be equal


def split_rows(setup: Setup, spec: ModelSpec, folder: Path, ref: Run | None) -> list[Row]:
    p = setup.split_precision()
    if ref is None:
        return [failed("split", f"device_map split/{spec.name}/{p}", RuntimeError("no reference"))]
    if setup.cuda:
        rows = [split_row(setup, spec, folder, ref, "gpu+cpu auto", gpu_split_kwargs(folder, p))]
        placement = rows[0].figures.get("placement", {})
        if rows[0].status == "fail" and placement.get("lm_head") in ("cpu", "disk"):
            # isolate the cause: the same split with only the output head moved back
            dm = {k: int(v) if v.isdigit() else v for k, v in placement.items()}
            dm["lm_head"] = 0
            rows.append(
                split_row(setup, spec, folder, ref, "gpu+cpu, head on gpu", {"device_map": dm})
            )
        return rows
    offload = setup.work / f"offload-{spec.name}"
    kw = {"device_map": cpu_disk_map(spec), "offload_folder": str(offload)}
    return [split_row(setup, spec, folder, ref, "cpu+disk", kw)]


def gpu_split_kwargs(folder: Path, precision: str) -> dict:
    """max_memory on GPU 0 for about half the weights: accelerate puts the rest on the CPU
    (kept there, each layer copied to the GPU when it runs)."""
    from llmboard.checkpoints.manifest import load_manifest
    from llmboard.inference.precisions import PRECISIONS

    weights = load_manifest(folder)["parameters"] * PRECISIONS[precision]["bytes"]
    return {"max_memory": {0: int(weights / 2), "cpu": 64 * 2**30}}


def cpu_disk_map(spec: ModelSpec) -> dict:
    """Odd decoder layers offloaded to disk, the rest (the head too) on the CPU: on a CPU
    machine "auto" puts everything in one place, so the map is explicit."""
    dm = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu"}
    dm |= {f"model.layers.{i}": "disk" if i % 2 else "cpu" for i in range(spec.layers)}
    dm["lm_head"] = "cpu"
    return dm


def split_row(setup: Setup, spec: ModelSpec, folder: Path, ref: Run, label: str, kw: dict) -> Row:
    p = setup.split_precision()
    name = f"device_map split ({label})/{spec.name}/{p}"
    figs: dict = {}
    try:
        with Timer(setup.timings, f"{spec.name} split {label}"):
            model, tok, placement = load(folder, p, **kw)
            figs["placement"] = placement
            figs["lm_head_on"] = placement.get("lm_head", placement.get("", "?"))
            where = [str(v) for v in placement.values()]
            figs["modules_per_device"] = {d: where.count(d) for d in sorted(set(where))}
            run = run_engine(model, tok, setup.requests, setup.budget)
    except Exception as e:
        row = failed("split", name, e)
        row.figures = figs
        return row
    finally:
        model = tok = None
        free_memory()
    figs["max_abs_dll"] = max(abs_diffs(run.ll, ref.ll))
    figs["greedy_flips"] = greedy_flips(run.greedy, ref.greedy)
    figs["wall_s"] = run.wall
    split = len(figs["modules_per_device"]) > 1
    ok = split and figs["max_abs_dll"] <= SPLIT_TOL and figs["greedy_flips"] == 0
    target = f"modules on more than one device, max|dLL| <= {SPLIT_TOL:g} vs one device"
    return Row(3, name, verdict(ok), figs, target, "" if split else "no split happened")
