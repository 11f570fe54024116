"""No worker outlives the process that started it. A worker process (a study's training cells,
the augmentation pool's forked workers) calls ``watch_parent(pid)`` when it starts: a daemon
thread ends the worker within ``INTERVAL`` seconds of its parent's death (it is re-parented, so
``os.getppid()`` changes; this holds for SIGKILL, which no handler sees), and the lake's writer
asks ``orphaned()`` before it commits, so a worker never writes after its parent died."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["INTERVAL", "orphaned", "watch_parent"]

INTERVAL = 0.2  # seconds between two looks at the parent
EXIT_CODE = 70  # what an orphaned worker exits with (EX_SOFTWARE)
_watched: tuple[int, int] | None = None  # (this worker's pid, its parent's pid)


def orphaned() -> bool:
    """Whether this process is a worker whose parent has died (a process forked from a
    worker inherits the record, not the watch: it is not that worker)."""
    return (_watched is not None and _watched[0] == os.getpid()
            and os.getppid() != _watched[1])


def _watch() -> None:
    while not orphaned():
        time.sleep(INTERVAL)
    os._exit(EXIT_CODE)


def watch_parent(parent: int) -> None:
    """End this process (``os._exit``) once ``parent`` is no longer its parent; once."""
    global _watched
    if _watched is not None and _watched[0] == os.getpid():
        return
    _watched = (os.getpid(), parent)
    if orphaned():  # the parent died before this worker got here
        os._exit(EXIT_CODE)
    threading.Thread(target=_watch, name="smartaug-parent-watch", daemon=True).start()
