"""Reading a YAML file that must hold a mapping (config.yaml, task files), with errors
that name the file and, for a syntax error, the line and column."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def read_mapping(path: str | os.PathLike, error: type[Exception], what: str) -> dict:
    """The file as a dict (an empty file: ``{}``); ``error`` is raised naming the file when
    it cannot be read, is not valid YAML, or is not a mapping (``what`` says of what)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise error(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: must be a mapping of {what}, not a {type(data).__name__}")
    return data
