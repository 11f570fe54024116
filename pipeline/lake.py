"""The lake: Parquet tables under one storage root, content-hashed ids, atomic partitions.

Every table is a directory of partitions, one per id of the step that wrote it
(``scores/scoring_run_id=<id>/part-00000.parquet``). A partition is written into
``<root>/.tmp/`` and renamed into place only when complete, so a reader (DuckDB, a person's
query, a crashed run's retry) never sees a partial one. Ids are content hashes of the step's
config and upstream ids: running a step again finds its partition and writes nothing.

The pipeline never holds a DuckDB database file open: ``Lake.connect()`` is an in-memory
connection with one view per table (``storage/views.sql``), so nothing blocks ad-hoc queries.

The root is a local path (or a ``file://`` URL), or any other fsspec URL (``s3://bucket/lake``,
``gs://...``, ``memory://...``). An object store has no rename, so there a partition is one
Parquet object, staged on local disk and uploaded in one PUT, which appears whole or not at
all; checkpoints and reports are staged locally and uploaded the same way, and read back
through a local cache (``SMARTAUG_CACHE``, default ``~/.cache/smartaug``).
"""

from __future__ import annotations

import atexit
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
_ENGINE_FS: set[str] = set()


def engine(fs=None) -> duckdb.DuckDBPyConnection:
    """A cursor on the process's in-memory DuckDB instance (created once: a fresh instance
    per query costs a third of a second of warm-up on 10M rows). In memory, so no file lock;
    close the cursor after use. ``fs``: an fsspec filesystem (a remote lake's) to read from."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = duckdb.connect(":memory:")
        atexit.register(_close_engine)
    if fs is not None and _fs_name(fs) not in _ENGINE_FS:
        _ENGINE.register_filesystem(fs)
        _ENGINE_FS.add(_fs_name(fs))
    return _ENGINE.cursor()


def _fs_name(fs) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def _close_engine() -> None:
    """DuckDB aborts the interpreter at exit if a Python filesystem is still registered."""
    global _ENGINE
    if _ENGINE is not None:
        for name in _ENGINE_FS:
            _ENGINE.unregister_filesystem(name)
        _ENGINE_FS.clear()
        _ENGINE.close()
        _ENGINE = None


def query_arrow(con: duckdb.DuckDBPyConnection, query: str, params=None) -> pa.Table:
    """Run ``query`` with bound ``params``; the result as a pyarrow Table."""
    rel = con.sql(query, params=params or None)
    if rel is None:  # a statement without a result (CREATE, SET, ...)
        return pa.table({})
    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
    return fetch()


class LakeError(RuntimeError):
    """A lake read or write cannot proceed; the message names the table and id."""


def resolve_root(storage: str | os.PathLike | None = None) -> str:
    """``storage`` if given, else ``SMARTAUG_STORAGE``, else ``./storage``: a path or a URL."""
    return os.fspath(storage or os.environ.get("SMARTAUG_STORAGE") or "storage")


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
    it into place (on a remote lake: uploads its one file). Files roll over every
    ``rows_per_file`` rows on a local lake; a remote lake's partition is a single object."""

    def __init__(self, lake: Lake, table: str, pid: str, *, rows_per_file: int = 1_000_000,
                 row_group_size: int = 16_384, target: str | os.PathLike | None = None):
        self.lake, self.table, self.pid = lake, table, pid
        self.target = target  # where commit() puts it (default: the table's partition)
        self.schema = SCHEMAS[table]
        self.rows_per_file = rows_per_file if lake.local else 2**62
        self.row_group_size = row_group_size
        self.tmp = lake.staging / f"{table}-{pid}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
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
        if not self.lake.local:
            return self._upload()
        for f in self.tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final = Path(self.target or self.lake.partition_dir(self.table, self.pid))
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.tmp, final)
        except OSError:
            if final.is_dir():
                shutil.rmtree(self.tmp, ignore_errors=True)
                return False
            raise
        return True

    def _upload(self) -> bool:
        """One object, one PUT: readers see the whole partition or none of it. Ids are
        content hashes, so two writers racing upload identical partitions."""
        final = f"{self.target or self.lake.partition_dir(self.table, self.pid)}/" \
                "part-00000.parquet"
        try:
            if self.lake.fs.exists(final):
                return False
            self.lake.fs.put_file(str(self.tmp / "part-00000.parquet"), final)
            return True
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - already failing
                pass
            self._writer = None
        shutil.rmtree(self.tmp, ignore_errors=True)


