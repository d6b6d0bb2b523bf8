"""Benchmark (#18, few-shot at nearly zero-shot cost): MMLU 5-shot, llmboard vs lm-eval.

MMLU with its description and 5 examples, first_n from each subject's dev split, on
N subjects x L documents (the first L of each test split), on the real
SmolLM2-135M-Instruct, in one dtype, on the CPU. The same documents go through:

- ours: the pipeline's own path, ``predict_shard`` once per subject (one shard per
  subject) on ``TransformersLM``, which computes the prompt prefix that a shard's
  contexts share (description + 5 examples) once, then only each question;
- lm-eval 0.4.13's ``hf`` model (its logits cache on, its default) through one
  ``simple_evaluate`` over all subjects, at each of a few fixed batch sizes.

Both run interleaved in this process, round after round (ours, lm-eval at the first
batch size, at the second, ...; then again), so that a slower or faster machine
moment hits both. Each timing covers the whole set of subjects: ours from request
building to the written prediction files, lm-eval's ``simple_evaluate`` (request
building, tokenisation, model, metrics); models are loaded, and lm-eval's task objects
built, before the timer. Reported per side: the minimum and median wall time over the
rounds, tokens through the model and tokens/s, and the speed-up over lm-eval's fastest
batch size (min/min and median/median).

Checked every round: accuracy per subject identical to lm-eval's at every batch size
(in fp32 the run stops otherwise; in bf16 differences are recorded); max |dLL| ours vs each lm-eval batch size and, for scale,
between lm-eval's own batch sizes; documents whose argmax differs.

    nice -n 19 .venv/bin/python -m bench.prefix_sharing --dtype fp32
    nice -n 19 .venv/bin/python -m bench.prefix_sharing --dtype bf16

Long prompts (~2,800 tokens, 5 history passages; SmolLM2's window is 8192):

    nice -n 19 .venv/bin/python -m bench.prefix_sharing --subjects high_school_european_history --limit 10
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # the bars lm-eval does not switch on itself

N_SHOTS = 5
SEED = 1234  # predict_shard's seed; lm-eval's fewshot_random_seed default (first_n draws none)
DEFAULT_SUBJECTS = [  # prompts of ~260 (world_religions) to ~600 tokens (astronomy)
    "abstract_algebra",
    "anatomy",
    "astronomy",
    "college_biology",
    "college_physics",
    "high_school_geography",
    "marketing",
    "nutrition",
    "philosophy",
    "world_religions",
]


@dataclass(frozen=True)
class Subject:
    name: str
    task: object  # our Task, limited to the first L documents, 5-shot
    cfg: dict  # lm-eval's task config on the same documents and dev split


# ------------------------------------------------------------------ tasks
def build_subject(name: str, limit: int, work: Path) -> Subject:
    """``lmeval_mmlu`` of tests/test_chat_prompts.py, for any subject: our task with
    5 examples first_n from the dev split, and lm-eval's config on the same files."""
    from llmboard.tasks.definitions import find_task_files, load_task
    from llmboard.tasks.documents import load_docs, load_split
    from lmeval_oracle import mc_config, write_jsonl

    INDEX = find_task_files(REPO / "tasks")
    if f"mmlu_{name}" not in INDEX:
        subjects = sorted(k[5:] for k in INDEX if k.startswith("mmlu_"))
        raise SystemExit(f"no MMLU subject {name!r}; there are: {' '.join(subjects)}")
    ours = load_task(INDEX[f"mmlu_{name}"], {"limit": limit, "fewshot": {"n": N_SHOTS}})
    dev = load_split(ours, "dev")
    folder = work / name
    folder.mkdir(parents=True)
    files = {
        "test": write_jsonl(folder / "test.jsonl", load_docs(ours)),
        "dev": write_jsonl(folder / "dev.jsonl", [dev[i] for i in range(len(dev))]),
    }
    cfg = mc_config(
        ours,
        f"ps_{name}",
        files,
        num_fewshot=N_SHOTS,
        fewshot_split="dev",
        fewshot_config={"sampler": "first_n"},
    )
    return Subject(name, ours, cfg)


