"""Build the HTML report from a run's files (``build_report``): its data read once
(``data.read_report_data``), then the data files, the figures and each page of
``pages.PAGES`` written from it.

The whole report is written into a temporary sibling of its folder and swapped in
only when complete (``atomic.atomic_dir``): an input that cannot be read fails the
build with an error naming the file, and the previous report stays as it was.
"""

from __future__ import annotations

import logging
import shutil
import time

from ...atomic import atomic_dir
from . import figures, markup, pages
from .data import read_report_data

log = logging.getLogger(__name__)


def build_report(
    out_dir,
    leaderboard,
    *,
    agreement=None,
    display: list[str] | None = None,
    groups: dict | None = None,
    workdir=".",
    benchmarks=None,
    tasks_dir=None,
    verify: str = "fast",
    threads: int = 1,
) -> dict:
    """Write the report for the board ``leaderboard`` (a long ``leaderboard.parquet``)
    into ``out_dir``, atomically. Paths the board and score files name are relative to
    ``workdir``; ``verify``: how ``llmboard verify`` checks each score (fast, full or
    off); ``threads``: how many figures are rendered at once. Returns what was built
    (files, bytes, seconds)."""
    t0 = time.monotonic()
    # seconds per step, for bench/report_scale.py: where a large report's time goes
    timings: dict[str, float] = {}

    def lap(step: str) -> None:
        timings[step] = round(time.monotonic() - t0 - sum(timings.values()), 3)

    data = read_report_data(
        leaderboard,
        agreement=agreement,
        display=display,
        groups=groups,
        workdir=workdir,
        benchmarks=benchmarks,
        tasks_dir=tasks_dir,
        verify=verify,
        lap=lap,
    )
    with atomic_dir(out_dir) as out:
        markup.write_assets(out)
        pages.write_data_files(out, data)
        lap("data files")
        figures.write_figures(out, data, threads)
        lap("figures")
        for page in pages.PAGES:
            pages.write_page(out, data, page)
            lap(page.file)
        files = [f for f in out.rglob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
    seconds = round(time.monotonic() - t0, 2)
    log.info(
        "report: %d scores, %d files, %.1f MB in %.1f s (%s)",
        len(data.runs),
        len(files),
        size / 2**20,
        seconds,
        timings,
    )
    return {
        "scores": len(data.runs),
        "files": len(files),
        "bytes": size,
        "seconds": seconds,
        "timings": timings,
        "verify_problems": len(data.verification.problems),
    }


def publish_report(staging, folder) -> None:
    """Copy a built report (``staging``) to ``folder`` whole: the copy is made beside
    ``folder`` and swapped in, so the folder always holds one complete report."""
    with atomic_dir(folder) as tmp:
        shutil.copytree(staging, tmp, dirs_exist_ok=True)
