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

A = lazy("albumentations")  # imported when first used

__all__ = ["Policy", "PolicyFileError", "PolicyInputError", "from_dict", "load"]


class PolicyFileError(InputError):
    """A policy file cannot be loaded; the message says why."""


def _compose(data, path: Path, what: str) -> A.BaseCompose:
    if not isinstance(data, dict) or "transform" not in data:
        raise PolicyFileError(f"{path}: {what} is not albumentations' serialisation "
                              f"(A.to_dict(transform): a mapping with a 'transform' key)")
    try:
        t = A.from_dict(data)
    except Exception as e:  # noqa: BLE001 - albumentations' own message says what is wrong
        raise PolicyFileError(f"{path}: albumentations cannot load {what}: "
                              f"{type(e).__name__}: {e}") from None
    return t if isinstance(t, A.BaseCompose) else A.Compose([t])


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


def from_dict(data: dict, per_class: dict | None = None, *, name: str = "<policy>",
              seed: int | None = None) -> Policy:
    """A policy from albumentations' serialisations in memory: ``data`` the pooled one,
    ``per_class`` label -> its own (what ``load`` reads from the two files)."""
    where = Path(name)
    pooled = _compose(data, where, "the policy")
    table = None if per_class is None else {
        int(k): _compose(v, where, f"class {k}'s policy") for k, v in per_class.items()}
    return Policy(pooled, table, where, seed, _classes(data))


def load(path: str | Path, *, seed: int | None = None) -> Policy:
    """The policy in ``path`` (and its per-class policies beside it, when there are)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise PolicyFileError(f"cannot read the policy file {path}: {e.strerror or e}") from e
    except ValueError as e:
        raise PolicyFileError(f"{path} is not JSON: {e}") from None
    pooled = _compose(data, path, "the policy")
    per_class = None
    side_name = (data.get("smartaug") or {}).get("per_class")
    if side_name:
        side = path.with_name(side_name)
        try:
            table = json.loads(side.read_text())["per_class"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PolicyFileError(f"{path} names its per-class policies {side}, which cannot "
                                  f"be read: {e}") from None
        per_class = {int(k): _compose(v, side, f"class {k}'s policy") for k, v in table.items()}
    return Policy(pooled, per_class, path, seed, _classes(data))


def _classes(data: dict) -> int | None:
    """The classes a policy file says it was made for (``smartaug.classes``), if it says."""
    n = (data.get("smartaug") or {}).get("classes") if isinstance(data, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None
