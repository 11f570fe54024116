"""Each committed partition carries ``_manifest.json``: its table, key, and per Parquet file the
row count, size and sha256, written into the staging directory before the commit (so it appears
with the partition, atomically). A read checks the partition against it: a file added, removed,
truncated or edited (one AVH value, one label, one recipe seed) is an error naming the
partition, never data read as is. ``smartaug verify`` checks every partition of a lake.

On a local lake a read hashes each file once per process (a file's (size, mtime) seen again is
not hashed again); on an object store a read checks names and sizes, and ``verify`` hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq

from smartaug.errors import UserError

__all__ = ["MANIFEST", "ManifestError", "check_manifest", "describe", "file_sha256", "local_digest",
           "parse_manifest", "write_manifest"]

MANIFEST = "_manifest.json"
FORMAT = "smartaug-partition/1"
_SEEN: dict[str, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, sha256) hashed here


class ManifestError(UserError, RuntimeError):
    """A partition differs from what its commit recorded (the message names it and how)."""


def file_sha256(f) -> str:
    """sha256 of an open binary file or a local path."""
    if isinstance(f, str | os.PathLike):
        with open(f, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    return hashlib.file_digest(f, "sha256").hexdigest()


def describe(directory: Path, table: str, key: str) -> dict:
    """The manifest of the Parquet files in a local ``directory`` (a staged partition)."""
    files = {}
    for p in sorted(Path(directory).glob("*.parquet")):
        files[p.name] = {"rows": pq.ParquetFile(p).metadata.num_rows,
                         "bytes": p.stat().st_size, "sha256": file_sha256(p)}
    return {"format": FORMAT, "table": table, "key": key,
            "rows": sum(f["rows"] for f in files.values()), "files": files}


def write_manifest(directory: Path, table: str, key: str) -> dict:
    """Write ``directory``'s manifest into it (before the directory is published)."""
    manifest = describe(directory, table, key)
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def parse_manifest(text: str | bytes, where: str) -> dict:
    try:
        manifest = json.loads(text)
    except ValueError as e:
        raise ManifestError(f"{where}: its {MANIFEST} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(
            manifest.get("files"), dict):
        raise ManifestError(f"{where}: its {MANIFEST} is not a smartaug manifest ({FORMAT})")
    return manifest


def check_manifest(manifest: dict | None, table: str, key: str, found: dict[str, int], where: str, *,
          digest=None) -> None:
    """Compare a partition with its manifest: ``found`` maps each Parquet file's name to its
    size; ``digest(name)`` (when given) returns the file's sha256. Raises ManifestError."""
    redo = ("the lake was modified outside smartaug; remove the partition (and the row that "
            "records it) to redo the step, or restore it from a copy")
    if manifest is None:
        raise ManifestError(f"{where} has no {MANIFEST}, so nothing says smartaug wrote it: "
                            f"{redo}. A partition you trust as it is (written by hand, or "
                            f"before manifests) is adopted by `smartaug verify --adopt`")
    if (manifest.get("table"), manifest.get("key")) != (table, key):
        raise ManifestError(f"{where}: its manifest is that of {manifest.get('table')} "
                            f"{manifest.get('key')!r}, moved here: {redo}")
    recorded = manifest["files"]
    for name in sorted(set(found) - set(recorded)):
        raise ManifestError(f"{where}: file {name} was not written by smartaug: {redo}")
    for name in sorted(set(recorded) - set(found)):
        raise ManifestError(f"{where}: file {name} is missing: {redo}")
    for name, size in sorted(found.items()):
        entry = recorded[name]
        if size != entry.get("bytes"):
            raise ManifestError(f"{where}: file {name} was edited (it holds {size} bytes, its "
                                f"commit wrote {entry.get('bytes')}): {redo}")
        if digest is not None and digest(name) != entry.get("sha256"):
            raise ManifestError(f"{where}: file {name} was edited (its sha256 differs from the "
                                f"one recorded at its commit): {redo}")


def local_digest(directory: Path):
    """``digest`` for ``check`` on a local partition: each file hashed once per process."""
    def digest(name: str) -> str:
        p = Path(directory) / name
        st = p.stat()
        seen = _SEEN.get(str(p))
        if seen is not None and seen[:2] == (st.st_size, st.st_mtime_ns):
            return seen[2]
        sha = file_sha256(p)
        _SEEN[str(p)] = (st.st_size, st.st_mtime_ns, sha)
        return sha

    return digest