# ------------------------------------------------------------------ the two sides
def run_ours(model, tok, context, subjects: list[Subject], budget: int, work: Path) -> dict:
    """Every subject through ``predict_shard`` (one shard each) on a fresh engine."""
    import polars as pl

    from llmboard.inference.engine import TransformersLM
    from llmboard.inference.predictions import predict_shard

    lm = TransformersLM(model, tok, token_budget=budget)
    infos = {}
    t = time.perf_counter()
    for s in subjects:
        infos[s.name] = predict_shard(
            lm,
            context,
            s.task,
            0,
            1,
            work / f"{s.name}.parquet",
            work / f"{s.name}.json",
            seed=SEED,
        )
    wall = time.perf_counter() - t
    frames = {s.name: pl.read_parquet(work / f"{s.name}.parquet") for s in subjects}
    return {"wall": wall, "stats": dict(lm.stats), "infos": infos, "frames": frames}


def run_lmeval(lm, subjects: list[Subject], limit: int) -> dict:
    """One ``simple_evaluate`` over all subjects, as lm-eval runs MMLU: the requests of
    every subject go to the model in one call, batched together."""
    import lm_eval

    from lmeval_oracle import lmeval_task

    tasks = [lmeval_task(s.cfg) for s in subjects]
    t = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=tasks, log_samples=True, limit=limit)
    wall = time.perf_counter() - t
    return {
        "wall": wall,
        "results": {s.name: out["results"][s.cfg["task"]] for s in subjects},
        "samples": {s.name: out["samples"][s.cfg["task"]] for s in subjects},
    }


# ------------------------------------------------------------------ what each side computed
def ours_facts(run: dict, subjects: list[Subject]) -> dict:
    """Accuracy per subject and log-likelihood per (subject, doc, choice), from the
    prediction files."""
    from llmboard.tasks.metrics import per_doc_metrics

    acc, lls = {}, {}
    for s in subjects:
        df = run["frames"][s.name]
        m = per_doc_metrics(df)
        acc[s.name] = {k: sum(m[k]) / len(m[k]) for k in s.task.metrics}
        for doc, choice, ll in zip(df["doc_id"], df["choice"], df["loglikelihood"]):
            lls[(s.name, doc, choice)] = ll
    return {"acc": acc, "lls": lls}


def lmeval_facts(run: dict, subjects: list[Subject]) -> dict:
    """Accuracy per subject as lm-eval reports it; log-likelihoods from its samples."""
    from lmeval_oracle import per_request_from_samples

    acc, lls = {}, {}
    for s in subjects:
        acc[s.name] = {k: run["results"][s.name][f"{k},none"] for k in s.task.metrics}
        for (doc, choice), (ll, _) in per_request_from_samples(run["samples"][s.name]).items():
            lls[(s.name, doc, choice)] = ll
    return {"acc": acc, "lls": lls}


def choice_chars(ours: dict, subjects: list[Subject]) -> dict:
    """(subject, doc, choice) -> the choice's length in characters (acc_norm's divisor)."""
    frames = ours["frames"]
    return {
        (s.name, d, c): n
        for s in subjects
        for d, c, n in zip(
            frames[s.name]["doc_id"], frames[s.name]["choice"], frames[s.name]["choice_chars"]
        )
    }


def lmeval_forward_rows(lm, samples: dict) -> list[int]:
    """Lengths of the rows lm-eval's HFLM forwards, longest first (its order).

    What is counted: ``TemplateLM.loglikelihood`` encodes each request with
    ``_encode_pair`` (contexts are never empty here); ``HFLM._loglikelihood_tokens``
    then groups requests in a ``Collator(group_by="contexts")`` keyed by
    ``context_enc + continuation_enc[:-1]`` (its logits cache) and forwards one row per
    key, of ``(context_enc + continuation_enc)[-(max_length + 1):][:-1]``, i.e.
    ``min(len(key), max_length)`` tokens. MMLU's continuations (" A".." D") are one
    token each, so that is one row per distinct context, the context's tokens.
    """
    keys = set()
    for per_subject in samples.values():
        for sample in per_subject:
            for context, continuation in sample["arguments"]:
                ctx, cont = lm._encode_pair(context, continuation)
                keys.add(tuple(ctx + cont[:-1]))
    return sorted((min(len(k), lm.max_length) for k in keys), reverse=True)


