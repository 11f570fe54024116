"""Augmentations of uint8 images: rotation, Gaussian noise and horizontal flip with albumentations.

Kinds (uint8 in, uint8 out, 1 or 3 channels):

* ``rotate``: angle uniform in [-max_angle, max_angle] degrees (default 20), bilinear, about
  the image centre, corners filled with 0 (``cv2.BORDER_CONSTANT``: black, the background of
  MNIST-like images). Recorded: ``angle`` (degrees, counter-clockwise positive).
* ``noise``: additive Gaussian noise, ``sigma`` in units of a [0, 1] image (default 0.1, i.e.
  25.5 grey levels; seed 000's text says 0.01 but its code used variance 0.01), independent per
  channel, clipped to [0, 255]. Recorded: ``sigma``.
* ``hflip``: mirror left-right. Recorded: ``flipped`` = true.

More built-in kinds (``BUILTIN``; ``smartaug kinds`` lists them with their parameters), each an
albumentations transform applied with ``p=1``: ``vflip``, ``rotate180`` (any angle), ``crop``
(random resized crop back to the image size), ``cutout`` (``CoarseDropout``), ``blur``,
``brightness-contrast``, ``perspective``, ``elastic``, ``jpeg``, ``grid``; and any kind a space
file defines in albumentations' own serialisation (``A.to_dict``; ``load_space``). Such kinds
run with generators of their own item seed (``set_random_state``), and the scalar parameters
the transform applied (its ``params``) are recorded. A transform that
changes the image's height or width is resized back (``cv2.INTER_AREA`` when shrinking, else
bilinear); one that changes the number of channels is refused.

Policies: ``one`` (one augmentation per image, kind drawn uniformly: seed 000), ``k:N`` (N per
image, each kind drawn uniformly), ``all`` (every kind for every image).

Every augmentation is a pure function of (pool seed, sample_id, k): its own seed is a hash of
the three, so the pool is the same bit for bit whatever the batch size or number of workers.
Work is spread over a process pool (OpenCV pinned to one thread per worker).
``smartaug.steps.pool`` writes the result into the lake.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import multiprocessing as mp
import os
import random
import signal
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from smartaug.config import AugmentConfig, parse_policy
from smartaug.core.magnitude import declared_scale, grid_draw, scale_of
from smartaug.errors import ConfigError, UserError
from smartaug.lazy import lazy
from smartaug.orphans import watch_parent
from smartaug.policy import probe, transform_problem
from smartaug.textfile import parse, read_text

A = lazy("albumentations")  # imported when first used

__all__ = ["BUILTIN", "FAST_KINDS", "AugmentConfig", "SpaceError", "apply_chunks", "augment_images",
           "check_kinds", "kind_specs", "load_space", "plan", "regenerate",
           "start_workers"]


class SpaceError(UserError, ValueError):
    """An augmentation space (a file, a kind) cannot be used; the message says why."""


# name -> (what it does, the transform for an image of (height, width)); the seed's three kinds
# are listed with their parameters from AugmentConfig and applied by their own fast path
BUILTIN: dict[str, tuple[str, Callable[[int, int], A.BasicTransform] | None]] = {
    "rotate": ("rotation, angle uniform in +-max_angle (default 20), bilinear, black corners",
               None),
    "noise": ("Gaussian noise, sigma (default 0.1) of the [0, 1] range, per channel, clipped",
              None),
    "hflip": ("mirror left-right", None),
    "vflip": ("mirror top-bottom", lambda h, w: A.VerticalFlip(p=1.0)),
    "rotate180": ("rotation by any angle in +-180, bilinear, black corners",
                  lambda h, w: A.Rotate(limit=(-180, 180), interpolation=cv2.INTER_LINEAR,
                                        border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0)),
    "crop": ("random resized crop (8-100 % of the area, aspect 3/4-4/3) back to the image size",
             lambda h, w: A.RandomResizedCrop(size=(h, w), scale=(0.08, 1.0), p=1.0)),
    "cutout": ("1-3 black rectangles of 10-30 % of each side (CoarseDropout)",
               lambda h, w: A.CoarseDropout(num_holes_range=(1, 3),
                                            hole_height_range=(0.1, 0.3),
                                            hole_width_range=(0.1, 0.3), fill=0, p=1.0)),
    "blur": ("Gaussian blur, kernel 3-7 pixels",
             lambda h, w: A.GaussianBlur(blur_limit=(3, 7), p=1.0)),
    "brightness-contrast": ("brightness and contrast each shifted by up to +-30 %",
                            lambda h, w: A.RandomBrightnessContrast(
                                brightness_limit=(-0.3, 0.3), contrast_limit=(-0.3, 0.3),
                                p=1.0)),
    "perspective": ("perspective warp, corners moved by 5-10 % of the size, black border",
                    lambda h, w: A.Perspective(scale=(0.05, 0.1), fit_output=False,
                                               border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0)),
    "elastic": ("elastic deformation (alpha 1, sigma 50)",
                lambda h, w: A.ElasticTransform(alpha=1.0, sigma=50.0, p=1.0)),
    "jpeg": ("JPEG compression at quality 20-60",
             lambda h, w: A.ImageCompression(compression_type="jpeg", quality_range=(20, 60),
                                             p=1.0)),
    "heavy-noise": ("Gaussian noise, sigma 0.2-0.4 of the [0, 1] range, per channel, clipped: "
                    "strong enough to hide a small image's class",
                    lambda h, w: A.GaussNoise(std_range=(0.2, 0.4), mean_range=(0.0, 0.0),
                                              per_channel=True, p=1.0)),
    "grid": ("grid distortion, 5 steps, +-30 %",
             lambda h, w: A.GridDistortion(num_steps=5, distort_limit=(-0.3, 0.3),
                                           border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0)),
}


def _canonical(d) -> str:
    return json.dumps(d, sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist")
                      else list(v) if isinstance(v, tuple | set) else str(v))


def kind_specs(cfg: AugmentConfig, height: int, width: int) -> dict[str, dict]:
    """Each kind's spec (what its spec hash covers): the seed's kinds with their parameters,
    every other kind as albumentations serialises its transform for this image size."""
    custom = dict(cfg.space)
    specs = {}
    for kind in cfg.kinds:
        if kind in custom:
            specs[kind] = json.loads(custom[kind])
        elif BUILTIN[kind][1] is None:
            specs[kind] = {"builtin": kind, **({"max_angle": cfg.max_angle} if kind == "rotate"
                                               else {"sigma": cfg.sigma} if kind == "noise"
                                               else {})}
        else:
            specs[kind] = json.loads(_canonical(A.to_dict(BUILTIN[kind][1](height, width))))
        scale = None if kind in custom else scale_of(kind, cfg.max_angle)
        if cfg.magnitude_bins and scale is not None:  # applied as the grid's transform
            specs[kind] = {"magnitude_grid": {
                "bins": cfg.magnitude_bins, "lo": scale.lo, "hi": scale.hi,
                "at_hi": json.loads(_canonical(A.to_dict(scale.at(scale.hi, 1, height,
                                                                  width))))}}
    return specs


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(_canonical(spec).encode()).hexdigest()[:16]


def load_space(path: str | os.PathLike) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """A space file (YAML or JSON): ``kinds: {name: builtin | A.to_dict(transform)}``.
    Returns (kind names in file order, the defined kinds as (name, canonical JSON)); each
    transform is rebuilt with ``A.from_dict`` here, so a bad one fails now, by name."""
    path = Path(path)
    text = read_text(path, "space file", SpaceError)
    try:
        data = parse(text, path, "space", "JSON" if path.suffix == ".json" else "YAML")
    except ConfigError as e:
        raise SpaceError(str(e)) from None
    example = "kinds: {rotate: builtin, grid: <A.to_dict(A.GridDistortion(p=1.0))>}"
    if not isinstance(data, dict) or not isinstance(data.get("kinds"), dict) or not data["kinds"]:
        raise SpaceError(f"{path}: expected a mapping with a non-empty 'kinds' mapping, e.g. "
                         f"{example}")
    unknown = set(data) - {"kinds"}
    if unknown:
        raise SpaceError(f"{path}: unknown top-level key(s) {sorted(unknown)}; expected 'kinds'")
    kinds, space = [], []
    for name, value in data["kinds"].items():
        name = str(name)
        if value == "builtin":
            if name not in BUILTIN:
                raise SpaceError(f"{path}: kind {name!r} is not a built-in kind; built-in: "
                                 f"{', '.join(BUILTIN)}")
        elif isinstance(value, dict):
            space.append((name, _checked_transform(path, name, value)))
        else:
            raise SpaceError(f"{path}: kind {name!r} must be 'builtin' or albumentations' "
                             f"serialisation of a transform (A.to_dict(t): a mapping with "
                             f"'__version__' and 'transform'), got {value!r}")
        kinds.append(name)
    return tuple(kinds), tuple(space)


def _checked_transform(path, name: str, value: dict) -> str:
    value = dict(value)
    magnitude = value.pop("magnitude", None)
    if magnitude is not None:
        try:
            declared_scale(name, magnitude)
        except ValueError as e:
            raise SpaceError(f"{path}: {e}") from None
    t = value.get("transform")
    if not isinstance(t, dict) or "__class_fullname__" not in t:
        raise SpaceError(f"{path}: kind {name!r} is not albumentations' format: expected "
                         f"{{__version__: ..., transform: {{__class_fullname__: NAME, ...}}}} "
                         f"as A.to_dict(transform) writes it")
    why = transform_problem(value)
    if why:
        raise SpaceError(f"{path}: kind {name!r}: {why}")
    try:
        transform = A.from_dict(value)
    except Exception as e:  # noqa: BLE001 - albumentations' own message says what is wrong
        raise SpaceError(f"{path}: kind {name!r}: albumentations refused "
                         f"{t['__class_fullname__']}: {type(e).__name__}: {e}") from e
    if not isinstance(transform, A.BasicTransform) or isinstance(transform, A.BaseCompose):
        raise SpaceError(f"{path}: kind {name!r} must be one transform, not "
                         f"{type(transform).__name__}")
    why = probe(transform)
    if why:
        raise SpaceError(f"{path}: kind {name!r} cannot augment an image: {why}")
    out = A.to_dict(transform)
    if magnitude is not None:  # what the atlas bins this kind by
        out["magnitude"] = magnitude
    return _canonical(out)


def _scalars(applied) -> dict:
    """The scalar applied parameters (numbers, strings, booleans, short tuples of numbers);
    arrays such as displacement maps are left out: the item seed regenerates them. A
    rotation's matrix is also given as its angle (degrees, counter-clockwise)."""
    out = {}
    for name, params in applied:
        for key, v in params.items():
            if key in ("shape",):
                continue
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, bool | int | float | str):
                out[key] = v
            elif isinstance(v, tuple | list) and len(v) <= 8 and all(
                    isinstance(x, int | float | np.generic) for x in v):
                out[key] = [x.item() if isinstance(x, np.generic) else x for x in v]
            elif key == "matrix" and "Rotate" in name and isinstance(v, np.ndarray):
                out["angle"] = float(np.degrees(np.arctan2(v[0, 1], v[0, 0])))
    return out


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
FAST_KINDS = frozenset(("rotate", "noise", "hflip"))  # applied by direct OpenCV / NumPy calls


