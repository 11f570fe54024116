"""Magnitude as data: one scalar strength per augmentation.

Each built-in kind with a strength (``SCALES``) defines its magnitude from the parameters it
applied, its range, which end is the stronger, and the transform at exactly a magnitude (what a
pool on a magnitude grid applies) or up to one (what a policy applies):

============== ============================== =============== ==========
kind           magnitude                      range           stronger
============== ============================== =============== ==========
rotate         abs(angle), degrees            0 .. max_angle  higher
rotate180      abs(angle), degrees            0 .. 180        higher
noise          sigma, of the [0, 1] range     0 .. 0.2        higher
heavy-noise    sigma, of the [0, 1] range     0.2 .. 0.5      higher
crop           kept share of the area         0.08 .. 1       lower
cutout         share of the area blacked out  0 .. 0.25       higher
blur           Gaussian sigma, pixels         0.3 .. 2        higher
brightness-    largest shift of brightness    0 .. 0.5        higher
contrast       or contrast
perspective    corner shift, share of size    0.02 .. 0.15    higher
jpeg           quality                        10 .. 90        lower
elastic        alpha (sigma 5)                0 .. 5          higher
grid           abs(distortion)                0 .. 0.5        higher
============== ============================== =============== ==========

``hflip`` and ``vflip`` have none (one bin). A space file declares the magnitude of its own
kinds by naming one numeric parameter the transform applies (``magnitude: {param: angle, lo:
0, hi: 90}``).

A pool on a magnitude grid (``AugmentConfig.magnitude_bins = N``) cuts each kind's range into N
equal bins; each item's bin, its place inside the bin and its sign come from its own seed (so a
recipe pool regenerates it), and it is applied at exactly that magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2

from smartaug.lazy import lazy

A = lazy("albumentations")  # imported when first used

__all__ = ["SCALES", "Scale", "bin_of", "declared_scale", "grid_draw", "magnitude_of",
           "scale_of"]


@dataclass(frozen=True)
class Scale:
    """A kind's magnitude: ``what`` it measures, its range [lo, hi], which end is the stronger
    (``higher``: hi), how to read it from the applied parameters (``read(params, h, w)``), the
    transform at exactly ``m`` (``at(m, sign, h, w)``) and the transform from the weakest end
    up to ``m`` (``upto(m, h, w)``)."""

    what: str
    lo: float
    hi: float
    higher: bool
    read: Callable[[dict, int, int], float | None]
    at: Callable[[float, int, int, int], A.BasicTransform]
    upto: Callable[[float, int, int], A.BasicTransform]

    def weakest(self) -> float:
        return self.lo if self.higher else self.hi


def _angle(p, h, w):
    return abs(p["angle"]) if "angle" in p else None


def _rotate(m, s, h, w):
    return A.Rotate(limit=(s * m, s * m), interpolation=cv2.INTER_LINEAR,
                    border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0)


def _rotate_upto(m, h, w):
    return A.Rotate(limit=(-m, m), interpolation=cv2.INTER_LINEAR,
                    border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0)


def _noise(m, s, h, w):
    return A.GaussNoise(std_range=(m, m), mean_range=(0.0, 0.0), per_channel=True, p=1.0)


def _noise_upto(lo):
    return lambda m, h, w: A.GaussNoise(std_range=(lo, max(lo, m)), mean_range=(0.0, 0.0),
                                        per_channel=True, p=1.0)


def _sigma(p, h, w):
    return p.get("sigma") if isinstance(p.get("sigma"), int | float) else None


def _kept(p, h, w):
    c = p.get("crop_coords")
    if not c or len(c) != 4:
        return None
    x1, y1, x2, y2 = c
    return (x2 - x1) * (y2 - y1) / float(h * w)


def _crop(m, s, h, w):
    return A.RandomResizedCrop(size=(h, w), scale=(m, m), ratio=(3 / 4, 4 / 3), p=1.0)


def _cutout(m, s, h, w):
    side = math.sqrt(max(m, 1e-6))
    return A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(side, side),
                           hole_width_range=(side, side), fill=0, p=1.0)


def _cutout_upto(m, h, w):
    side = math.sqrt(max(m, 1e-6))
    return A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.05, max(side, 0.05)),
                           hole_width_range=(0.05, max(side, 0.05)), fill=0, p=1.0)


def _blur(m, s, h, w):
    return A.GaussianBlur(blur_limit=0, sigma_limit=(m, m), p=1.0)


def _bc(m, s, h, w):
    return A.RandomBrightnessContrast(brightness_limit=(s * m, s * m),
                                      contrast_limit=(-s * m, -s * m), p=1.0)


def _bc_read(p, h, w):
    if "alpha" not in p or "beta" not in p:
        return None
    return max(abs(p["alpha"] - 1.0), abs(p["beta"]) / 255.0)


def _perspective(m, s, h, w):
    return A.Perspective(scale=(m, m), fit_output=False, border_mode=cv2.BORDER_CONSTANT,
                         fill=0, p=1.0)


def _jpeg(m, s, h, w):
    q = int(round(m))
    return A.ImageCompression(compression_type="jpeg", quality_range=(q, q), p=1.0)


def _quality(p, h, w):
    return float(p["quality"]) if "quality" in p else None


def _elastic(m, s, h, w):
    return A.ElasticTransform(alpha=float(m), sigma=5.0, p=1.0)


def _grid(m, s, h, w):
    return A.GridDistortion(num_steps=5, distort_limit=(s * m, s * m),
                            border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0)


def _none(p, h, w):
    return None


SCALES: dict[str, Scale] = {
    "rotate": Scale("abs(angle), degrees", 0.0, 20.0, True, _angle, _rotate, _rotate_upto),
    "rotate180": Scale("abs(angle), degrees", 0.0, 180.0, True, _angle, _rotate, _rotate_upto),
    "noise": Scale("sigma, of the [0, 1] range", 0.0, 0.2, True, _sigma, _noise,
                   _noise_upto(0.0)),
    "heavy-noise": Scale("sigma, of the [0, 1] range", 0.2, 0.5, True, _none, _noise,
                         _noise_upto(0.2)),
    "crop": Scale("kept share of the area", 0.08, 1.0, False, _kept, _crop,
                  lambda m, h, w: A.RandomResizedCrop(size=(h, w), scale=(min(m, 1.0), 1.0),
                                                      ratio=(3 / 4, 4 / 3), p=1.0)),
    "cutout": Scale("share of the area blacked out", 0.0, 0.25, True, _none, _cutout,
                    _cutout_upto),
    "blur": Scale("Gaussian sigma, pixels", 0.3, 2.0, True, _none, _blur,
                  lambda m, h, w: A.GaussianBlur(blur_limit=0, sigma_limit=(0.3, max(m, 0.3)),
                                                 p=1.0)),
    "brightness-contrast": Scale(
        "largest shift of brightness or contrast", 0.0, 0.5, True, _bc_read, _bc,
        lambda m, h, w: A.RandomBrightnessContrast(brightness_limit=(-m, m),
                                                   contrast_limit=(-m, m), p=1.0)),
    "perspective": Scale("corner shift, share of the size", 0.02, 0.15, True, _none,
                         _perspective,
                         lambda m, h, w: A.Perspective(scale=(0.02, max(m, 0.02)),
                                                       fit_output=False,
                                                       border_mode=cv2.BORDER_CONSTANT, fill=0,
                                                       p=1.0)),
    "jpeg": Scale("quality", 10.0, 90.0, False, _quality, _jpeg,
                  lambda m, h, w: A.ImageCompression(compression_type="jpeg",
                                                     quality_range=(int(round(m)), 100),
                                                     p=1.0)),
    "elastic": Scale("alpha (sigma 5)", 0.0, 5.0, True, _none, _elastic,
                     lambda m, h, w: A.ElasticTransform(alpha=float(m), sigma=5.0, p=1.0)),
    "grid": Scale("abs(distortion)", 0.0, 0.5, True, _none, _grid,
                  lambda m, h, w: A.GridDistortion(num_steps=5, distort_limit=(-m, m),
                                                   border_mode=cv2.BORDER_CONSTANT, fill=0,
                                                   p=1.0)),
}


def scale_of(kind: str, max_angle: float = 20.0) -> Scale | None:
    """``kind``'s scale (rotate's range is the pool's ``max_angle``); None: no magnitude."""
    s = SCALES.get(kind)
    if s is not None and kind == "rotate":
        s = Scale(s.what, 0.0, float(max_angle), True, s.read, s.at, s.upto)
    return s


