"""Jinja2 environment and the Jinja filters task templates may use (lm-eval's preprocessing).

lm-eval's answer filters (regex, take_first, ...) are in ``filters.py``."""

from __future__ import annotations

import re
from functools import lru_cache


def hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag ``preprocess``: WikiHow bracket artefacts out."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


@lru_cache(maxsize=1)
def _jinja_env():
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["hellaswag_clean"] = hellaswag_clean
    env.filters["regex_replace"] = lambda s, pat, rep: re.sub(pat, rep, s)
    return env


@lru_cache(maxsize=4096)
def template(src: str):
    return _jinja_env().from_string(src)