def padded_tokens(rows: list[int], batch_size: int) -> int:
    """Tokens in lm-eval's padded batches: rows sorted longest first, ``batch_size`` at a
    time, each batch padded to its first (longest) row."""
    return sum(rows[i] * len(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size))


# ------------------------------------------------------------------ comparisons
def max_dll(a: dict, b: dict) -> float:
    if a.keys() != b.keys():
        raise SystemExit(f"different requests: {len(a)} vs {len(b)}")
    return max(abs(a[k] - b[k]) for k in a)


def picks(lls: dict, chars: dict, metric: str) -> dict:
    """(subject, doc) -> the choice picked: by log-likelihood (acc), or by log-likelihood
    per character (acc_norm); the first of equals, as numpy's argmax."""
    best: dict = {}
    for (subject, doc, choice), ll in sorted(lls.items()):
        score = ll / max(chars[(subject, doc, choice)], 1) if metric == "acc_norm" else ll
        if (subject, doc) not in best or score > best[(subject, doc)][1]:
            best[(subject, doc)] = (choice, score)
    return {k: choice for k, (choice, _) in best.items()}


def argmax_flips(a: dict, b: dict, chars: dict, metrics: list[str]) -> dict:
    """metric -> documents whose pick differs between two runs."""
    out = {}
    for m in metrics:
        pa, pb = picks(a, chars, m), picks(b, chars, m)
        out[m] = sum(pa[k] != pb[k] for k in pa)
    return out


def accuracy_differences(ours: dict, theirs: dict) -> dict:
    """Subjects whose accuracy differs from lm-eval's: {subject: (ours, lm-eval)}."""
    return {
        s: (ours["acc"][s], theirs["acc"][s])
        for s in ours["acc"]
        if ours["acc"][s] != theirs["acc"][s]
    }


def compare_round(ours: dict, lmeval: dict, chars: dict, metrics: list[str]) -> dict:
    """max |dLL| and argmax flips: ours vs each lm-eval batch size, and between lm-eval's
    own batch sizes (its spread, the scale for the first)."""
    out: dict = {"ours_vs_lmeval": {}, "lmeval_vs_lmeval": {}}
    for b, theirs in lmeval.items():
        out["ours_vs_lmeval"][f"b{b}"] = {
            "max_dll": max_dll(ours["lls"], theirs["lls"]),
            "argmax_flips": argmax_flips(ours["lls"], theirs["lls"], chars, metrics),
        }
    sizes = list(lmeval)
    for i, b1 in enumerate(sizes):
        for b2 in sizes[i + 1 :]:
            a, b = lmeval[b1]["lls"], lmeval[b2]["lls"]
            out["lmeval_vs_lmeval"][f"b{b1}_vs_b{b2}"] = {
                "max_dll": max_dll(a, b),
                "argmax_flips": argmax_flips(a, b, chars, metrics),
            }
    return out


# ------------------------------------------------------------------ summary
def wall_summary(walls: list[float], tokens: int) -> dict:
    lo, mid = min(walls), statistics.median(walls)
    return {
        "walls_s": walls,
        "min_s": lo,
        "median_s": mid,
        "tokens": tokens,
        "tokens_per_s_min": tokens / lo,
        "tokens_per_s_median": tokens / mid,
    }


def speedups(sides: dict, sizes: list[int]) -> dict:
    """Ours vs lm-eval's fastest batch size, by minimum and by median."""
    out = {}
    for stat in ("min_s", "median_s"):
        b = min(sizes, key=lambda s: sides[f"lmeval_b{s}"][stat])
        out[stat] = {
            "lmeval_batch_size": b,
            "speedup": sides[f"lmeval_b{b}"][stat] / sides["ours"][stat],
        }
    return out


def worst_over_rounds(rounds: list[dict], group: str) -> dict:
    """The largest max |dLL| and argmax flips over the rounds, per comparison."""
    out: dict = {}
    for r in rounds:
        for name, c in r["compare"][group].items():
            w = out.setdefault(name, {"max_dll": 0.0, "argmax_flips": {}})
            w["max_dll"] = max(w["max_dll"], c["max_dll"])
            for m, n in c["argmax_flips"].items():
                w["argmax_flips"][m] = max(w["argmax_flips"].get(m, 0), n)
    return out


