"""The model interface the pipeline calls, and the backends that implement it.

``LM`` is lm-evaluation-harness' model API: ``loglikelihood``, ``loglikelihood_rolling``
(perplexity: a document's total log-likelihood over lm-eval's disjoint rolling windows,
``rolling_windows``) and ``generate_until``, each returning the per-request facts that prediction files store. A backend is a
subclass of ``LM`` plus a loader registered in ``BACKENDS`` under the name that
``inference.backend`` in the config selects; the job runner only ever calls
``load_backend``, so a second backend (vLLM on a GPU, an API) edits nothing else.

Importing this module imports no torch: the Snakefile's plan checks backend names.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..settings import SettingsError

if TYPE_CHECKING:
    from ..settings import InferenceSettings


@dataclass(frozen=True)
class LoglikelihoodRequest:
    context: str
    continuation: str


@dataclass(frozen=True)
class Loglikelihood:
    """log p(continuation | context), and what the prediction file records with it."""

    loglikelihood: float
    is_greedy: bool  # every continuation token is the argmax (lm-eval's is_greedy)
    context_tokens: int  # as tokenised, before any left truncation to the model window
    continuation_tokens: int
    from_store: bool = False  # answered by the request store, not computed now


@dataclass(frozen=True)
class RollingLoglikelihood:
    """log p(text) summed over lm-eval's rolling windows (``loglikelihood_rolling``)."""

    loglikelihood: float
    tokens: int  # tokens scored: every token of the text
    windows: int  # forward windows of at most the model window
    from_store: bool = False


def rolling_windows(
    tokens: list[int], prefix_token: int, max_length: int
) -> list[tuple[list[int], list[int]]]:
    """lm-eval 0.4.13's windows of ``loglikelihood_rolling``: ``get_rolling_token_windows``
    (``context_len=1``) then ``make_disjoint_window`` (``lm_eval/utils.py``), as its HFLM
    calls them. (context, continuation) pairs: every token is predicted exactly once; the
    first window is conditioned on ``prefix_token`` (BOS, else EOS), each later one on
    the tokens before it, so ``context + continuation[:-1]`` is at most ``max_length``."""
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    out: list[tuple[list[int], list[int]]] = []
    if not tokens:
        return out
    pred_len = max_length  # max_seq_len - context_len + 1, context_len 1
    first = min(max_length, len(tokens))
    windows = [([prefix_token] + tokens[: first - 1], tokens[:first])]
    predicted = first
    while predicted < len(tokens):
        n = min(len(tokens) - predicted, pred_len)
        end = predicted + n
        windows.append((tokens[end - max_length - 1 : end - 1], tokens[end - n : end]))
        predicted += n
    for a, b in windows:  # make_disjoint_window
        out.append((a[: len(a) - (len(b) - 1)], b))
    return out


@dataclass(frozen=True)
class Sampling:
    """How a request samples instead of decoding greedily, as HF ``generate`` with
    ``do_sample`` warps the logits (temperature, then top_k, then top_p). ``seed`` seeds
    the request's own generator: its samples depend on its own logits only, never on the
    other requests of the batch or their order, so a rerun draws the same text."""

    temperature: float
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    seed: int = 0


