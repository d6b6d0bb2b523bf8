"""Shared by the rule scripts: logging to the rule's log file, threads, errors."""

import logging
import os
import sys
import traceback


def setup(snakemake):
    """Send the package's logging to the job's log file; make `llmboard` importable."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if here not in sys.path:
        sys.path.insert(0, here)
    log_path = snakemake.log[0]
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    from llmboard.settings import load_settings

    root.setLevel(load_settings(snakemake.config).log_level)
    logging.captureWarnings(True)
    threads = str(snakemake.threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
        os.environ[var] = threads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return logging.getLogger("llmboard.job")


def run(snakemake, fn):
    """Run ``fn`` and put any error, with its traceback, in the job's log too."""
    log = setup(snakemake)
    try:
        fn(log)
    except Exception:
        log.error("job failed:\n%s", traceback.format_exc())
        raise
