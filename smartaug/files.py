"""Whole-file writes that appear complete or not at all: the bytes go to a temporary name
beside the target and are renamed into place only when complete. A leaf (the standard library
only): the datasets of ``smartaug.core`` and the lake both write through it."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["HOST", "atomic_path", "owner_tag", "process_alive", "publish", "remove_stale",
           "stale", "temp_name"]

# Names of what a process writes before renaming it or removing it end in
# -<host>-<process id>-<random>: the host (a hash of its name, 8 hex digits) so that on a
# directory shared by several hosts another host's files are never taken for a dead process's.
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_OWNED = re.compile(r"-(?P<host>[0-9a-f]{8})-(?P<pid>\d{1,10})-[0-9a-f]{8}$")
_TEMP = re.compile(r"^\..+\.(?:tmp|old)-[0-9a-f]{8}-\d{1,10}-[0-9a-f]{8}$")  # temp_name's


def owner_tag() -> str:
    """``<host>-<process id>-<random>``: the end of a name this process writes and removes."""
    return f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def temp_name(final: Path, tag: str = "tmp") -> Path:
    """A hidden name beside ``final``, unique to this host, process and call."""
    return final.with_name(f".{final.name}.{tag}-{owner_tag()}")


def stale(path: Path) -> bool:
    """Whether ``path`` is what a process of this host, now gone, left behind: a name ending
    as ``owner_tag`` made it, and not a symbolic link (a link is never followed, nor
    removed)."""
    m = _OWNED.search(path.name)
    if not m or m["host"] != HOST or path.is_symlink():
        return False
    pid = int(m["pid"])
    return pid != os.getpid() and not process_alive(pid)


def process_alive(process_id: int) -> bool:
    try:
        os.kill(process_id, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def remove_stale(directory: Path) -> None:
    """Remove the temporary files and directories in ``directory`` left by a process that died
    before it could rename or remove them (a killed export, report or checkpoint write)."""
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return
    for p in entries:
        if _TEMP.match(p.name) and stale(p):
            _remove(p)


def _remove(path: Path) -> None:
    if path.is_symlink():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_tree(path: Path) -> None:
    for f in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def publish(src: Path, final: Path, *, overwrite: bool = True) -> bool:
    """Rename the complete file or directory ``src`` to ``final`` in one step.

    ``overwrite``: an existing ``final`` is replaced (a directory is swapped out, then
    removed). Without it an existing ``final`` wins: ``src`` is removed and False returned
    (two writers of one content-hashed partition wrote the same thing).
    """
    src, final = Path(src), Path(final)
    _fsync_tree(src)
    final.parent.mkdir(parents=True, exist_ok=True)
    if overwrite and src.is_dir() and final.exists():  # rename() cannot replace a full dir
        old = temp_name(final, "old")
        os.replace(final, old)
        os.replace(src, final)
        shutil.rmtree(old, ignore_errors=True)
        return True
    try:
        (os.replace if overwrite else os.rename)(src, final)
    except OSError:
        if not overwrite and final.exists():
            _remove(src)
            return False
        raise
    return True


@contextmanager
def atomic_path(final: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` (an empty directory with ``directory``); when
    the block ends it replaces ``final``; when the block raises it is removed, ``final``
    untouched. Checkpoints, reports, exports, staged dataset files, empty tables and cache
    copies are written so; what a killed process left beside ``final`` is removed first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final.parent)
    tmp = temp_name(final)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        publish(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
