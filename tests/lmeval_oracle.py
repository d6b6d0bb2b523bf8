"""Run lm-evaluation-harness on the same documents, as a reference for tests and benchmarks.

The llmboard task's documents are written to a jsonl file and lm-eval gets a task
YAML with the same prompt, choices and target, written in lm-eval's own syntax
(HellaSwag through lm-eval's own ``process_docs``; Winogrande through lm-eval's
own partial-scoring functions), so any disagreement is an llmboard bug.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import yaml

from llmboard.tasks.definitions import Task
from llmboard.tasks.documents import load_docs

LMEVAL_TASKS = Path(importlib.util.find_spec("lm_eval").submodule_search_locations[0]) / "tasks"


def _jsonable(doc: dict) -> dict:
    return json.loads(json.dumps(doc, default=str))


def write_lmeval_task(task: Task, out_dir: Path, name: str | None = None) -> str:
    """Write the task's docs (after limit) and an lm-eval YAML; return the lm-eval task name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"llmboard_{task.name}"
    docs = load_docs(task)
    data = out_dir / f"{name}.jsonl"
    data.write_text("".join(json.dumps(_jsonable(d)) + "\n" for d in docs))
    s = task.spec
    cfg = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "target_delimiter": s["target_delimiter"],
        "metric_list": [
            {"metric": m, "aggregation": "mean", "higher_is_better": True} for m in task.metrics
        ],
    }
    if s.get("description"):
        cfg["description"] = s["description"]
    if task.name == "hellaswag":
        shutil.copy(LMEVAL_TASKS / "hellaswag" / "utils.py", out_dir / "utils.py")
        cfg.update(
            {
                "process_docs": "!function utils.process_docs",
                "doc_to_text": "{{query}}",
                "doc_to_target": "{{label}}",
                "doc_to_choice": "choices",
            }
        )
    elif task.name == "winogrande":
        shutil.copy(
            LMEVAL_TASKS / "winogrande" / "preprocess_winogrande.py",
            out_dir / "preprocess_winogrande.py",
        )
        cfg.update(
            {
                k: f"!function preprocess_winogrande.{k}"
                for k in ("doc_to_text", "doc_to_target", "doc_to_choice")
            }
        )
    else:
        cfg.update({k: s[k] for k in ("doc_to_text", "doc_to_choice", "doc_to_target")})
        if task.name == "boolq":  # this copy stores a bool `answer`, super_glue a `label`
            cfg["doc_to_target"] = "{{ answer | int }}"
    text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
    # lm-eval's loader understands the !function tag; safe_dump quotes it as a string
    text = text.replace("'!function ", "!function ").replace(".process_docs'", ".process_docs")
    for k in ("doc_to_text", "doc_to_target", "doc_to_choice"):
        text = text.replace(f"preprocess_winogrande.{k}'", f"preprocess_winogrande.{k}")
    (out_dir / f"{name}.yaml").write_text(text)
    return name


def lmeval_model(
    model_dir: str,
    *,
    dtype: str = "float32",
    batch_size: int | str = 8,
    softmax_dtype: str | None = "float32",
):
    """lm-eval's own HF model (logits cache on, its default), loaded once for several runs."""
    from lm_eval.models.huggingface import HFLM

    kw = {"softmax_dtype": softmax_dtype} if softmax_dtype else {}
    return HFLM(pretrained=model_dir, dtype=dtype, batch_size=batch_size, device="cpu", **kw)


def run_lmeval(
    model_dir: str,
    task: Task,
    work: Path,
    *,
    dtype: str = "float32",
    batch_size: int | str = 8,
    softmax_dtype: str | None = "float32",
    lm=None,
) -> dict:
    """Evaluate with lm-eval in this process; return {"results", "samples"} for the task."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    name = write_lmeval_task(task, work)
    if lm is None:
        lm = lmeval_model(
            model_dir, dtype=dtype, batch_size=batch_size, softmax_dtype=softmax_dtype
        )
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[name],
        task_manager=TaskManager(include_path=str(work)),
        log_samples=True,
        num_fewshot=0,
    )
    return {"results": out["results"][name], "samples": out["samples"][name]}


def per_request_from_samples(samples: list[dict]) -> dict[tuple[int, int], tuple[float, bool]]:
    """(doc_id, choice) -> (loglikelihood, is_greedy) from lm-eval's logged samples."""
    out = {}
    for s in samples:
        for j, resp in enumerate(s["resps"]):
            ll, greedy = resp[0]
            out[(int(s["doc_id"]), j)] = (float(ll), bool(greedy))
    return out


# generation tasks: ours -> (lm-eval's YAML, the split lm-eval evaluates, documents compared)
ORACLE = {
    "gsm8k_cot": ("gsm8k/gsm8k-cot.yaml", "test", 30),
    "triviaqa": ("triviaqa/default.yaml", "validation", 50),
    "nq_open": ("nq_open/nq_open.yaml", "validation", 50),
}


def lmeval_generation_config(
    name: str, docs: list[dict], data: Path, cache_dir: Path | None = None
) -> dict:
    """lm-eval's own config of generation task ``name`` (from its YAML in the installed
    package, ``ORACLE``) on ``docs``, written to ``data``: a jsonl file that lm-eval
    reads with its ``json`` dataset path (HF datasets' cache in ``cache_dir`` if given)."""
    rel, split, _ = ORACLE[name]
    data.write_text("".join(json.dumps(d, default=str) + "\n" for d in docs))
    cfg = yaml.safe_load((LMEVAL_TASKS / rel).read_text())
    cfg.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {split: str(data)}},
    )
    if cache_dir is not None:
        cfg["dataset_kwargs"]["cache_dir"] = str(cache_dir)
    cfg.pop("training_split", None)  # not shipped; zero-shot needs none
    return cfg


def lmeval_generation_task(name: str, root: Path, n: int | None = None):
    """(our task, its documents, lm-eval's own task on the same first N documents),
    lm-eval's requests built."""
    from lm_eval.api.task import ConfigurableTask

    from llmboard.tasks.definitions import load_task

    n = n or ORACLE[name][2]
    task = load_task(
        Path(__file__).resolve().parent.parent / "tasks" / f"{name}.yaml", {"limit": n}
    )
    docs = load_docs(task)
    cfg = lmeval_generation_config(name, docs, root / f"{name}.jsonl", root)
    lt = ConfigurableTask(config=cfg)
    lt.build_all_requests(limit=n)
    return task, docs, lt
