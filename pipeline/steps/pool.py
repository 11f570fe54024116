"""Step ``pool``: the train split of a dataset -> its augmentations (the augmentations table)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from pipeline.config import AugmentConfig
from pipeline.core.augment import augment_images, kind_specs, spec_hash
from pipeline.lake import Lake, content_id, image_columns
from pipeline.steps.ingest import read_split

__all__ = ["build_pool"]

WRITE_ROWS = 65_536  # augmentations per write to the partition


def build_pool(lake: Lake, dataset_id: str, cfg: AugmentConfig, *, workers: int | None = None,
               progress: Callable[[int], None] | None = None) -> str:
    """Augment the train split of ``dataset_id`` into the augmentations table; returns pool_id.

    The pool id hashes the dataset id and ``cfg``: a second call finds it and writes nothing.
    """
    pool_id = content_id("pool", {"dataset_id": dataset_id, "config": cfg.to_dict()})
    if lake.has("pools", pool_id):
        return pool_id
    t0 = time.perf_counter()
    split = read_split(lake, dataset_id, "train")
    items, out, params = augment_images(split.images, split.sample_ids, cfg, workers=workers,
                                        progress=progress)
    hashes = {k: spec_hash(v) for k, v in kind_specs(cfg, *split.images.shape[1:3]).items()}
    rows = np.array([it[0] for it in items], dtype=np.int64)
    sids = np.asarray(split.sample_ids, dtype=object)[rows]
    with lake.writer("augmentations", pool_id) as w:
        for lo in range(0, len(items), WRITE_ROWS):
            chunk = items[lo : lo + WRITE_ROWS]
            hi = lo + len(chunk)
            w.write({
                "pool_id": [pool_id] * len(chunk),
                "aug_id": [f"{pool_id}:{sid}:{k}" for sid, (_, k, _, _) in
                           zip(sids[lo:hi], chunk, strict=True)],
                "sample_id": sids[lo:hi].tolist(),
                "label": split.labels[rows[lo:hi]],
                "k": np.asarray([it[1] for it in chunk], dtype=np.int32),
                "kind": [it[3] for it in chunk],
                "angle": params["angle"][lo:hi],  # NaN (not a rotation) is stored as NULL
                "sigma": params["sigma"][lo:hi],
                "flipped": params["flipped"][lo:hi],
                "seed": np.asarray([it[2] for it in chunk], dtype=np.int64),
                "spec_hash": [hashes[it[3]] for it in chunk],
                "params": params["params"][lo:hi],  # JSON: the applied scalar parameters
                **image_columns(out[lo:hi])})
    lake.write("pools", pool_id, {
        "pool_id": [pool_id], "dataset_id": [dataset_id],
        "config": [json.dumps(cfg.to_dict(), sort_keys=True)], "n_items": [len(items)],
        "seconds": [time.perf_counter() - t0]})
    return pool_id
