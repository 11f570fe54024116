"""Step ``score``: a pool (``item_id = aug_id``) or a split of the originals (``item_id =
sample_id``) -> a scoring run. Batches stream Parquet -> model -> Parquet (a reader thread
decodes ahead), so the pool is never whole in memory; a pool can also be scored in shards on
any worker that sees the lake, published as one run by ``commit_pool_shards``. Device ``auto``
= CUDA when present (bf16 autocast, channels_last), else CPU (float32).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from smartaug.config import SCORE_COLUMNS
from smartaug.core.scoring import ScoringError, prefetch, score_batches
from smartaug.core.train import resolve_device
from smartaug.files import publish
from smartaug.lake import Lake, content_id, decode_images
from smartaug.lake.manifest import write_manifest
from smartaug.lake.readers import PIXEL_COLUMNS, PoolPixels, checkpoint_path, classes
from smartaug.models import fuse_for_inference, load_checkpoint

__all__ = ["ScoringError", "checkpoint_path", "commit_pool_shards", "load_model",
           "pool_scoring_run_id", "score_pool", "score_pool_shard", "score_split"]

WRITE_ROWS = 16_384  # scored rows gathered before one write to the partition
IMAGE_COLUMNS = ["label", "image", "height", "width", "channels"]
POOL_COLUMNS = ["label", *PIXEL_COLUMNS]  # a pool's rows: pixels, or recipes to make them

Progress = Callable[[int], None] | None
Trust = str | tuple[str, ...] | None


def load_model(lake: Lake, model_id: str, device: torch.device, trust: Trust = ()):
    """The registered checkpoint of ``model_id`` on ``device`` (eval mode, batch norms folded
    into the layers before them: same scores, faster) and its models row. ``trust``: the
    model names (code outside smartaug) this run may import (``smartaug.models.check_trusted``)."""
    row = lake.row("models", model_id)
    path = checkpoint_path(lake, model_id)
    model = load_checkpoint(path, map_location=device, arch=row["arch"], trust=trust)
    if model.sha256 != row["sha256"]:
        raise ScoringError(f"checkpoint {path} has sha256 {model.sha256[:12]}, the models "
                           f"table recorded {row['sha256'][:12]}")
    return fuse_for_inference(model), row


def check_classes(lake: Lake, model_id: str, dataset_id: str) -> None:
    """The model's classes (names and order, recorded at training) must be the items'."""
    row = lake.row("models", model_id)
    trained = json.loads(row["config"]).get("classes") or classes(lake, row["dataset_id"])
    items = classes(lake, dataset_id)
    if trained != items:
        def show(names):
            return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")

        raise ScoringError(
            f"model {model_id} was trained on {len(trained)} classes ({show(trained)}) but "
            f"dataset {dataset_id} has {len(items)} classes ({show(items)}): its predictions "
            f"and hardness would be meaningless. Score with a model trained on this dataset's "
            f"classes (smartaug baseline --dataset-id {dataset_id})")


def _decoded(batches: Iterator[pa.RecordBatch], id_column: str, pixels: PoolPixels | None):
    """(ids, labels, uint8 images) per batch; a pool's pixels are decoded or regenerated from
    their recipes by ``pixels`` (in worker processes, ahead of the model)."""
    if pixels is None:
        for b in batches:
            yield b.column(id_column), np.asarray(b.column("label")), decode_images(b, id_column)
        return
    for b, images in pixels.stream(batches):
        yield b.column(id_column), np.asarray(b.column("label")), images


def _score_into(writer, model, items: Iterator[pa.RecordBatch], id_column: str, *,
                scoring_run_id: str, model_id: str, pool_id: str | None, device: torch.device,
                progress: Progress, pixels: PoolPixels | None = None) -> tuple[int, int]:
    """Score ``items`` into ``writer``; returns (items, items with an undefined AVH)."""
    spec = model.spec
    image_shape = (spec["image_size"], spec["image_size"], spec["in_channels"])
    n = n_undefined = 0
    pending: list[dict] = []

    def flush():
        m = sum(len(p["label"]) for p in pending)
        writer.write({"scoring_run_id": [scoring_run_id] * m, "model_id": [model_id] * m,
                      "pool_id": [pool_id] * m,
                      "item_id": pa.concat_arrays([p["item_id"] for p in pending]),
                      **{k: np.concatenate([p[k] for p in pending])
                         for k in ("label", "pred", "correct", *SCORE_COLUMNS)}})
        pending.clear()

    stream = _decoded(items, id_column, pixels)
    # a recipe pool of cheap kinds on the CPU is regenerated between the model's batches, in
    # this thread: beside the model it would oversubscribe the cores torch is using
    if not (pixels is not None and not pixels.materialized and pixels.cheap
            and device.type == "cpu"):
        stream = prefetch(stream)
    for out in score_batches(model, stream, device=device, image_shape=image_shape):
        pending.append(out)
        n += len(out["label"])
        n_undefined += int(np.isnan(out["avh"]).sum())
        if sum(len(p["label"]) for p in pending) >= WRITE_ROWS:
            flush()
        if progress:
            progress(len(out["label"]))
    if pending:
        flush()
    return n, n_undefined


def _record_run(lake: Lake, scoring_run_id: str, model_id: str, *, pool_id, dataset_id, split,
                n, n_undefined, batch_size, device, seconds) -> None:
    if n_undefined:
        print(f"warning: {n_undefined} of {n} items have no AVH (zero feature vector); "
              f"their avh is NULL in the scores table")
    lake.write("scoring_runs", scoring_run_id, {
        "scoring_run_id": [scoring_run_id], "model_id": [model_id], "pool_id": [pool_id],
        "dataset_id": [dataset_id], "split": [split], "n_items": [n],
        "n_undefined": [n_undefined], "batch_size": [batch_size], "device": [str(device)],
        "seconds": [seconds], "train_run_id": [None], "epoch": [None]})


def _run(lake: Lake, model_id: str, scoring_run_id: str, items: Iterator[pa.RecordBatch],
         id_column: str, *, pool_id: str | None, dataset_id: str, split: str | None,
         batch_size: int, device: torch.device, progress: Progress,
         pixels: PoolPixels | None = None, trust: Trust = ()) -> str:
    t0 = time.perf_counter()
    model, _ = load_model(lake, model_id, device, trust)
    with lake.writer("scores", scoring_run_id) as w:
        n, n_undefined = _score_into(w, model, items, id_column, scoring_run_id=scoring_run_id,
                                     model_id=model_id, pool_id=pool_id, device=device,
                                     progress=progress, pixels=pixels)
    _record_run(lake, scoring_run_id, model_id, pool_id=pool_id, dataset_id=dataset_id,
                split=split, n=n, n_undefined=n_undefined, batch_size=batch_size,
                device=device, seconds=time.perf_counter() - t0)
    return scoring_run_id


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ScoringError(f"batch_size must be >= 1, got {batch_size}")


def _precision(device: str) -> str:
    return "bf16" if resolve_device(device).type == "cuda" else "fp32"


def pool_scoring_run_id(model_id: str, pool_id: str, device: str = "auto") -> str:
    """The scoring_run_id of ``model_id`` on ``pool_id`` (what ``score_pool`` produces)."""
    return content_id("scores", {"model_id": model_id, "pool_id": pool_id,
                                 "precision": _precision(device)})


def score_pool(lake: Lake, model_id: str, pool_id: str, *, batch_size: int = 512,
               device: str = "auto", progress: Progress = None, trust: Trust = ()) -> str:
    """Score every augmentation of ``pool_id`` with ``model_id``; returns scoring_run_id.

    Same model and pool (and precision) = same id: a finished run is found, not redone.
    ``trust``: a model outside smartaug this run may import (``smartaug.models.check_trusted``).
    """
    _check_batch_size(batch_size)
    pool = lake.row("pools", pool_id)
    scoring_run_id = pool_scoring_run_id(model_id, pool_id, device)
    if lake.has("scoring_runs", scoring_run_id):
        return scoring_run_id
    check_classes(lake, model_id, pool["dataset_id"])
    items = lake.iter_batches("augmentations", pool_id, batch_size=batch_size,
                              columns=POOL_COLUMNS)
    return _run(lake, model_id, scoring_run_id, items, "aug_id", pool_id=pool_id,
                dataset_id=pool["dataset_id"], split=None, batch_size=batch_size,
                device=resolve_device(device), progress=progress,
                pixels=PoolPixels(lake, pool_id), trust=trust)


def score_split(lake: Lake, model_id: str, dataset_id: str, split: str, *,
                batch_size: int = 512, device: str = "auto", progress: Progress = None,
                trust: Trust = ()) -> str:
    """Score the original images of one split (``item_id = sample_id``); returns its run id."""
    _check_batch_size(batch_size)
    if split not in ("train", "val", "test"):
        raise ScoringError(f"unknown split {split!r}; valid: train, val, test")
    meta = lake.row("datasets", dataset_id)
    scoring_run_id = content_id("scores", {"model_id": model_id, "dataset_id": dataset_id,
                                           "split": split, "precision": _precision(device)})
    if lake.has("scoring_runs", scoring_run_id):
        return scoring_run_id
    if not meta[f"n_{split}"]:
        held = ", ".join(s for s in ("train", "val", "test") if meta[f"n_{s}"])
        hint = " (ingest with --val-fraction F to hold one out)" if split == "val" else ""
        raise ScoringError(f"dataset {dataset_id} has no {split} split{hint}; its splits: "
                           f"{held}")
    check_classes(lake, model_id, dataset_id)

    def items():
        for b in lake.iter_batches("samples", dataset_id, batch_size=batch_size,
                                   columns=["split", "sample_id", *IMAGE_COLUMNS]):
            b = b.filter(pc.equal(b.column("split"), split))
            if b.num_rows:
                yield b

    return _run(lake, model_id, scoring_run_id, items(), "sample_id", pool_id=None,
                dataset_id=dataset_id, split=split, batch_size=batch_size,
                device=resolve_device(device), progress=progress, trust=trust)


def _shard_row_groups(lake: Lake, pool_id: str, shard: int, n_shards: int):
    """(file, row group) of one shard: the pool's row groups dealt out in contiguous runs."""
    groups = [(f, g) for f in lake.files("augmentations", pool_id)
              for g in range(lake.parquet_file(f).metadata.num_row_groups)]
    per = -(-len(groups) // n_shards)
    return groups[shard * per : (shard + 1) * per]


def score_pool_shard(lake: Lake, model_id: str, pool_id: str, shard: int, n_shards: int, *,
                     batch_size: int = 512, device: str = "auto", trust: Trust = ()) -> str:
    """Score one of ``n_shards`` slices of the pool into a staging area (complete shards
    survive a crash and are not redone); ``commit_pool_shards`` turns them into the run."""
    if not 0 <= shard < n_shards:
        raise ScoringError(f"shard {shard} is not in 0..{n_shards - 1}")
    _check_batch_size(batch_size)
    scoring_run_id = pool_scoring_run_id(model_id, pool_id, device)
    target = lake.shard_location(scoring_run_id, shard, n_shards)
    if lake.has("scoring_runs", scoring_run_id) or lake.complete(target):
        return scoring_run_id
    check_classes(lake, model_id, lake.row("pools", pool_id)["dataset_id"])
    dev = resolve_device(device)
    model, _ = load_model(lake, model_id, dev, trust)
    items = (batch for f, g in _shard_row_groups(lake, pool_id, shard, n_shards)
             for batch in lake.parquet_file(f).iter_batches(
                 batch_size=batch_size, row_groups=[g], columns=POOL_COLUMNS))
    with lake.writer("scores", scoring_run_id, target=target) as w:
        _score_into(w, model, items, "aug_id", scoring_run_id=scoring_run_id, model_id=model_id,
                    pool_id=pool_id, device=dev, progress=None,
                    pixels=PoolPixels(lake, pool_id))
    return scoring_run_id


def commit_pool_shards(lake: Lake, model_id: str, pool_id: str, n_shards: int, *,
                       batch_size: int = 512, device: str = "auto") -> str:
    """Publish the scored shards as one scoring run (one atomic partition); returns its id."""
    scoring_run_id = pool_scoring_run_id(model_id, pool_id, device)
    if lake.has("scoring_runs", scoring_run_id):
        return scoring_run_id
    t0 = time.perf_counter()
    dirs = [lake.shard_location(scoring_run_id, k, n_shards) for k in range(n_shards)]
    if not lake.has("scores", scoring_run_id):
        missing = [str(d).rsplit("/", 1)[-1] for d in dirs if not lake.complete(d)]
        if missing:
            raise ScoringError(f"scoring run {scoring_run_id}: shards not scored yet: "
                               f"{', '.join(missing)}")
        _publish_shards(lake, scoring_run_id, dirs)
    files = lake.files("scores", scoring_run_id)
    n = sum(lake.parquet_file(f).metadata.num_rows for f in files)
    n_undefined = sum(lake.parquet_file(f).read(columns=["avh"])["avh"].null_count
                      for f in files)
    pool = lake.row("pools", pool_id)
    if n != pool["n_items"]:
        raise ScoringError(f"scoring run {scoring_run_id}: shards hold {n} rows, the pool "
                           f"{pool['n_items']}")
    _record_run(lake, scoring_run_id, model_id, pool_id=pool_id, dataset_id=pool["dataset_id"],
                split=None, n=n, n_undefined=n_undefined, batch_size=batch_size,
                device=resolve_device(device), seconds=time.perf_counter() - t0)
    lake.remove(lake.shards_location(scoring_run_id))
    return scoring_run_id


def _publish_shards(lake: Lake, scoring_run_id: str, dirs: list) -> None:
    """The shards' files become the scores partition in one step: hard links renamed into
    place on a local lake; on a remote one, the shards streamed into one object."""
    if not lake.local:
        with lake.writer("scores", scoring_run_id) as w:
            for d in dirs:
                for f in lake.parquet_files(d):
                    for batch in lake.parquet_file(f).iter_batches():
                        w.write(batch)
        return
    tmp = lake.stage(f"scores-{scoring_run_id}")
    for k, d in enumerate(dirs):
        for j, f in enumerate(lake.parquet_files(d)):
            (tmp / f"part-{k:05d}-{j:05d}.parquet").hardlink_to(f)
    write_manifest(tmp, "scores", scoring_run_id)
    publish(tmp, lake.partition_dir("scores", scoring_run_id), overwrite=False)
