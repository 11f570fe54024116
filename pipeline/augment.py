"""The augmentation pool: rotation, Gaussian noise and horizontal flip with albumentations.

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
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["AugmentConfig", "KINDS", "augment_images", "build_pool", "item_seed", "parse_policy"]

KINDS = ("rotate", "noise", "hflip")


@dataclass(frozen=True)
class AugmentConfig:
    policy: str = "one"  # "one" | "all" | "k:N"
    kinds: tuple[str, ...] = KINDS
    max_angle: float = 20.0  # degrees
    sigma: float = 0.1  # noise std in units of a [0, 1] image
    seed: int = 0

    def __post_init__(self) -> None:
        parse_policy(self.policy, len(self.kinds))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds or len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds must be distinct names from {', '.join(KINDS)}; got "
                             f"{list(self.kinds)}")
        if not (0 < self.max_angle <= 180):
            raise ValueError(f"max_angle must be in (0, 180], got {self.max_angle}")
        if not (0 < self.sigma <= 1):
            raise ValueError(f"sigma must be in (0, 1], got {self.sigma}")

    def to_dict(self) -> dict:
        return asdict(self)


def parse_policy(policy: str, n_kinds: int = len(KINDS)) -> int:
    """Augmentations per image for a policy string; ValueError for a bad one."""
    if policy == "one":
        return 1
    if policy == "all":
        return n_kinds
    if policy.startswith("k:"):
        try:
            k = int(policy[2:])
        except ValueError:
            k = 0
        if k >= 1:
            return k
    raise ValueError(f"unknown policy {policy!r}; valid: one, all, k:N (N >= 1)")


def _item_hash(pool_seed: int, sample_id: str, k: int) -> bytes:
    return hashlib.sha256(f"{pool_seed}\x1f{sample_id}\x1f{k}".encode()).digest()


def item_seed(pool_seed: int, sample_id: str, k: int) -> int:
    """63-bit seed of one augmentation, a hash of (pool seed, sample_id, k)."""
    return int.from_bytes(_item_hash(pool_seed, sample_id, k)[:8], "little") >> 1


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
        import albumentations as A
        import cv2

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
    import cv2

    return np.vstack([cv2.getRotationMatrix2D(center, angle, 1.0), (0.0, 0.0, 1.0)])


def _apply(images: np.ndarray, items, cfg: AugmentConfig):
    """Augment ``items`` (row, k, seed, kind) of ``images``; returns images + params.

    Each item's parameters are drawn from its own seed here (the angle from the seed's bits,
    the noise field from a generator seeded by it) and handed to the albumentations
    transform's ``apply`` with the same geometry ``Rotate`` / ``GaussNoise`` would build, so the
    recorded parameters are exactly the applied ones, and no per-image generator objects are
    rebuilt inside albumentations.
    """
    from albumentations.augmentations.geometric import functional as fgeometric
    from albumentations.augmentations.pixel import functional as fpixel

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
    import cv2

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
        import atexit

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


def build_pool(lake, dataset_id: str, cfg: AugmentConfig, *, workers: int | None = None,
               progress: Callable[[int], None] | None = None) -> str:
    """Augment the train split of ``dataset_id`` into the augmentations table; returns pool_id.

    The pool id hashes the dataset id and ``cfg``: a second call finds it and writes nothing.
    """

    from pipeline.data import read_split
    from pipeline.lake import content_id, encode_images, provenance

    pool_id = content_id("pool", {"dataset_id": dataset_id, "config": cfg.to_dict()})
    if lake.has("pools", pool_id):
        return pool_id
    t0 = time.perf_counter()
    split = read_split(lake, dataset_id, "train")
    items, out, params = augment_images(split.images, split.sample_ids, cfg, workers=workers,
                                        progress=progress)
    n, (h, w, c) = len(items), split.images.shape[1:]
    rows = np.array([it[0] for it in items], dtype=np.int64)
    sids = np.asarray(split.sample_ids, dtype=object)[rows]
    ks = [it[1] for it in items]
    writer = lake.writer("augmentations", pool_id)
    try:
        step = 65_536
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            writer.write({
                "pool_id": [pool_id] * (hi - lo),
                "aug_id": [f"{pool_id}:{sids[i]}:{ks[i]}" for i in range(lo, hi)],
                "sample_id": sids[lo:hi].tolist(),
                "label": split.labels[rows[lo:hi]],
                "k": np.asarray(ks[lo:hi], dtype=np.int32),
                "kind": [it[3] for it in items[lo:hi]],
                "angle": params["angle"][lo:hi],  # NaN (not a rotation) is stored as NULL
                "sigma": params["sigma"][lo:hi],
                "flipped": params["flipped"][lo:hi],
                "seed": np.asarray([it[2] for it in items[lo:hi]], dtype=np.int64),
                "image": encode_images(out[lo:hi]),
                "height": np.full(hi - lo, h, np.int32),
                "width": np.full(hi - lo, w, np.int32),
                "channels": np.full(hi - lo, c, np.int32),
            })
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    lake.write("pools", pool_id, {
        "pool_id": [pool_id], "dataset_id": [dataset_id],
        "config": [_json(cfg.to_dict())], "n_items": [n],
        "seconds": [time.perf_counter() - t0], **{k: [v] for k, v in provenance().items()}})
    return pool_id


def _json(obj) -> str:
    import json

    return json.dumps(obj, sort_keys=True)
