"""The report's plots: Vega-Altair specifications rendered to static SVG by vl-convert
(no JavaScript at viewing time, nothing fetched; the same files go into
``snakemake --report``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from ...workflow import layout
from .collect import BITS

if TYPE_CHECKING:
    from .data import ReportData

FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
TEXT_CELLS_MAX = 600  # heatmaps with more cells than this show colours only
TASK_LINES_MAX = 10  # precision plots with more tasks show their range instead


def heatmap_files(precisions: list[str]) -> list[tuple[str, str]]:
    """(precision, its heatmap's path in the report), one per precision."""
    return [(p, f"{layout.REPORT_HEATMAPS}/{p}.svg") for p in precisions]


def precision_plot_files(models: list[str]) -> list[tuple[str, str]]:
    """(model, its precision plot's path in the report), one per model."""
    return [(m, f"{layout.REPORT_PRECISION_PLOTS}/{m}.svg") for m in models]


def write_figures(out: Path, data: ReportData, threads: int) -> None:
    """Every figure the pages show, rendered on ``threads`` threads (vl-convert works
    outside the GIL)."""
    (out / layout.REPORT_HEATMAPS).mkdir(parents=True)
    (out / layout.REPORT_PRECISION_PLOTS).mkdir(parents=True)
    work = [(heatmap, p, f) for p, f in heatmap_files(data.precisions)]
    work += [(precision_plot, m, f) for m, f in precision_plot_files(data.models)]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        svgs = pool.map(lambda w: w[0](data.wide, data.display, w[1]), work)
        for (_, _, f), svg in zip(work, svgs):
            (out / f).write_text(svg, encoding="utf-8")


def _svg(chart) -> str:
    import vl_convert as vlc

    # the specification is built by our own code: schema validation (most of altair's
    # time) is skipped
    return vlc.vegalite_to_svg(chart.to_dict(validate=False))


def _config(chart):
    return chart.configure(font=FONT).configure_view(stroke=None)


def heatmap(wide, display: list[str], precision: str) -> str:
    """Models x tasks at one precision: colour = score normalised as the Open LLM
    Leaderboard v2 does (0 = chance or below, 100 = perfect), text = raw score."""
    import altair as alt
    import polars as pl

    sub = wide.filter(pl.col("precision") == precision).sort(
        "average", descending=True, nulls_last=True
    )
    cols = [*display, "average"]
    values = []
    for r in sub.iter_rows(named=True):
        for t in cols:
            raw = r[t]
            norm = r["average_norm"] if t == "average" else r[f"{t}_norm"]
            if raw is None:
                continue
            values.append({"model": r["model"], "task": t, "score": raw, "normalised": norm})
    data = alt.Data(values=values)
    order = sub["model"].to_list()
    base = alt.Chart(data).encode(
        x=alt.X("task:N", sort=cols, title=None, axis=alt.Axis(labelAngle=-45, orient="top")),
        y=alt.Y("model:N", sort=order, title=None),
    )
    rect = base.mark_rect().encode(
        color=alt.Color(
            "normalised:Q",
            title="normalised (0 = chance)",
            scale=alt.Scale(scheme="blues", domain=[0, 100], clamp=True),
        )
    )
    chart = rect
    if len(values) <= TEXT_CELLS_MAX:
        text = base.mark_text(fontSize=10).encode(
            text=alt.Text("score:Q", format=".2f"),
            color=alt.condition(
                "datum.normalised > 60",
                alt.value("white"),
                alt.value("black"),
            ),
        )
        chart = rect + text
    step = 34 if len(cols) <= 20 else 16
    chart = chart.properties(
        title=f"Primary metric per task, {precision} (colour: normalised, text: raw)",
        width=alt.Step(step),
        height=alt.Step(18),
    )
    return _svg(_config(chart))


def precision_plot(wide, display: list[str], model: str) -> str:
    """One model's scores against bits per weight: the average (black) and each task
    (with more than ``TASK_LINES_MAX`` tasks, the band from the lowest to the highest
    task score and their median instead of one line each)."""
    import statistics

    import altair as alt
    import polars as pl

    sub = wide.filter(pl.col("model") == model)
    values, bands = [], []
    for r in sub.iter_rows(named=True):
        bits = BITS.get(r["precision"])
        if bits is None:
            continue
        scores = [r[t] for t in display if r[t] is not None]
        if r["average"] is not None:
            values.append(
                {
                    "bits": bits,
                    "precision": r["precision"],
                    "task": "average",
                    "score": r["average"],
                }
            )
        if len(display) <= TASK_LINES_MAX:
            values += [
                {"bits": bits, "precision": r["precision"], "task": t, "score": r[t]}
                for t in display
                if r[t] is not None
            ]
        elif scores:
            bands.append(
                {
                    "bits": bits,
                    "lo": min(scores),
                    "hi": max(scores),
                    "median": statistics.median(scores),
                }
            )
    x = alt.X(
        "bits:Q",
        title="bits per weight",
        scale=alt.Scale(type="log", base=2, domain=[3.5, 36]),
        axis=alt.Axis(values=[4, 8, 16, 32], format="d"),
    )
    y = alt.Y("score:Q", title="primary metric", scale=alt.Scale(zero=False))
    data = alt.Data(values=values)
    avg = (
        alt.Chart(data)
        .transform_filter("datum.task == 'average'")
        .mark_line(
            point=alt.OverlayMarkDef(size=60, filled=True, color="black"),
            color="black",
            strokeWidth=2.5,
        )
        .encode(x=x, y=y, shape=alt.Shape("precision:N", title="precision"))
    )
    if len(display) <= TASK_LINES_MAX:
        tasks = (
            alt.Chart(data)
            .transform_filter("datum.task != 'average'")
            .mark_line(point=True, strokeWidth=1.2, opacity=0.8)
            .encode(x=x, y=y, color=alt.Color("task:N", sort=display, title="task"))
        )
        layers = tasks + avg
    else:
        band_data = alt.Data(values=bands)
        band = (
            alt.Chart(band_data)
            .mark_area(opacity=0.25, color="#7a8aa6")
            .encode(x=x, y=alt.Y("lo:Q", title="primary metric"), y2="hi:Q")
        )
        median = (
            alt.Chart(band_data)
            .mark_line(strokeDash=[4, 3], color="#55607a")
            .encode(x=x, y="median:Q")
        )
        layers = band + median + avg
    title = (
        f"{model}: score against bits per weight (black: average)"
        if len(display) <= TASK_LINES_MAX
        else f"{model}: average (black), median and range of {len(display)} tasks"
    )
    chart = layers.properties(title=title, width=360, height=240)
    return _svg(_config(chart))