def declared_scale(kind: str, decl) -> Scale:
    """A space file's own kind's magnitude: ``{param: NAME, lo: X, hi: Y, stronger: higher |
    lower}`` reads the applied parameter NAME (a number, else an error). It has no grid
    transform: such a kind is binned on [lo, hi] from what it applied."""
    if not isinstance(decl, dict) or not isinstance(decl.get("param"), str):
        raise ValueError(f"kind {kind!r}: magnitude must be a mapping {{param: NAME, lo: X, "
                         f"hi: Y}} naming one numeric parameter the transform applies, got "
                         f"{decl!r}")
    lo, hi = decl.get("lo"), decl.get("hi")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi)) \
            or not lo < hi:
        raise ValueError(f"kind {kind!r}: magnitude needs numbers lo < hi (its range), got "
                         f"lo={lo!r}, hi={hi!r}")
    if decl.get("stronger", "higher") not in ("higher", "lower"):
        raise ValueError(f"kind {kind!r}: magnitude.stronger must be 'higher' or 'lower'")
    unknown = set(decl) - {"param", "lo", "hi", "stronger"}
    if unknown:
        raise ValueError(f"kind {kind!r}: unknown magnitude key(s) {sorted(unknown)}; valid: "
                         f"param, lo, hi, stronger")
    name = decl["param"]

    def read(p, h, w):
        if name not in p:
            return None
        v = p[name]
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"kind {kind!r}: its declared magnitude {name!r} applied "
                             f"{v!r}, not a number; declare a numeric parameter")
        return abs(float(v))

    def no_grid(*args):
        raise ValueError(f"kind {kind!r} is a space file's: it has no transform at a given "
                         f"magnitude (no grid); it is binned from what it applied")

    return Scale(f"{name} (declared)", float(lo), float(hi), decl.get("stronger", "higher")
                 == "higher", read, no_grid, no_grid)


