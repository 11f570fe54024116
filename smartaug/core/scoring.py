"""Batched scoring: decoded batches of uint8 images -> model -> every hardness score.

Device CUDA: bf16 autocast and channels_last for the features; hardness is always computed from
float32 features (float64 inside ``smartaug.core.hardness``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from smartaug.core.hardness import hardness_scores
from smartaug.errors import UserError
from smartaug.models import fuse_for_inference

__all__ = ["ScoringError", "prefetch", "score_arrays", "score_batches"]


class ScoringError(UserError, ValueError):
    """The model and the items cannot be scored together; the message says why."""


def prefetch(it: Iterator, depth: int = 2) -> Iterator:
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


def score_batches(model: torch.nn.Module, batches: Iterator, *, device: torch.device,
                  image_shape: tuple[int, int, int]) -> Iterator[dict[str, np.ndarray]]:
    """Score decoded batches ``(ids, labels [B], images uint8 [B, H, W, C])``.

    Yields dicts of numpy columns (``item_id`` + ``label``, ``pred``, ``correct`` and every
    score of ``smartaug.hardness.hardness_scores``).
    """
    num_classes = model.head.out_features
    cuda = device.type == "cuda"
    if cuda:  # NHWC weights for NHWC inputs: tensor-core kernels, no per-call conversion
        model.to(memory_format=torch.channels_last)
    weights = model.head.weight.detach().float()
    pending = None  # CUDA: a batch's scores on their way to the host
    for ids, labels, images in batches:
        if images.shape[1:] != image_shape:
            raise ScoringError(f"the model takes {_fmt(image_shape)} images, the items are "
                               f"{_fmt(images.shape[1:])} (item {ids[0]})")
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ScoringError(f"item {ids[i]} has label {labels[i]}, out of range for a "
                               f"{num_classes}-class model (0..{num_classes - 1})")
        if cuda:  # through pinned memory, the copy overlapping the previous batch's compute
            x = torch.from_numpy(np.ascontiguousarray(images)).pin_memory().to(
                device, non_blocking=True)
        else:
            x = torch.from_numpy(np.array(images))  # own the bytes
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
        if not cuda:
            out = {k: v.numpy() for k, v in s.items()}
            out["item_id"] = ids
            out["label"] = labels
            yield out
            continue
        # the scores copied to (pinned) host memory without waiting; they are read after the
        # next batch's kernels are queued, so the GPU is not idle while the host writes them
        copies = {k: v.to("cpu", non_blocking=True) for k, v in s.items()}
        done = torch.cuda.Event()
        done.record()
        if pending is not None:
            yield _on_host(*pending)
        pending = (copies, done, ids, labels)
    if pending is not None:
        yield _on_host(*pending)


def score_arrays(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, *,
                 batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Score in-memory uint8 images [N, H, W, C] with ``model`` where it is: ``pred``,
    ``correct`` and every score, one value per image. What a training re-scores its pool with,
    with no checkpoint round trip: ``score_batches`` on an eval-mode copy with its batch norms
    folded (``smartaug.models.fuse_for_inference``, as a registered model is scored)."""
    scorer = fuse_for_inference(model)
    ids = np.arange(len(labels))
    batches = ((ids[i:i + batch_size], labels[i:i + batch_size],
                images[i:i + batch_size]) for i in range(0, len(ids), batch_size))
    device = next(model.parameters()).device
    parts = list(score_batches(scorer, batches, device=device,
                               image_shape=tuple(images.shape[1:])))
    keys = [k for k in parts[0] if k not in ("item_id", "label")] if parts else []
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def _on_host(copies: dict, done, ids, labels) -> dict:
    done.synchronize()
    out = {k: v.numpy() for k, v in copies.items()}
    out["item_id"] = ids
    out["label"] = labels
    return out


def _fmt(hwc) -> str:
    h, w, c = hwc
    return f"{c}x{h}x{w} (CxHxW)"


