"""What users would run instead (#30): lm-eval 0.4.13's ``hf`` model, its algorithms
written out here because the GPU machine has torch and transformers but not lm-eval.
Faithful, and proven so on the CPU against lm-eval itself
(tests/test_lmeval_baselines.py: the same numbers, the same texts):

- log-likelihoods (``HFLM._loglikelihood_tokens``): requests grouped by context +
  continuation[:-1] (its logits cache: one row per group, its longest continuation),
  sorted longest first (``-len(tokens), tokens``), ``batch_size`` rows a forward,
  right-padded with zeros to the batch's longest, no attention mask, the
  full-vocabulary log-softmax at every position, then each request's continuation
  gathered and compared with the argmax;
- its ``batch_size="auto"``: the largest batch, halving from ``max_batch_size`` (64),
  for which five forwards and log-softmaxes of the longest request's length run
  without running out of memory;
- generation (``HFLM.generate_until``): prompts grouped by generation settings, each
  group sorted longest first, ``batch_size`` a call, left-padded, ``model.generate`` greedy with ``max_length`` = the padded prompt
  + ``max_gen_toks``, a batch running until every row has one stop string
  (``MultiTokenEOSCriteria``: the stop string in the decoded last tokens, one
  criterion per stop string, the tokenizer's EOS text among them), each text cut at
  every stop string.
"""

from __future__ import annotations

import time

from .common import Run
from .models import device_of, sync

LMEVAL_MAX_BATCH = 64  # HFLM's max_batch_size default: where "auto" starts halving


def lmeval_pairs(model, tok, requests) -> list[tuple[list[int], list[int]]]:
    """Each request's (context, continuation) token ids as lm-eval encodes them."""
    from llmboard.inference.engine import TransformersLM, split_pair

    prefix = TransformersLM(model, tok, token_budget=64).prefix_token_id
    return [split_pair(tok, r.context, r.continuation, prefix) for r in requests]


def _max_length(model) -> int:
    """HFLM's ``max_length`` for the models here (their config's position count)."""
    return int(getattr(model.config, "max_position_embeddings", 2048))


def lmeval_loglikelihoods(model, pairs, batch_size: int, softmax_dtype=None):
    """[(log-likelihood, is_greedy)] for token pairs, as HFLM computes them."""
    import torch
    import torch.nn.functional as F

    dev, max_len = device_of(model), _max_length(model)
    groups: dict[tuple, list[int]] = {}
    for i, (c, k) in enumerate(pairs):
        groups.setdefault(tuple(c + k[:-1]), []).append(i)
    reps = [max(members, key=lambda i: len(pairs[i][1])) for members in groups.values()]
    reps.sort(key=lambda i: (-len(pairs[i][0] + pairs[i][1]), tuple(pairs[i][0] + pairs[i][1])))
    out: list = [None] * len(pairs)
    with torch.no_grad():
        for b in range(0, len(reps), batch_size):
            chunk = reps[b : b + batch_size]
            inps = [(pairs[i][0] + pairs[i][1])[-(max_len + 1) :][:-1] for i in chunk]
            width = max(len(x) for x in inps)
            batch = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, x in enumerate(inps):
                batch[r, : len(x)] = torch.tensor(x)
            logits = F.log_softmax(model(batch.to(dev)).logits, dim=-1, dtype=softmax_dtype)
            for i, row, x in zip(chunk, logits, inps):
                contlen = len(pairs[i][1])
                sel = row[len(x) - contlen : len(x)].unsqueeze(0)
                greedy = sel.argmax(dim=-1)
                for j in groups[tuple(pairs[i][0] + pairs[i][1][:-1])]:
                    cont = torch.tensor(pairs[j][1], dtype=torch.long, device=sel.device)[None]
                    equal = bool((greedy[:, -cont.shape[1] :] == cont).all())
                    ll = float(torch.gather(sel, 2, cont.unsqueeze(-1)).squeeze(-1).sum())
                    out[j] = (ll, equal)
    return out


def lmeval_auto_batch(model, pairs, softmax_dtype=None, start: int = LMEVAL_MAX_BATCH) -> int:
    """HFLM's ``batch_size="auto"`` for these requests (``_detect_batch_size``)."""
    import torch
    import torch.nn.functional as F

    longest = max(pairs, key=lambda p: (len(p[0] + p[1]), tuple(p[0] + p[1])))
    length = len((longest[0] + longest[1])[-(_max_length(model) + 1) :][:-1])
    size = start
    while size >= 1:
        try:
            with torch.no_grad():
                test = torch.ones((size, length), dtype=torch.long, device=device_of(model))
                for _ in range(5):
                    F.log_softmax(model(test).logits, dim=-1, dtype=softmax_dtype)
            return size
        except torch.OutOfMemoryError:
            size //= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return 1


