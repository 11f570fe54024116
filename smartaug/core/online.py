"""On-the-fly augmentation: every epoch a fresh augmentation of every original.

``TrainConfig(augment="online", policy=P)`` trains each epoch on the originals plus one fresh
augmentation of each, drawn from ``P``:

* ``none``: no augmentation (the originals only; the control);
* ``identity``: the originals again in place of the augmentations (the control with the
  same images and gradient steps as any policy; nothing is augmented);
* a policy file (``*.json``, from ``smartaug policy``; ``smartaug.policy.load``);
* a space, ``space:PATH`` (a space file) or ``space:KIND,KIND`` (built-in kinds): one kind
  per image, drawn uniformly, each augmentation a pure function of (seed, epoch, sample), as
  a pool's;
* ``bin:KIND@B/N``: KIND alone, inside magnitude bin B of N (``smartaug.core.magnitude``);
* an anchor from torchvision.transforms.v2: ``trivialaugment-wide``, ``randaugment``,
  ``autoaugment-cifar10``.

A policy file's and an anchor's draws are seeded once per (seed, epoch) and made in sample
order, so the same seed, epoch and originals give the same images. ``Online.epoch(e)`` makes
epoch ``e``'s augmentations; ``smartaug.core.train.train`` makes the next epoch's in a thread
while the current one trains.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from smartaug.config import AugmentConfig
from smartaug.core.augment import _apply, _fit, _generators, load_space
from smartaug.core.magnitude import SCALES, scale_of
from smartaug.errors import ConfigError, InputError
from smartaug.policy import Policy, load

__all__ = ["ANCHORS", "Online", "check_online"]


def _v2():
    """torchvision.transforms.v2, imported when an anchor is first made (importing torchvision
    costs every process ~2 s)."""
    from torchvision.transforms import v2

    return v2


ANCHORS = {  # smartaug.config.ONLINE_ANCHORS, as torchvision.transforms.v2 makes them
    "trivialaugment-wide": lambda: _v2().TrivialAugmentWide(),
    "randaugment": lambda: _v2().RandAugment(),
    "autoaugment-cifar10": lambda: _v2().AutoAugment(_v2().AutoAugmentPolicy.CIFAR10),
}


def parse_bin(policy: str):
    """``bin:KIND@B/N`` -> (kind, B, N, its scale): KIND's magnitude range cut into N equal
    bins, B the one drawn from (uniformly inside it, the sign at random)."""
    try:
        kind, where = policy[len("bin:"):].split("@")
        b, bins = (int(x) for x in where.split("/"))
    except ValueError:
        raise ConfigError(f"online policy {policy!r}: expected bin:KIND@B/N, e.g. "
                          f"bin:rotate@2/5") from None
    scale = scale_of(kind)
    if scale is None:
        raise ConfigError(f"online policy {policy!r}: kind {kind!r} has no magnitude; kinds "
                          f"with one: {', '.join(SCALES)}")
    if not 0 <= b < bins <= 100:
        raise ConfigError(f"online policy {policy!r}: need 0 <= B < N <= 100")
    return kind, b, bins, scale


def _space(policy: str) -> dict:
    """``space:FILE`` or ``space:KIND,KIND``: the kinds and space of an ``AugmentConfig``."""
    spec = policy[len("space:"):]
    if Path(spec).suffix in (".yaml", ".yml", ".json"):
        kinds, space = load_space(spec)
    else:
        kinds, space = tuple(k.strip() for k in spec.split(",") if k.strip()), ()
    return {"kinds": kinds, "space": space}


def check_online(policy: str) -> None:
    """ConfigError unless ``policy`` can be drawn from, checked when a config is read: a bin
    in range, a space whose kinds exist (its file loaded), a policy file albumentations
    loads, and nothing else."""
    if policy in ANCHORS or policy in ("none", "identity"):
        return
    if policy.startswith("bin:"):
        parse_bin(policy)
    elif policy.startswith("space:"):
        parts = _space(policy)
        try:
            AugmentConfig(**parts)
        except ConfigError as e:
            raise ConfigError(f"online policy {policy!r}: {e}") from None
    elif policy.endswith(".json"):
        try:
            load(policy)
        except InputError as e:
            raise ConfigError(f"online policy {policy!r}: {e}") from None
    else:
        raise ConfigError(f"unknown online policy {policy!r}; valid: none, identity, a policy "
                          f"file (*.json), space:PATH or space:KIND,KIND, bin:KIND@B/N, "
                          f"{', '.join(ANCHORS)}")


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8],
                          "little") >> 1


class Online:
    """Epoch ``e``'s augmentations of ``images`` (uint8 [N, H, W, C]) under ``policy`` at
    ``seed``: one of each original, or ``count`` of originals drawn afresh each epoch (a
    permutation, repeated when ``count`` > N); ``none``: nothing (``epoch`` returns None)."""

    def __init__(self, policy: str | Policy, images: np.ndarray, labels: np.ndarray, seed: int,
                 count: int | None = None):
        self.policy, self.images, self.labels, self.seed = policy, images, labels, seed
        self.count = count
        self._fn = None
        # its draws are new augmentations (a loaded policy: unless it is the identity alone)
        self.fresh = (not policy.identity) if isinstance(policy, Policy) else \
            policy not in ("none", "identity")
        if isinstance(policy, Policy):  # a loaded policy (smartaug.policy), as a file's
            self._policy = policy
            self._fn = self._file_epoch
        elif policy == "none":
            return
        elif policy == "identity":
            self._fn = lambda e, rows: self.images[rows]
        elif policy in ANCHORS:
            self._anchor = ANCHORS[policy]()
            if images.shape[3] not in (1, 3):
                raise ConfigError(f"{policy} takes images of 1 or 3 channels, these have "
                                  f"{images.shape[3]}")
            self._fn = self._anchor_epoch
        elif policy.startswith("bin:"):  # bin:KIND@B/N: one kind inside one magnitude bin
            self._bin = parse_bin(policy)
            self._fn = self._bin_epoch
        elif policy.startswith("space:"):
            self._cfg = AugmentConfig(**_space(policy))
            self._fn = self._space_epoch
        else:
            self._policy = load(policy)
            self._fn = self._file_epoch

    def rows(self, e: int) -> np.ndarray:
        """The originals epoch ``e`` augments: every one in order, or ``count`` drawn."""
        n = len(self.images)
        if self.count is None:
            return np.arange(n)
        rng = np.random.default_rng(_seed(self.seed, e, "rows"))
        reps = -(-self.count // n)
        return np.concatenate([rng.permutation(n) for _ in range(reps)])[: self.count]

    def epoch(self, e: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(uint8 [M, H, W, C], labels [M]): epoch ``e``'s fresh augmentations and their
        labels (None for ``none``)."""
        if self._fn is None:
            return None
        rows = self.rows(e)
        return self._fn(e, rows), self.labels[rows]

    def _space_epoch(self, e: int, rows: np.ndarray) -> np.ndarray:
        kinds = self._cfg.kinds
        items = []
        for j, row in enumerate(rows.tolist()):
            s = _seed(self.seed, e, f"train/{row}", j // len(self.images))
            items.append((row, e, s, kinds[(s >> 17) % len(kinds)]))
        return _apply(self.images, items, self._cfg, record=False)

    def _bin_epoch(self, e: int, rows: np.ndarray) -> np.ndarray:
        kind, b, bins, scale = self._bin
        h, w = self.images.shape[1:3]
        out = np.empty((len(rows), *self.images.shape[1:]), np.uint8)
        for j, row in enumerate(rows.tolist()):
            s = _seed(self.seed, e, f"train/{row}", j // len(self.images))
            u = (s & 0xFFFFFFFF) / 2**32
            m = scale.lo + (scale.hi - scale.lo) * (b + u) / bins
            t = scale.at(m, 1 if (s >> 62) & 1 else -1, h, w)
            t.set_random_state(*_generators(s))
            res = t(image=self.images[row])["image"]
            out[j] = res.reshape(out.shape[1:]) if res.size == out[j].size else _fit(
                res, out.shape[1:], kind)
        return out

    def _file_epoch(self, e: int, rows: np.ndarray) -> np.ndarray:
        p = self._policy
        for t in [p.pooled, *(p.per_class or {}).values()]:
            t.set_random_seed(_seed(self.seed, e, "policy") % 2**31)
        return np.stack([p(self.images[r], int(self.labels[r])) for r in rows.tolist()])

    def _anchor_epoch(self, e: int, rows: np.ndarray) -> np.ndarray:
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(_seed(self.seed, e, "anchor"))
            x = torch.from_numpy(self.images).permute(0, 3, 1, 2)
            out = torch.stack([self._anchor(x[r]) for r in rows.tolist()])
        finally:
            torch.random.set_rng_state(state)
        return out.permute(0, 2, 3, 1).contiguous().numpy()
