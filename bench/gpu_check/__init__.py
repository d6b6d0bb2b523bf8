"""GPU check (issue #17): prove llmboard's GPU path in one short call, without downloads.

Models are random weights in real shapes, with SmolLM2's real tokenizer (49,152 tokens):
SmolLM2-135M's Llama shape (tied head) and Qwen2-1.5B's shape with an untied head (as
Qwen2-7B and Llama-3-8B have), so both head layouts meet the device map. Each check gives
rows (pass / fail / skipped) in a printed table and in ``gpu_check.json`` under ``--out``;
the exit code is 1 when a row fails.

  1 engine     TransformersLM vs a plain forward pass per request and vs lm-eval's own
               batched algorithm at batch 32 and "auto" (``baselines``): speed (on the
               GPU >= 2x lm-eval's), and log-likelihood agreement (fp32 exactly; bf16 no
               worse than plain's)
  2 precision  bf16 / fp16 (int8 / nf4 when bitsandbytes imports) against fp32
  3 split      a device_map spilling layers off the GPU gives the one-device numbers
  4 oom        a capped GPU makes the engine halve its token budget; same numbers
  5 plan       the memory plan's GPU bytes against torch's measured peak
  6 slots      two processes locking the one GPU slot run one after the other
  7 prefix     few-shot prompts (MMLU 5-shot's shape: ~600 shared tokens, then a short
               question and four answers): the engine computing each shared prefix once
               against the same engine without sharing, a plain forward per request and
               lm-eval's batched algorithm (32 and "auto")
  8 generation greedy ``generate_until`` (shared exemplars, refilled slots, cascade
               attention) against transformers' ``generate`` per prompt and lm-eval's
               batched, left-padded ``generate_until`` at batch 32: same texts
  9 invariance ``inference.batch_invariant``: the same log-likelihoods and texts at three
               token budgets and two shard counts, packed and invariant, and its cost
 10 scale      a 7B-class shape (Qwen2-7B's layers) in bf16, int8 and nf4: log-likelihood
               and generation tokens/s, model FLOPs utilisation against the GPU's bf16
               peak, decoding's share of its memory bandwidth, peak memory against the
               plan
 11 workflow   ``snakemake`` end to end on a random-weight checkpoint and .jsonl tasks:
               fetch, convert, inference jobs given their GPU by CUDA_VISIBLE_DEVICES
               from the memory plan, score, board, ``llmboard verify``; needs the kit's
               workflow wheelhouse installed (``install-wheels``), else skipped

Without CUDA (the test suite) the same code runs on tiny models: 4 and 5 are skipped and
3 splits between CPU and disk, so the code cannot rot between GPU runs.

Here (SmolLM2's GGUF is installed, PyPI is reachable), write the kit that travels:
    .venv/bin/python -m bench.gpu_check prepare --out bench/out/gpu_kit
On the GPU machine, from the repo root (llmboard is not installed there: ``python3 -m``
puts the repo root on sys.path), with bench/out/gpu_kit carried along:
    python3 -m bench.gpu_check run --tokenizer bench/out/gpu_kit/tokenizer \\
        --wheels bench/out/gpu_kit/wheels --out "$OUT"
Check 11's wheelhouse (``prepare --workflow``: Snakemake, polars, datasets, scipy and
what they need beyond torch, transformers and accelerate, for Python 3.12) is larger
than one call carries; its parts travel in calls that follow each other on the warm
machine, the last one installing and running it (docs/gpu.md, "The workflow on the GPU").
Here, on the CPU (tiny models):
    .venv/bin/python -m bench.gpu_check run --tokenizer bench/out/gpu_kit/tokenizer \\
        --out bench/out/gpu_check

The package: ``__main__`` (the command line), ``runner`` (``run``), ``kit`` (the kit and
its wheels), ``common`` (model shapes, rows, setup, comparisons), ``models`` (random
models, engine and plain runs), ``workload`` (the requests), ``report`` (table,
environment), ``baselines`` (lm-eval 0.4.13's batched log-likelihood and generation,
written out: the GPU machine has no lm-eval; tests/test_lmeval_baselines.py proves them
equal to lm-eval's on the CPU), and one module per check: ``engine`` (1), ``precision`` (2, quant
included), ``split`` (3), ``oom`` (4), ``plan`` (5), ``slots`` (6), ``prefix`` (7),
``generation`` (8), ``invariance`` (9), ``scale`` (10), ``workflow`` (11). The GPU machine's Python has torch, transformers and accelerate but
not polars, pytest or lm-eval: the package imports only the standard library at import
time, llmboard and torch inside functions.
"""