def run_lmeval(model, tok, requests, batch_size: int | str) -> Run:
    """lm-eval's batched log-likelihoods timed, as a ``Run`` (its ``request_tokens`` also
    as its tokens through the model: the logits cache is not counted); ``batch_size`` a
    number or "auto", the size used in ``Run.batch_size``. The log-softmax in the
    logits' own dtype: lm-eval's default ``softmax_dtype``, what users run."""
    pairs = lmeval_pairs(model, tok, requests)
    size = lmeval_auto_batch(model, pairs) if batch_size == "auto" else batch_size
    lmeval_loglikelihoods(model, pairs[:8], size)  # warm-up
    sync()
    t0 = time.perf_counter()
    res = lmeval_loglikelihoods(model, pairs, size)
    sync()
    wall = time.perf_counter() - t0
    tokens = sum(len(c) + len(k) - 1 for c, k in pairs)
    # through the model: one row per context group, padded to its batch's longest
    return Run([x[0] for x in res], [x[1] for x in res], wall, tokens, tokens, batch_size=size)


# ----------------------------------------------------------------------------- generation
class _StopString:
    """lm-eval's ``MultiTokenEOSCriteria``: a row is done once ``stop`` appears in the
    decoded last (its token count + 2) tokens; the batch stops when every row is done."""

    def __init__(self, tok, stop: str, start: int, rows: int):
        self.tok, self.stop, self.start = tok, stop, start
        self.done = [False] * rows
        self.lookback = len(tok.encode(stop, add_special_tokens=False)) + 2

    def __call__(self, input_ids, scores, **kwargs) -> bool:
        tail = input_ids[:, self.start :][:, -self.lookback :]
        texts = self.tok.batch_decode(tail)
        for i, done in enumerate(self.done):
            if not done:
                self.done[i] = self.stop in texts[i]
        return False not in self.done


def lmeval_generate(model, tok, requests, batch_size: int) -> tuple[list[str], float, int]:
    """Greedy texts as HFLM's ``generate_until`` makes them: (texts in request order,
    seconds, tokens generated including those of rows waiting for their batch)."""
    import torch
    from transformers import StoppingCriteriaList

    from llmboard.inference.engine import encode

    dev = device_of(model)
    eos = tok.decode([tok.eos_token_id], skip_special_tokens=False)
    pad = next(t for t in (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id) if t is not None)
    encoded = [encode(tok, r.context) for r in requests]
    # lm-eval's Collator(group_by="gen_kwargs"): one group per generation setting, in
    # order of first appearance, each sorted longest first and cut into batches
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault((r.until, r.max_gen_toks), []).append(i)
    chunks = []
    for members in groups.values():
        members.sort(key=lambda i: (-len(encoded[i]), requests[i].context))
        chunks += [members[b : b + batch_size] for b in range(0, len(members), batch_size)]
    texts: list = [None] * len(requests)
    generated = 0
    sync()
    t0 = time.perf_counter()
    for chunk in chunks:
        r0 = requests[chunk[0]]  # the batch's generation settings
        until = [*r0.until, eos] if eos not in r0.until else list(r0.until)
        keep = _max_length(model) - r0.max_gen_toks
        rows = [encoded[i][-keep:] for i in chunk]
        width = max(len(x) for x in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, x in enumerate(rows):  # left padding
            ids[r, width - len(x) :] = torch.tensor(x)
            mask[r, width - len(x) :] = 1
        stops = StoppingCriteriaList([_StopString(tok, u, width, len(rows)) for u in until])
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(dev),
                attention_mask=mask.to(dev),
                max_length=width + r0.max_gen_toks,
                stopping_criteria=stops,
                pad_token_id=pad,
                use_cache=True,
                do_sample=False,
            )
        generated += (out.shape[1] - width) * len(rows)
        for i, row in zip(chunk, out[:, width:].tolist()):
            text = tok.decode(row, skip_special_tokens=True)
            for u in until:
                if u:
                    text = text.split(u)[0]
            texts[i] = text
    sync()
    return texts, time.perf_counter() - t0, generated
