"""The lake's read side: what the steps read back from the tables they did not write (a
dataset's splits and classes, a pool's pixels, a model's checkpoint), in one place.

``read_split`` and ``classes``: a dataset the ``ingest`` step wrote. ``PoolPixels``: the
pixels of a pool's augmentations, decoded where the pool stores them, else regenerated from
the original image and the recipe (``smartaug.core.augment``), bit for bit. ``checkpoint_path``:
a model's checkpoint, local (downloaded once from a remote lake).
"""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from smartaug.config import AugmentConfig
from smartaug.core.augment import (
    FAST_KINDS,
    SpaceError,
    apply_chunks,
    kind_specs,
    regenerate,
    spec_hash,
    start_workers,
)
from smartaug.core.datasets import Split
from smartaug.errors import InputError
from smartaug.lake.codec import decode_images
from smartaug.lake.store import Lake, LakeError

__all__ = ["PIXEL_COLUMNS", "RECIPE_COLUMNS", "PoolPixels", "checkpoint_path", "classes",
           "pool_config", "read_split"]

# what a reader needs to regenerate an augmentation's pixels
RECIPE_COLUMNS = ["aug_id", "sample_id", "k", "kind", "seed", "spec_hash"]
PIXEL_COLUMNS = [*RECIPE_COLUMNS, "image", "height", "width", "channels"]


def classes(lake: Lake, dataset_id: str) -> list[str]:
    """The class names of an ingested dataset, in label order."""
    return json.loads(lake.row("datasets", dataset_id)["classes"])


def read_split(lake: Lake, dataset_id: str, split: str) -> Split:
    """One split of an ingested dataset back from the samples table."""
    if split not in ("train", "val", "test"):
        raise InputError(f"unknown split {split!r}; valid: train, val, test")
    meta = lake.row("datasets", dataset_id)
    t = lake.read("samples", dataset_id)
    t = t.filter(pc.equal(t["split"], split))
    if t.num_rows == 0:
        images = np.empty((0, meta["height"], meta["width"], meta["channels"]), np.uint8)
    else:
        images = np.array(decode_images(t, "sample_id"))  # writable, owns its memory
    ids = t["sample_id"].to_pylist()
    source = ids[0].split("/")[0] if ids else ("test" if split == "test" else "train")
    index = np.asarray([int(i.split("/")[1]) for i in ids], dtype=np.int64)
    return Split(images, t["label"].to_numpy().astype(np.int64), index, source)


def checkpoint_path(lake: Lake, model_id: str) -> Path:
    """A local copy of ``model_id``'s checkpoint, always the one under this lake's root (the
    models row records it relative to the root, so a copied or moved lake reads its own),
    downloaded once into the cache from a remote lake."""
    recorded = lake.row("models", model_id)["checkpoint"]
    return lake.fetch(f"checkpoints/{recorded.rsplit('/', 1)[-1]}")


def pool_config(pool: dict) -> AugmentConfig:
    """The augment config a ``pools`` row records."""
    d = json.loads(pool["config"])
    return AugmentConfig(**{k: (tuple(tuple(x) for x in v) if k == "space" else
                                tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


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
        self._cfg = pool_config(self.pool)
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
