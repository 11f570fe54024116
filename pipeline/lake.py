"""The lake: Parquet tables under one storage root, content-hashed ids, atomic partitions.

Every table is a directory of partitions, one per id of the step that wrote it
(``scores/scoring_run_id=<id>/part-00000.parquet``). A partition is written into
``<root>/.tmp/`` and renamed into place only when complete, so a reader (DuckDB, a person's
query, a crashed run's retry) never sees a partial one. Ids are content hashes of the step's
config and upstream ids: running a step again finds its partition and writes nothing.

The pipeline never holds a DuckDB database file open: ``Lake.connect()`` is an in-memory
connection with one view per table (``storage/views.sql``), so nothing blocks ad-hoc queries.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["Lake", "SCHEMAS", "PARTITION_KEYS", "LakeError", "content_id", "git_sha",
           "resolve_root"]

_IMAGE = [("image", pa.binary()), ("height", pa.int32()), ("width", pa.int32()),
          ("channels", pa.int32())]
_PROV = [("created_at", pa.timestamp("us", tz="UTC")), ("git_sha", pa.string())]
_F = pa.float64()

SCHEMAS: dict[str, pa.Schema] = {
    "datasets": pa.schema([
        ("dataset_id", pa.string()), ("name", pa.string()), ("config", pa.string()),
        ("classes", pa.string()), ("n_train", pa.int64()), ("n_val", pa.int64()),
        ("n_test", pa.int64()), ("height", pa.int32()), ("width", pa.int32()),
        ("channels", pa.int32()), ("fingerprint", pa.string()), *_PROV]),
    "samples": pa.schema([
        ("dataset_id", pa.string()), ("split", pa.string()), ("sample_id", pa.string()),
        ("label", pa.int64()), *_IMAGE]),
    "pools": pa.schema([
        ("pool_id", pa.string()), ("dataset_id", pa.string()), ("config", pa.string()),
        ("n_items", pa.int64()), ("seconds", _F), *_PROV]),
    "augmentations": pa.schema([
        ("pool_id", pa.string()), ("aug_id", pa.string()), ("sample_id", pa.string()),
        ("label", pa.int64()), ("k", pa.int32()), ("kind", pa.string()), ("angle", _F),
        ("sigma", _F), ("flipped", pa.bool_()), ("seed", pa.int64()), *_IMAGE]),
    "models": pa.schema([
        ("model_id", pa.string()), ("arch", pa.string()), ("dataset_id", pa.string()),
        ("config", pa.string()), ("parent_model_id", pa.string()), ("checkpoint", pa.string()),
        ("sha256", pa.string()), ("train_acc", _F), ("val_acc", _F), ("test_acc", _F),
        ("test_avh", _F), ("seconds", _F), *_PROV]),
    "scoring_runs": pa.schema([
        ("scoring_run_id", pa.string()), ("model_id", pa.string()), ("pool_id", pa.string()),
        ("dataset_id", pa.string()), ("split", pa.string()), ("n_items", pa.int64()),
        ("n_undefined", pa.int64()), ("batch_size", pa.int64()), ("device", pa.string()),
        ("seconds", _F), *_PROV]),
    "scores": pa.schema([
        ("scoring_run_id", pa.string()), ("model_id", pa.string()), ("pool_id", pa.string()),
        ("item_id", pa.string()), ("label", pa.int64()), ("pred", pa.int64()),
        ("correct", pa.bool_()), ("avh", _F), ("avc_true", _F), ("confidence", _F),
        ("margin", _F), ("loss", _F), ("entropy", _F), ("el2n", _F), ("feature_norm", _F)]),
    "selections": pa.schema([
        ("selection_id", pa.string()), ("scoring_run_id", pa.string()), ("method", pa.string()),
        ("score_column", pa.string()), ("band_lo", _F), ("band_hi", _F),
        ("per_class", pa.bool_()), ("params", pa.string()), ("sql_file", pa.string()),
        ("aug_id", pa.string()), ("label", pa.int64()), ("score", _F), *_PROV]),
    "experiments": pa.schema([
        ("experiment_id", pa.string()), ("preset", pa.string()), ("config", pa.string()),
        ("dataset_id", pa.string()), ("baseline_model_id", pa.string()),
        ("pool_id", pa.string()), ("scoring_run_id", pa.string()),
        ("selections", pa.string()), ("band_search", pa.string()), *_PROV]),
    "runs": pa.schema([
        ("run_id", pa.string()), ("experiment_id", pa.string()), ("method", pa.string()),
        ("rep", pa.int64()), ("seed", pa.int64()), ("selection_id", pa.string()),
        ("n_train", pa.int64()), ("n_augmented", pa.int64()), ("loss", pa.string()),
        ("lam", _F), ("epochs", pa.int64()), ("init", pa.string()), ("train_acc", _F),
        ("val_acc", _F), ("test_acc", _F), ("test_avh", _F), ("seconds", _F),
        ("purpose", pa.string()), *_PROV]),
    "history": pa.schema([
        ("run_id", pa.string()), ("epoch", pa.int64()), ("train_loss", _F),
        ("train_acc", _F), ("val_acc", _F), ("val_avh", _F), ("test_acc", _F),
        ("test_avh", _F), ("feature_norm_mean", _F), ("weight_norm_mean", _F),
        ("seconds", _F)]),
    "drift": pa.schema([
        ("selection_id", pa.string()), ("previous_selection_id", pa.string()),
        ("experiment_id", pa.string()), ("model_id", pa.string()),
        ("scoring_run_id", pa.string()), ("round", pa.int64()), ("jaccard", _F),
        ("moved_in", pa.int64()), ("moved_out", pa.int64()), ("ks_avh", _F),
        ("ks_pvalue", _F), *_PROV]),
}
PARTITION_KEYS = {
    "datasets": "dataset_id", "samples": "dataset_id", "pools": "pool_id",
    "augmentations": "pool_id", "models": "model_id", "scoring_runs": "scoring_run_id",
    "scores": "scoring_run_id", "selections": "selection_id",
    "experiments": "experiment_id", "runs": "run_id", "history": "run_id",
    "drift": "selection_id",
}
VIEWS_SQL = Path(__file__).resolve().parent.parent / "storage" / "views.sql"


_ENGINE: duckdb.DuckDBPyConnection | None = None


def engine() -> duckdb.DuckDBPyConnection:
    """A cursor on the process's in-memory DuckDB instance (created once: a fresh instance
    per query costs a third of a second of warm-up on 10M rows). In memory, so no file lock;
    close the cursor after use."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = duckdb.connect(":memory:")
    return _ENGINE.cursor()