def reference_transforms(cfg: AugmentConfig) -> dict:
    """The seed's kinds as albumentations transforms: what ``_apply``'s direct OpenCV calls
    reproduce pixel for pixel (the tests hold them to it)."""
    return {
        "rotate": A.Rotate(limit=(-cfg.max_angle, cfg.max_angle), interpolation=cv2.INTER_LINEAR,
                           border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
        "noise": A.GaussNoise(std_range=(cfg.sigma, cfg.sigma), mean_range=(0.0, 0.0),
                              per_channel=True, p=1.0),
        "hflip": A.HorizontalFlip(p=1.0),
    }


def rotation_center(h: int, w: int) -> tuple[float, float]:
    """The (x, y) pixel the rotate kind turns about: albumentations' centre of an h x w image,
    so that OpenCV's matrix about it is the one albumentations' Rotate warps with."""
    return (w / 2 - 0.5, h / 2 - 0.5)


def rotation_angle(seed, max_angle: float):
    """A rotate item's angle, from its seed's low 32 bits: U[-max_angle, max_angle) (a seed
    or an array of them)."""
    return max_angle * (2.0 * ((np.asarray(seed, np.uint64) & 0xFFFFFFFF) / 2**32) - 1.0)


# NumPy's SeedSequence and PCG64 constants (numpy/random/bit_generator.pyx, pcg64.h)
_SS_INIT_A, _SS_MULT_A, _SS_INIT_B, _SS_MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_SS_MIX_L, _SS_MIX_R = 0xCA01F9DD, 0x4973F715
_PCG_MULT = (2549297995355413924 << 64) + 4865540595714422341
_M64 = 2**64 - 1


def opencv_seeds(entropy) -> list[int]:
    """``int(np.random.default_rng(e).integers(0, 2**16))`` for each 32-bit ``e``: the seed
    the noise kind gives OpenCV's RNG. NumPy builds a generator per call (~40 us); this is
    its SeedSequence hash and PCG64's first output, vectorised over the batch (tested equal to
    NumPy's own)."""
    e = np.asarray(entropy, dtype=np.uint32).reshape(-1)
    u16 = np.uint32(16)
    hc = _SS_INIT_A

    def hashmix(v):
        nonlocal hc
        v = v ^ np.uint32(hc)
        hc = (hc * _SS_MULT_A) & 0xFFFFFFFF
        v = v * np.uint32(hc)
        return v ^ (v >> u16)

    with np.errstate(over="ignore"):
        zero = np.zeros_like(e)
        pool = [hashmix(e if i == 0 else zero) for i in range(4)]
        for src in range(4):
            for dst in range(4):
                if src != dst:
                    r = np.uint32(_SS_MIX_L) * pool[dst] - np.uint32(_SS_MIX_R) * \
                        hashmix(pool[src])
                    pool[dst] = r ^ (r >> u16)
        hb, words = _SS_INIT_B, []
        for i in range(8):
            v = pool[i % 4] ^ np.uint32(hb)
            hb = (hb * _SS_MULT_B) & 0xFFFFFFFF
            v = v * np.uint32(hb)
            words.append((v ^ (v >> u16)).astype(np.uint64))
    s0, s1, i0, i1 = (words[2 * j] | (words[2 * j + 1] << np.uint64(32)) for j in range(4))
    one = np.uint64(1)
    with np.errstate(over="ignore"):
        # PCG64 on (high, low) uint64 pairs: pcg64_srandom_r (step from 0, add the seed,
        # step), then the first draw's step and its XSL-RR output
        inc = ((i0 << one) | (i1 >> np.uint64(63)), (i1 << one) | one)
        state = _add128((s0, s1), inc)
        for _ in range(2):
            state = _add128(_mul128(state, _PCG_MULT_HL), inc)
        hi, lo = state
        rot, x = hi >> np.uint64(58), hi ^ lo
        first = (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))
    return ((first & np.uint64(0xFFFFFFFF)) >> np.uint64(16)).tolist()  # Lemire: 2**16


