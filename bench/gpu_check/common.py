"""What every check shares: the models' shapes, the result rows, the run's setup, the
timer and the comparisons of two runs' log-likelihoods. Standard library only at import
(torch and transformers load inside functions, after the kit's wheels are activated)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

log = logging.getLogger("gpu_check")

# The GPU machine lacks these; the check must run without them (the test hides them).
ABSENT_ON_GPU_MACHINE = ("polars", "snakemake", "bitsandbytes", "gguf", "jsonschema", "datasets")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
VOCAB = 49152  # SmolLM2's tokenizer: every model uses it, so token ids are valid

CHECKS = (
    "engine",
    "precision",
    "quant",
    "split",
    "oom",
    "plan",
    "slots",
    "prefix",
    "generation",
    "invariance",
    "scale",
    "workflow",
)
CHECK_NUMBER = dict(
    engine=1,
    precision=2,
    quant=2,
    split=3,
    oom=4,
    plan=5,
    slots=6,
    prefix=7,
    generation=8,
    invariance=9,
    scale=10,
    workflow=11,
)
QUANT = ("int8", "nf4")

# Targets shared by several checks (the others are in their checks' modules). fp32 on the
# GPU: masked and causal attention kernels sum in other orders.
FP32_TOL = {"cpu": 1e-4, "cuda": 1e-3}
BF16_ERROR_RATIO = 1.5  # the engine's error against fp32, at most this times plain's
# #30: on the GPU the engine at least this much faster than lm-eval's batched algorithms
# (baselines.py) at batch 32 and at the largest batch that fits ("auto"). On the CPU the
# same code at one small batch: lm-eval's full-vocabulary log-softmax at every position
# of 64 few-shot prompts is 2 G values, and 64 rows of them at once 8 GB
LMEVAL_SPEEDUP = 2.0
LMEVAL_BATCHES = {"cuda": (32, "auto"), "cpu": (4,)}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str  # "llama" or "qwen2"
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    tied: bool
    max_positions: int
    # tiny models: every matrix x8, as tests/conftest.py does
    weight_scale: float = 1.0
    # real shapes: the final norm x8, so logits spread as a trained model's do (std ~4, not
    # 0.5): near-uniform predictions would hide precision errors and never flip an answer
    logit_scale: float = 1.0


MODELS = {
    "smollm2-135m": ModelSpec(
        "smollm2-135m", "llama", 576, 30, 9, 3, 1536, True, 8192, logit_scale=8.0
    ),
    "qwen2-1.5b-untied": ModelSpec(
        "qwen2-1.5b-untied", "qwen2", 1536, 28, 12, 2, 8960, False, 32768, logit_scale=8.0
    ),
    # check 10 only (scale.py): Qwen2-7B's layers, SmolLM2's vocabulary
    "qwen2-7b": ModelSpec(
        "qwen2-7b", "qwen2", 3584, 28, 28, 4, 18944, False, 32768, logit_scale=8.0
    ),
    "tiny-llama": ModelSpec("tiny-llama", "llama", 64, 2, 4, 2, 128, True, 2048, weight_scale=8.0),
    "tiny-qwen2": ModelSpec("tiny-qwen2", "qwen2", 64, 2, 4, 2, 128, False, 2048, weight_scale=8.0),
}
GPU_MODELS = ("smollm2-135m", "qwen2-1.5b-untied")
TINY_MODELS = ("tiny-llama", "tiny-qwen2")


@dataclass
class Row:
    check: int
    name: str
    status: str  # "pass", "fail" or "skipped"
    figures: dict
    target: str
    note: str = ""


def verdict(ok: bool) -> str:
    return "pass" if ok else "fail"


def skipped(check: str, name: str, why: str) -> Row:
    return Row(CHECK_NUMBER[check], name, "skipped", {}, "", f"skipped: {why}")


def failed(check: str, name: str, error: BaseException) -> Row:
    log.error("%s failed", name, exc_info=error if error.__traceback__ else None)
    text = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return Row(CHECK_NUMBER[check], name, "fail", {}, "", f"error: {text[:300]}")


# ----------------------------------------------------------------------------- setup
@dataclass
class Setup:
    device: str  # "cuda" or "cpu"
    models: list[ModelSpec]
    checks: set[str]
    budget: int
    requests: list
    groups: list[int]
    tokenizer_dir: Path
    work: Path
    bnb: str | None  # None when bitsandbytes imports, else why not
    gpu_memory_gb: float | None
    fewshot: list  # check 7's requests
    fewshot_groups: list[int]
    generation: list  # check 8's requests
    timings: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def engine_precisions(self) -> list[str]:
        """fp32 is every comparison's reference, so it always runs first."""
        want = {"fp32"}
        if "engine" in self.checks and self.cuda:
            want.add("bf16")
        if "precision" in self.checks:
            want |= {"bf16", "fp16"} if self.cuda else {"bf16"}  # fp16 on CPU: emulated, slow
        if "quant" in self.checks and self.bnb is None:
            want |= set(QUANT)
        if "plan" in self.checks and self.cuda:
            want.add("bf16")
        if "split" in self.checks:
            want.add(self.split_precision())
        return [p for p in ("fp32", "bf16", "fp16", "int8", "nf4") if p in want]

    def plain_precisions(self) -> list[str]:
        if "engine" not in self.checks:
            return []
        return ["fp32", "bf16"] if self.cuda else ["fp32"]

    @property
    def lmeval_batches(self) -> tuple:
        return LMEVAL_BATCHES[self.device]

    def split_precision(self) -> str:
        return "bf16" if self.cuda else "fp32"


