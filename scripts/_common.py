"""Shared by the rule scripts: logging to the rule's log file, threads, errors.

Each script adapts the ``snakemake`` object to one package call and nothing more."""

import logging
import os
import sys
import traceback

# the llmboard package sits next to this folder (a job may run outside the repo's venv)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def setup(snakemake, log_level: str):
    """Send the package's logging to the job's log file at ``log_level`` (the config's,
    handed to the job by its rule: no job reads or validates the config itself)."""
    log_path = snakemake.log[0]
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level)
    logging.captureWarnings(True)
    threads = str(snakemake.threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
        os.environ[var] = threads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return logging.getLogger("llmboard.job")


def run(snakemake, fn, log_level: str | None = None):
    """Run ``fn(log)`` and put any error, with its traceback, in the job's log too.
    ``log_level``: the job's own; else the rule's ``params.log_level``."""
    log = setup(snakemake, log_level or snakemake.params.log_level)
    try:
        fn(log)
    except Exception:
        log.error("job failed:\n%s", traceback.format_exc())
        raise