def print_subjects(first: dict, subjects: list[Subject]) -> None:
    print(
        f"{'subject':<30} {'docs':>5} {'requests':>8} {'mean ctx tok':>12} "
        f"{'shared prefix':>13} {'acc':>7}"
    )
    for s in subjects:
        df = first["frames"][s.name]
        per_doc = df.unique("doc_id")
        prefix = first["infos"][s.name]["engine_stats"].get("prefix_tokens", 0)
        acc = first["facts"]["acc"][s.name]["acc"]
        print(
            f"{s.name:<30} {per_doc.height:>5} {df.height:>8} "
            f"{per_doc['ctx_tokens'].mean():>12.0f} {prefix:>13} {acc:>7.4f}"
        )


def print_summary(summary: dict) -> None:
    sides = summary["sides"]
    print(
        f"\n{'side':<16} {'min s':>8} {'median s':>9} {'tokens':>10} "
        f"{'tok/s (min)':>11} {'tok/s (med)':>11}"
    )
    for name, s in sides.items():
        print(
            f"{name:<16} {s['min_s']:>8.2f} {s['median_s']:>9.2f} {s['tokens']:>10,} "
            f"{s['tokens_per_s_min']:>11.0f} {s['tokens_per_s_median']:>11.0f}"
        )
    for stat, label in (("min_s", "min/min"), ("median_s", "median/median")):
        sp = summary["speedup"][stat]
        print(
            f"speed-up, ours vs lm-eval's fastest (b={sp['lmeval_batch_size']}), "
            f"{label}: x{sp['speedup']:.2f}"
        )
    t = summary["tokens"]
    print(
        f"tokens through the model: ours {t['ours']:,} (shared prefixes {t['ours_prefix']:,}), "
        f"lm-eval {t['lmeval']:,} unpadded: lm-eval computes x{t['lmeval'] / t['ours']:.2f} "
        f"as many"
    )
    print(f"accuracy identical to lm-eval's at every batch size, in every round: {summary['acc']}")
    for group in ("ours_vs_lmeval", "lmeval_vs_lmeval"):
        for name, c in summary["worst"][group].items():
            label = f"ours vs lm-eval {name}" if group == "ours_vs_lmeval" else f"lm-eval {name}"
            print(
                f"{label:<26} max |dLL| {c['max_dll']:.2e}, docs picked differently "
                f"{c['argmax_flips']} (worst round)"
            )


# ------------------------------------------------------------------ main
def parse_args():
    from llmboard.settings import schema_default

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--subjects", nargs="+", default=DEFAULT_SUBJECTS)
    ap.add_argument("--limit", type=int, default=50, help="documents per subject")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lmeval-batch-sizes", nargs="+", type=int, default=[8, 32])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--token-budget", type=int, default=schema_default("inference", "token_budget"))
    ap.add_argument(
        "--json", type=Path, default=None, help="default: bench/results/prefix_sharing-<dtype>.json"
    )
    ap.add_argument(
        "--out", type=Path, default=REPO / "bench" / "out", help="converted model folder's parent"
    )
    return ap.parse_args()


def load_models(model_dir: Path, dtype: str, sizes: list[int]):
    """Ours (model, tokenizer, context) and lm-eval's HFLM at each batch size."""
    from bench.engine_vs_lmeval import PRECISION
    from llmboard.inference.loading import load_model
    from lmeval_oracle import lmeval_model

    ours = load_model(model_dir, dtype)
    theirs = {b: lmeval_model(str(model_dir), dtype=PRECISION[dtype], batch_size=b) for b in sizes}
    return ours, theirs


def one_round(round_no: int, ours_model, lmevals: dict, subjects, args, work: Path) -> dict:
    """Ours, then lm-eval at each batch size; checked against each other."""
    ours = run_ours(*ours_model, subjects, args.token_budget, work / f"ours-{round_no}")
    ours["facts"] = ours_facts(ours, subjects)
    theirs = {}
    for b, lm in lmevals.items():
        run = run_lmeval(lm, subjects, args.limit)
        run["facts"] = lmeval_facts(run, subjects)
        theirs[b] = run
    differs = {b: accuracy_differences(ours["facts"], run["facts"]) for b, run in theirs.items()}
    differs = {f"b{b}": d for b, d in differs.items() if d}
    # fp32 must agree exactly; in bf16 lm-eval disagrees with itself across batch sizes,
    # so differences are recorded and compared with that spread instead
    if differs and args.dtype == "fp32":
        raise SystemExit(f"round {round_no}: accuracy differs from lm-eval: {differs}")
    metrics = sorted({m for s in subjects for m in s.task.metrics})
    chars = choice_chars(ours, subjects)
    compare = compare_round(
        ours["facts"], {b: r["facts"] for b, r in theirs.items()}, chars, metrics
    )
    return {"ours": ours, "lmeval": theirs, "compare": compare, "acc_differs": differs}


