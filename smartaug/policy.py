"""A recommended policy in your own training loop (``smartaug policy`` writes it):

    from smartaug.policy import load
    policy = load("policy.json")          # a callable: uint8 HWC image (, label) -> image
    augmented = policy(image)             # numpy uint8 [H, W, C] or [H, W], PIL, or a tensor
    augmented = policy(image, label)      # the class's own policy, where classes differ

The file is albumentations' own serialisation (``A.from_dict`` loads it as is); per-class
policies, where the atlas found classes that differ, are in ``<name>.per_class.json`` beside
it. Works as a torchvision transform (``transforms.Compose([load(path), ToTensor()])``) on
numpy or PIL images. ``seed`` makes the draws reproducible.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from smartaug.errors import InputError
from smartaug.lazy import lazy
from smartaug.textfile import read_text

A = lazy("albumentations")  # imported when first used

__all__ = ["Policy", "PolicyFileError", "PolicyInputError", "from_dict", "load"]


class PolicyFileError(InputError):
    """A policy file cannot be loaded; the message says why."""


MAX_SIDE = 4096  # the largest height or width a transform may be asked to make
MAX_DEPTH = 32  # transforms within transforms (OneOf, Compose ...): a policy uses 3
# the parameters that set an output's size, in albumentations' serialisation
_SIZE_KEYS = frozenset({"height", "width", "size", "max_size", "min_size", "min_height",
                        "min_width", "max_height", "max_width", "size_hw", "max_size_hw",
                        "target_size", "pad_height", "pad_width"})


def transform_problem(data, depth: int = 0) -> str | None:
    """What makes albumentations' serialisation ``data`` unsafe to build or run, if anything:
    nesting deeper than ``MAX_DEPTH``, or an output side above ``MAX_SIDE`` pixels (a
    ``Resize(100000, 100000)`` would take 30 GB an image). Checked before it is built."""
    if depth > MAX_DEPTH:
        return f"transforms nested more than {MAX_DEPTH} deep"
    if isinstance(data, dict):
        for key, value in data.items():
            if key in _SIZE_KEYS and _too_big(value):
                return (f"{data.get('__class_fullname__', 'a transform')}: {key} = "
                        f"{value!r} is above the largest side smartaug makes, {MAX_SIDE} "
                        f"pixels")
            why = transform_problem(value, depth + 1)
            if why:
                return why
    elif isinstance(data, list):
        for value in data:
            why = transform_problem(value, depth + 1)
            if why:
                return why
    return None


def _too_big(value) -> bool:
    if isinstance(value, list | tuple):
        return any(_too_big(v) for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool) and not (
        abs(value) <= MAX_SIDE)  # NaN too


def _compose(data, path: Path, what: str) -> A.BaseCompose:
    if not isinstance(data, dict) or "transform" not in data:
        raise PolicyFileError(f"{path}: {what} is not albumentations' serialisation "
                              f"(A.to_dict(transform): a mapping with a 'transform' key)")
    why = transform_problem(data)
    if why:
        raise PolicyFileError(f"{path}: {what}: {why}")
    try:
        t = A.from_dict(data)
    except Exception as e:  # noqa: BLE001 - albumentations' own message says what is wrong
        raise PolicyFileError(f"{path}: albumentations cannot load {what}: "
                              f"{type(e).__name__}: {e}") from None
    t = t if isinstance(t, A.BaseCompose) else A.Compose([t])
    why = probe(t)
    if why:
        raise PolicyFileError(f"{path}: {what} cannot augment an image: {why}")
    return t


def _largest(data) -> int:
    """The largest output size ``data`` (a serialisation) names: 0 when it names none."""
    if isinstance(data, dict):
        return max([int(_biggest(v)) for k, v in data.items() if k in _SIZE_KEYS]
                   + [_largest(v) for v in data.values()], default=0)
    if isinstance(data, list):
        return max((_largest(v) for v in data), default=0)
    return 0


def _biggest(value) -> float:
    if isinstance(value, list | tuple):
        return max((_biggest(v) for v in value), default=0)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0


def probe(transform) -> str | None:
    """What goes wrong when ``transform`` augments an RGB image at least as large as any size
    it names (64 x 64 else), if anything: a transform that needs data it was not given (such
    as HistogramMatching's reference images) fails here, when its file is read, not hours into
    a run. Whether it fits the dataset's own images is checked where it meets them."""
    try:
        side = min(MAX_SIDE, max(64, _largest(A.to_dict(transform))))
    except Exception:  # noqa: BLE001 - a transform albumentations cannot serialise names none
        side = 64
    img = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    try:
        out = transform(image=img)["image"]
    except Exception as e:  # noqa: BLE001 - any failure is the transform's, said by name
        return f"{type(e).__name__}: {e}"
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim not in (2, 3) \
            or max(out.shape[:2]) > MAX_SIDE:
        return (f"it returned {getattr(out, 'dtype', type(out).__name__)} "
                f"{list(getattr(out, 'shape', []))}, not a uint8 image of at most "
                f"{MAX_SIDE} x {MAX_SIDE} pixels")
    return None


class PolicyInputError(InputError):
    """An image or label a policy cannot take; the message says what it takes."""


class Policy:
    """A loaded policy: ``policy(image)`` or ``policy(image, label)`` -> the augmented image,
    the same shape and type as given: a uint8 numpy array [H, W] or [H, W, C], a PIL image,
    or a torch tensor [C, H, W] or [H, W] (uint8, or float in [0, 1]) as torchvision's
    transforms take them. ``classes``: how many classes it was made for (from its file), so
    that a label outside them is an error, never the pooled policy in silence."""

    def __init__(self, pooled: A.BaseCompose, per_class: dict[int, A.BaseCompose] | None,
                 path: Path, seed: int | None = None, classes: int | None = None):
        self.pooled, self.per_class, self.path = pooled, per_class, path
        self.classes = classes if classes is not None else (
            max(per_class) + 1 if per_class else None)
        if seed is not None:
            rng = np.random.default_rng(seed)
            for t in [pooled, *(per_class or {}).values()]:
                t.set_random_seed(int(rng.integers(2**31)))

    def _for(self, label) -> A.BaseCompose:
        if label is None:
            return self.pooled
        if isinstance(label, bool) or not isinstance(label, int | np.integer) and not (
                hasattr(label, "item") and float(label.item()).is_integer()):
            raise PolicyInputError(f"a label is a class index (an int), got {label!r}")
        label = int(label.item() if hasattr(label, "item") else label)
        if self.classes is not None and not 0 <= label < self.classes:
            raise PolicyInputError(f"label {label} is not a class of this policy ({self.path}: "
                                   f"labels 0..{self.classes - 1})")
        return self.pooled if self.per_class is None else self.per_class.get(label, self.pooled)

    def __call__(self, image, label: int | None = None):
        if type(image).__module__.startswith("torch"):
            return self._tensor(image, label)
        pil = not isinstance(image, np.ndarray)
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
            raise PolicyInputError(f"a policy takes uint8 images [H, W] or [H, W, C] (numpy or "
                                   f"PIL), or a tensor [C, H, W]; got {arr.dtype} "
                                   f"{list(arr.shape)}")
        if 0 in arr.shape:
            raise PolicyInputError(f"an image of shape {list(arr.shape)} has no pixels")
        out = self._for(label)(image=np.ascontiguousarray(arr))["image"]
        if out.ndim == 2 and arr.ndim == 3:
            out = out[..., None]
        if out.shape != arr.shape:
            out = cv2.resize(out, (arr.shape[1], arr.shape[0]), interpolation=cv2.INTER_LINEAR
                             ).reshape(arr.shape)
        if pil:
            return Image.fromarray(out)
        return out

    def _tensor(self, image, label):
        """A torch tensor [C, H, W] or [H, W], uint8 or float in [0, 1], as torchvision's
        transforms take it: augmented as HWC uint8, returned in its own layout and dtype."""
        import torch

        if image.ndim not in (2, 3):
            raise PolicyInputError(f"a tensor image is [C, H, W] or [H, W], got "
                                   f"{list(image.shape)}")
        x = image.detach().cpu()
        floating = x.is_floating_point()
        if floating:
            x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        elif x.dtype != torch.uint8:
            raise PolicyInputError(f"a tensor image is uint8 or float in [0, 1], got {x.dtype}")
        hwc = x.numpy() if x.ndim == 2 else x.permute(1, 2, 0).numpy()
        out = torch.from_numpy(np.ascontiguousarray(self(hwc, label)))
        out = out if x.ndim == 2 else out.permute(2, 0, 1)
        return (out.float() / 255).to(image.dtype) if floating else out

    @property
    def identity(self) -> bool:
        """Whether every class's policy leaves every image as it is (no transform but
        ``NoOp``)."""
        def noop(t) -> bool:
            inner = getattr(t, "transforms", None)
            if inner is not None:
                return all(noop(x) for x in inner)
            return type(t).__name__ == "NoOp"

        return all(noop(t) for t in [self.pooled, *(self.per_class or {}).values()])

    def __repr__(self) -> str:
        return (f"Policy({self.path}, {'per-class' if self.per_class else 'pooled'}: "
                f"{self.pooled})")


def _seed(seed) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)
                             or not 0 <= seed < 2**63):
        raise PolicyInputError(f"seed must be an integer in [0, 2**63) or None, got {seed!r}")
    return seed


