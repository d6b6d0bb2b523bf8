"""A job's small multiple-choice shards through the engine in one call.

Zero-shot MMLU at ``limit: 4`` is 57 task shards of 16 requests: one engine call each
would pad every forward to its few trees and pay a call's fixed cost 57 times. So the
job runner asks ``JoinedLM.prefetch`` for the union of consecutive small shards' requests
(one ``loglikelihood`` call through the job's LM, the request store included), then
predicts each shard as before: its ``loglikelihood`` call is answered from the joined
results, and its files are written on their own, atomically, as ever. A shard's
sidecar is charged its share of the joined call (engine stats and seconds, by its number
of requests; store hits and misses exactly), so the report's Cost page adds up. In
batch-invariant mode (the default) the numbers are those of separate calls, bit for bit.
"""

from __future__ import annotations

import logging
import time

from .. import progress
from .api import LM, Generation, GenerationRequest, Loglikelihood, LoglikelihoodRequest

log = logging.getLogger(__name__)

# shards are joined while their documents add up to at most this many: a killed job
# loses at most one joined call's work, and a shard this size fills batches on its own
JOIN_DOCS = 256
SECONDS = "joined_seconds"  # the stat that carries a shard's share of the joined time


class JoinedLM(LM):
    def __init__(self, inner: LM):
        self.inner = inner
        self.numerics = inner.numerics
        self.answers: dict[tuple[str, str], Loglikelihood] = {}
        self.pending: dict[str, float] = {}  # the joined call's cost not yet charged
        self.left = 0  # requests of the joined call not yet served

    def prefetch(self, requests: list[LoglikelihoodRequest]) -> None:
        """Compute ``requests`` in one call; later calls asking for them are answered."""
        before = dict(self.inner.stats)
        t0 = time.monotonic()
        results = self.inner.loglikelihood(requests)
        cost = {k: v - before.get(k, 0) for k, v in self.inner.stats.items()}
        cost[SECONDS] = time.monotonic() - t0
        self.answers = {(r.context, r.continuation): x for r, x in zip(requests, results)}
        self.pending, self.left = cost, len(requests)

    @property
    def stats(self) -> dict:
        out = {k: v - self.pending.get(k, 0) for k, v in self.inner.stats.items()}
        out[SECONDS] = -self.pending.get(SECONDS, 0.0)
        return out

    @property
    def token_budget(self) -> int:
        return self.inner.token_budget

    @property
    def max_length(self) -> int:
        return self.inner.max_length

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[Loglikelihood]:
        keys = [(r.context, r.continuation) for r in requests]
        if not keys or not all(k in self.answers for k in keys):
            return self.inner.loglikelihood(requests)
        out = [self.answers[k] for k in keys]
        share = len(keys) / self.left if self.left > len(keys) else 1.0  # the last: the rest
        hits = sum(x.from_store for x in out)
        exact = {"store_hits": hits, "store_misses": len(out) - hits}  # as StoredLM counts
        for k, v in self.pending.items():
            charge = (
                exact[k] if k in exact else v * share if isinstance(v, float) else round(v * share)
            )
            self.pending[k] = v - charge
        self.left = max(0, self.left - len(keys))
        progress.report("requests (from the joined call)", len(out), len(out), 0)
        return out

    def tokenize_pair(self, request: LoglikelihoodRequest) -> tuple[list[int], list[int]]:
        return self.inner.tokenize_pair(request)

    def loglikelihood_tokens(self, pairs) -> list[Loglikelihood]:
        return self.inner.loglikelihood_tokens(pairs)

    def generate_until(self, requests: list[GenerationRequest]) -> list[Generation]:
        return self.inner.generate_until(requests)

    def tokenize_prompt(self, text: str) -> list[int]:
        return self.inner.tokenize_prompt(text)

    def tokenize_text(self, text: str) -> list[int]:
        return self.inner.tokenize_text(text)

    def loglikelihood_rolling_tokens(self, token_lists, window: int):
        return self.inner.loglikelihood_rolling_tokens(token_lists, window)
