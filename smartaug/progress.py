"""One progress line for a long step (a study's cells, a race's trainings): done of total, the
share, the time so far and the time left, on standard error. On a terminal the line is redrawn
in place; elsewhere (a log file, CI, a Prefect run) it is said once each tenth of the way, so a
study of 510 cells writes 10 lines, not 510. A leaf: the standard library only."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

__all__ = ["Bar"]


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Bar:
    """``what``'s progress over ``total`` units; ``log`` None: silent (``--quiet``). ``stream``
    decides the style: a terminal's line is redrawn, anything else gets ``log`` lines."""

    def __init__(self, what: str, total: int, log: Callable[[str], None] | None, *,
                 stream=None, clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.log, self.clock = what, max(int(total), 0), log, clock
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start, self.done, self.said = clock(), 0, 0

    def text(self) -> str:
        elapsed = self.clock() - self.start
        share = self.done / self.total if self.total else 1.0
        left = elapsed / self.done * (self.total - self.done) if self.done else None
        return (f"{self.what}: {self.done}/{self.total} ({100 * share:.0f} %), "
                f"{_clock(elapsed)} so far" + ("" if left is None or self.done == self.total
                                                else f", about {_clock(left)} left"))

    def update(self, done: int) -> None:
        """``done`` units of ``total`` are done."""
        self.done = min(int(done), self.total)
        if self.log is None:
            return
        if self.tty:
            self.stream.write("\r" + self.text().ljust(78))
            self.stream.flush()
            if self.done == self.total:
                self.stream.write("\n")
            return
        tenth = 10 * self.done // self.total if self.total else 10
        if tenth > self.said or self.done == self.total:
            self.said = max(tenth, self.said + (self.done == self.total))
            self.log(self.text())
