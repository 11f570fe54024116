"""The lake's store: where each table's partitions live under one root (a local path, a
``file://`` URL, or any fsspec URL such as ``s3://bucket/lake``), and how to read them.

A partition appears whole or not at all (``writer``); ids are content hashes, so a step run
again finds its partition. The pipeline never holds a DuckDB database file open: queries run
on an in-memory instance with one view per table (one instance a lake and process, its views
made once; each query globs the partitions again), so nothing blocks a person's query. On an
object store, checkpoints and reports are read through a local cache (``SMARTAUG_CACHE``).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from smartaug.errors import UserError
from smartaug.files import atomic_path, owner_tag, stale
from smartaug.lake.manifest import (
    MANIFEST,
    ManifestError,
    check_manifest,
    file_sha256,
    local_digest,
    parse_manifest,
)
from smartaug.lake.schemas import PARTITION_KEYS, PRODUCED_BY, SCHEMAS, views_sql
from smartaug.lake.writer import PartitionWriter

__all__ = ["Lake", "LakeError", "check_name", "query_arrow", "resolve_root", "sandbox"]

# data table -> (the table recording its row count, the count's columns, what to call it)
RECORDED_ROWS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "samples": ("datasets", ("n_train", "n_val", "n_test"), "dataset"),
    "augmentations": ("pools", ("n_items",), "pool"),
    "scores": ("scoring_runs", ("n_items",), "scoring run"),
}
RECORDED_BY = {meta: data for data, (meta, _, _) in RECORDED_ROWS.items()}
READ_BATCH_ROWS = 4096  # rows per record batch when a partition is streamed

# this process's DuckDB instances: (pid, lake URL, id of its filesystem on a remote lake) ->
# (instance, the name of the Python filesystem registered on it or None, the filesystem). A
# local lake's stay at most MAX_LOCAL_ENGINES (the least recently used is dropped); a remote
# lake's until exit (_close_engine).
_LAKE_ENGINES: dict[tuple, tuple] = {}
_ENGINES_LOCK = threading.Lock()
MAX_LOCAL_ENGINES = 4


def sandbox(con: duckdb.DuckDBPyConnection, directories: list[str], temp: str | None = None) -> None:
    """Let ``con`` touch files only under ``directories`` (read, and spill to ``temp``), then
    lock its configuration so no statement can undo it: ``copy ... to``, ``attach``,
    ``install`` and reads elsewhere fail with DuckDB's permission error."""
    def lit(d: str) -> str:
        return "'" + d.replace("'", "''") + "'"

    if temp is not None:
        con.execute(f"SET temp_directory = {lit(temp)}")
    con.execute(f"SET allowed_directories = [{', '.join(lit(d.rstrip('/') + '/') for d in directories)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _fs_name(fs) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def _close_engine() -> None:
    """DuckDB aborts the interpreter at exit if a Python filesystem is still registered."""
    for (pid, _, _), (con, fs_name, _) in _LAKE_ENGINES.items():
        if pid != os.getpid():  # a forked child's copy: its parent closes it
            continue
        if fs_name is not None:
            con.unregister_filesystem(fs_name)
        con.close()
    _LAKE_ENGINES.clear()


atexit.register(_close_engine)


def query_arrow(con: duckdb.DuckDBPyConnection, query: str, params=None) -> pa.Table:
    """Run ``query`` with bound ``params``; the result as a pyarrow Table."""
    rel = con.sql(query, params=params or None)
    if rel is None:  # a statement without a result (CREATE, SET, ...)
        return pa.table({})
    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
    return fetch()


class LakeError(UserError, RuntimeError):
    """A lake read or write cannot proceed; the message names the table and id."""


READ_ONLY = ("SELECT", "EXPLAIN")  # SELECT covers WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE
# EXPLAIN [ANALYZE] and the comments before it (its own statement follows)
_EXPLAIN = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*explain(\s+analy[sz]e)?\b",
                      re.IGNORECASE | re.DOTALL)