_PCG_MULT_HL = (np.uint64(_PCG_MULT >> 64), np.uint64(_PCG_MULT & _M64))
_M32 = np.uint64(0xFFFFFFFF)


def _add128(a, b):
    lo = a[1] + b[1]
    return a[0] + b[0] + (lo < a[1]).astype(np.uint64), lo


def _mul128(a, m):
    """(a * m) mod 2**128 on (high, low) uint64 pairs (m a scalar pair)."""
    a_hi, a_lo = a
    m_hi, m_lo = m
    a0, a1 = a_lo & _M32, a_lo >> np.uint64(32)
    b0, b1 = m_lo & _M32, m_lo >> np.uint64(32)
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> np.uint64(32)) + (p01 & _M32) + (p10 & _M32)
    carry = p11 + (p01 >> np.uint64(32)) + (p10 >> np.uint64(32)) + (mid >> np.uint64(32))
    return carry + a_lo * m_hi + a_hi * m_lo, a_lo * m_lo


def _apply(images: np.ndarray, items, cfg: AugmentConfig, *, record: bool = True):
    """Augment ``items`` (row, k, seed, kind) of ``images``; returns images + params
    (with ``record=False``, the images and no params: what regeneration needs).

    Each item's parameters are drawn from its own seed here (the angle from the seed's bits,
    the noise field from OpenCV's RNG seeded by it). The seed's three kinds are applied by
    the OpenCV calls albumentations' ``Rotate`` / ``GaussNoise`` / ``HorizontalFlip`` make,
    without their per-call checks (tested pixel for pixel against them), a kind's items at
    once where the arithmetic allows; every other kind is its albumentations transform, with
    generators set from the item seed.
    """
    cv2.setNumThreads(1)  # tiny images gain nothing from OpenCV's pool (and it breaks fork)
    shape = images.shape[1:]
    h, w, c = shape
    n = len(items)
    out = np.empty((n, *shape), dtype=np.uint8)
    angle = np.full(n, np.nan)
    sigma = np.full(n, np.nan)
    flipped = np.zeros(n, dtype=bool)
    applied: list = [None] * n
    by_kind: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_kind.setdefault(it[3], []).append(i)
    custom = dict(cfg.space)
    for kind, idx in by_kind.items():
        rows = [items[i][0] for i in idx]
        seeds = [items[i][2] for i in idx]
        fast = None if kind in custom else kind  # a space file may redefine a seed kind
        scale = None if kind in custom else scale_of(kind, cfg.max_angle)
        if cfg.magnitude_bins and scale is not None:  # on the grid: at exactly its magnitude
            for i, row, s in zip(idx, rows, seeds, strict=True):
                m, b, sign = grid_draw(s, cfg.magnitude_bins, scale)
                t = scale.at(m, sign, h, w)
                t.set_random_state(*_generators(s))
                out[i] = _fit(t(image=images[row])["image"], shape, kind)
                if kind == "rotate":
                    angle[i] = sign * m
                elif kind == "noise":
                    sigma[i] = m
                if record:
                    applied[i] = json.dumps({"magnitude": m, "magnitude_bin": b,
                                             **_scalars([(type(t).__name__, t.params)])})
        elif fast == "rotate":
            center = rotation_center(h, w)
            angles = rotation_angle(seeds, cfg.max_angle)
            angle[idx] = angles
            warp, rot = cv2.warpAffine, cv2.getRotationMatrix2D
            linear, constant = cv2.INTER_LINEAR, cv2.BORDER_CONSTANT
            for i, row, a in zip(idx, rows, angles.tolist(), strict=True):
                # (src, M, dsize, dst, flags, borderMode, borderValue): positional, the
                # binding parses them faster than keywords
                out[i] = warp(images[row], rot(center, a, 1.0), (w, h), None, linear, constant,
                              0).reshape(shape)
            if record:
                for i in idx:
                    applied[i] = json.dumps({"angle": float(angle[i])})
        elif fast == "noise":
            noise = np.empty((len(idx), *shape))
            mean, std = np.zeros(c, np.float32), cfg.sigma * np.ones(c, np.float32)
            seed_rng, randn = cv2.setRNGSeed, cv2.randn
            for j, cv_seed in enumerate(opencv_seeds([s >> 31 for s in seeds])):
                seed_rng(cv_seed)
                randn(noise[j], mean, std)  # (dst, mean, stddev)
            # GaussNoise adds the map truncated to whole grey levels, then clips (in float32,
            # in place: the same operations as img + trunc(noise.astype(float32) * 255))
            noisy = noise.astype(np.float32)
            np.multiply(noisy, np.float32(255), out=noisy)
            np.trunc(noisy, out=noisy)
            np.add(noisy, images[rows], out=noisy)
            out[idx] = np.clip(noisy, 0, 255, out=noisy)
            sigma[idx] = cfg.sigma
            if record:
                text = json.dumps({"sigma": cfg.sigma})
                for i in idx:
                    applied[i] = text
        elif fast == "hflip":
            out[idx] = images[rows][:, :, ::-1]
            flipped[idx] = True
            if record:
                for i in idx:
                    applied[i] = '{"flipped": true}'
        else:
            for i, row, s in zip(idx, rows, seeds, strict=True):
                t = _transform(kind, cfg, shape)
                t.set_random_state(*_generators(s))
                try:
                    res = t(image=images[row])["image"]
                except Exception as e:  # noqa: BLE001 - the space's transform, not ours
                    raise SpaceError(
                        f"kind {kind!r} ({type(t).__name__}) cannot be applied to "
                        f"{'x'.join(map(str, shape))} images: {type(e).__name__}: {e}; change "
                        f"its parameters in the space file") from None
                out[i] = _fit(res, shape, kind)
                if record:
                    applied[i] = json.dumps(_scalars([(type(t).__name__, t.params)]))
    if not record:
        return out
    return out, angle, sigma, flipped, applied