def query_arrow(con: duckdb.DuckDBPyConnection, query: str, params=None) -> pa.Table:
    """Run ``query`` with bound ``params``; the result as a pyarrow Table."""
    rel = con.sql(query, params=params or None)
    if rel is None:  # a statement without a result (CREATE, SET, ...)
        return pa.table({})
    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
    return fetch()


class LakeError(RuntimeError):
    """A lake read or write cannot proceed; the message names the table and id."""


def resolve_root(storage: str | os.PathLike | None = None) -> Path:
    """``storage`` if given, else ``SMARTAUG_STORAGE``, else ``./storage``."""
    return Path(storage or os.environ.get("SMARTAUG_STORAGE") or "storage")


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
    return {"created_at": dt.datetime.now(dt.UTC), "git_sha": git_sha()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _nan_to_null(values):
    """Float NaN (undefined: no angle, no parameter) is stored as NULL, which SQL aggregates
    skip, instead of a NaN that poisons them."""
    import numpy as np

    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return pa.array(values, from_pandas=True)
    return values


class PartitionWriter:
    """Streams record batches of one partition into a temporary directory; ``commit`` renames
    it into place. Files roll over every ``rows_per_file`` rows."""

    def __init__(self, lake: Lake, table: str, pid: str, *, rows_per_file: int = 1_000_000,
                 row_group_size: int = 16_384, target: Path | None = None):
        self.lake, self.table, self.pid = lake, table, pid
        self.target = target  # where commit() renames to (default: the table's partition)
        self.schema = SCHEMAS[table]
        self.rows_per_file, self.row_group_size = rows_per_file, row_group_size
        self.tmp = lake.root / ".tmp" / f"{table}-{pid}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir(parents=True)
        self._writer: pq.ParquetWriter | None = None
        self._file_rows = 0
        self._nfile = 0
        self.rows = 0

    def write(self, data: pa.RecordBatch | pa.Table | Mapping) -> None:
        if isinstance(data, Mapping):
            data = pa.table({k: _nan_to_null(v) for k, v in data.items()}, schema=self.schema)
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

    def commit(self) -> bool:
        """Make the partition visible. False if an identical one appeared meanwhile."""
        self._close_file()
        if self._nfile == 0:  # an empty partition still records that the step ran
            pq.write_table(self.schema.empty_table(), self.tmp / "part-00000.parquet",
                           compression="zstd")
        for f in self.tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final = self.target or self.lake.partition_dir(self.table, self.pid)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.tmp, final)
        except OSError:
            if final.is_dir():
                shutil.rmtree(self.tmp, ignore_errors=True)
                return False
            raise
        return True

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - already failing
                pass
            self._writer = None
        shutil.rmtree(self.tmp, ignore_errors=True)