def _table(per_class, where: Path, classes: int | None) -> dict[int, A.BaseCompose]:
    """label -> its policy, from a mapping of class indices (int or their decimal strings)."""
    if not isinstance(per_class, dict):
        raise PolicyFileError(f"{where}: the per-class policies must be a mapping of class "
                              f"index to policy, got {type(per_class).__name__}")
    table = {}
    for k, v in per_class.items():
        key = k if isinstance(k, int) and not isinstance(k, bool) else \
            int(k) if isinstance(k, str) and k.isdigit() and k.isascii() else None
        if key is None or (classes is not None and key >= classes):
            valid = f"0..{classes - 1}" if classes is not None else "integers >= 0"
            raise PolicyFileError(f"{where}: per-class policy {k!r} is not a class index "
                                  f"({valid})")
        table[key] = _compose(v, where, f"class {k}'s policy")
    return table


def from_dict(data: dict, per_class: dict | None = None, *, name: str = "<policy>",
              seed: int | None = None) -> Policy:
    """A policy from albumentations' serialisations in memory: ``data`` the pooled one,
    ``per_class`` label -> its own (what ``load`` reads from the two files)."""
    where = Path(name)
    pooled = _compose(data, where, "the policy")
    classes = _classes(data, where)
    table = None if per_class is None else _table(per_class, where, classes)
    return Policy(pooled, table, where, _seed(seed), classes)


