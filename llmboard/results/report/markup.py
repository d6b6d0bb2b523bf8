"""The HTML the pages are made of: Jinja2 templates (autoescaped), itables' DataTables
and the assets every page loads (``pages.render_page`` puts them together).

itables (``to_html_datatable(..., connected=False)``) writes each table's data and
init; the DataTables bundle it ships is written once, as ``assets/itables.js`` beside
the pages (itables' own offline loader, which imports the bundle from a ``blob:`` URL,
so a page opened from disk loads nothing from the network and no page carries its
own copy of the bundle).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXTERNAL_LINK = re.compile(r"<a\s+href=[\"']?https?://[^>]*>(.*?)</a>", re.S)


@lru_cache(maxsize=1)
def environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def itables_key() -> str:
    """The global under which itables' offline loader leaves the bundle's module."""
    from itables.javascript import _itables_underscore_version

    return _itables_underscore_version()


def itables_loader() -> str:
    """itables' offline loader (the DataTables bundle and its CSS, base64) as a
    classic script: one file every page includes."""
    from itables import options
    from itables.javascript import generate_init_offline_itables_html

    html = generate_init_offline_itables_html(options.dt_bundle)
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    if not scripts:
        raise RuntimeError("itables' offline loader changed shape: no <script> found")
    return "\n".join(scripts)


def write_assets(out: Path) -> None:
    assets = out / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "itables.js").write_text(itables_loader(), encoding="utf-8")
    for name in ("report.js", "report.css"):
        (assets / name).write_text((HERE / "static" / name).read_text(), encoding="utf-8")


def datatable(
    df, table_id: str, *, page_length: int = 25, order=None, column_defs=None, **options
) -> str:
    """A DataFrame as an interactive DataTable (sorting, search, paging), data inline."""
    import polars as pl
    from itables import to_html_datatable

    df = df.with_columns(pl.col(pl.Float64).fill_nan(None))
    html = to_html_datatable(
        df,
        table_id=table_id,
        connected=False,
        maxBytes=0,
        maxColumns=0,
        show_dtypes=False,
        format_floats_in_python=False,
        warn_on_unexpected_types=False,
        display_logo_when_loading=False,
        text_in_header_can_be_selected=False,
        allow_html=True,
        classes="display compact nowrap",
        style="width:100%;margin:0;caption-side:bottom",
        pageLength=page_length,
        lengthMenu=[10, 25, 50, 100, 500, 5000],
        order=order or [],
        columnDefs=column_defs or [],
        **options,
    )
    # itables' loading and fallback notes link to its website: keep their text only, so
    # that nothing on a page points off the disk
    return EXTERNAL_LINK.sub(r"\1", html)


def number_columns(df, digits: dict[str, int]) -> list[dict]:
    """columnDefs that print floats with a fixed number of digits (sorting keeps the
    numbers)."""
    from itables import JavascriptFunction

    out = []
    cols = list(df.columns)
    for name, d in digits.items():
        if name in cols:
            out.append(
                {
                    "targets": [cols.index(name)],
                    "render": JavascriptFunction(
                        f"function (d, t) {{ return llmboard.fixed(d, t, {d}); }}"
                    ),
                }
            )
    return out


def js_columns(df, renderers: dict[str, str]) -> list[dict]:
    """columnDefs rendering columns with a function of report.js: ``{column: call}``,
    the call's ``d``, ``t`` being the cell's data and the rendering type."""
    from itables import JavascriptFunction

    cols = list(df.columns)
    return [
        {
            "targets": [cols.index(c)],
            "render": JavascriptFunction(f"function (d, t) {{ return {call}; }}"),
        }
        for c, call in renderers.items()
        if c in cols
    ]


def task_links(df, prefix: str, column: str = "task") -> list[dict]:
    return js_columns(df, {column: f"llmboard.link(d, t, {prefix!r})"})


def script_json(value) -> str:
    """``value`` as JSON to embed in a ``<script type="application/json">``: ``<``, ``>``
    and ``&`` escaped (``\\u003c`` ...), so that no text from a task, a model name or a
    document can close the script element or open markup."""
    import json

    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
