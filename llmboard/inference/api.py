"""The model interface the pipeline calls, and the backends that implement it.

``LM`` is lm-evaluation-harness' model API: ``loglikelihood`` and ``generate_until``,
each returning the per-request facts that prediction files store. A backend is a
subclass of ``LM`` plus a loader registered in ``BACKENDS`` under the name that
``inference.backend`` in the config selects; the job runner only ever calls
``load_backend``, so a second backend (vLLM on a GPU, an API) edits nothing else.

Importing this module imports no torch: the Snakefile's plan checks backend names.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..settings import SettingsError


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
class GenerationRequest:
    context: str
    until: tuple[str, ...]  # stop strings; the text is cut before the first one
    max_gen_toks: int


@dataclass(frozen=True)
class Generation:
    text: str  # cut before the first stop string, as lm-eval returns it
    tokens: int  # tokens generated (before cutting at a stop string)
    stop_reason: str  # "until", "eos", "max_gen_toks" or "window"
    context_tokens: int = 0  # the prompt as the model saw it (after left truncation)
    from_store: bool = False


class LM(ABC):
    """The interface every backend implements. ``stats`` counts work done (requests,
    tokens, batches); ``token_budget`` is the batch size in tokens as it stands (halved
    on out-of-memory); ``numerics`` names the backend's numeric form."""

    stats: dict
    token_budget: int
    numerics: str

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


@dataclass(frozen=True)
class ModelContext:
    """What a prediction file records about the loaded model that computed it."""

    model_dir: str
    checkpoint_sha256: str
    precision: str
    placement: dict  # module -> device, as the backend placed it
    load_seconds: float


@dataclass(frozen=True)
class LoadOptions:
    """How a job loads its model: the settings every backend receives (``inference:`` in
    the config, and the entry's ``trust_remote_code``)."""

    token_budget: int
    device_map: str | dict | None = None
    max_memory: dict | None = None
    offload_folder: str | None = None
    trust_remote_code: bool = False


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
