"""Streaming batched scoring: Parquet record batches -> tensors -> model -> hardness -> Parquet.

A scoring run covers one set of items: a pool (``item_id = aug_id``, one row per augmentation)
or one split of the original samples (``item_id = sample_id``). Batches are read, scored and
written one at a time (a reader thread decodes the next batch while the model runs), so the
pool is never in memory as a whole. The run's partition becomes visible only when complete.

Device ``auto`` = CUDA when present (bf16 autocast, channels_last), else CPU (float32).
Hardness is always computed from float32 features (float64 inside ``pipeline.hardness``).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from models import fuse_for_inference, load_checkpoint
from pipeline.hardness import hardness_scores
from pipeline.lake import Lake, content_id, decode_images, provenance

__all__ = ["ScoringError", "score_pool", "score_split", "score_batches", "load_model"]

SCORE_COLUMNS = ("avh", "avc_true", "confidence", "margin", "loss", "entropy", "el2n",
                 "feature_norm")


class ScoringError(ValueError):
    """The model and the items cannot be scored together; the message says why."""


def checkpoint_path(lake: Lake, model_id: str) -> Path:
    """A local copy of ``model_id``'s checkpoint: the recorded file, else the one under the
    lake root (the root has moved), downloaded once into the cache from a remote lake."""
    recorded = lake.row("models", model_id)["checkpoint"]
    if lake.local and Path(recorded).is_file():
        return Path(recorded)
    return lake.fetch(f"checkpoints/{recorded.rsplit('/', 1)[-1]}")


def load_model(lake: Lake, model_id: str, device: torch.device):
    """The registered checkpoint of ``model_id`` on ``device`` (eval mode, batch norms folded
    into the layers before them) and its models row."""
    row = lake.row("models", model_id)
    path = checkpoint_path(lake, model_id)
    model = load_checkpoint(path, map_location=device)
    if model.sha256 != row["sha256"]:
        raise ScoringError(f"checkpoint {path} has sha256 {model.sha256[:12]}, the models "
                           f"table recorded {row['sha256'][:12]}")
    return fuse_for_inference(model), row  # batch norms folded: same scores, faster


def _prefetch(it: Iterator, depth: int = 2) -> Iterator:
    """Run ``it`` in a background thread, ``depth`` items ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work():
        try:
            for x in it:
                if stop.is_set():
                    return
                q.put(x)
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(e)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while (x := q.get()) is not done:
            if isinstance(x, BaseException):
                raise x
            yield x
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.05)


def _decoded(batches: Iterator[pa.RecordBatch], id_column: str):
    for b in batches:
        images = decode_images(b, id_column)
        yield b.column(id_column), np.asarray(b.column("label")), images


def score_batches(model: torch.nn.Module, batches: Iterator, *, device: torch.device,
                  image_shape: tuple[int, int, int]) -> Iterator[dict[str, np.ndarray]]:
    """Score decoded batches ``(ids, labels [B], images uint8 [B, H, W, C])``.

    Yields dicts of numpy columns (``item_id`` + ``label``, ``pred``, ``correct`` and every
    score of ``pipeline.hardness.hardness_scores``).
    """
    num_classes = model.head.out_features
    cuda = device.type == "cuda"
    weights = model.head.weight.detach().float()
    for ids, labels, images in batches:
        if images.shape[1:] != image_shape:
            raise ScoringError(f"the model takes {_fmt(image_shape)} images, the items are "
                               f"{_fmt(images.shape[1:])} (item {ids[0]})")
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ScoringError(f"item {ids[i]} has label {labels[i]}, out of range for a "
                               f"{num_classes}-class model (0..{num_classes - 1})")
        x = torch.from_numpy(np.array(images)).to(device, non_blocking=True)  # own the bytes
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, C, H, W)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(np.array(labels, dtype=np.int64)).to(device)
        with torch.inference_mode():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                f = model.features(x)
            f = f.float()
            logits = f @ weights.T + (model.head.bias.float() if model.head.bias is not None
                                      else 0.0)
            s = hardness_scores(logits, f, weights, y)
        out = {k: v.cpu().numpy() for k, v in s.items()}
        out["item_id"] = ids
        out["label"] = labels
        yield out


def _fmt(hwc) -> str:
    h, w, c = hwc
    return f"{c}x{h}x{w} (CxHxW)"