class Timer:
    def __init__(self, timings: dict, name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.t0 = time.perf_counter()
        log.info("%s ...", self.name)

    def __exit__(self, *exc):
        self.timings[self.name] = round(time.perf_counter() - self.t0, 2)
        log.info("%s: %.1f s", self.name, self.timings[self.name])


# ----------------------------------------------------------------------------- runs
@dataclass
class Run:
    ll: list[float]
    greedy: list[bool]
    wall: float
    request_tokens: int  # sum over requests of context + continuation - 1
    forward_tokens: int  # tokens through the model (contexts shared by the engine)
    peak_bytes: int | None = None  # torch.cuda.max_memory_allocated during the run
    resident_bytes: int | None = None  # allocated before the run: weights and buffers
    batch_size: int | None = None  # lm-eval's runs: the batch size it ran at


# ----------------------------------------------------------------------------- comparisons
def abs_diffs(a: list[float], b: list[float]) -> list[float]:
    return [abs(x - y) for x, y in zip(a, b)]


def picks(ll: list[float], groups: list[int]) -> dict[int, int]:
    """context -> index of its most likely continuation (a multiple-choice answer)."""
    best: dict[int, int] = {}
    for i, g in enumerate(groups):
        if g not in best or ll[i] > ll[best[g]]:
            best[g] = i
    return best


def pick_agreement(a: list[float], b: list[float], groups: list[int]) -> float:
    pa, pb = picks(a, groups), picks(b, groups)
    return sum(pa[g] == pb[g] for g in pa) / len(pa)


def greedy_flips(a: list[bool], b: list[bool]) -> int:
    return sum(x != y for x, y in zip(a, b))


def agreement(run: Run, ref: Run, groups: list[int]) -> dict:
    d = abs_diffs(run.ll, ref.ll)
    return {
        "max_abs_dll": max(d),
        "mean_abs_dll": sum(d) / len(d),
        "pick_agreement": pick_agreement(run.ll, ref.ll, groups),
        "greedy_flips": greedy_flips(run.greedy, ref.greedy),
        "finite": all(math.isfinite(x) for x in run.ll),
    }


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def speed(run: Run, n: int) -> dict:
    return {
        "wall_s": run.wall,
        "req_per_s": n / run.wall,
        "tok_per_s": run.request_tokens / run.wall,
    }


def lmeval_figures(engine: Run, runs: dict, p: str, n: int, sizes) -> dict:
    """The engine against lm-eval's batched runs at precision ``p`` and batch ``sizes``:
    each one's speed, batch size, the engine's speedup and the largest log-likelihood
    difference."""
    figs = {}
    for size in sizes:
        run = runs["lmeval", size, p]
        figs[f"lmeval_{size}"] = {**speed(run, n), "batch_size": run.batch_size}
        figs[f"speedup_vs_lmeval_{size}"] = run.wall / engine.wall
        figs[f"max_abs_dll_vs_lmeval_{size}"] = max(abs_diffs(engine.ll, run.ll))
        figs[f"greedy_flips_vs_lmeval_{size}"] = greedy_flips(engine.greedy, run.greedy)
    return figs


def agrees_with_lmeval(figs: dict, sizes, tol: float) -> bool:
    return all(figs[f"max_abs_dll_vs_lmeval_{s}"] <= tol for s in sizes)


def beats_lmeval(figs: dict, sizes) -> bool:
    return all(figs[f"speedup_vs_lmeval_{s}"] >= LMEVAL_SPEEDUP for s in sizes)


def missing(runs: dict, errors: dict, keys) -> BaseException | None:
    for key in keys:  # (kind, ..., precision)
        if key not in runs:
            what = " ".join(str(k) for k in key[:-1])
            return errors.get(key[-1]) or RuntimeError(f"no {what} run at {key[-1]}")
    return None