def _generators(seed: int) -> tuple[np.random.Generator, random.Random]:
    """NumPy and Python generators in a state that is a function of ``seed`` alone: the
    worker's two generators, re-seeded (setting a PCG64's state costs a tenth of building a
    generator from a seed, which matters for transforms that take ~20 us)."""
    gens = _STATE.get("generators")
    if gens is None:
        gens = _STATE["generators"] = (np.random.Generator(np.random.PCG64(0)), random.Random())
    gen, py = gens
    state = gen.bit_generator.state
    state["state"] = {"state": (seed * 0x9E3779B97F4A7C15) % 2**128, "inc": 2 * seed + 1}
    state["has_uint32"], state["uinteger"] = 0, 0
    gen.bit_generator.state = state
    py.seed(seed)
    return gen, py


def _transform(kind: str, cfg: AugmentConfig, shape) -> A.BasicTransform:
    """The kind's transform (one per worker and image size). Called directly: its ``params``
    attribute holds what it applied (what ``Compose(save_applied_params=True)`` reports),
    without the Compose's per-call cost."""
    cache = _STATE.setdefault("transforms", {})
    custom = dict(cfg.space)
    key = (kind, custom.get(kind), shape)
    if key not in cache:
        if kind in custom:
            cache[key] = A.from_dict(json.loads(custom[kind]))
        else:
            cache[key] = BUILTIN[kind][1](shape[0], shape[1])
    return cache[key]


