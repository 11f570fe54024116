"""Step ``pool``: the train split of a dataset -> its augmentations (the augmentations table);
and the pixels of a pool's augmentations back (``PoolPixels``).

A pool stores one row per augmentation: its recipe (sample_id, k, kind, the kind's spec hash,
the applied parameters, the item seed) and, when materialised, its pixels. Every augmentation
is a pure function of (original image, pool seed, sample_id, k), so a pool without pixels is
read back by regenerating them, bit for bit the pixels a materialised pool stores.

``materialize``: ``always`` (pixels stored), ``never`` (recipes only), ``auto`` (pixels while
the whole pool's pixels take at most ``AUTO_MATERIALIZE_BYTES`` = 256 MiB: a 28x28 pool of
up to ~340 000 augmentations, a 32x32 RGB pool of up to ~87 000; recipes beyond).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from pipeline.config import AugmentConfig, identity
from pipeline.core.augment import (
    FAST_KINDS,
    SpaceError,
    apply_chunks,
    chunk_size,
    kind_specs,
    plan,
    regenerate,
    spec_hash,
    start_workers,
)
from pipeline.lake import Lake, LakeError, content_id, decode_images, encode_images
from pipeline.steps.ingest import read_split

__all__ = ["AUTO_MATERIALIZE_BYTES", "RECIPE_COLUMNS", "PoolPixels", "build_pool",
           "materializes"]

AUTO_MATERIALIZE_BYTES = 256 * 2**20  # ``auto``: pixels stored up to this many bytes of them
WRITE_ROWS = 65_536  # augmentations per write to the partition ...
WRITE_BYTES = 64 * 2**20  # ... or fewer, once their pixels take this many bytes
# what a reader needs to regenerate an augmentation's pixels
RECIPE_COLUMNS = ["aug_id", "sample_id", "k", "kind", "seed", "spec_hash"]
PIXEL_COLUMNS = [*RECIPE_COLUMNS, "image", "height", "width", "channels"]


def materializes(mode: str, n_items: int, shape: tuple[int, ...]) -> bool:
    """Whether a pool of ``n_items`` augmentations of images ``shape`` (H, W, C) stores its
    pixels under ``mode``."""
    if mode == "auto":
        return n_items * int(np.prod(shape)) <= AUTO_MATERIALIZE_BYTES
    return mode == "always"


def build_pool(lake: Lake, dataset_id: str, cfg: AugmentConfig, *, workers: int | None = None,
               progress: Callable[[int], None] | None = None) -> str:
    """Augment the train split of ``dataset_id`` into the augmentations table; returns pool_id.

    The pool id hashes the dataset id and ``cfg`` (but not ``cfg.materialize``: how a pool is
    stored does not change what it holds): a second call finds it and writes nothing. The
    augmentations stream to the partition chunk by chunk, so memory holds the originals and a
    few chunks, however large the pool.
    """
    pool_id = content_id("pool", {"dataset_id": dataset_id, "config": identity(cfg.to_dict())})
    if lake.has("pools", pool_id):
        return pool_id
    t0 = time.perf_counter()
    split = read_split(lake, dataset_id, "train")
    shape = split.images.shape[1:]
    h, w, c = shape
    items = plan(split.sample_ids, cfg)
    keep_pixels = materializes(cfg.materialize, len(items), shape)
    hashes = {k: spec_hash(v) for k, v in kind_specs(cfg, h, w).items()}
    sids = np.asarray(split.sample_ids, dtype=object)
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    step = chunk_size(len(items), n_workers)
    bounds = [(lo, min(lo + step, len(items))) for lo in range(0, len(items), step)]
    if len(bounds) <= 1:
        n_workers = 1
    results = apply_chunks(split.images, (items[lo:hi] for lo, hi in bounds), cfg,
                           workers=n_workers)
    pending: list[dict] = []

    def flush(writer):
        writer.write({k: (pa.concat_arrays([p[k] for p in pending]) if k == "image"
                     else np.concatenate([p[k] for p in pending])) for k in pending[0]})
        pending.clear()

    with lake.writer("augmentations", pool_id) as writer:
        for (lo, hi), (out, angle, sigma, flipped, applied) in zip(bounds, results, strict=True):
            chunk = items[lo:hi]
            m = hi - lo
            rows = np.fromiter((it[0] for it in chunk), dtype=np.int64, count=m)
            ks = np.fromiter((it[1] for it in chunk), dtype=np.int32, count=m)
            kinds = np.asarray([it[3] for it in chunk], dtype=object)
            pending.append({
                "pool_id": np.full(m, pool_id, dtype=object),
                "aug_id": np.asarray([f"{pool_id}:{sid}:{k}" for sid, k in
                                      zip(sids[rows], ks.tolist(), strict=True)], dtype=object),
                "sample_id": sids[rows], "label": split.labels[rows], "k": ks, "kind": kinds,
                "angle": angle,  # NaN (not a rotation) is stored as NULL
                "sigma": sigma, "flipped": flipped,
                "seed": np.fromiter((it[2] for it in chunk), dtype=np.int64, count=m),
                "spec_hash": np.asarray([hashes[k] for k in kinds], dtype=object),
                "params": np.asarray(applied, dtype=object),  # JSON: the applied parameters
                "image": encode_images(out) if keep_pixels else pa.nulls(m, pa.binary()),
                "height": np.full(m, h, np.int32), "width": np.full(m, w, np.int32),
                "channels": np.full(m, c, np.int32)})
            n_pending = sum(len(p["k"]) for p in pending)
            if n_pending >= WRITE_ROWS or (keep_pixels and n_pending * h * w * c >= WRITE_BYTES):
                flush(writer)
            if progress:
                progress(m)
        if pending:
            flush(writer)
    lake.write("pools", pool_id, {
        "pool_id": [pool_id], "dataset_id": [dataset_id],
        "config": [json.dumps(cfg.to_dict(), sort_keys=True)], "n_items": [len(items)],
        "materialized": [keep_pixels], "seconds": [time.perf_counter() - t0]})
    return pool_id


class PoolPixels:
    """The pixels of a pool's augmentations, from rows of its augmentations table (with
    ``PIXEL_COLUMNS``): decoded where the pool stores them, else regenerated from the
    original image and the recipe, bit for bit what a materialised pool of the same config
    holds. A recipe whose spec hash is not its kind's spec hash today (the space file or
    albumentations changed since the pool was built) is an error naming the kind, never
    silently different pixels.

    The train split's originals are read on the first recipe (kept once, as uint8)."""

    def __init__(self, lake: Lake, pool_id: str, *, workers: int | None = None):
        self.lake, self.pool_id = lake, pool_id
        self.pool = lake.row("pools", pool_id)
        self.materialized = self.pool.get("materialized") is not False  # older rows: pixels
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        config = json.loads(self.pool["config"])
        # the seed's kinds cost a few microseconds an item: cheaper made in the reader's own
        # process (scoring on the CPU: between the model's batches) than shipped to a worker
        # process and back
        self.cheap = not config.get("space") and set(config.get("kinds", ())) <= FAST_KINDS
        if not self.materialized and not self.cheap:
            start_workers(self.workers)
        self._originals = None
        self._rows: dict[str, int] = {}
        self._cfg: AugmentConfig | None = None
        self._hashes: dict[str, str] = {}
        self._checked: set[tuple[str, str]] = set()

    def _load(self) -> None:
        if self._originals is not None:
            return
        d = json.loads(self.pool["config"])
        self._cfg = AugmentConfig(**{k: (tuple(tuple(x) for x in v) if k == "space" else
                                         tuple(v) if isinstance(v, list) else v)
                                     for k, v in d.items()})
        split = read_split(self.lake, self.pool["dataset_id"], "train")
        self._originals = split.images
        self._rows = {s: i for i, s in enumerate(split.sample_ids)}
        h, w = split.images.shape[1:3]
        self._hashes = {k: spec_hash(v) for k, v in kind_specs(self._cfg, h, w).items()}

    def _check(self, kinds: list[str], hashes: list[str]) -> None:
        for kind, h in set(zip(kinds, hashes, strict=True)) - self._checked:
            now = self._hashes.get(kind)
            if now != h:
                raise SpaceError(
                    f"pool {self.pool_id}: the recipes of kind {kind!r} were made with spec "
                    f"hash {h}, but kind {kind!r} is now "
                    + (f"spec hash {now}" if now else "not defined")
                    + ": its transform changed since the pool was built (a space file edited, "
                    "or albumentations upgraded), so regenerated pixels would differ from the "
                    "pool's. Build a new pool (a changed space gives a new pool id), or run "
                    "with the albumentations the pool was built with")
            self._checked.add((kind, h))

    def _items(self, batch: pa.RecordBatch | pa.Table) -> list[tuple[int, int, int, str]]:
        """The plan items (row of the original, k, seed, kind) of ``batch``'s recipes."""
        self._load()
        sids = batch.column("sample_id").to_pylist()
        kinds = batch.column("kind").to_pylist()
        self._check(kinds, batch.column("spec_hash").to_pylist())
        try:
            rows = [self._rows[s] for s in sids]
        except KeyError as e:
            raise LakeError(f"pool {self.pool_id}: augmentation of {e.args[0]!r}, which is not "
                            f"a train image of dataset {self.pool['dataset_id']}") from None
        return list(zip(rows, batch.column("k").to_pylist(), batch.column("seed").to_pylist(),
                        kinds, strict=True))

    def recipes(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Regenerate the pixels of ``batch``'s rows from their recipes: uint8 [N, H, W, C]."""
        items = self._items(batch)
        if not items:
            return np.empty((0, *self._originals.shape[1:]), np.uint8)
        return regenerate(self._originals, items, self._cfg)

    def stream(self, batches):
        """(batch, its images) for each of ``batches``, in order. A recipe pool's batches are
        regenerated in the worker processes, a few batches ahead of the consumer (here, when
        all its kinds are the seed's cheap ones)."""
        if self.materialized or self.workers <= 1 or self.cheap:
            for b in batches:
                yield b, self.images(b)
            return
        self._load()
        ahead: deque = deque()

        def chunks():
            for b in batches:
                if b.column("image").null_count != b.num_rows:
                    raise LakeError(f"pool {self.pool_id} is recorded as recipes only, but "
                                    f"its augmentations table holds pixels")
                ahead.append(b)
                yield self._items(b)

        for out in apply_chunks(self._originals, chunks(), self._cfg, workers=self.workers,
                                record=False):
            yield ahead.popleft(), out

    def images(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """uint8 [N, H, W, C] of ``batch``'s rows: stored pixels decoded, the others
        regenerated."""
        col = batch.column("image")
        nulls = col.null_count
        if nulls == 0:
            return decode_images(batch, "aug_id")
        if nulls == batch.num_rows:
            return self.recipes(batch)
        missing = np.asarray(col.is_null())
        made = self.recipes(batch.filter(pa.array(missing)))
        out = np.empty((batch.num_rows, *made.shape[1:]), np.uint8)
        out[missing] = made
        out[~missing] = decode_images(batch.filter(pa.array(~missing)), "aug_id")
        return out
