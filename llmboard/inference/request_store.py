"""The request store: every log-likelihood and generation computed once, reused by every
later job.

A raised ``limit``, one more few-shot example, a fixed typo in one document, or the
same checkpoint under a second name: the task hash changes, so the task's prediction
file is written again, but most of its requests are ones already computed. The store
answers those; only the misses reach the model.

Keyed by what decides an answer: the weights (checkpoint sha256), the precision, the
engine's numeric form (the backend's ``LM.numerics``), and the exact token ids of the
request; a generation also by its stop strings, ``max_gen_toks`` and its sampling settings
with the seed (which ``api.sample_seed`` draws per document and repeat). A packed engine's
generation depends in its last bits on the prompts beside it, so the store hands back one
of the texts it could have given; in batch-invariant mode (numerics ending ``-bi``) exactly the
text it would give.

Layout, safe with many writers on a shared filesystem (no locks, no SQLite):

    {folder}/{checkpoint sha256}/{precision}-{numerics}/{sha256 of the file}.parquet
    {folder}/{checkpoint sha256}/{precision}-{numerics}/generations/{sha256}.parquet

Each job writes its new answers as a new segment, atomically (a temporary name, then a
rename), named by the sha256 of its own bytes. A reader takes a segment whose bytes do
not hash to its name (truncated, corrupt) for what it is: it is reported and ignored,
never read as answers. Segments are only ever added; ``prune`` removes whole checkpoints.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..hashing import sha256_file, stable_json
from .api import (
    LM,
    Generation,
    GenerationRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    RollingLoglikelihood,
)

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".parquet"
# what a segment holds after its key, per kind of answer: (column, polars type)
ANSWERS = {
    "loglikelihood": (
        ("loglikelihood", "Float64"),
        ("is_greedy", "Boolean"),
        ("context_tokens", "Int32"),
        ("continuation_tokens", "Int32"),
    ),
    "generation": (
        ("text", "String"),
        ("tokens", "Int32"),
        ("stop_reason", "String"),
        ("context_tokens", "Int32"),
    ),
}
KIND_FOLDER = {"loglikelihood": ".", "generation": "generations"}


def request_key(context_ids: list[int], continuation_ids: list[int]) -> str:
    return hashlib.sha256(stable_json([context_ids, continuation_ids]).encode()).hexdigest()


def rolling_key(token_ids: list[int], window: int) -> str:
    """A ``loglikelihood_rolling`` request: the text's token ids and the window size (the
    windows are lm-eval's, a function of both). Stored in the same columns as a pair:
    ``loglikelihood`` the total, ``context_tokens`` the number of windows,
    ``continuation_tokens`` the tokens scored, ``is_greedy`` false."""
    payload = stable_json(["loglikelihood_rolling", int(window), token_ids])
    return hashlib.sha256(payload.encode()).hexdigest()


def generation_key(prompt_ids: list[int], request: GenerationRequest) -> str:
    """A ``generate_until`` request: the prompt's token ids (before the engine's left
    truncation, which the model window and ``max_gen_toks`` decide), the stop strings,
    ``max_gen_toks``, and greedy or the sampling settings with the request's seed."""
    s = request.sampling
    sampling = None if s is None else [s.temperature, s.top_p, s.top_k, s.seed]
    payload = stable_json(
        ["generate_until", prompt_ids, list(request.until), request.max_gen_toks, sampling]
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class StoreReport:
    segments: int = 0
    entries: int = 0
    bytes: int = 0
    corrupt: list[str] = field(default_factory=list)


class RequestStore:
    """The answers of one checkpoint x precision x numeric form, of one kind (``ANSWERS``)."""

    def __init__(
        self,
        folder: str | Path,
        checkpoint_sha256: str,
        precision: str,
        numerics: str,
        kind: str = "loglikelihood",
    ):
        base = Path(folder) / checkpoint_sha256 / f"{precision}-{numerics}"
        self.dir = base / KIND_FOLDER[kind]
        self.columns = ANSWERS[kind]
        self.answers: dict[str, tuple] = {}
        self.report = StoreReport()
        self._seen: set[str] = set()

    def refresh(self) -> None:
        """Read the segments written since the last refresh (by this job or any other)."""
        import polars as pl

        if not self.dir.exists():
            return
        for seg in sorted(self.dir.glob(f"*{SEGMENT_SUFFIX}")):
            if seg.name in self._seen:
                continue
            self._seen.add(seg.name)
            if sha256_file(seg) != seg.name[: -len(SEGMENT_SUFFIX)]:
                self.report.corrupt.append(str(seg))
                log.warning(
                    "%s: request store segment does not match its checksum "
                    "(truncated or corrupt): ignored",
                    seg,
                )
                continue
            df = pl.read_parquet(seg)
            self.report.segments += 1
            self.report.bytes += seg.stat().st_size
            for row in df.iter_rows():
                self.answers[row[0]] = row[1:]
        self.report.entries = len(self.answers)

    def get(self, key: str) -> tuple | None:
        return self.answers.get(key)

    def add(self, entries: dict[str, tuple]) -> Path | None:
        """Write ``entries`` (key -> answer) as one new segment; None when empty."""
        import polars as pl

        entries = {k: v for k, v in entries.items() if k not in self.answers}
        if not entries:
            return None
        keys = sorted(entries)
        data = {"key": keys}
        for i, (name, _) in enumerate(self.columns):
            data[name] = [entries[k][i] for k in keys]
        schema = {"key": pl.String, **{n: getattr(pl, t) for n, t in self.columns}}
        df = pl.DataFrame(data, schema=schema)
        self.dir.mkdir(parents=True, exist_ok=True)
        # written under a hidden temporary name, then renamed to the sha256 of its bytes:
        # the rename is the commit, and a killed job leaves only a hidden temporary file
        fd, tmp = tempfile.mkstemp(prefix=".segment.", suffix=".part", dir=self.dir)
        os.close(fd)
        try:
            df.write_parquet(tmp, statistics=False)
            name = sha256_file(tmp) + SEGMENT_SUFFIX
            os.replace(tmp, self.dir / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        final = self.dir / name
        self._seen.add(name)
        self.answers.update(entries)
        self.report.segments += 1
        self.report.entries = len(self.answers)
        return final


def survey(folder: str | Path) -> dict[str, StoreReport]:
    """checkpoint sha256 -> what the store holds for it (all precisions), corrupt segments
    named."""
    out: dict[str, StoreReport] = {}
    root = Path(folder)
    if not root.exists():
        return out
    for ckpt in sorted(p for p in root.iterdir() if p.is_dir()):
        rep = out.setdefault(ckpt.name, StoreReport())
        for sub in sorted(p for p in ckpt.iterdir() if p.is_dir()):
            precision, _, numerics = sub.name.partition("-")
            for kind in ANSWERS:
                s = RequestStore(root, ckpt.name, precision, numerics, kind)
                s.refresh()
                rep.segments += s.report.segments
                rep.entries += s.report.entries
                rep.bytes += s.report.bytes
                rep.corrupt += s.report.corrupt
    return out


def prune(folder: str | Path, keep: set[str]) -> list[Path]:
    """Remove every checkpoint's answers but those in ``keep``; return what was removed."""
    root = Path(folder)
    gone = (
        [p for p in sorted(root.iterdir()) if p.is_dir() and p.name not in keep]
        if root.exists()
        else []
    )
    for p in gone:
        shutil.rmtree(p)
    return gone


def _context_runs(pairs) -> list[list[int]]:
    """Indices of ``pairs`` in runs of consecutive requests with the same context."""
    runs: list[list[int]] = []
    for i, (ctx, _) in enumerate(pairs):
        if runs and pairs[runs[-1][-1]][0] == ctx:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


class StoredLM(LM):
    """Any backend, with the store in front: requests answered before are taken from it,
    only the others reach ``inner``, and their answers are added as one new segment per
    call (per task shard), so a killed job keeps what its finished shards computed.
    Generations go to ``generations`` (the same checkpoint, precision and numerics)."""

    def __init__(self, inner: LM, store: RequestStore, generations: RequestStore | None = None):
        self.inner = inner
        self.store = store
        self.generations = generations
        self.numerics = inner.numerics
        self.hits = self.misses = 0

    @property
    def stats(self) -> dict:
        return {**self.inner.stats, "store_hits": self.hits, "store_misses": self.misses}

    @property
    def token_budget(self) -> int:
        return self.inner.token_budget

    def tokenize_pair(self, request: LoglikelihoodRequest) -> tuple[list[int], list[int]]:
        return self.inner.tokenize_pair(request)

    def loglikelihood_tokens(self, pairs) -> list[Loglikelihood]:
        """A run of requests with one context (a document's choices: one tree in the
        engine) is taken from the store whole or computed whole: computing only its
        missing branches would make a smaller tree, whose rows, and so last bits, differ
        from the ones a fresh run computes (batch-invariant mode promises equality)."""
        self.store.refresh()  # answers other jobs stored meanwhile count too
        keys = [request_key(c, k) for c, k in pairs]
        out: list[Loglikelihood | None] = [None] * len(pairs)
        todo: list[int] = []
        for run in _context_runs(pairs):
            hits = [self.store.get(keys[i]) for i in run]
            if any(h is None for h in hits):
                todo += run
                continue
            for i, hit in zip(run, hits):
                out[i] = Loglikelihood(*hit, from_store=True)
        computed = self.inner.loglikelihood_tokens([pairs[i] for i in todo])
        new = {}
        for i, r in zip(todo, computed):
            out[i] = r
            new[keys[i]] = (r.loglikelihood, r.is_greedy, r.context_tokens, r.continuation_tokens)
        self.store.add(new)
        self.hits += len(pairs) - len(todo)
        self.misses += len(todo)
        return out  # type: ignore[return-value]

    @property
    def max_length(self) -> int:
        return self.inner.max_length

    def tokenize_text(self, text: str) -> list[int]:
        return self.inner.tokenize_text(text)

    def _serve(self, store: RequestStore, keys: list[str], items: list, compute, entry, result):
        """Answers of ``items`` (keyed by ``keys``): stored ones from ``store``, the others
        (each distinct key once) by ``compute(items)`` and added as one segment. ``entry``
        turns a computed answer into the store's tuple, ``result(tuple, from_store)`` back."""
        store.refresh()  # answers other jobs stored meanwhile count too
        out: list = [None] * len(keys)
        todo: dict[str, int] = {}
        for i, k in enumerate(keys):
            hit = store.get(k)
            if hit is not None:
                out[i] = result(hit, True)
            else:
                todo.setdefault(k, i)
        new = {k: entry(r) for k, r in zip(todo, compute([items[i] for i in todo.values()]))}
        for i, k in enumerate(keys):
            if out[i] is None:
                out[i] = result(new[k], False)
        store.add(new)
        hits = sum(k not in new for k in keys)
        self.hits += hits
        self.misses += len(keys) - hits
        return out

    def loglikelihood_rolling_tokens(self, token_lists, window: int) -> list[RollingLoglikelihood]:
        """As ``loglikelihood_tokens``: stored totals are reused, the rest computed by
        ``inner`` and stored (keyed by ``rolling_key``)."""
        return self._serve(
            self.store,
            [rolling_key(list(t), window) for t in token_lists],
            token_lists,
            lambda todo: self.inner.loglikelihood_rolling_tokens(todo, window),
            lambda r: (r.loglikelihood, False, r.windows, r.tokens),
            lambda e, stored: RollingLoglikelihood(e[0], e[3], e[2], from_store=stored),
        )

    def tokenize_prompt(self, text: str) -> list[int]:
        return self.inner.tokenize_prompt(text)

    def generate_until(self, requests: list[GenerationRequest]) -> list[Generation]:
        if self.generations is None:
            return self.inner.generate_until(requests)
        prompts = [self.inner.tokenize_prompt(r.context) for r in requests]
        return self._serve(
            self.generations,
            [generation_key(p, r) for p, r in zip(prompts, requests)],
            requests,
            self.inner.generate_until,
            lambda g: (g.text, g.tokens, g.stop_reason, g.context_tokens),
            lambda e, stored: Generation(*e, from_store=stored),
        )
