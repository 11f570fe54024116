"""Content-hashed ids and the provenance every row records (when, and from which commit)."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

__all__ = ["content_id", "git_sha", "provenance"]


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_id(kind: str, payload: Mapping) -> str:
    """16 hex chars of sha256 over the step kind and its canonical-JSON inputs."""
    return hashlib.sha256(f"{kind}\n{_canonical(payload)}".encode()).hexdigest()[:16]


@functools.cache
def git_sha() -> str:
    """The source tree's commit (``-dirty`` when it has uncommitted changes), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("SMARTAUG_GIT_SHA", "unknown")


def provenance() -> dict:
    """The provenance columns of a row written now: ``created_at`` (UTC) and ``git_sha``."""
    return {"created_at": dt.datetime.now(dt.UTC), "git_sha": git_sha()}