class Lake:
    """The tables under one storage root. ``Lake()`` uses ``resolve_root()``."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = resolve_root(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        for table, schema in SCHEMAS.items():
            empty = self.root / table / "_empty" / "empty.parquet"
            if not empty.is_file():
                empty.parent.mkdir(parents=True, exist_ok=True)
                tmp = empty.with_name(f".empty-{uuid.uuid4().hex[:8]}")
                pq.write_table(schema.empty_table(), tmp)
                os.replace(tmp, empty)
        self._clean_stale_tmp()
        token = self.root / ".lake-id"
        if not token.is_file():
            tmp = self.root / f".lake-id-{uuid.uuid4().hex[:8]}"
            tmp.write_text(uuid.uuid4().hex)
            try:
                os.link(tmp, token)  # first writer wins, atomically
            except FileExistsError:
                pass
            tmp.unlink()
        self.lake_id = token.read_text().strip()

    def _clean_stale_tmp(self) -> None:
        tmp = self.root / ".tmp"
        if not tmp.is_dir():
            return
        for d in tmp.iterdir():
            parts = d.name.split("-")
            try:
                pid = int(parts[-2])
            except (IndexError, ValueError):
                continue
            if not _pid_alive(pid):
                shutil.rmtree(d, ignore_errors=True)

    # ------------------------------------------------------------ paths
    def partition_dir(self, table: str, pid: str) -> Path:
        if table not in SCHEMAS:
            raise LakeError(f"unknown table {table!r}; valid: {', '.join(SCHEMAS)}")
        return self.root / table / f"{PARTITION_KEYS[table]}={pid}"

    def has(self, table: str, pid: str) -> bool:
        return self.partition_dir(table, pid).is_dir()

    def files(self, table: str, pid: str) -> list[str]:
        d = self.partition_dir(table, pid)
        if not d.is_dir():
            raise LakeError(f"no {PARTITION_KEYS[table]} {pid!r} in {self.root / table}; "
                            f"run the step that produces it first")
        return sorted(str(p) for p in d.glob("*.parquet"))

    # ------------------------------------------------------------ writes
    def writer(self, table: str, pid: str, **kw) -> PartitionWriter:
        return PartitionWriter(self, table, pid, **kw)

    def write(self, table: str, pid: str, data: pa.Table | Mapping) -> bool:
        """Write one whole partition atomically; False (nothing written) if it exists."""
        if self.has(table, pid):
            return False
        w = self.writer(table, pid)
        try:
            w.write(data)
            return w.commit()
        except BaseException:
            w.abort()
            raise

    # ------------------------------------------------------------ reads
    def read(self, table: str, pid: str, columns: list[str] | None = None) -> pa.Table:
        parts = [pq.read_table(f, columns=columns) for f in self.files(table, pid)]
        return pa.concat_tables(parts) if parts else SCHEMAS[table].empty_table()

    def row(self, table: str, pid: str) -> dict:
        """The single metadata row of a partition (datasets, pools, models, scoring_runs)."""
        rows = self.read(table, pid).to_pylist()
        if len(rows) != 1:
            raise LakeError(f"{table} {pid}: expected one row, found {len(rows)}")
        return rows[0]

    def iter_batches(self, table: str, pid: str, *, columns: list[str] | None = None,
                     batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
        for f in self.files(table, pid):
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=columns)

    def count(self, table: str, pid: str) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files(table, pid))

    # ------------------------------------------------------------ DuckDB
    def views_sql(self) -> str:
        """``storage/views.sql`` with its ``storage/`` prefix pointed at this root."""
        text = VIEWS_SQL.read_text()
        root = str(self.root).replace("'", "''")
        return text.replace("'storage/", f"'{root}/")

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A fresh in-memory DuckDB connection with one view per table."""
        con = duckdb.connect(":memory:")
        con.execute(self.views_sql())
        return con

    def sql(self, query: str, params: Mapping | list | None = None) -> pa.Table:
        with self.connect() as con:
            return query_arrow(con, query, params)