def grid_draw(seed: int, bins: int, scale: Scale) -> tuple[float, int, int]:
    """(magnitude, bin, sign) of a grid item, from its seed alone: bits 32-47 give the bin,
    the low 32 bits the place inside it, bit 62 the sign."""
    b = ((seed >> 32) & 0xFFFF) % bins
    u = (seed & 0xFFFFFFFF) / 2**32
    m = scale.lo + (scale.hi - scale.lo) * (b + u) / bins
    return m, b, 1 if (seed >> 62) & 1 else -1


def bin_of(m: float | None, bins: int, scale: Scale) -> int | None:
    """The equal-width bin of magnitude ``m`` on ``scale``'s range (clipped to it)."""
    if m is None or not math.isfinite(m):
        return None
    x = (m - scale.lo) / (scale.hi - scale.lo)
    return min(bins - 1, max(0, int(math.floor(x * bins))))


def magnitude_of(kind: str, params: dict, h: int, w: int, scale: Scale | None) -> float | None:
    """An augmentation's magnitude: the grid's (``params["magnitude"]``) when it was drawn on
    one, else read from what it applied; None when the kind has none or it was not recorded."""
    if "magnitude" in params and isinstance(params["magnitude"], int | float):
        return float(params["magnitude"])
    if scale is None:
        return None
    return scale.read(params, h, w)