def check_kinds(image: np.ndarray, cfg: AugmentConfig) -> None:
    """Apply every kind once to ``image`` (one of the pool's), so that a transform that cannot
    work on these images (a crop larger than they are) fails before any work, by name."""
    items = [(0, k, 0, kind) for k, kind in enumerate(cfg.kinds)]
    declared = {n: json.loads(s).get("magnitude") for n, s in cfg.space}
    if not any(declared.values()):
        _apply(image[None], items, cfg, record=False)
        return
    _, _, _, _, applied = _apply(image[None], items, cfg)
    for (_, _, _, kind), params in zip(items, applied, strict=True):
        if declared.get(kind):  # a declared magnitude must read a number
            try:
                m = declared_scale(kind, declared[kind]).read(json.loads(params), *image.shape[:2])
            except ValueError as e:
                raise SpaceError(str(e)) from None
            if m is None:
                raise SpaceError(f"kind {kind!r}: its declared magnitude "
                                 f"{declared[kind]['param']!r} is not among the parameters it "
                                 f"applies ({', '.join(json.loads(params)) or 'none'})")


def _fit(res: np.ndarray, shape, kind: str) -> np.ndarray:
    """Back to the pool's image shape: resized when a transform changed height or width,
    refused when it changed the number of channels."""
    if res.ndim == 2:
        res = res[..., None]
    if res.shape[2] != shape[2]:
        raise SpaceError(f"kind {kind!r} turned a {shape[2]}-channel image into "
                         f"{res.shape[2]} channels; the pool's images keep their channels")
    if res.dtype != np.uint8:
        raise SpaceError(f"kind {kind!r} returned {res.dtype} pixels, not uint8")
    if res.shape[:2] != tuple(shape[:2]):
        shrink = res.shape[0] * res.shape[1] > shape[0] * shape[1]
        res = cv2.resize(res, (shape[1], shape[0]),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        res = res.reshape(shape)
    return res


def _worker_init(parent: int) -> None:
    watch_parent(parent)  # it ends when the process that forked it does
    # A worker forked from a process with a Python SIGTERM handler (Prefect's flow engine
    # installs one) inherits it, and Pool.terminate() at exit then waits forever for a worker
    # that does not die: workers take the default action, so terminate() ends them.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    cv2.setNumThreads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


def _worker_chunk(args):
    images, items, cfg, record = args
    return _apply(images, items, cfg, record=record)


_POOLS: dict[int, object] = {}


def _pool(workers: int):
    """A persistent process pool (forked once, reused: a fork per call costs more than
    augmenting a few thousand images). Tasks carry their own images."""
    pool = _POOLS.get(workers)
    if pool is None:
        pool = mp.get_context("fork").Pool(workers, _worker_init, (os.getpid(),))
        atexit.register(_kill_pool, pool)
        _POOLS[workers] = pool
    return pool


def _kill_pool(pool) -> None:
    """End a pool's workers at exit, at once. ``Pool.terminate`` can wait forever after Ctrl-C
    (a worker blocked writing a result no thread reads holds the queue's lock that terminate
    needs), so the workers are killed and the pool's own finaliser is cancelled: nothing they
    did is committed, and a later run starts fresh."""
    from multiprocessing import pool as mp_pool

    handler = getattr(pool, "_worker_handler", None)
    if handler is not None:  # it would start new workers in place of the killed ones
        handler._state = mp_pool.TERMINATE
    finaliser = getattr(pool, "_terminate", None)
    if finaliser is not None:
        finaliser.cancel()
    if handler is not None:
        handler.join(2)
    workers = list(getattr(pool, "_pool", ()))  # read after the handler stopped
    for p in workers:
        p.kill()
    for p in workers:
        p.join(5)


def _task(images: np.ndarray, items, cfg: AugmentConfig, record: bool):
    """Just the images a chunk needs, rows renumbered."""
    rows, inverse = np.unique(np.fromiter((it[0] for it in items), np.int64, len(items)),
                              return_inverse=True)
    return (images[rows], [(r, k, s, kind) for r, (_, k, s, kind) in
                           zip(inverse.tolist(), items, strict=True)], cfg, record)


def apply_chunks(images: np.ndarray, chunks, cfg: AugmentConfig, *, workers: int | None = None,
                 record: bool = True):
    """Augment each chunk of plan items (row, k, seed, kind) of ``images``, in order: yields
    (images [m, H, W, C] uint8, angle, sigma, flipped, applied JSON) per chunk. ``chunks`` may
    be a generator (a pool being read): it is drawn only two chunks per worker ahead of what
    was yielded, so memory stays flat however many chunks there are. ``workers`` None = all
    cores; chunks run in the persistent process pool when there is more than one worker.
    ``record=False``: just the images of each chunk (regeneration)."""
    workers = _usable(workers)
    if workers <= 1:
        for items in chunks:
            yield _apply(images, items, cfg, record=record)
        return
    pool, window = _pool(workers), deque()
    for items in chunks:
        window.append(pool.apply_async(_worker_chunk, (_task(images, items, cfg, record),)))
        if len(window) >= 2 * workers:
            yield window.popleft().get()
    while window:
        yield window.popleft().get()


def start_workers(workers: int | None = None) -> None:
    """Fork the process pool now (from the main thread, before other threads start)."""
    workers = _usable(workers)
    if workers > 1:
        _pool(workers)


def _usable(workers: int | None) -> int:
    """Worker processes this process may use: 1 (work in-process) where it cannot fork them,
    e.g. in a daemonic process such as a Dask worker, which may not have children."""
    workers = (os.cpu_count() or 1) if workers is None else workers
    if "fork" not in mp.get_all_start_methods() or mp.current_process().daemon:
        return 1
    return workers


def regenerate(images: np.ndarray, items, cfg: AugmentConfig) -> np.ndarray:
    """The pixels of plan items (row, k, seed, kind) of ``images``, in this process: the same
    bits ``augment_images`` produced for them (each item is a function of its seed alone)."""
    return _apply(images, items, cfg, record=False)


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
    (NaN / False where a kind has no such parameter) and ``params``, each augmentation's
    applied scalar parameters as a JSON object (text). ``workers`` None = all cores.
    ``progress(n_done)`` is called after every chunk.
    """
    check_images(images, sample_ids)
    items = plan(sample_ids, cfg)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if chunk is None:  # a few chunks per worker: balanced, with progress along the way
        chunk = chunk_size(len(items), workers)
    bounds = [(lo, min(lo + chunk, len(items))) for lo in range(0, len(items), chunk)]
    if len(bounds) <= 1:
        workers = 1
    results = []
    for (lo, hi), res in zip(bounds, apply_chunks(images, (items[lo:hi] for lo, hi in bounds),
                                                  cfg, workers=workers), strict=True):
        results.append(res)
        if progress:
            progress(hi - lo)
    if not results:
        empty = np.empty((0, *images.shape[1:]), np.uint8)
        return items, empty, {"angle": np.empty(0), "sigma": np.empty(0),
                              "flipped": np.empty(0, bool), "params": []}
    out = np.concatenate([r[0] for r in results])
    params = {name: np.concatenate([r[i] for r in results])
              for i, name in ((1, "angle"), (2, "sigma"), (3, "flipped"))}
    params["params"] = [p for r in results for p in r[4]]
    return items, out, params


def chunk_size(n_items: int, workers: int) -> int:
    """Items per task: a few chunks per worker (balanced, with progress along the way)."""
    return max(256, min(8192, -(-n_items // (4 * max(workers, 1)))))


def check_images(images: np.ndarray, sample_ids: Sequence[str]) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        raise ValueError(f"images must be uint8 [N, H, W, 1|3], got {images.dtype} "
                         f"{images.shape}")
    if len(sample_ids) != len(images):
        raise ValueError("one sample_id per image")
