"""How far a pass over a text has got, for the person waiting: the amount done, the rate and,
once both the total and a rate are known, the time left.

One mechanism for every long read outside training (training shows Keras's own bar):
preparing a corpus counts bytes read; scoring a text with `textgen evaluate` counts the
characters scored, since scoring, not reading, is what takes the time there.
"""

from __future__ import annotations

import time
from typing import Callable, TextIO

UNITS = ("bytes", "characters")


class ReadProgress:
    """The amount done and its rate on one updating line of a terminal, or a line every few
    seconds elsewhere (a log keeps a readable history instead of carriage returns).

    Called with the amount done so far, in `unit`s, and optionally a new `total` (a caller
    that learns the size as it goes, as scoring does); `total` None when it is not known
    (stdin). With `stream` None it shows nothing, so callers need no second code path.
    `clock` gives the seconds elapsed (a test passes its own).
    """

    TERMINAL_EVERY = 0.2  # seconds between redraws of a terminal line
    LOG_EVERY = 10.0  # seconds between lines written to a file or pipe

    def __init__(self, label: str, total: int | None, stream: TextIO | None,
                 clock: Callable[[], float] = time.monotonic, unit: str = "bytes"):
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
        self.label, self.total, self.stream, self.clock, self.unit = label, total, stream, clock, unit
        self.tty = stream is not None and stream.isatty()
        self.every = self.TERMINAL_EVERY if self.tty else self.LOG_EVERY
        self.started = self.shown = clock()
        self.done = 0

    def __enter__(self) -> "ReadProgress":
        return self

    def __call__(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        if self.stream is None:
            return
        now = self.clock()
        if now - self.shown >= self.every:
            self.shown = now
            self._show(now, end="\r" if self.tty else "\n")

    def __exit__(self, kind, value, traceback) -> None:
        if self.stream is not None and kind is None:
            self._show(self.clock(), end="\n")  # the final count, on a line of its own
        elif self.stream is not None and self.tty:
            self.stream.write("\n")  # an error message starts on a fresh line

    def _show(self, now: float, end: str) -> None:
        self.stream.write(f"{self.label} {self.line(now - self.started)}{end}")
        self.stream.flush()

    def line(self, seconds: float) -> str:
        """What the line says after `seconds`: "2.0 MB of 3.0 MB (0.2 MB/s, 0:05 left)"."""
        rate = self.done / max(seconds, 1e-9)
        left = ""
        if self.total is not None and 0 < self.done < self.total:  # a rate is known and work remains
            left = f", {clock_text((self.total - self.done) / rate)} left"
        if self.unit == "bytes":
            of = f" of {size_text(self.total)}" if self.total is not None else ""
            return f"{size_text(self.done)}{of} ({rate / 1e6:,.1f} MB/s{left})"
        of = f" of {self.total:,}" if self.total is not None else ""
        return f"{self.done:,}{of} characters ({rate:,.0f} characters/s{left})"


def size_text(count: int) -> str:
    """Bytes for people: 20.0 KB, 1.1 MB (a small corpus is not '0.0 MB')."""
    return f"{count / 1e3:,.1f} KB" if count < 1e6 else f"{count / 1e6:,.1f} MB"


def clock_text(seconds: float) -> str:
    """A duration as a clock shows it: 0:05, 12:40, 1:02:03."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