def read_only_statements(query: str) -> None:
    """Refuse ``query`` unless every statement only reads (DuckDB parses it and reports each
    statement's type; an EXPLAIN's own statement is checked too: EXPLAIN ANALYZE runs it)."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise LakeError(f"cannot parse the query: {e}") from e
    if not statements:
        raise LakeError("the query is empty: give a SELECT statement")
    for st in statements:
        kind = st.type.name
        if kind == "EXPLAIN":
            inner = _EXPLAIN.sub("", st.query, count=1)
            if inner == st.query:  # never parse the same text again
                raise LakeError("cannot find the statement inside this EXPLAIN; write it as "
                                "EXPLAIN SELECT ...")
            read_only_statements(inner)
        elif kind not in READ_ONLY:
            raise LakeError(f"{kind} statements are refused: queries over the lake are "
                            f"read-only (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN). To "
                            f"export a result, use --csv and redirect it: smartaug sql \"...\" "
                            f"--csv > out.csv")


def resolve_root(storage: str | os.PathLike | None = None) -> str:
    """``storage`` if given, else ``SMARTAUG_STORAGE``, else ``./storage``: a path or a URL.
    An empty one, given or in the variable, is refused (never read as "the default")."""
    given = storage is not None
    root = os.fspath(storage) if given else os.environ.get("SMARTAUG_STORAGE", "storage")
    if not root.strip():
        raise LakeError("--storage is empty: give the lake's directory or URL, or leave the "
                        "option out for SMARTAUG_STORAGE or ./storage" if given else
                        "SMARTAUG_STORAGE is set but empty: set it to the lake's directory or "
                        "URL, or unset it for ./storage")
    return root


def _make_root(root: Path) -> None:
    """Create a local lake root, or say why it cannot be one."""
    for p in (root, *root.parents):
        if p.exists() and not p.is_dir():
            where = "is" if p == root else f"lies under {p}, which is"
            raise LakeError(f"the lake root {root} {where} a file, not a directory: pass "
                            f"--storage DIR (SMARTAUG_STORAGE) naming a directory, new or "
                            f"existing")
        if p.exists():
            break
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LakeError(f"cannot create the lake root {root}: {e.strerror or e}; pass "
                        f"--storage DIR (SMARTAUG_STORAGE) naming a directory you can write") from e


_CHECKED: dict[tuple[str, str], tuple[int | None, set[str]]] = {}  # Lake.check_tables's
_NAME = re.compile(r"^[A-Za-z0-9_=][A-Za-z0-9_.=-]{0,199}$")


def check_name(part: str, what: str = "id") -> str:
    """``part`` if it can be one name under the lake root (an id, a table, a file name): no
    separator, no ``..``, no leading dot or dash. Ids become directory names, so an id given
    as ``../elsewhere`` must be refused here, never joined to a path."""
    if not isinstance(part, str) or not _NAME.match(part) or ".." in part:
        raise LakeError(f"{part!r} is not a smartaug {what}: an id is what the command that "
                        f"made it printed (letters, digits, '_', '-', '.'; e.g. "
                        f"1a2b3c4d5e6f7a8b), never a path")
    return part


def _check_exists(fs, path: str, given: str, root) -> None:
    """LakeError unless ``path`` holds a lake (its ``.lake-id``, written when it was made)."""
    if fs.exists(f"{path.rstrip('/')}/.lake-id"):
        return
    how = ("given as --storage" if root is not None else "from SMARTAUG_STORAGE"
           if os.environ.get("SMARTAUG_STORAGE") else
           "the default, ./storage: neither --storage nor SMARTAUG_STORAGE was given")
    where = os.path.abspath(path) if "://" not in given else given
    raise LakeError(f"no lake at {where} ({how}). Point --storage (or SMARTAUG_STORAGE) at "
                    f"the lake you made, or make one there first: `smartaug ingest`, "
                    f"`smartaug experiment` or `smartaug study` create it")


class Lake:
    """The tables under one storage root. ``Lake()`` uses ``resolve_root()``.

    ``root`` is the lake's location: a ``Path`` for a local lake, the URL for a remote one.
    ``staging`` is a local directory for files being written (``<root>/.tmp`` when local).
    """

    def __init__(self, root: str | os.PathLike | None = None, *, create: bool = True):
        """Open the lake at ``root``; with ``create`` False (a command that only reads, or
        writes into what is there) a root that holds no lake is an error naming where it
        looked and why there, and nothing is created."""
        given = resolve_root(root)
        try:
            self.fs, path = fsspec.core.url_to_fs(given)
        except (ImportError, ValueError) as e:
            raise LakeError(f"cannot open the lake {given!r}: {e}. A remote root needs its "
                            f"fsspec backend installed (s3fs for s3://, gcsfs for gs://, "
                            f"adlfs for az://)") from e
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple)
                                else (self.fs.protocol,))
        if not create:
            _check_exists(self.fs, path, given, root)
        if self.local:
            self.root: Path | str = Path(path).absolute()
            self.path = str(self.root)
            self.staging = self.root / ".tmp"
            self.cache = self.root
            _make_root(self.root)
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
                    with atomic_path(empty) as tmp:
                        pq.write_table(schema.empty_table(), tmp)
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

    # ------------------------------------------------------------ staging
    # A staging directory is named <label>-<host>-<process id>-<random> (files.owner_tag): a
    # later Lake on the same host removes it once that process is gone; another host's is
    # never touched, nor is anything behind a link. Scoring shards live under
    # shards-<scoring_run_id>/.

    def stage(self, label: str) -> Path:
        """A new, empty local staging directory for ``label`` (a table and partition key)."""
        self._check_staging()
        d = self.staging / f"{label}-{owner_tag()}"
        d.mkdir(parents=True)
        return d

    def _check_staging(self) -> None:
        """LakeError if the staging directory (or a directory above it, up to the root) is a
        symbolic link: smartaug writes and removes files there and never follows a link out
        of the lake."""
        top = self.root if self.local else self.cache
        for p in (self.staging, *self.staging.parents):
            if p == top:
                break
            if p.is_symlink():
                raise LakeError(f"{p} is a symbolic link (to {os.readlink(p)}): smartaug stages "
                                f"files under {self.staging} and removes what a dead process "
                                f"left there, and never follows a link out of the lake. Remove "
                                f"the link (rm {p}); smartaug makes the directory itself")

    def _clean_stale_tmp(self) -> None:
        self._check_staging()
        if not self.staging.is_dir():
            return
        for d in self.staging.iterdir():
            if stale(d):
                shutil.rmtree(d, ignore_errors=True)

    def shards_location(self, scoring_run_id: str) -> Path | str:
        """Where the shards of a scoring run are staged, under the root (every worker sees it)."""
        return self.location(".tmp", f"shards-{scoring_run_id}")

    def shard_location(self, scoring_run_id: str, shard: int, n_shards: int) -> Path | str:
        base = self.shards_location(scoring_run_id)
        name = f"shard-{shard:05d}-of-{n_shards:05d}"
        return base / name if self.local else f"{base}/{name}"

    # ------------------------------------------------------------ paths
    def partition_dir(self, table: str, key: str) -> Path | str:
        """A partition's directory: a Path on a local lake, a path in ``fs`` on a remote one."""
        if table not in SCHEMAS:
            raise LakeError(f"unknown table {table!r}; valid: {', '.join(SCHEMAS)}")
        check_name(key, f"{PARTITION_KEYS[table]}")
        return self.location(table, f"{PARTITION_KEYS[table]}={key}")

    def location(self, *parts: str) -> Path | str:
        """``parts`` under the root: a Path on a local lake, a path in ``fs`` otherwise. Every
        part is one name (``check_name``): an id never leads out of the lake."""
        for part in parts:
            for name in part.split("/"):
                if name != ".tmp":  # the staging directory, the lake's one hidden name
                    check_name(name)
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

    def has(self, table: str, key: str) -> bool:
        """Whether the partition ``key`` of ``table`` is committed. A run's record (a dataset,
        pool or scoring run) whose data partition is gone is an error, never "done"."""
        if not self.complete(self.partition_dir(table, key)):
            return False
        data = RECORDED_BY.get(table)
        if data is not None and not self.complete(self.partition_dir(data, key)):
            what = RECORDED_ROWS[data][2]
            raise LakeError(
                f"{what} {key} is recorded in {table} but its {data} partition is missing "
                f"({self.url(data, f'{PARTITION_KEYS[data]}={key}')}: removed outside "
                f"smartaug); remove {self.url(table, f'{PARTITION_KEYS[table]}={key}')} too, "
                f"then run the step again to rebuild it")
        return True

    def parquet_files(self, location: Path | str) -> list[str]:
        """The Parquet files of a committed partition directory, sorted."""
        if self.local:
            return sorted(str(p) for p in Path(location).glob("*.parquet"))
        self.fs.invalidate_cache(location)  # another process may have written it since
        return sorted(self.fs.unstrip_protocol(p) for p in self.fs.glob(f"{location}/*.parquet"))

    def files(self, table: str, key: str) -> list[str]:
        """The partition's files: paths on a local lake, URLs (readable by ``parquet_file``
        and by DuckDB through ``lake.engine()``) on a remote one.

        A data partition whose run recorded its size (a dataset's samples, a pool's
        augmentations, a scoring run's scores) must hold exactly that many rows: files added
        or removed by hand make it an error, never rows counted twice."""
        return self._files_and_rows(table, key)[0]

    def _files_and_rows(self, table: str, key: str) -> tuple[list[str], int | None]:
        """``files`` and, for a table whose size is recorded, the rows they hold (read once
        from the footers, for both the check and ``count``)."""
        if not self.has(table, key):
            raise LakeError(f"no {PARTITION_KEYS[table]} {key!r} in {self.url(table)}; "
                            f"run the step that produces it first (`smartaug "
                            f"{PRODUCED_BY[table]}`, or check --storage)")
        files = self.parquet_files(self.partition_dir(table, key))
        held = None
        if table in RECORDED_ROWS:
            meta, columns, what = RECORDED_ROWS[table]
            if self.has(meta, key):
                row = self.read(meta, key, columns=list(columns)).to_pylist()[0]
                expected = sum(row[c] for c in columns)
                held = sum(self.parquet_file(f).metadata.num_rows for f in files)
                if held != expected:
                    raise LakeError(
                        f"{what} {key} holds {held} rows, expected {expected}: the lake was "
                        f"modified outside smartaug ({self.url(table, f'{PARTITION_KEYS[table]}={key}')}"
                        f" should hold only the files smartaug wrote); remove the partition "
                        f"and its {meta} row to redo the step")
        self.check_partition(table, key, full=self.local, files=files)
        return files, held

    def check_partition(self, table: str, key: str, *, full: bool = True,
                        files: list[str] | None = None) -> int:
        """Check a committed partition against its manifest (``smartaug.lake.manifest``): the same
        files, sizes and, with ``full``, sha256 (each local file hashed once per process).
        ``files``: its Parquet files when the caller has listed them (a local lake). Returns
        the rows the manifest records; raises LakeError naming the partition."""
        loc = self.partition_dir(table, key)
        where = f"{table} partition {self.url(table, f'{PARTITION_KEYS[table]}={key}')}"
        digest = None
        if self.local:
            paths = [Path(f) for f in files] if files is not None else Path(loc).glob("*.parquet")
            found = {p.name: p.stat().st_size for p in paths}
            path = Path(loc) / MANIFEST
            text = path.read_bytes() if path.is_file() else None
            if full:
                digest = local_digest(Path(loc))
        else:
            self.fs.invalidate_cache(str(loc))
            listing = self.fs.ls(str(loc), detail=True)
            found = {e["name"].rsplit("/", 1)[-1]: e["size"] for e in listing
                     if e["name"].endswith(".parquet")}
            names = {e["name"].rsplit("/", 1)[-1] for e in listing}
            text = (self.fs.cat_file(f"{loc}/{MANIFEST}")
                    if MANIFEST in names else None)
            if full:
                def digest(name):
                    with self.fs.open(f"{loc}/{name}", "rb") as fh:
                        return file_sha256(fh)
        try:
            recorded = None if text is None else parse_manifest(text, where)
            check_manifest(recorded, table, key, found, where, digest=digest)
        except ManifestError as e:
            raise LakeError(str(e)) from None
        return int(recorded["rows"])

    def entries(self, table: str) -> list[str]:
        """The names in ``table``'s directory (partitions, ``_empty``, anything else), sorted."""
        if self.local:
            base = self.root.joinpath(table)
            return sorted(p.name for p in base.iterdir()) if base.is_dir() else []
        return sorted(e.rsplit("/", 1)[-1] for e in self.fs.ls(self.location(table),
                                                               detail=False))

    def partitions(self, table: str) -> list[str]:
        """The keys of ``table``'s partitions, sorted."""
        prefix = f"{PARTITION_KEYS[table]}="
        return [n[len(prefix):] for n in self.entries(table) if n.startswith(prefix)]

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
        for part in rel.split("/"):
            if part:  # "" is the root itself
                check_name(part)
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
            try:
                with atomic_path(local) as tmp:
                    self.fs.get_file(self.location(rel), str(tmp))
            except FileNotFoundError as e:
                raise LakeError(f"{self.url(rel)} does not exist") from e
        return local

    # ------------------------------------------------------------ writes
    def writer(self, table: str, key: str, **options) -> PartitionWriter:
        """A ``PartitionWriter`` for the partition ``key`` of ``table`` (a context manager);
        ``options``: target, rows_per_file, row_group_size."""
        return PartitionWriter(self, table, key, **options)

    def write(self, table: str, key: str, data: pa.Table | Mapping) -> bool:
        """Write one whole partition atomically; False (nothing written) if it exists."""
        if self.has(table, key):
            return False
        with self.writer(table, key) as w:
            w.write(data)
        return w.committed

    # ------------------------------------------------------------ reads
    def read(self, table: str, key: str, columns: list[str] | None = None) -> pa.Table:
        parts = [self.parquet_file(f).read(columns=columns) for f in self.files(table, key)]
        return pa.concat_tables(parts) if parts else SCHEMAS[table].empty_table()

    def row(self, table: str, key: str) -> dict:
        """The single metadata row of a partition (datasets, pools, models, scoring_runs)."""
        rows = self.read(table, key).to_pylist()
        if len(rows) != 1:
            raise LakeError(f"{table} {key}: expected one row, found {len(rows)}")
        return rows[0]

    def iter_batches(self, table: str, key: str, *, columns: list[str] | None = None,
                     batch_size: int = READ_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        for f in self.files(table, key):
            yield from self.parquet_file(f).iter_batches(batch_size=batch_size, columns=columns)

    def count(self, table: str, key: str) -> int:
        files, held = self._files_and_rows(table, key)
        return held if held is not None else sum(self.parquet_file(f).metadata.num_rows
                                                 for f in files)

    # ------------------------------------------------------------ DuckDB
    def views_sql(self) -> str:
        """``storage/views.sql`` pointed at this root: one DuckDB view per table."""
        return views_sql(self.url())

    def _duckdb(self) -> duckdb.DuckDBPyConnection:
        """A new in-memory DuckDB instance that can read this lake's files and nothing else."""
        con = duckdb.connect(":memory:")
        if not self.local:
            con.register_filesystem(self.fs)
        sandbox(con, [self.url()], str(self.staging / "duckdb") if self.local else None)
        return con

    def engine(self) -> duckdb.DuckDBPyConnection:
        """A cursor on this process's DuckDB instance for this lake, with one view per table
        (created once; each query globs the table's partitions again, so it sees every
        partition committed before it), sandboxed to the lake's files; close it after use.
        Cursors are independent connections: threads each take their own."""
        key = (os.getpid(), self.url(), None if self.local else id(self.fs))
        with _ENGINES_LOCK:
            held = _LAKE_ENGINES.pop(key, None)
            if held is None:
                con = self._duckdb()
                con.execute(self.views_sql())
                # the filesystem is kept with it, so its id is not reused while it is held
                held = (con, None if self.local else _fs_name(self.fs), self.fs)
            _LAKE_ENGINES[key] = held  # the most recently used last
            local = [k for k in _LAKE_ENGINES if k[2] is None and k[0] == os.getpid()]
            for old in local[:-MAX_LOCAL_ENGINES]:  # dropped, not closed: a cursor still in
                del _LAKE_ENGINES[old]  # use keeps its instance alive until it is closed
            return held[0].cursor()

    def check_tables(self, tables: Iterable[str] | None = None) -> None:
        """Check every committed partition of ``tables`` (default: all) against its manifest
        (``check_partition``), each once per process: a table's partitions are listed again
        only when its directory changed. The views read every partition there, so a partition
        copied in by hand, or one without a manifest, is refused here, before a query reads
        it (``sql``), never counted in silence."""
        for table in SCHEMAS if tables is None else tables:
            key = (self.url(), table)
            mark = None
            if self.local:
                try:
                    mark = (self.root / table).stat().st_mtime_ns
                except FileNotFoundError:
                    continue
            held = _CHECKED.get(key)
            if held is not None and mark is not None and held[0] == mark:
                continue
            done = set() if held is None else held[1]
            for k in self.partitions(table):
                if k not in done:
                    self.check_partition(table, k, full=self.local)
                    done.add(k)
            _CHECKED[key] = (mark, done)

    def sql(self, query: str, params: Mapping | list | None = None) -> pa.Table:
        """Run a read-only ``query`` over the views (``read_only_statements``) on this
        process's instance for the lake (``engine``); a Table. The tables it names are
        checked first (``check_tables``)."""
        read_only_statements(query)
        self.check_tables(t for t in SCHEMAS
                          if re.search(rf"\b{t}\b", query, flags=re.IGNORECASE))
        con = self.engine()
        try:
            return query_arrow(con, query, params)
        finally:
            con.close()