def _score_into(writer, model, items: Iterator[pa.RecordBatch], id_column: str, *,
                run_id: str, model_id: str, pool_id: str | None, device: torch.device,
                progress) -> tuple[int, int]:
    """Score ``items`` into ``writer`` (not committed); returns (items, undefined AVH)."""
    spec = model.spec
    image_shape = (spec["image_size"], spec["image_size"], spec["in_channels"])
    n = n_undefined = 0
    pending: list[dict] = []

    def flush():
        cols = {k: np.concatenate([p[k] for p in pending]) for k in pending[0] if k != "item_id"}
        ids = pa.concat_arrays([p["item_id"] for p in pending])
        m = len(ids)
        writer.write({"scoring_run_id": [run_id] * m, "model_id": [model_id] * m,
                      "pool_id": [pool_id] * m, "item_id": ids,
                      **{k: cols[k] for k in ("label", "pred", "correct", *SCORE_COLUMNS)}})
        pending.clear()

    stream = _prefetch(_decoded(items, id_column))
    for out in score_batches(model, stream, device=device, image_shape=image_shape):
        pending.append(out)
        n += len(out["label"])
        n_undefined += int(np.isnan(out["avh"]).sum())
        if sum(len(p["label"]) for p in pending) >= 16_384:
            flush()
        if progress:
            progress(len(out["label"]))
    if pending:
        flush()
    return n, n_undefined


def _record_run(lake: Lake, run_id: str, model_id: str, *, pool_id, dataset_id, split, n,
                n_undefined, batch_size, device, seconds) -> None:
    if n_undefined:
        print(f"warning: {n_undefined} of {n} items have no AVH (zero feature vector); "
              f"their avh is NULL in the scores table")
    lake.write("scoring_runs", run_id, {
        "scoring_run_id": [run_id], "model_id": [model_id], "pool_id": [pool_id],
        "dataset_id": [dataset_id], "split": [split], "n_items": [n],
        "n_undefined": [n_undefined], "batch_size": [batch_size], "device": [str(device)],
        "seconds": [seconds], **{k: [v] for k, v in provenance().items()}})


def _run(lake: Lake, model_id: str, run_id: str, items: Iterator[pa.RecordBatch],
         id_column: str, *, pool_id: str | None, dataset_id: str, split: str | None,
         batch_size: int, device: torch.device, model, progress) -> str:
    t0 = time.perf_counter()
    writer = lake.writer("scores", run_id)
    try:
        n, n_undefined = _score_into(writer, model, items, id_column, run_id=run_id,
                                     model_id=model_id, pool_id=pool_id, device=device,
                                     progress=progress)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    _record_run(lake, run_id, model_id, pool_id=pool_id, dataset_id=dataset_id, split=split,
                n=n, n_undefined=n_undefined, batch_size=batch_size, device=device,
                seconds=time.perf_counter() - t0)
    return run_id