def load(path: str | Path, *, seed: int | None = None) -> Policy:
    """The policy in ``path`` (and its per-class policies beside it, when there are)."""
    path = Path(path)
    try:
        data = json.loads(read_text(path, "policy file", PolicyFileError))
    except ValueError as e:
        if isinstance(e, PolicyFileError):
            raise
        raise PolicyFileError(f"{path} is not JSON: {e}") from None
    except RecursionError:
        raise PolicyFileError(f"{path}: nested more than {MAX_DEPTH} deep") from None
    pooled = _compose(data, path, "the policy")
    classes = _classes(data, path)
    per_class = None
    side_name = _own(data, path).get("per_class")
    if side_name:
        if not isinstance(side_name, str) or "/" in side_name or "\\" in side_name:
            raise PolicyFileError(f"{path}: smartaug.per_class must name a file beside it, "
                                  f"got {side_name!r}")
        side = path.with_name(side_name)
        try:
            table = json.loads(read_text(side, "policy file", PolicyFileError))["per_class"]
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise PolicyFileError(f"{path} names its per-class policies {side}, which cannot "
                                  f"be read: {e}") from None
        per_class = _table(table, side, classes)
    return Policy(pooled, per_class, path, _seed(seed), classes)


def _own(data: dict, path: Path) -> dict:
    """The file's ``smartaug`` key: what smartaug recorded about the policy (a mapping)."""
    own = data.get("smartaug")
    if own is None:
        return {}
    if not isinstance(own, dict):
        raise PolicyFileError(f"{path}: the 'smartaug' key must be a mapping (what smartaug "
                              f"recorded about the policy), got {type(own).__name__}")
    return own


def _classes(data: dict, path: Path) -> int | None:
    """The classes a policy file says it was made for (``smartaug.classes``), if it says."""
    n = _own(data, path).get("classes")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None
