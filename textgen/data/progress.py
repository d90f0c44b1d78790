"""How far a pass over a text has got, for the person waiting: bytes read and MB/s.

One mechanism for every long read outside training (training shows Keras's own bar):
preparing a corpus and scoring a text with `textgen evaluate`.
"""

from __future__ import annotations

import time
from typing import Callable, TextIO


class ReadProgress:
    """Bytes read and MB/s on one updating line of a terminal, or a line every few seconds
    elsewhere (a log keeps a readable history instead of carriage returns).

    Called with the bytes read so far; `total` None when the size is not known (stdin).
    With `stream` None it shows nothing, so callers need no second code path. `clock` gives
    the seconds elapsed (a test passes its own).
    """

    TERMINAL_EVERY = 0.2  # seconds between redraws of a terminal line
    LOG_EVERY = 10.0  # seconds between lines written to a file or pipe

    def __init__(self, label: str, total: int | None, stream: TextIO | None,
                 clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.stream, self.clock = label, total, stream, clock
        self.tty = stream is not None and stream.isatty()
        self.every = self.TERMINAL_EVERY if self.tty else self.LOG_EVERY
        self.started = self.shown = clock()
        self.done = 0

    def __enter__(self) -> "ReadProgress":
        return self

    def __call__(self, done: int) -> None:
        self.done = done
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
        seconds = max(now - self.started, 1e-9)
        of = f" of {size_text(self.total)}" if self.total is not None else ""
        self.stream.write(f"{self.label} {size_text(self.done)}{of} ({self.done / 1e6 / seconds:,.1f} MB/s){end}")
        self.stream.flush()


def size_text(count: int) -> str:
    """Bytes for people: 20.0 KB, 1.1 MB (a small corpus is not '0.0 MB')."""
    return f"{count / 1e3:,.1f} KB" if count < 1e6 else f"{count / 1e6:,.1f} MB"