class Lake:
    """The tables under one storage root. ``Lake()`` uses ``resolve_root()``.

    ``root`` is the lake's location: a ``Path`` for a local lake, the URL for a remote one.
    ``staging`` is a local directory for files being written (``<root>/.tmp`` when local).
    """

    def __init__(self, root: str | os.PathLike | None = None):
        import fsspec

        given = resolve_root(root)
        try:
            self.fs, path = fsspec.core.url_to_fs(given)
        except (ImportError, ValueError) as e:
            raise LakeError(f"cannot open the lake {given!r}: {e}. A remote root needs its "
                            f"fsspec backend installed (s3fs for s3://, gcsfs for gs://, "
                            f"adlfs for az://)") from e
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple)
                                else (self.fs.protocol,))
        if self.local:
            self.root: Path | str = Path(path).absolute()
            self.path = str(self.root)
            self.staging = self.root / ".tmp"
            self.cache = self.root
            self.root.mkdir(parents=True, exist_ok=True)
        else:
            self.path = path.rstrip("/")
            self.root = self.fs.unstrip_protocol(self.path)
            base = Path(os.environ.get("SMARTAUG_CACHE")
                        or Path.home() / ".cache" / "smartaug").absolute()
            self.cache = base / "lakes" / hashlib.sha256(self.root.encode()).hexdigest()[:16]
            self.staging = self.cache / ".tmp"
        try:  # on an object store the bucket must exist; nothing creates one
            self._init_tables()
            self.lake_id = self._lake_id()
        except Exception as e:  # credentials, network, permissions: say where and why
            raise LakeError(f"cannot open the lake {self.url()}: {type(e).__name__}: {e}") from e
        self._clean_stale_tmp()

    def _init_tables(self) -> None:
        for table, schema in SCHEMAS.items():
            if self.local:
                empty = self.root / table / "_empty" / "empty.parquet"
                if not empty.is_file():
                    empty.parent.mkdir(parents=True, exist_ok=True)
                    tmp = empty.with_name(f".empty-{uuid.uuid4().hex[:8]}")
                    pq.write_table(schema.empty_table(), tmp)
                    os.replace(tmp, empty)
            else:
                empty = f"{self.path}/{table}/_empty/empty.parquet"
                if not self.fs.exists(empty):
                    with self.fs.open(empty, "wb") as fh:
                        pq.write_table(schema.empty_table(), fh)

    def _lake_id(self) -> str:
        if not self.local:
            token = f"{self.path}/.lake-id"
            if not self.fs.exists(token):
                self.fs.pipe_file(token, uuid.uuid4().hex.encode())
            return self.fs.cat_file(token).decode().strip()
        token = self.root / ".lake-id"
        if not token.is_file():
            tmp = self.root / f".lake-id-{uuid.uuid4().hex[:8]}"
            tmp.write_text(uuid.uuid4().hex)
            try:
                os.link(tmp, token)  # first writer wins, atomically
            except FileExistsError:
                pass
            tmp.unlink()
        return token.read_text().strip()

    def _clean_stale_tmp(self) -> None:
        if not self.staging.is_dir():
            return
        for d in self.staging.iterdir():
            parts = d.name.split("-")
            try:
                pid = int(parts[-2])
            except (IndexError, ValueError):
                continue
            if not _pid_alive(pid):
                shutil.rmtree(d, ignore_errors=True)

    # ------------------------------------------------------------ paths
    def partition_dir(self, table: str, pid: str) -> Path | str:
        """A partition's directory: a Path on a local lake, a path in ``fs`` on a remote one."""
        if table not in SCHEMAS:
            raise LakeError(f"unknown table {table!r}; valid: {', '.join(SCHEMAS)}")
        return self.location(table, f"{PARTITION_KEYS[table]}={pid}")

    def location(self, *parts: str) -> Path | str:
        """``parts`` under the root: a Path on a local lake, a path in ``fs`` otherwise."""
        if self.local:
            return self.root.joinpath(*parts)
        return "/".join([self.path, *parts])

    def url(self, *parts: str) -> str:
        """What to show a user for ``parts`` under the root: a path, or a full URL."""
        loc = self.location(*parts)
        return str(loc) if self.local else self.fs.unstrip_protocol(loc)

    def complete(self, location: Path | str) -> bool:
        """Whether a partition (or a writer's ``target``) at ``location`` has been committed."""
        if self.local:
            return Path(location).is_dir()
        self.fs.invalidate_cache(str(location))  # another worker may have committed it
        return self.fs.exists(f"{location}/part-00000.parquet")

    def has(self, table: str, pid: str) -> bool:
        return self.complete(self.partition_dir(table, pid))

    def parquet_files(self, location: Path | str) -> list[str]:
        """The Parquet files of a committed partition directory, sorted."""
        if self.local:
            return sorted(str(p) for p in Path(location).glob("*.parquet"))
        self.fs.invalidate_cache(location)  # another process may have written it since
        return sorted(self.fs.unstrip_protocol(p) for p in self.fs.glob(f"{location}/*.parquet"))

    def files(self, table: str, pid: str) -> list[str]:
        """The partition's files: paths on a local lake, URLs (readable by ``parquet_file``
        and by DuckDB through ``engine(lake.fs)``) on a remote one."""
        if not self.has(table, pid):
            raise LakeError(f"no {PARTITION_KEYS[table]} {pid!r} in {self.url(table)}; "
                            f"run the step that produces it first")
        return self.parquet_files(self.partition_dir(table, pid))

    def parquet_file(self, f: str) -> pq.ParquetFile:
        return pq.ParquetFile(f) if self.local else pq.ParquetFile(self.fs.open(f, "rb"))

    def remove(self, location: Path | str) -> None:
        """Delete a directory under the root (staging debris), if present."""
        if self.local:
            shutil.rmtree(location, ignore_errors=True)
        elif self.fs.exists(location):
            self.fs.rm(location, recursive=True)

    # ------------------------------------------------------------ files
    def local_path(self, rel: str) -> Path:
        """Where to write ``rel`` (a checkpoint, a report) before ``upload``."""
        return (self.root if self.local else self.cache).joinpath(rel)

    def upload(self, local: Path, rel: str) -> str:
        """Publish ``local`` (a file or a directory) as ``rel`` under the root; returns its
        location (a path, or a URL). A no-op on a local lake, where ``local_path`` is final."""
        if not self.local:
            target = self.location(rel)
            if local.is_dir():
                if self.fs.exists(target):
                    self.fs.rm(target, recursive=True)
                self.fs.put(str(local) + "/", target, recursive=True)
            else:
                self.fs.put_file(str(local), target)
        return self.url(rel)

    def fetch(self, rel: str) -> Path:
        """A local copy of the file ``rel`` under the root (downloaded once into the cache)."""
        local = self.local_path(rel)
        if not self.local and not local.is_file():
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}-{uuid.uuid4().hex[:8]}")
            try:
                self.fs.get_file(self.location(rel), str(tmp))
            except FileNotFoundError as e:
                raise LakeError(f"{self.url(rel)} does not exist") from e
            os.replace(tmp, local)
        return local

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
        parts = [self.parquet_file(f).read(columns=columns) for f in self.files(table, pid)]
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
            yield from self.parquet_file(f).iter_batches(batch_size=batch_size, columns=columns)

    def count(self, table: str, pid: str) -> int:
        return sum(self.parquet_file(f).metadata.num_rows for f in self.files(table, pid))

    # ------------------------------------------------------------ DuckDB
    def views_sql(self) -> str:
        """``storage/views.sql`` with its ``storage/`` prefix pointed at this root."""
        text = VIEWS_SQL.read_text()
        root = self.url().replace("'", "''")
        return text.replace("'storage/", f"'{root}/")

    def engine(self) -> duckdb.DuckDBPyConnection:
        """A cursor on the process's DuckDB instance that can read this lake's files."""
        return engine(None if self.local else self.fs)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A fresh in-memory DuckDB connection with one view per table."""
        con = duckdb.connect(":memory:")
        if not self.local:
            con.register_filesystem(self.fs)
        con.execute(self.views_sql())
        return con

    def sql(self, query: str, params: Mapping | list | None = None) -> pa.Table:
        con = self.connect()
        try:
            return query_arrow(con, query, params)
        finally:
            if not self.local:  # a connection closed with a Python filesystem registered
                con.unregister_filesystem(_fs_name(self.fs))  # aborts the interpreter
            con.close()


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
