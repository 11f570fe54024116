"""The failures a user can fix, and how each is told.

Bad input (a wrong path, an unknown id, an option out of range, a file the safe loader
refuses), a tampered lake, a full disk: the CLI prints ``error: <message>`` with exit code 2,
and Prefect fails the run at once with the message as its state (no retry can fix them).
Every step commits its output atomically, so none of them leaves partial rows behind.
"""

from __future__ import annotations

import errno

from pipeline.lake import LakeError

__all__ = ["USER_ERRORS", "is_permanent", "message"]

# ValueError covers DatasetError, ScoringError, SelectionError, SpaceError, ConfigError, the
# configs' checks and pydantic's ValidationError
USER_ERRORS: tuple[type[BaseException], ...] = (LakeError, ValueError, OSError)

# OSErrors no retry fixes: the disk, permissions, a missing or misplaced file
_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                     errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


def message(e: BaseException) -> str:
    """One line (or a few) saying what went wrong and how to fix it."""
    if isinstance(e, OSError):
        where = f" ({e.filename})" if e.filename else ""
        if e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e):
            return (f"no space left on the device{where}: free some space (or point --storage "
                    f"at a larger disk) and run the command again; nothing partial was "
                    f"committed, and the steps that finished are not redone")
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return (f"permission denied{where}: {e.strerror}; run as a user who can write "
                    f"there, or choose another --storage")
        if e.strerror:
            return f"{e.strerror}{where}"
    return str(e) or type(e).__name__


def is_permanent(e: BaseException) -> bool:
    """Whether retrying cannot help (bad input, a tampered lake, a full disk)."""
    if isinstance(e, OSError):  # errno None: raised by smartaug with its own message
        return e.errno is None or e.errno in _PERMANENT_ERRNOS
    return isinstance(e, USER_ERRORS)
