"""Benchmarks and the GPU check, each a module run from the repo root with llmboard
installed (editable, as the Makefile installs it), e.g.

    .venv/bin/python -m bench.engine_vs_lmeval --help
    .venv/bin/python -m bench.gpu_check --help

lm-eval, the reference, comes through the ``lmeval_oracle`` package (installed with
llmboard; lm-eval itself from requirements-dev.txt). Results they keep are in
bench/results/; scratch output goes to bench/out/ (ignored by git).
"""
