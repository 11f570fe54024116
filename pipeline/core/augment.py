"""Augmentations of uint8 images: rotation, Gaussian noise and horizontal flip with albumentations.

Kinds (uint8 in, uint8 out, 1 or 3 channels):

* ``rotate``: angle uniform in [-max_angle, max_angle] degrees (default 20), bilinear, about
  the image centre, corners filled with 0 (``cv2.BORDER_CONSTANT``: black, the background of
  MNIST-like images). Recorded: ``angle`` (degrees, counter-clockwise positive).
* ``noise``: additive Gaussian noise, ``sigma`` in units of a [0, 1] image (default 0.1, i.e.
  25.5 grey levels; seed 000's text says 0.01 but its code used variance 0.01), independent per
  channel, clipped to [0, 255]. Recorded: ``sigma``.
* ``hflip``: mirror left-right. Recorded: ``flipped`` = true.

Policies: ``one`` (one augmentation per image, kind drawn uniformly: seed 000), ``k:N`` (N per
image, each kind drawn uniformly), ``all`` (every kind for every image).

Every augmentation is a pure function of (pool seed, sample_id, k): its own seed is a hash of
the three, so the pool is the same bit for bit whatever the batch size or number of workers.
Work is spread over a process pool (OpenCV pinned to one thread per worker).
``pipeline.steps.pool`` writes the result into the lake.
"""

from __future__ import annotations

import atexit
import hashlib
import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Sequence

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.geometric import functional as fgeometric
from albumentations.augmentations.pixel import functional as fpixel

from pipeline.config import AugmentConfig, parse_policy

__all__ = ["AugmentConfig", "augment_images", "plan"]


def _item_hash(pool_seed: int, sample_id: str, k: int) -> bytes:
    return hashlib.sha256(f"{pool_seed}\x1f{sample_id}\x1f{k}".encode()).digest()


def plan(sample_ids: Sequence[str], cfg: AugmentConfig) -> list[tuple[int, int, int, str]]:
    """(row, k, seed, kind) of every augmentation of a pool, in pool order."""
    per = parse_policy(cfg.policy, len(cfg.kinds))
    items = []
    for row, sid in enumerate(sample_ids):
        for k in range(per):
            h = _item_hash(cfg.seed, sid, k)
            s = int.from_bytes(h[:8], "little") >> 1
            if cfg.policy == "all":
                kind = cfg.kinds[k]
            else:  # uniform: bias of a 64-bit draw mod 3 is < 1e-19
                kind = cfg.kinds[int.from_bytes(h[8:16], "little") % len(cfg.kinds)]
            items.append((row, k, s, kind))
    return items


# ------------------------------------------------------------------ workers

_STATE: dict = {}


