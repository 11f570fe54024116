"""Step ``pool``: the train split of a dataset -> its augmentations (the augmentations table;
their pixels read back with ``smartaug.lake.readers.PoolPixels``).

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
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from smartaug.config import AugmentConfig, identity
from smartaug.core.augment import (
    apply_chunks,
    check_kinds,
    chunk_size,
    kind_specs,
    plan,
    spec_hash,
)
from smartaug.lake import Lake, LakeError, content_id, encode_images
from smartaug.lake.readers import read_split

__all__ = ["AUTO_MATERIALIZE_BYTES", "build_pool", "materializes"]

AUTO_MATERIALIZE_BYTES = 256 * 2**20  # ``auto``: pixels stored up to this many bytes of them
WRITE_ROWS = 65_536  # augmentations per write to the partition ...
WRITE_BYTES = 64 * 2**20  # ... or fewer, once their pixels take this many bytes


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
    stored does not change what it holds): a second call finds it and writes nothing; asking
    it for the other explicit mode (``always`` for a recipe pool, ``never`` for one with
    pixels) is refused, never answered with the pool as it is (``auto`` takes it as it is). The
    augmentations stream to the partition chunk by chunk, so memory holds the originals and a
    few chunks, however large the pool.
    """
    pool_id = content_id("pool", {"dataset_id": dataset_id, "config": identity(cfg.to_dict())})
    if lake.has("pools", pool_id):
        stored = lake.row("pools", pool_id).get("materialized") is not False  # older: pixels
        if cfg.materialize != "auto" and stored != (cfg.materialize == "always"):
            have = "with its pixels" if stored else "as recipes only"
            raise LakeError(
                f"pool {pool_id} already exists in {lake.url()}, stored {have}; asked for "
                f"--materialize {cfg.materialize}. A pool's id does not depend on how it is "
                f"stored, so both cannot be kept in one lake: use --materialize "
                f"{'always' if stored else 'never'} (or auto) to use it as it is, or build "
                f"the pool in another --storage")
        return pool_id
    t0 = time.perf_counter()
    split = read_split(lake, dataset_id, "train")
    shape = split.images.shape[1:]
    h, w, c = shape
    if len(split.labels):
        check_kinds(split.images[0], cfg)
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


