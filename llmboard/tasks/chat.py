"""Chat templates: which ones a checkpoint carries, and rendering messages with one as
lm-eval 0.4.13's ``HFLM.apply_chat_template`` does.

Finding the templates reads files only (no transformers, no torch): the Snakefile
checks every entry's ``chat_template`` on each parse, before any job starts.
A tokenizer folder carries them as transformers 5 loads them: ``tokenizer_config.json``'s
``chat_template`` (one template, or a list of ``{name, template}``), then
``chat_template.jinja`` (the default) and ``additional_chat_templates/<name>.jinja``.
A GGUF file carries ``tokenizer.chat_template`` and ``tokenizer.chat_template.<name>``
in its header.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

from ..settings import SettingsError

DEFAULT = "default"
TEMPLATE_DIR = "additional_chat_templates"
GGUF_KEY = "tokenizer.chat_template"


class ChatTemplateError(SettingsError):
    """An entry's chat_template that its tokenizer cannot give (a user's mistake: the
    message names the entry)."""


# ------------------------------------------------------------------ what a checkpoint carries
def templates_in_folder(folder: Path) -> dict[str, str]:
    """name -> template of a tokenizer folder (``default``: the one used unnamed)."""
    out: dict[str, str] = {}
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(value, str):
            out[DEFAULT] = value
        elif isinstance(value, list):
            out.update({t["name"]: t["template"] for t in value if isinstance(t, dict)})
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        out[DEFAULT] = jinja.read_text(encoding="utf-8")
    extra = folder / TEMPLATE_DIR
    if extra.is_dir():
        for f in sorted(extra.glob("*.jinja")):
            out[f.name.removesuffix(".jinja")] = f.read_text(encoding="utf-8")
    return out


_GGUF_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def templates_in_gguf(path: Path) -> dict[str, str]:
    """name -> template from a GGUF file's header (``tokenizer.chat_template`` is the
    default, ``tokenizer.chat_template.<name>`` the others). Reads the key-value header
    only, skipping arrays, so a 49k-token vocabulary costs milliseconds."""
    out: dict[str, str] = {}
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ChatTemplateError(f"{path}: not a GGUF file")
        (version,) = struct.unpack("<I", f.read(4))
        if version < 2:
            raise ChatTemplateError(f"{path}: GGUF version {version} not supported")
        _n_tensors, n_kv = struct.unpack("<QQ", f.read(16))

        def string() -> bytes:
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n)

        def skip(kind: int) -> None:
            if kind == _GGUF_STRING:
                (n,) = struct.unpack("<Q", f.read(8))
                f.seek(n, os.SEEK_CUR)
            elif kind == _GGUF_ARRAY:
                item, count = struct.unpack("<IQ", f.read(12))
                if item in _GGUF_SCALARS:
                    f.seek(count * struct.calcsize("<" + _GGUF_SCALARS[item]), os.SEEK_CUR)
                else:
                    for _ in range(count):
                        skip(item)
            else:
                f.seek(struct.calcsize("<" + _GGUF_SCALARS[kind]), os.SEEK_CUR)

        for _ in range(n_kv):
            key = string().decode("utf-8")
            (kind,) = struct.unpack("<I", f.read(4))
            if kind == _GGUF_STRING and (key == GGUF_KEY or key.startswith(GGUF_KEY + ".")):
                name = DEFAULT if key == GGUF_KEY else key[len(GGUF_KEY) + 1 :]
                out[name] = string().decode("utf-8")
            else:
                skip(kind)
    return out


def templates_of(path: str | os.PathLike) -> dict[str, str] | None:
    """The chat templates a model folder, fetched checkpoint or source carries; None when
    that cannot be told from its files (no tokenizer there yet)."""
    p = Path(path)
    if p.is_file():
        return templates_in_gguf(p) if p.suffix == ".gguf" else None
    if not p.is_dir():
        return None
    if any((p / f).exists() for f in ("tokenizer_config.json", "chat_template.jinja")):
        return templates_in_folder(p)
    ggufs = sorted(p.glob("*.gguf"))
    return templates_in_gguf(ggufs[0]) if len(ggufs) == 1 else None


def choose(templates: dict[str, str], chat_template: bool | str, where: str) -> str:
    """The name of the template that ``chat_template`` (True: the tokenizer's own; a
    name) selects, or an error that says ``where`` and what the tokenizer has."""
    if not templates:
        raise ChatTemplateError(f"{where}: chat_template: the tokenizer has no chat template")
    if chat_template is True:
        if DEFAULT in templates:
            return DEFAULT
        raise ChatTemplateError(
            f"{where}: chat_template: the tokenizer has several templates and no default; "
            f"name one of {sorted(templates)}"
        )
    if chat_template not in templates:
        raise ChatTemplateError(
            f"{where}: chat_template: no template named {chat_template!r}; the tokenizer "
            f"has {sorted(templates)}"
        )
    return str(chat_template)


# ------------------------------------------------------------------ rendering
def renderer(tokenizer, chat_template: bool | str, where: str = "model") -> Callable[..., str]:
    """``render(messages, add_generation_prompt=True) -> str``: lm-eval's
    ``HFLM.apply_chat_template`` (``tokenize=False``, ``continue_final_message`` the
    opposite of ``add_generation_prompt``; a template that raises a Jinja
    ``TemplateError``, such as one that rejects the system role, is tried again
    without the system messages). ``chat_template`` True renders with the tokenizer's
    default template, as lm-eval does; a name renders with that template (lm-eval
    0.4.13 checks the name but renders with the default)."""
    import jinja2

    own = tokenizer.chat_template
    templates = own if isinstance(own, dict) else ({DEFAULT: own} if own else {})
    name = choose(templates, chat_template, where)
    # None: transformers picks the default itself (a plain template, or dict["default"])
    kwargs = {} if name == DEFAULT else {"chat_template": templates[name]}

    def render(messages: list[dict], add_generation_prompt: bool = True) -> str:
        def apply(history):
            return tokenizer.apply_chat_template(
                history,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=not add_generation_prompt,
                **kwargs,
            )

        try:
            return apply(messages)
        except jinja2.exceptions.TemplateError:
            return apply([m for m in messages if m["role"] != "system"])

    return render
