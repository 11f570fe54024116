"""The one way rows enter the lake: ``with lake.writer(table, key) as w: w.write(columns)``.
Rows stream into staging; the block's end commits the partition in one step (a rename, or one
upload) with its manifest (``smartaug.lake.manifest``), an exception aborts it. Rows get the
provenance columns the caller does not give."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from smartaug.files import publish
from smartaug.lake.manifest import MANIFEST, write_manifest
from smartaug.lake.provenance import provenance
from smartaug.lake.schemas import OPTIONAL, SCHEMAS
from smartaug.orphans import EXIT_CODE, orphaned

__all__ = ["PartitionWriter"]

ROWS_PER_FILE = 1_000_000  # rows per Parquet file of a local partition (then a new file)
ROW_GROUP_ROWS = 16_384  # rows per Parquet row group: the unit of a scoring shard


def _column(values):
    """Float NaN (undefined: no angle, no parameter) is stored as NULL, which SQL aggregates
    skip, instead of a NaN that poisons them."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return pa.array(values, from_pandas=True)
    return values


class PartitionWriter:
    """One partition of ``table`` (``key`` = its id), written as a context manager.

    Files roll over every ``ROWS_PER_FILE`` rows on a local lake; an object store's partition
    is one object. ``target``: where the commit puts it (default: the table's partition).
    After the block, ``committed`` is False when an identical partition appeared meanwhile.
    """

    def __init__(self, lake, table: str, key: str, *, target=None,
                 rows_per_file: int = ROWS_PER_FILE, row_group_size: int = ROW_GROUP_ROWS):
        self.lake, self.table, self.key = lake, table, key
        self.target = target or lake.partition_dir(table, key)
        self.schema = SCHEMAS[table]
        self.rows_per_file = rows_per_file if lake.local else 2**62
        self.row_group_size = row_group_size
        self.stamp = {k: v for k, v in provenance().items() if k in self.schema.names}
        self.tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        self._file_rows = self._nfile = self.rows = 0
        self.committed = False

    def __enter__(self) -> PartitionWriter:
        self.tmp = self.lake.stage(f"{self.table}-{self.key}")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:  # closing the last file can fail too (a full disk): then nothing is committed
            self.committed = self._commit()
        except BaseException:
            self._abort()
            raise

    def write(self, data: pa.RecordBatch | pa.Table | Mapping) -> None:
        """Append rows: a mapping of columns (lists, numpy or arrow arrays) or a table/batch."""
        if isinstance(data, Mapping):
            n = len(next(iter(data.values())))
            stamp = {k: [v] * n for k, v in self.stamp.items() if k not in data}
            stamp.update({k: [None] * n for k in OPTIONAL.get(self.table, ()) if k not in data})
            data = pa.table({**{k: _column(v) for k, v in data.items()}, **stamp},
                            schema=self.schema)
        elif data.schema != self.schema:
            data = data.select(self.schema.names).cast(self.schema)
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        if self._writer is None or self._file_rows >= self.rows_per_file:
            self._close_file()
            path = self.tmp / f"part-{self._nfile:05d}.parquet"
            self._writer = pq.ParquetWriter(path, self.schema, compression="zstd")
            self._nfile += 1
        self._writer.write_table(data, row_group_size=self.row_group_size)
        self._file_rows += data.num_rows
        self.rows += data.num_rows

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._file_rows = 0

    def _commit(self) -> bool:
        self._close_file()
        if orphaned():  # a worker whose parent died: its results are nobody's, write nothing
            self._abort()
            os._exit(EXIT_CODE)
        if self._nfile == 0:  # an empty partition still records that the step ran
            pq.write_table(self.schema.empty_table(), self.tmp / "part-00000.parquet",
                           compression="zstd")
        write_manifest(self.tmp, self.table, self.key)  # committed with the files
        if self.lake.local:
            return publish(self.tmp, Path(self.target), overwrite=False)
        try:  # one object, one PUT: readers see the whole partition or none of it
            final = f"{self.target}/part-00000.parquet"
            if self.lake.fs.exists(final):
                return False  # the manifest goes first: a partition is never seen without it
            self.lake.fs.put_file(str(self.tmp / MANIFEST),
                                  f"{self.target}/{MANIFEST}")
            self.lake.fs.put_file(str(self.tmp / "part-00000.parquet"), final)
            return True
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - already failing
                pass
            self._writer = None
        shutil.rmtree(self.tmp, ignore_errors=True)
