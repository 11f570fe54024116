"""The failures a user can fix, as one type, and how each is told.

``UserError`` is the base of every error a user can fix: bad input (a wrong path, an unknown
id, an option out of range, a file the safe loader refuses), a tampered lake, a config that
does not validate. The CLI prints ``error: <message>`` with exit code 2 for those, and Prefect
fails the run at once with the message as its state (no retry can fix them). So does an
``OSError`` of the machine's own (a full disk, a permission, a missing file). Anything else is
a bug: the CLI shows its traceback and Prefect may retry it. Every step commits its output
atomically, so none of them leaves partial rows behind.

A leaf module, like ``smartaug.config``: it imports nothing from ``smartaug``.
"""

from __future__ import annotations

import errno

__all__ = ["ConfigError", "InputError", "UserError", "is_user_error", "message"]


class UserError(Exception):
    """A failure the user can fix; its message says what is wrong and how to fix it."""


class ConfigError(UserError, ValueError):
    """A config, an experiment or study file, or an option cannot be used; the message names
    the field, the value and what is valid."""


class InputError(UserError, ValueError):
    """An argument or an input file a step cannot use (a label out of range, a weights file
    that does not fit, a target directory that is not empty)."""


# OSErrors of the machine that no retry fixes: the disk, permissions, a missing or misplaced file
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


def is_user_error(e: BaseException) -> bool:
    """Whether the user can fix ``e`` (and a retry cannot): a ``UserError``, or an ``OSError``
    of the disk, a permission or a missing file."""
    if isinstance(e, UserError):
        return True
    return isinstance(e, OSError) and e.errno in _USER_ERRNOS


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