def sample_seed(seed: int, doc_id: int, repeat: int) -> int:
    """The seed of one (document, repeat)'s samples: from the task's sampling seed, so
    that a rerun, another shard layout or a larger limit draws the same texts, and each
    repeat its own."""
    import hashlib

    digest = hashlib.sha256(f"{seed}/{doc_id}/{repeat}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class GenerationRequest:
    context: str
    until: tuple[str, ...]  # stop strings; the text is cut before the first one
    max_gen_toks: int
    sampling: Sampling | None = None  # None: greedy


@dataclass(frozen=True)
class Generation:
    text: str  # cut before the first stop string, as lm-eval returns it
    tokens: int  # tokens generated (before cutting at a stop string)
    stop_reason: str  # "until", "eos", "max_gen_toks" or "window"
    context_tokens: int = 0  # the prompt as the model saw it (after left truncation)
    from_store: bool = False


def in_order(n: int, apart: list[int], one, together) -> list:
    """Answers to ``n`` requests in their order: each index of ``apart`` from
    ``one(i)``, the others from one call ``together(indices)`` (the transformers engine:
    requests past a sliding window alone, the rest through its own attention)."""
    out = {i: one(i) for i in apart}
    skip = set(apart)
    rest = [i for i in range(n) if i not in skip]
    out.update(zip(rest, together(rest) if rest else []))
    return [out[i] for i in range(n)]


class LM(ABC):
    """The interface every backend implements. ``stats`` counts work done (requests,
    tokens, batches); ``token_budget`` is the batch size in tokens as it stands (halved
    on out-of-memory); ``numerics`` names the backend's numeric form."""

    stats: dict
    token_budget: int
    numerics: str
    max_length: int  # the model window (lm-eval's max_length): rolling windows' size

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[Loglikelihood]:
        return self.loglikelihood_tokens([self.tokenize_pair(r) for r in requests])

    @abstractmethod
    def tokenize_pair(self, request: LoglikelihoodRequest) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) exactly as the model will see them."""

    @abstractmethod
    def loglikelihood_tokens(
        self, pairs: list[tuple[list[int], list[int]]]
    ) -> list[Loglikelihood]: ...

    @abstractmethod
    def generate_until(self, requests: list[GenerationRequest]) -> list[Generation]: ...

    @abstractmethod
    def tokenize_prompt(self, text: str) -> list[int]:
        """A generation prompt's token ids as ``generate_until`` encodes it, before it
        cuts the prompt to the model window (the request store's key)."""

    # ------------------------------------------------------ loglikelihood_rolling
    def window(self, max_length: int | None = None) -> int:
        """The rolling window: the model's ``max_length``, capped by a task's."""
        return self.max_length if max_length is None else min(int(max_length), self.max_length)

    def loglikelihood_rolling(
        self, texts: list[str], max_length: int | None = None
    ) -> list[RollingLoglikelihood]:
        """lm-eval's ``loglikelihood_rolling``: each text's total log-likelihood over
        ``rolling_windows`` of ``window(max_length)`` tokens."""
        size = self.window(max_length)
        return self.loglikelihood_rolling_tokens([self.tokenize_text(t) for t in texts], size)

    def tokenize_text(self, text: str) -> list[int]:
        """The text's token ids as lm-eval's ``tok_encode`` gives them."""
        raise NotImplementedError(f"{type(self).__name__} does not implement loglikelihood_rolling")

    def loglikelihood_rolling_tokens(
        self, token_lists: list[list[int]], window: int
    ) -> list[RollingLoglikelihood]:
        raise NotImplementedError(f"{type(self).__name__} does not implement loglikelihood_rolling")


@dataclass(frozen=True)
class ModelContext:
    """What a prediction file records about the loaded model that computed it."""

    model_dir: str
    checkpoint_sha256: str
    precision: str
    placement: dict  # module -> device, as the backend placed it
    load_seconds: float


class UnsupportedModel(SettingsError):
    """A model whose attention the engine's own kernels (prefix.py, invariance.py: full
    causal attention over a row's tree, its blocks and a shared prefix) would compute
    wrong: refused with the config field that says why, never approximated."""


@dataclass(frozen=True)
class LoadOptions:
    """How a job loads its model: the settings every backend receives (``inference:`` in
    the config, and the entry's ``trust_remote_code``)."""

    token_budget: int
    device_map: str | dict | None = None
    max_memory: dict | None = None
    offload_folder: str | None = None
    trust_remote_code: bool = False
    # a request's numbers independent of batching, budget and shards (docs/engine.md)
    batch_invariant: bool = False
    # generation: draft tokens per greedy row and step (prompt lookup; texts unchanged)
    draft_tokens: int = 0

    @classmethod
    def of(cls, inference: InferenceSettings, trust_remote_code: bool = False) -> LoadOptions:
        """The options a job loads with, from the config's ``inference:`` (the plan's
        inference jobs, and benchmarks that time the engine as a job runs it, so that a
        setting added here reaches them all)."""
        return cls(
            token_budget=inference.token_budget,
            device_map=inference.device_map,
            max_memory=inference.max_memory,
            offload_folder=inference.offload_folder,
            trust_remote_code=trust_remote_code,
            batch_invariant=inference.batch_invariant,
            draft_tokens=inference.draft_tokens,
        )


class Loaded(NamedTuple):
    """A backend's loader returns the LM, its tokenizer (chat templates render with it)
    and the context that prediction files record."""

    lm: LM
    tokenizer: Any
    context: ModelContext


# name -> "module:loader", each loader ``(model_dir, precision, LoadOptions) -> Loaded``;
# imported only when a job loads a model (no torch at plan time)
BACKENDS = {"transformers": "llmboard.inference.engine:load"}


def check_backend(name: str, where: str) -> None:
    if name not in BACKENDS:
        raise SettingsError(f"{where}: unknown backend {name!r} (known: {', '.join(BACKENDS)})")


def load_backend(name: str, model_dir, precision: str, options: LoadOptions) -> Loaded:
    check_backend(name, "inference.backend")
    module, _, loader = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), loader)(model_dir, precision, options)