def _transforms(cfg: AugmentConfig) -> dict:
    key = (cfg.max_angle, cfg.sigma)
    if _STATE.get("key") != key:
        # OpenCV's thread pool does not survive fork(): a process that ran cv2 with its pool
        # up hangs the workers it forks. Tiny images gain nothing from it, so keep it off.
        cv2.setNumThreads(1)
        _STATE["key"] = key
        _STATE["t"] = {
            "rotate": A.Rotate(limit=(-cfg.max_angle, cfg.max_angle),
                               interpolation=cv2.INTER_LINEAR,
                               border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
            "noise": A.GaussNoise(std_range=(cfg.sigma, cfg.sigma), mean_range=(0.0, 0.0),
                                  per_channel=True, p=1.0),
            "hflip": A.HorizontalFlip(p=1.0),
        }
    return _STATE["t"]


def _rotation_matrix(center: tuple[float, float], angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` degrees (counter-clockwise) about ``center``: the matrix
    ``A.Rotate`` builds (tested against albumentations' own), at a tenth of the cost."""
    return np.vstack([cv2.getRotationMatrix2D(center, angle, 1.0), (0.0, 0.0, 1.0)])


def _apply(images: np.ndarray, items, cfg: AugmentConfig):
    """Augment ``items`` (row, k, seed, kind) of ``images``; returns images + params.

    Each item's parameters are drawn from its own seed here (the angle from the seed's bits,
    the noise field from a generator seeded by it) and handed to the albumentations
    transform's ``apply`` with the same geometry ``Rotate`` / ``GaussNoise`` would build, so the
    recorded parameters are exactly the applied ones, and no per-image generator objects are
    rebuilt inside albumentations.
    """
    tf = _transforms(cfg)
    shape = images.shape[1:]
    center = fgeometric.center(shape[:2])
    out = np.empty((len(items), *shape), dtype=np.uint8)
    angle = np.full(len(items), np.nan)
    sigma = np.full(len(items), np.nan)
    flipped = np.zeros(len(items), dtype=bool)
    for i, (row, _k, s, kind) in enumerate(items):
        img = images[row]
        if kind == "rotate":
            a = cfg.max_angle * (2.0 * ((s & 0xFFFFFFFF) / 2**32) - 1.0)  # U[-max, max)
            m = _rotation_matrix(center, a)
            res = tf["rotate"].apply(img, matrix=m, x_min=-1, x_max=-1, y_min=-1, y_max=-1,
                                     shape=shape)
            angle[i] = a
        elif kind == "noise":
            noise_map = fpixel.generate_noise(
                noise_type="gaussian", spatial_mode="per_pixel", shape=shape,
                params={"mean_range": (0.0, 0.0), "std_range": (cfg.sigma, cfg.sigma)},
                max_value=255, approximation=1.0,
                random_generator=np.random.default_rng(s >> 31))
            res = tf["noise"].apply(img, noise_map=noise_map)
            sigma[i] = cfg.sigma
        else:
            res = tf["hflip"].apply(img)
            flipped[i] = True
        out[i] = res.reshape(shape)
    return out, angle, sigma, flipped


def _worker_init() -> None:
    # A worker forked from a process with a Python SIGTERM handler (Prefect's flow engine
    # installs one) inherits it, and Pool.terminate() at exit then waits forever for a worker
    # that does not die: workers take the default action, so terminate() ends them.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    cv2.setNumThreads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


def _worker_chunk(args):
    images, items, cfg = args
    return _apply(images, items, cfg)


_POOLS: dict[int, object] = {}


def _pool(workers: int):
    """A persistent process pool (forked once, reused: a fork per call costs more than
    augmenting a few thousand images). Tasks carry their own images."""
    pool = _POOLS.get(workers)
    if pool is None:
        pool = mp.get_context("fork").Pool(workers, _worker_init)
        atexit.register(pool.terminate)
        _POOLS[workers] = pool
    return pool


def _task(images: np.ndarray, items, cfg: AugmentConfig):
    """Just the images a chunk needs, rows renumbered."""
    rows = sorted({it[0] for it in items})
    local = {r: i for i, r in enumerate(rows)}
    return images[rows], [(local[r], k, s, kind) for r, k, s, kind in items], cfg


def augment_images(
    images: np.ndarray,
    sample_ids: Sequence[str],
    cfg: AugmentConfig,
    *,
    workers: int | None = None,
    chunk: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[tuple[int, int, int, str]], np.ndarray, dict[str, np.ndarray]]:
    """Augment every image per ``cfg``: returns (plan, images [M, H, W, C] uint8, params).

    images: [N, H, W, C] uint8. ``params`` has ``angle``, ``sigma``, ``flipped`` arrays [M]
    (NaN / False where a kind has no such parameter). ``workers`` None = all cores.
    ``progress(n_done)`` is called after every chunk.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        raise ValueError(f"images must be uint8 [N, H, W, 1|3], got {images.dtype} "
                         f"{images.shape}")
    if len(sample_ids) != len(images):
        raise ValueError("one sample_id per image")
    items = plan(sample_ids, cfg)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if chunk is None:  # a few chunks per worker: balanced, with progress along the way
        chunk = max(256, min(8192, -(-len(items) // (4 * max(workers, 1)))))
    bounds = [(lo, min(lo + chunk, len(items))) for lo in range(0, len(items), chunk)]
    results = []
    if workers <= 1 or len(bounds) <= 1 or "fork" not in mp.get_all_start_methods():
        for lo, hi in bounds:
            results.append(_apply(images, items[lo:hi], cfg))
            if progress:
                progress(hi - lo)
    else:
        tasks = (_task(images, items[lo:hi], cfg) for lo, hi in bounds)
        for (lo, hi), res in zip(bounds, _pool(workers).imap(_worker_chunk, tasks), strict=True):
            results.append(res)
            if progress:
                progress(hi - lo)
    if not results:
        empty = np.empty((0, *images.shape[1:]), np.uint8)
        return items, empty, {"angle": np.empty(0), "sigma": np.empty(0),
                              "flipped": np.empty(0, bool)}
    out = np.concatenate([r[0] for r in results])
    params = {name: np.concatenate([r[i] for r in results])
              for i, name in ((1, "angle"), (2, "sigma"), (3, "flipped"))}
    return items, out, params