def record(round_no: int, r: dict) -> dict:
    """What the JSON keeps of one round."""
    return {
        "round": round_no,
        "ours_wall_s": r["ours"]["wall"],
        "ours_engine_stats": r["ours"]["stats"],
        "lmeval_wall_s": {f"b{b}": run["wall"] for b, run in r["lmeval"].items()},
        "acc": r["ours"]["facts"]["acc"],
        "compare": r["compare"],
        "acc_differs": r["acc_differs"],
    }


def summarise(rounds: list[dict], stats: dict, rows: list[int], sizes: list[int]) -> dict:
    """Walls, tokens and speed-ups over the rounds; the worst disagreements."""
    sides = {"ours": wall_summary([r["ours_wall_s"] for r in rounds], stats["forward_tokens"])}
    for b in sizes:
        walls = [r["lmeval_wall_s"][f"b{b}"] for r in rounds]
        sides[f"lmeval_b{b}"] = wall_summary(walls, sum(rows))
    return {
        "sides": sides,
        "speedup": speedups(sides, sizes),
        "tokens": {
            "ours": stats["forward_tokens"],
            "ours_prefix": stats.get("prefix_tokens", 0),
            "ours_padded": stats["padded_tokens"],
            "lmeval": sum(rows),
            "lmeval_rows": len(rows),
            "lmeval_padded": {f"b{b}": padded_tokens(rows, b) for b in sizes},
        },
        "acc": not any(r["acc_differs"] for r in rounds),
        "worst": {g: worst_over_rounds(rounds, g) for g in ("ours_vs_lmeval", "lmeval_vs_lmeval")},
    }


def write_results(path: Path, args, summary: dict, rounds: list[dict]) -> None:
    import lm_eval
    import torch
    import transformers

    out = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": "SmolLM2-135M-Instruct",
        "n_shots": N_SHOTS,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "lm_eval": lm_eval.__version__,
        },
        "summary": summary,
        "rounds": rounds,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"\nwrote {path}")


def main() -> None:
    args = parse_args()
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    logging.basicConfig(level=logging.WARNING)
    for name in ("lm_eval", "llmboard"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import lm_eval
    import torch

    from bench.engine_vs_lmeval import ensure_model

    torch.set_num_threads(args.threads)
    model_dir = ensure_model(args.out)
    sizes = args.lmeval_batch_sizes
    print(
        f"SmolLM2-135M-Instruct, {args.dtype}, MMLU {N_SHOTS}-shot first_n, "
        f"{len(args.subjects)} subjects x {args.limit} docs, {args.rounds} rounds, "
        f"threads {torch.get_num_threads()}, token budget {args.token_budget}, "
        f"lm-eval {lm_eval.__version__} batch sizes {sizes}"
    )
    ours_model, lmevals = load_models(model_dir, args.dtype, sizes)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subjects = [build_subject(n, args.limit, work / "tasks") for n in args.subjects]
        for i in range(1, args.rounds + 1):
            r = one_round(i, ours_model, lmevals, subjects, args, work)
            walls = " ".join(f"b{b} {run['wall']:.2f}" for b, run in r["lmeval"].items())
            print(f"round {i}: ours {r['ours']['wall']:.2f} s, lm-eval {walls} s", flush=True)
            if i == 1:
                first = r["ours"]
                rows = lmeval_forward_rows(lmevals[sizes[0]], r["lmeval"][sizes[0]]["samples"])
            rounds.append(record(i, r))
    print()
    print_subjects(first, subjects)
    summary = summarise(rounds, first["stats"], rows, sizes)
    print_summary(summary)
    json_path = args.json or REPO / "bench" / "results" / f"prefix_sharing-{args.dtype}.json"
    write_results(json_path, args, summary, rounds)


if __name__ == "__main__":
    main()
