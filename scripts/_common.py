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


def is_user_error(err: BaseException) -> bool:
    """A user's mistake (``llmboard.errors.USER_ERRORS``, whose messages name the file,
    field or model), or a job's ``BatchError`` whose every failed item was one."""
    # imported here, not at the top: the infer script sets CUDA_VISIBLE_DEVICES and the
    # OpenMP wait policy before anything loads torch
    from llmboard.errors import USER_ERRORS
    from llmboard.workflow.jobs import BatchError

    if isinstance(err, BatchError):
        return bool(err.causes) and all(issubclass(c, USER_ERRORS) for c in err.causes)
    return isinstance(err, USER_ERRORS)


class _Formatter(logging.Formatter):
    """Logs a user's mistake as its message, without the Python stack (noise to the
    person who has to mend a config or a task); anything else keeps its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        err = record.exc_info[1] if record.exc_info else None
        if err is not None and is_user_error(err):
            record = logging.makeLogRecord(vars(record))
            record.msg, record.args = f"{record.getMessage()}: {type(err).__name__}: {err}", None
            record.exc_info = record.exc_text = None
        return super().format(record)


def setup(snakemake, log_level: str):
    """Send the package's logging to the job's log file at ``log_level`` (the config's,
    handed to the job by its rule: no job reads or validates the config itself)."""
    log_path = snakemake.log[0]
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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
    """Run ``fn(log)`` and put any error in the job's log too: a user's mistake as its
    message, also on stderr where Snakemake shows it, and exit status 1; anything else
    with its traceback, raised again. ``log_level``: the job's own; else the rule's
    ``params.log_level``."""
    log = setup(snakemake, log_level or snakemake.params.log_level)
    try:
        fn(log)
    except Exception as err:
        if is_user_error(err):
            log.error("job failed: %s", err)
            sys.exit(f"llmboard: {err}")
        log.error("job failed:\n%s", traceback.format_exc())
        raise
