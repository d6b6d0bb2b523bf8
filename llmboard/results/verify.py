"""``llmboard verify``: re-check every score's provenance against the files on disk.

Each score file names the prediction files it was computed from; their sidecars say
which weights, task definition and documents produced them. Verify recomputes each of
those identities from what is on disk now and reports every difference.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..workflow import layout


def score_files(results: Path) -> list[Path]:
    return sorted(p for p in (results / "scores").rglob("*.json")
                  if p.parent.name != layout.RECEIPT_FOLDER)


def verify(results: Path, tasks_dir: Path | None = None) -> list[str]:
    """Every problem found, one line each naming the file; empty when all is proven."""
    from ..checkpoints.manifest import checkpoint_sha256
    from ..hashing import sha256_file
    from ..settings import task_override_fields
    from ..tasks.definitions import Task, find_task_files, load_task
    from ..tasks.documents import dataset_fingerprint, load_docs

    problems = []
    scores = score_files(results)
    if not scores:
        return [f"{results}/scores: no score files"]
    workdir = results.parent  # score files name their inputs relative to the run's folder
    index = find_task_files(tasks_dir) if tasks_dir is not None else {}
    weights: dict[Path, str] = {}  # model folder -> checkpoint sha256 as the files are now
    fingerprints: dict[tuple, str] = {}  # (task file, task hash) -> dataset fingerprint now
    overridable = task_override_fields()
    for sp in scores:
        s = json.loads(sp.read_text())
        prov = s["provenance"]
        recorded = s.get("predictions")
        if not recorded:
            problems.append(f"{sp}: names no prediction files (written by an older llmboard); "
                            "delete it and re-run to re-score")
            continue
        infos = [workdir / p for p in recorded["infos"]]  # an absolute path stays as it is
        missing = [str(p) for p in infos + [workdir / p for p in recorded["parquets"]]
                   if not p.exists()]
        if missing:
            problems.append(f"{sp}: predictions missing: {', '.join(missing)}")
            continue
        info = json.loads(infos[0].read_text())
        model_dir = workdir / info["model_dir"]
        manifest = model_dir / "manifest.json"
        if not manifest.exists():
            problems.append(f"{sp}: model folder {model_dir} missing")
        else:
            if model_dir not in weights:
                files = json.loads(manifest.read_text())["files"]
                weights[model_dir] = checkpoint_sha256(
                    {f: sha256_file(model_dir / f) for f in files if (model_dir / f).exists()})
            if weights[model_dir] != prov["checkpoint_sha256"]:
                problems.append(f"{sp}: stale: checkpoint sha256 is now {weights[model_dir]}, "
                                f"scored with {prov['checkpoint_sha256']}")
        task_file = index.get(info["task"])
        task = Task(info["task"], info["task_definition"], task_file or Path("."))
        if task.hash != prov["task_hash"]:
            problems.append(f"{sp}: task definition in predictions hashes to {task.hash}, "
                            f"score says {prov['task_hash']}")
        if task_file is not None:
            overrides = {k: info["task_definition"].get(k) for k in overridable}
            current = load_task(task_file, overrides)
            if current.hash != prov["task_hash"]:
                problems.append(f"{sp}: stale: {task_file} now hashes to {current.hash}, "
                                f"scored with {prov['task_hash']}")
        key = (task_file, task.hash)
        try:
            if key not in fingerprints:
                fingerprints[key] = dataset_fingerprint(load_docs(task))
            if fingerprints[key] != prov["dataset_fingerprint"]:
                problems.append(f"{sp}: stale: dataset fingerprint is now {fingerprints[key]}, "
                                f"scored with {prov['dataset_fingerprint']}")
        except Exception as e:  # noqa: BLE001 - a dataset that cannot be read is a finding too
            problems.append(f"{sp}: dataset not readable: {e}")
    return problems