def encode_images(images) -> pa.Array:
    """uint8 [N, H, W, C] -> binary array of raw HWC bytes, one value per image."""
    import numpy as np

    images = np.ascontiguousarray(images)
    size = int(np.prod(images.shape[1:]))
    flat = images.reshape(len(images), size)
    offsets = pa.py_buffer((np.arange(len(flat) + 1, dtype=np.int32) * size).tobytes())
    return pa.Array.from_buffers(pa.binary(), len(flat), [None, offsets, pa.py_buffer(flat)])


def decode_images(batch: pa.RecordBatch | pa.Table, id_column: str):
    """The ``image`` column of rows with ``height``/``width``/``channels`` -> uint8 [N, H, W, C].

    All rows must share one shape; a value of the wrong length (a corrupt image) raises
    ``LakeError`` naming the row's ``id_column`` value.
    """
    import numpy as np

    n = batch.num_rows
    if n == 0:
        return np.empty((0, 0, 0, 0), np.uint8)
    col = batch.column("image")
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    hwc = [np.asarray(batch.column(k)) for k in ("height", "width", "channels")]
    h, w, c = (int(a[0]) for a in hwc)
    if any((a != a[0]).any() for a in hwc):
        i = int(np.flatnonzero((hwc[0] != h) | (hwc[1] != w) | (hwc[2] != c))[0])
        raise LakeError(f"image {batch.column(id_column)[i]} is {hwc[0][i]}x{hwc[1][i]}x"
                        f"{hwc[2][i]}, the others {h}x{w}x{c}")
    size = h * w * c
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + n + 1]
    lengths = np.diff(offsets)
    if col.null_count or (lengths != size).any():
        bad = np.flatnonzero(lengths != size) if not col.null_count else \
            np.flatnonzero(np.asarray(col.is_null()))
        i = int(bad[0])
        raise LakeError(f"corrupt image in row {batch.column(id_column)[i]}: "
                        f"{lengths[i]} bytes, expected {size} ({h}x{w}x{c} uint8)")
    data = np.frombuffer(col.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[0] + n * size]
    return data.reshape(n, h, w, c)