def _resolve(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ScoringError(f"batch_size must be >= 1, got {batch_size}")


def score_pool(lake: Lake, model_id: str, pool_id: str, *, batch_size: int = 512,
               device: str = "auto", progress: Callable[[int], None] | None = None) -> str:
    """Score every augmentation of ``pool_id`` with ``model_id``; returns scoring_run_id.

    Same model and pool (and precision) = same id: a finished run is found, not redone.
    """
    _check_batch_size(batch_size)
    dev = _resolve(device)
    pool = lake.row("pools", pool_id)
    run_id = pool_run_id(lake, model_id, pool_id, device)
    if lake.has("scoring_runs", run_id):
        return run_id
    model, _ = load_model(lake, model_id, dev)
    items = lake.iter_batches("augmentations", pool_id, batch_size=batch_size,
                              columns=["aug_id", "label", "image", "height", "width", "channels"])
    return _run(lake, model_id, run_id, items, "aug_id", pool_id=pool_id,
                dataset_id=pool["dataset_id"], split=None, batch_size=batch_size, device=dev,
                model=model, progress=progress)


def score_split(lake: Lake, model_id: str, dataset_id: str, split: str, *,
                batch_size: int = 512, device: str = "auto",
                progress: Callable[[int], None] | None = None) -> str:
    """Score the original images of one split (``item_id = sample_id``); returns its run id."""
    import pyarrow.compute as pc

    _check_batch_size(batch_size)
    if split not in ("train", "val", "test"):
        raise ScoringError(f"unknown split {split!r}; valid: train, val, test")
    dev = _resolve(device)
    lake.row("datasets", dataset_id)
    run_id = content_id("scores", {"model_id": model_id, "dataset_id": dataset_id,
                                   "split": split,
                                   "precision": "bf16" if dev.type == "cuda" else "fp32"})
    if lake.has("scoring_runs", run_id):
        return run_id
    model, _ = load_model(lake, model_id, dev)

    def items():
        for b in lake.iter_batches("samples", dataset_id, batch_size=batch_size,
                                   columns=["split", "sample_id", "label", "image", "height",
                                            "width", "channels"]):
            b = b.filter(pc.equal(b.column("split"), split))
            if b.num_rows:
                yield b

    return _run(lake, model_id, run_id, items(), "sample_id", pool_id=None,
                dataset_id=dataset_id, split=split, batch_size=batch_size, device=dev,
                model=model, progress=progress)


def pool_run_id(lake: Lake, model_id: str, pool_id: str, device: str = "auto") -> str:
    """The scoring_run_id of ``model_id`` on ``pool_id`` (what ``score_pool`` would produce)."""
    dev = _resolve(device)
    return content_id("scores", {"model_id": model_id, "pool_id": pool_id,
                                 "precision": "bf16" if dev.type == "cuda" else "fp32"})


def _shard_dir(lake: Lake, run_id: str, shard: int, n_shards: int) -> Path | str:
    """A shard's staging partition, under the lake root so every worker sees it."""
    return lake.location(".tmp", f"shards-{run_id}", f"shard-{shard:05d}-of-{n_shards:05d}")


def _shard_row_groups(lake: Lake, pool_id: str, shard: int, n_shards: int):
    """(file, row groups) of one shard: the pool's row groups dealt out in contiguous runs."""
    groups = [(f, g) for f in lake.files("augmentations", pool_id)
              for g in range(lake.parquet_file(f).metadata.num_row_groups)]
    per = -(-len(groups) // n_shards)
    return groups[shard * per : (shard + 1) * per]


def score_pool_shard(lake: Lake, model_id: str, pool_id: str, shard: int, n_shards: int, *,
                     batch_size: int = 512, device: str = "auto") -> str:
    """Score one of ``n_shards`` slices of the pool into a staging area (complete shards
    survive a crash and are not redone); ``commit_pool_shards`` turns them into the run."""
    if not 0 <= shard < n_shards:
        raise ScoringError(f"shard {shard} is not in 0..{n_shards - 1}")
    _check_batch_size(batch_size)
    dev = _resolve(device)
    run_id = pool_run_id(lake, model_id, pool_id, device)
    target = _shard_dir(lake, run_id, shard, n_shards)
    if lake.has("scoring_runs", run_id) or lake.complete(target):
        return run_id
    model, _ = load_model(lake, model_id, dev)
    cols = ["aug_id", "label", "image", "height", "width", "channels"]

    def items():
        for f, g in _shard_row_groups(lake, pool_id, shard, n_shards):
            yield from lake.parquet_file(f).iter_batches(batch_size=batch_size,
                                                         row_groups=[g], columns=cols)

    writer = lake.writer("scores", run_id, target=target)
    try:
        _score_into(writer, model, items(), "aug_id", run_id=run_id, model_id=model_id,
                    pool_id=pool_id, device=dev, progress=None)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return run_id


def commit_pool_shards(lake: Lake, model_id: str, pool_id: str, n_shards: int, *,
                       batch_size: int = 512, device: str = "auto") -> str:
    """Publish the scored shards as one scoring run (one atomic partition); returns its id."""
    run_id = pool_run_id(lake, model_id, pool_id, device)
    if lake.has("scoring_runs", run_id):
        return run_id
    t0 = time.perf_counter()
    dirs = [_shard_dir(lake, run_id, k, n_shards) for k in range(n_shards)]
    if not lake.has("scores", run_id):
        missing = [str(d).rsplit("/", 1)[-1] for d in dirs if not lake.complete(d)]
        if missing:
            raise ScoringError(f"scoring run {run_id}: shards not scored yet: "
                               f"{', '.join(missing)}")
        _publish_shards(lake, run_id, dirs)
    files = lake.files("scores", run_id)
    n = sum(lake.parquet_file(f).metadata.num_rows for f in files)
    n_undefined = sum(lake.parquet_file(f).read(columns=["avh"])["avh"].null_count
                      for f in files)
    expected = lake.row("pools", pool_id)["n_items"]
    if n != expected:
        raise ScoringError(f"scoring run {run_id}: shards hold {n} rows, the pool {expected}")
    _record_run(lake, run_id, model_id, pool_id=pool_id,
                dataset_id=lake.row("pools", pool_id)["dataset_id"], split=None, n=n,
                n_undefined=n_undefined, batch_size=batch_size, device=_resolve(device),
                seconds=time.perf_counter() - t0)
    lake.remove(lake.location(".tmp", f"shards-{run_id}"))
    return run_id


def _publish_shards(lake: Lake, run_id: str, dirs: list) -> None:
    """The shards' files become the scores partition in one step: hard links renamed into
    place on a local lake; on a remote one, the shards streamed into one object."""
    import shutil
    import uuid

    if not lake.local:
        writer = lake.writer("scores", run_id)
        try:
            for d in dirs:
                for f in lake.parquet_files(d):
                    for batch in lake.parquet_file(f).iter_batches():
                        writer.write(batch)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return
    final = lake.partition_dir("scores", run_id)
    tmp = lake.staging / f"scores-{run_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    for k, d in enumerate(dirs):
        for j, f in enumerate(lake.parquet_files(d)):
            os.link(f, tmp / f"part-{k:05d}-{j:05d}.parquet")
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
