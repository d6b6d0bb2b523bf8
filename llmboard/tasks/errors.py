"""Errors of the tasks stage: each names the file, field or document at fault."""


class TaskError(ValueError):
    """A task definition or document that cannot be used; names the file, field or row."""


class ScoreError(RuntimeError):
    """Predictions that cannot be scored (incomplete, stale or inconsistent shards)."""
