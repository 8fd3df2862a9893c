"""How far long work is (``medialog rebuild``), on stderr: ``Progress(total, label)``, then
``advance(n)`` as the work goes and ``close()`` when it ends, however it ends.

On a terminal one line is redrawn, at most every ``REDRAW_S``: a bar, done/total, the rate and
the time left. Elsewhere (a log, a pipe) a plain line says the total at the start, another how
far it is at most every ``every_s`` seconds, and a last one whether it got done: readable in a
log, which a redrawn line or a line per batch would flood. Why: a rebuild may read the whole
log for hours, and whoever runs it needs to know how long it has left."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

REDRAW_S = 0.1  # a terminal's line is redrawn at most this often
EVERY_S = 5.0  # elsewhere, a line at most this often
BAR_WIDTH = 30


def clock_time(seconds: float) -> str:
    """``seconds`` as h:mm:ss."""
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02}:{s % 60:02}"


class Progress:
    """Work of ``total`` ``unit`` reported to ``stream`` (default: stderr), a terminal or not
    (``stream.isatty()``); see the module doc. ``clock``: seconds, for tests."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, *,
                 unit: str = "records", every_s: float = EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = max(total, 0)
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.unit = unit
        self.done = 0
        self.clock = clock
        self.tty = self.stream.isatty()
        self._every = REDRAW_S if self.tty else every_s
        self._began = self._shown = clock()
        self._closed = False
        if self.tty:
            self._draw(self._began)
        else:
            self._write(f"{label}: {self.total:,} {unit} to go\n")

    def advance(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if now - self._shown >= self._every:
            self._shown = now
            if self.tty:
                self._draw(now)
            else:
                self._write(f"{self.label}: {self._status(now)}\n")

    def close(self) -> None:
        """The last line: done when ``total`` was reached, stopped otherwise. Once only."""
        if self._closed:
            return
        self._closed = True
        now = self.clock()
        if self.tty:
            self._draw(now)
            self._write("\n")
            return
        elapsed = now - self._began
        ended = "done" if self.done >= self.total else "stopped"
        self._write(f"{self.label}: {ended}, {self.done:,}/{self.total:,} {self.unit} in "
                    f"{clock_time(elapsed)} ({self._rate(elapsed):,.0f}/s)\n")

    def _rate(self, elapsed: float) -> float:
        return self.done / elapsed if elapsed > 0 else 0.0

    def _status(self, now: float) -> str:
        """done/total (percent), rate, time left."""
        rate = self._rate(now - self._began)
        left = max(self.total - self.done, 0)
        eta = clock_time(left / rate) if rate > 0 else "?"
        return (f"{self.done:,}/{self.total:,} {self.unit} ({self._fraction():.0%}), "
                f"{rate:,.0f}/s, ETA {eta}")

    def _fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 1.0

    def _draw(self, now: float) -> None:
        filled = round(self._fraction() * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        # \r back to the line's start, \x1b[K erases what a longer earlier line left
        self._write(f"\r{self.label} [{bar}] {self._status(now)}\x1b[K")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
