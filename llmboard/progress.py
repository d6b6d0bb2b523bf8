"""A long job's progress where the person is looking (stderr), not only in its log file.

Backends call ``report`` after each batch (requests, windows or prompts done of a call's
total, and the tokens processed); the job runner names each item (``item``) and installs
``StatusLine`` on stderr for the job. On a terminal (a local ``make leaderboard``) that is
one line rewritten in place, at most twice a second; elsewhere (SLURM's output files, CI,
a pipe) a line when an item starts, when it ends, and at most every ``every`` seconds
between, so logs stay short. This is not logging: nothing reaches the job's log file
(which has the engine's own progress lines every 30 s), and without a status line a
report costs a check.

    [infer smollm2 fp32] 3/12 arc_easy shard 1/2: 420/600 requests, 1,850 tok/s, ~0:12 left
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

_shown: list[StatusLine] = []  # the status line of the job running in this process


def report(unit: str, done: int, total: int, tokens: int) -> None:
    """``done`` of ``total`` ``unit`` (requests, windows, prompts) of the current call
    finished, ``tokens`` processed by it so far (generated tokens, for generation)."""
    for line in _shown:
        line.progress(unit, done, total, tokens)


def item(index: int, count: int, label: str) -> None:
    """The job starts its ``index``-th (1-based) of ``count`` items."""
    for line in _shown:
        line.item(index, count, label)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class StatusLine:
    def __init__(self, title: str, stream=None, every: float = 60.0):
        self.title = title
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = 0.5 if self.tty else every
        self.item_text = ""
        self.start = self.last = time.monotonic()  # of the current call (its first report)
        self.width = 0

    def item(self, index: int, count: int, label: str) -> None:
        self.item_text = f"{index}/{count} {label}"
        self.start = self.last = time.monotonic()
        self._write(self.item_text + ": starting")

    def progress(self, unit: str, done: int, total: int, tokens: int) -> None:
        now = time.monotonic()
        if done <= 0:  # a call's first report: its clock starts (a terminal shows the total)
            self.start = self.last = now
            if self.tty:
                self._write(f"{self.item_text}: 0/{total:,} {unit}")
            return
        finished = done >= total
        if not finished and now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        text = f"{self.item_text}: {done:,}/{total:,} {unit}"
        if tokens and done:
            label = "generated tok/s" if unit == "prompts" else "tok/s"
            text += f", {tokens / elapsed:,.0f} {label}"
        if finished:
            text += f", done in {_clock(elapsed)}"
        elif done:
            text += f", ~{_clock(elapsed * (total - done) / done)} left"
        self._write(text)

    def _write(self, text: str) -> None:
        line = f"[{self.title}] {text}"
        try:
            if self.tty:  # rewrite the line in place, padded over a longer previous one
                self.stream.write("\r" + line.ljust(self.width))
                self.width = len(line)
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed terminal must not fail the job
            pass

    def close(self) -> None:
        if self.tty and self.width:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass


@contextmanager
def status_line(title: str, stream=None, every: float = 60.0):
    """Reports go to ``stream`` (stderr) as a ``StatusLine`` while the block runs."""
    line = StatusLine(title, stream, every)
    _shown.append(line)
    try:
        yield line
    finally:
        _shown.remove(line)
        line.close()
