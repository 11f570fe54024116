"""``smartaug verify``: every partition of a lake against the manifest its commit wrote (the same
files, sizes and sha256: ``smartaug.lake.manifest``), every recorded row count, every run record
against its data, every checkpoint against the weights' sha256 its models row recorded, and
nothing in a table's directory that smartaug did not write."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from smartaug.lake import PARTITION_KEYS, TABLES, Lake, LakeError
from smartaug.lake.manifest import MANIFEST, write_manifest
from smartaug.lake.readers import checkpoint_path
from smartaug.lake.store import RECORDED_ROWS
from smartaug.models import ModelError, read_checkpoint

__all__ = ["Verification", "verify"]


@dataclass
class Verification:
    """What ``verify`` checked and each problem found (one line each, naming the place)."""

    partitions: int = 0
    checkpoints: int = 0
    adopted: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(lake: Lake, *, checkpoints: bool = True, adopt: bool = False) -> Verification:
    """Check the whole lake; never stops at the first problem. ``adopt``: first give a
    manifest of its files as they are to each partition that has none (a local lake written
    before manifests existed; only for a lake you trust as it is)."""
    result = Verification()
    for table in TABLES:
        prefix = f"{PARTITION_KEYS[table]}="
        for name in lake.entries(table):
            if name == "_empty":
                continue
            if not name.startswith(prefix):
                result.problems.append(f"{lake.url(table, name)} is not a smartaug partition "
                                       f"(a {table} partition is named {prefix}ID)")
                continue
            key = name[len(prefix):]
            result.partitions += 1
            try:
                where = Path(str(lake.partition_dir(table, key)))
                if adopt and lake.local and where.is_dir() and not (where / MANIFEST).exists():
                    write_manifest(where, table, key)
                    result.adopted += 1
                if not lake.complete(lake.partition_dir(table, key)):
                    raise LakeError(f"{lake.url(table, name)} holds no committed partition")
                rows = lake.check_partition(table, key, full=True)
                _parquet(lake, table, key, rows)
                if table in RECORDED_ROWS and lake.has(RECORDED_ROWS[table][0], key):
                    lake.count(table, key)  # the recorded row count
                lake.has(table, key)  # a run record whose data partition is gone
            except LakeError as e:
                result.problems.append(str(e))
    if checkpoints:
        for model_id in lake.partitions("models"):
            try:
                row = lake.row("models", model_id)
                payload = read_checkpoint(checkpoint_path(lake, model_id))
                if payload["sha256"] != row["sha256"]:
                    raise ModelError(f"checkpoint of model {model_id}: weights sha256 "
                                     f"{payload['sha256'][:12]}, the models table recorded "
                                     f"{row['sha256'][:12]}")
                result.checkpoints += 1
            except (LakeError, ModelError) as e:
                if str(e) not in result.problems:
                    result.problems.append(str(e))
    return result


def _parquet(lake: Lake, table: str, key: str, rows: int) -> None:
    """LakeError unless every file of the partition is Parquet (its footer read) and they
    hold the rows its manifest records: a file whose sha256 was rewritten into the manifest
    by hand matches it, and is still no table."""
    held = 0
    for f in lake.parquet_files(lake.partition_dir(table, key)):
        try:
            held += lake.parquet_file(f).metadata.num_rows
        except (pa.ArrowInvalid, OSError) as e:
            raise LakeError(f"{f} is not a Parquet file ({e}): the lake was modified outside "
                            f"smartaug; remove the partition (and the row that records it) to "
                            f"redo the step, or restore it from a copy") from None
    if held != rows:
        raise LakeError(f"{lake.url(table, f'{PARTITION_KEYS[table]}={key}')} holds {held} "
                        f"rows, its manifest records {rows}: the lake was modified outside "
                        f"smartaug")
