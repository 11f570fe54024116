"""Every frozen config of the pipeline, one per stage, composed into ``ExperimentConfig``, and
the presets. A leaf: it imports nothing from ``smartaug`` but its errors (``smartaug.errors``,
a leaf too) and no torch, so presets and experiment files load into these types anywhere.

Score names and their directions live here too (``SCORE_DIRECTIONS``): the scores table's
columns, the selectable scores and the hardness math all derive from this one mapping.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace

from pydantic import ConfigDict, TypeAdapter

from smartaug.errors import ConfigError
from smartaug.pacing import ORDERS, PACINGS, pacing

_STRICT = ConfigDict(extra="forbid")

# Direction of every float score a scoring run stores: +1 = higher is harder, -1 = easier.
SCORE_DIRECTIONS: dict[str, int] = {
    "avh": +1,
    "avc_true": -1,
    "confidence": -1,
    "margin": -1,
    "loss": +1,
    "entropy": +1,
    "el2n": +1,
    "feature_norm": -1,
}
SCORE_COLUMNS: tuple[str, ...] = tuple(SCORE_DIRECTIONS)

AUGMENT_KINDS = ("rotate", "noise", "hflip")  # the seed's kinds: the default space
# every built-in kind (smartaug.core.augment defines them; `smartaug kinds` lists them)
BUILTIN_KINDS = (*AUGMENT_KINDS, "vflip", "rotate180", "crop", "cutout", "blur",
                 "brightness-contrast", "perspective", "elastic", "jpeg", "grid", "heavy-noise")
_KIND_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MATERIALIZE = ("auto", "always", "never")
LOSS_KINDS = ("none", "additive", "multiplicative")
LOSS_FNS = {"none": (None,), "additive": ("square", "identity", "exp"),
            "multiplicative": ("exp", "square", "sqrt")}  # the first is the kind's default


def _choose(name, options, what: str) -> None:
    if name not in options:
        raise ConfigError(f"unknown {what} {name!r}; valid: {', '.join(sorted(options))}")


MAX_SEED = 2**32 - 1  # a root seed; runs add small offsets, and every generator takes the sum
_MAX_INT = 2**63 - 1  # what numpy and torch hold


def sane_numbers(obj) -> None:
    """ConfigError for a number no run can use, in any field of the config ``obj`` (inside
    lists too): NaN or an infinity (every bound check is false for NaN, so it would pass
    them), an integer beyond 64 bits, a ``seed`` outside [0, MAX_SEED]. Called first by every
    config, so a file or an option with such a value fails when read, before any work."""
    for f in fields(obj):
        _sane(f.name, getattr(obj, f.name))


def _sane(name: str, value) -> None:
    if isinstance(value, list | tuple):
        for v in value:
            _sane(name, v)
    elif isinstance(value, bool):
        return
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    elif isinstance(value, int):
        if name == "seed" and not 0 <= value <= MAX_SEED:
            raise ConfigError(f"seed must be an integer in [0, {MAX_SEED}], got {value!r}")
        if abs(value) > _MAX_INT:
            raise ConfigError(f"{name} = {value} is larger than any run can use (64-bit "
                              f"integers)")


MIN_IMAGE_SIZE = 8  # the smallest square resize (the CLI's --image-size takes the same range)
MAX_PER_IMAGE = 1000  # k:N's largest N: augmentations of one image in one pool


@dataclass(frozen=True)
class DataConfig:
    """Which images, how many, in what shape. ``None`` = all / unchanged.

    dataset: ``fashion-mnist``, ``mnist``, ``cifar10`` or ``imagefolder:PATH``.
    root: directory holding the dataset's files (else ``SMARTAUG_DATA``, a system copy, or a
    torchvision download when online).
    """

    dataset: str = "fashion-mnist"
    root: str | None = None
    per_class_train: int | None = None
    per_class_test: int | None = None
    grayscale: bool = False
    image_size: int | None = None  # square resize, pixels per side
    val_fraction: float = 0.0  # stratified, carved from the (subset) train split
    seed: int = 0
    val_split: int = 0  # which validation split: 0 the seed's, r > 0 another draw (a replicate)

    def __post_init__(self) -> None:
        sane_numbers(self)
        for name in ("per_class_train", "per_class_test"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigError(f"{name} must be an integer >= 1 (or unset for all), got "
                                  f"{value!r}")
        if self.image_size is not None and not (isinstance(self.image_size, int)
                                                and MIN_IMAGE_SIZE <= self.image_size <= 1024):
            raise ConfigError(f"image_size must be an integer in [{MIN_IMAGE_SIZE}, 1024] (or "
                              f"unset for the images' own), got {self.image_size!r}")
        if not (isinstance(self.val_fraction, int | float) and 0.0 <= self.val_fraction < 1.0):
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ConfigError(f"dataset must be a name or imagefolder:PATH, got "
                              f"{self.dataset!r}")
        if isinstance(self.val_split, bool) or not isinstance(self.val_split, int) \
                or self.val_split < 0:
            raise ConfigError(f"val_split must be an integer >= 0, got {self.val_split!r}")

    def to_dict(self) -> dict:
        """The fields; ``val_split`` only when it is not the seed's own (0): every id made
        before it existed stays."""
        d = asdict(self)
        if not d["val_split"]:
            del d["val_split"]
        return d


def parse_policy(policy: str, n_kinds: int = len(AUGMENT_KINDS)) -> int:
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
        if 1 <= k <= MAX_PER_IMAGE:
            return k
    raise ConfigError(f"unknown policy {policy!r}; valid: one, all, k:N "
                      f"(1 <= N <= {MAX_PER_IMAGE})")


@dataclass(frozen=True)
class AugmentConfig:
    """The pool: ``one`` augmentation per image (kind drawn uniformly: seed 000), ``k:N`` per
    image, or ``all`` kinds for every image."""

    policy: str = "one"  # "one" | "all" | "k:N"
    kinds: tuple[str, ...] = AUGMENT_KINDS
    max_angle: float = 20.0  # degrees
    sigma: float = 0.1  # noise std in units of a [0, 1] image
    seed: int = 0
    # kinds defined by a space file: (name, albumentations' A.to_dict of the transform, as
    # canonical JSON); ``kinds`` names them, or built-in kinds
    space: tuple[tuple[str, str], ...] = ()
    # how the pool is stored, not what it holds (so not part of any id): ``always`` = every
    # augmentation's pixels, ``never`` = recipes only (the pixels are regenerated from the
    # original when read), ``auto`` = pixels while they take at most
    # ``AUTO_MATERIALIZE_BYTES`` (smartaug.steps.pool), recipes beyond
    materialize: str = "auto"
    # a magnitude grid (``smartaug.core.magnitude``): each kind's range cut into this many
    # equal bins, every item drawn at a magnitude inside one (0: each kind's own sampling)
    magnitude_bins: int = 0

    def __post_init__(self) -> None:
        sane_numbers(self)
        parse_policy(self.policy, len(self.kinds))
        if isinstance(self.magnitude_bins, bool) or not isinstance(self.magnitude_bins, int) \
                or not 0 <= self.magnitude_bins <= 100:
            raise ConfigError(f"magnitude_bins must be an integer in [0, 100] (0: no grid), got "
                              f"{self.magnitude_bins!r}")
        _choose(self.materialize, MATERIALIZE, "materialize mode")
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "space", tuple((str(n), str(t)) for n, t in self.space))
        custom = {n for n, _ in self.space}
        for name, spec in self.space:
            if not _KIND_NAME.match(name):
                raise ConfigError(f"kind name {name!r}: use lower-case letters, digits, '-', "
                                 f"'_' and '.'")
            try:
                ok = "transform" in json.loads(spec)
            except (ValueError, TypeError):
                ok = False
            if not ok:
                raise ConfigError(f"kind {name!r}: not albumentations' serialisation "
                                 f"(A.to_dict(transform): a mapping with a 'transform' key)")
        valid = (*BUILTIN_KINDS, *sorted(custom - set(BUILTIN_KINDS)))
        bad = [k for k in self.kinds if k not in valid]
        if bad:
            raise ConfigError(f"unknown augmentation kind(s) {', '.join(map(repr, bad))}; valid: "
                             f"{', '.join(valid)} (or define one in a space file: --space FILE)")
        if not self.kinds or len(set(self.kinds)) != len(self.kinds):
            raise ConfigError(f"kinds must be distinct and not empty; got {list(self.kinds)}")
        if not (0 < self.max_angle <= 180):
            raise ConfigError(f"max_angle must be in (0, 180], got {self.max_angle}")
        if not (0 < self.sigma <= 1):
            raise ConfigError(f"sigma must be in (0, 1], got {self.sigma}")

    def to_dict(self) -> dict:
        """The fields; ``space`` only when it defines kinds and ``materialize`` only when not
        ``auto`` (so the seed's pools and experiments keep their ids)."""
        d = asdict(self)
        if not self.space:
            del d["space"]
        if self.materialize == "auto":
            del d["materialize"]
        if not self.magnitude_bins:
            del d["magnitude_bins"]
        return d


STACK = 8  # an experiment's default: trainings of one size as one model, 8 at a time


def identity(d):
    """A config's ``to_dict()`` without the choices that do not change what it computes
    (every ``materialize``, how the pool is stored; ``stack``, how cells are trained
    together): what ids hash."""
    if isinstance(d, dict):
        return {k: identity(v) for k, v in d.items() if k not in ("materialize", "stack")}
    if isinstance(d, list | tuple):
        return [identity(v) for v in d]
    return d


@dataclass(frozen=True)
class LossSpec:
    """Which loss to train with (``smartaug.core.losses``). ``fn=None`` takes the kind's
    default (additive: square, multiplicative: exp)."""

    kind: str = "none"
    fn: str | None = None
    lam: float = 1.0  # weight of mean f(AVH) in the additive kind; seed 000 = batch size

    def __post_init__(self) -> None:
        sane_numbers(self)
        _choose(self.kind, LOSS_KINDS, "loss kind")
        if self.fn is None:
            object.__setattr__(self, "fn", LOSS_FNS[self.kind][0])
        if self.kind == "none" and self.fn is not None:
            raise ConfigError("loss kind 'none' takes no function")
        if self.kind != "none":
            _choose(self.fn, LOSS_FNS[self.kind], f"{self.kind} function")
        if not (self.lam >= 0 and self.lam < float("inf")):
            raise ConfigError(f"lam must be a finite number >= 0, got {self.lam}")

    @property
    def uses_avh(self) -> bool:
        return self.kind != "none"

    def label(self) -> str:
        """Short name for tables: 'ce', 'ce+1*avh^2', 'ce*exp(avh)'."""
        if self.kind == "none":
            return "ce"
        term = {"square": "avh^2", "identity": "avh", "exp": "exp(avh)",
                "sqrt": "sqrt(avh)"}[self.fn]
        return f"ce+{self.lam:g}*{term}" if self.kind == "additive" else f"ce*{term}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimiser, schedule, loss, seed and device."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3  # Adam step size (SGD: per batch, no scaling)
    optimizer: str = "adam"  # "adam" | "sgd" (momentum 0.9, nesterov)
    weight_decay: float = 0.0
    loss: LossSpec = field(default_factory=LossSpec)
    seed: int = 0  # model init and batch order
    device: str = "auto"  # "auto" = cuda when present, else cpu
    # ``online``: every epoch the originals plus a fresh augmentation of each, from ``policy``
    # (smartaug.core.online); ``static``: the images given (originals + a selection)
    augment: str = "static"
    policy: str | None = None
    augmentations: int | None = None  # online: fresh augmentations per epoch (None: one each)

    def __post_init__(self) -> None:
        sane_numbers(self)
        _choose(self.augment, ("static", "online"), "augment")
        if self.augment == "online":
            if self.policy is None or not isinstance(self.policy, str) or not self.policy:
                raise ConfigError("augment = 'online' needs a policy: none, a policy file "
                                  "(*.json), space:PATH or space:KIND,KIND, or "
                                  "trivialaugment-wide, randaugment, autoaugment-cifar10")
            if not online_policy(self.policy):
                raise ConfigError(f"unknown online policy {self.policy!r}; valid: none, a "
                                  f"policy file (*.json), space:PATH or space:KIND,KIND, or "
                                  f"{', '.join(ONLINE_ANCHORS)}")
        elif self.policy is not None or self.augmentations is not None:
            raise ConfigError(f"policy {self.policy!r} and augmentations are for augment = "
                              f"'online'; a static training takes its augmentations from a "
                              f"selection")
        if self.augmentations is not None and (isinstance(self.augmentations, bool) or not
                                               isinstance(self.augmentations, int)
                                               or self.augmentations < 1):
            raise ConfigError(f"augmentations (per epoch) must be an integer >= 1, got "
                              f"{self.augmentations!r}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}: a model trained for no "
                             f"epoch is untrained")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (0 <= self.lr < float("inf")):  # 0: frozen weights, a control
            raise ConfigError(f"lr must be a finite number >= 0, got {self.lr}")
        if not (0 <= self.weight_decay < float("inf")):
            raise ConfigError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        _choose(self.optimizer, ("adam", "sgd"), "optimizer")

    def to_dict(self) -> dict:
        """The fields; ``augment`` and ``policy`` only when online (every id made before
        them stays)."""
        d = asdict(self)
        if self.augment == "static":
            del d["augment"], d["policy"]
        if self.augmentations is None:
            del d["augmentations"]
        return d


@dataclass(frozen=True)
class MethodSpec:
    """One training method = which augmentations join the originals + which loss.

    selection: ``none`` (originals only), ``all`` (every augmentation), ``band`` (the [lo, hi)
    quantile band of ``score``), ``random_matched`` (a random subset with the size and class mix
    of method ``matched_to``'s selection).
    """

    name: str
    selection: str = "none"
    band: tuple[float, float] | None = None
    score: str = "avh"
    per_class: bool = False
    matched_to: str | None = None
    loss: LossSpec = field(default_factory=LossSpec)

    def __post_init__(self) -> None:
        sane_numbers(self)
        _choose(self.selection, ("none", "all", "band", "random_matched"), "selection")
        if self.selection == "band":
            if self.band is None or len(self.band) != 2:
                raise ConfigError(f"method {self.name}: a band selection needs band=(lo, hi)")
            object.__setattr__(self, "band", (float(self.band[0]), float(self.band[1])))
            lo, hi = self.band
            if not 0.0 <= lo < hi <= 1.0:
                raise ConfigError(f"method {self.name}: band [{lo}, {hi}] must satisfy "
                                  f"0 <= lo < hi <= 1 (quantiles of the score)")
        if self.selection == "random_matched" and not self.matched_to:
            raise ConfigError(f"method {self.name}: random_matched needs matched_to=METHOD")

    def to_dict(self) -> dict:
        return asdict(self)


def hardness_band(band: tuple[float, float], score: str) -> tuple[float, float]:
    """The quantile band of ``score`` that holds the same hardness range as ``band`` of AVH.

    AVH, loss, entropy and EL2N grow with hardness, so the band is the same; confidence,
    margin, the true class's AVC and the feature norm shrink with it, so the band is mirrored
    (the 2-22 % easiest by AVH are the 78-98 % quantiles of confidence).
    """
    _choose(score, SCORE_DIRECTIONS, "score")
    lo, hi = band
    return (lo, hi) if SCORE_DIRECTIONS[score] > 0 else (round(1 - hi, 12), round(1 - lo, 12))


def standard_methods(band=(0.02, 0.22), *, lam: float = 1.0, ablations: bool = False,
                     other_scores: tuple[str, ...] = ()) -> tuple[MethodSpec, ...]:
    """Seed 000's M0 / M1 / M2, optionally the ablations and same-size bands of other scores."""
    ce, avh2 = LossSpec(), LossSpec("additive", "square", lam=lam)
    methods = [
        MethodSpec("M0", "all", loss=ce),
        MethodSpec("M1", "random_matched", matched_to="M2", loss=ce),
        MethodSpec("M2", "band", band=band, loss=avh2),
    ]
    if ablations:
        methods += [
            MethodSpec("M2-ce", "band", band=band, loss=ce),  # band without the loss
            MethodSpec("M1-avh", "random_matched", matched_to="M2", loss=avh2),  # loss only
        ]
    methods += [MethodSpec(f"band-{s}", "band", band=hardness_band(band, s), score=s, loss=ce)
                for s in other_scores]
    return tuple(methods)


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole chain: data -> baseline -> pool -> scores -> selections -> retrain x reps."""

    preset: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: str = "lenet5"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    baseline: TrainConfig = field(default_factory=TrainConfig)
    retrain: TrainConfig = field(default_factory=TrainConfig)
    init: str = "scratch"  # "scratch" | "baseline" (fine-tune the baseline's weights: seed 000)
    methods: tuple[MethodSpec, ...] = field(default_factory=standard_methods)
    reps: int = 3
    seed: int = 0  # run seeds are seed + rep
    band_grid: tuple[tuple[float, float], ...] = ()  # searched on validation when not empty
    # methods' trainings of one training-set size trained as one model, up to this many at a
    # time (smartaug.core.stacked; 1: each alone). How the cells train, not what they compute:
    # not hashed into ids (``identity``), but the experiment's id and its runs' ids say
    # whether they were stacked
    stack: int = STACK

    def __post_init__(self) -> None:
        sane_numbers(self)
        _choose(self.init, ("scratch", "baseline"), "init")
        if isinstance(self.stack, bool) or not isinstance(self.stack, int) or self.stack < 1:
            raise ConfigError(f"stack must be an integer >= 1 (1: every training alone), got "
                              f"{self.stack!r}")
        if self.reps < 1:
            raise ConfigError(f"reps must be >= 1, got {self.reps}")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names) or not names:
            raise ConfigError(f"method names must be distinct and not empty: {names}")
        by_name = {m.name: m for m in self.methods}
        for m in self.methods:
            if m.matched_to is not None and m.matched_to not in names:
                raise ConfigError(f"method {m.name} matches unknown method {m.matched_to!r}")
            chain, at = [m.name], m
            while at.selection == "random_matched":  # ends at a method that selects
                at = by_name[at.matched_to]
                if at.name in chain:
                    raise ConfigError(f"method {m.name}: matched_to goes round in a circle "
                                      f"({' -> '.join([*chain, at.name])}); a random_matched "
                                      f"method matches the size of a band, all or none method")
                chain.append(at.name)
        for entry in self.band_grid:
            if len(entry) != 2 or not 0.0 <= entry[0] < entry[1] <= 1.0:
                raise ConfigError(f"band_grid entry {list(entry)} must be [lo, hi] with 0 <= lo "
                                  f"< hi <= 1 (quantiles of the score)")
        if self.retrain.augment == "online":
            selecting = [m.name for m in self.methods if m.selection != "none"]
            if selecting:
                raise ConfigError(f"retrain is online (policy {self.retrain.policy}): it draws "
                                  f"its augmentations every epoch, so methods "
                                  f"{', '.join(selecting)} cannot add a selection; give them "
                                  f"selection = 'none', or train them static")
        if self.band_grid and self.data.val_fraction <= 0:
            raise ConfigError("a band search needs a validation split: set val_fraction > 0")

    def to_dict(self) -> dict:
        return {**asdict(self), "data": self.data.to_dict(), "augment": self.augment.to_dict(),
                "baseline": self.baseline.to_dict(), "retrain": self.retrain.to_dict()}


# ------------------------------------------------------------------ the study


# Where a window of ``budget`` (a fraction of the pool) starts, as a quantile level of
# hardness (0 = the easiest item): at the easy end, at the seed's 2 % offset (seed 000 kept
# the 2-22 % band of AVH), centred on the median, at the hard end.
POSITIONS: dict[str, Callable[[float], float]] = {
    "easiest": lambda b: 0.0,
    "offset": lambda b: min(0.02, 1.0 - b),
    "median": lambda b: max(0.0, 0.5 - b / 2),
    "hardest": lambda b: 1.0 - b,
}
REFERENCES = ("none", "all")
STUDY_LOSSES = ("ce", "avh")  # ce alone; ce + avh_lam * mean AVH^2 (the seed's loss)


def seed_pool() -> AugmentConfig:
    """Seed 000's pool: one augmentation per image, rotation, noise or mirror."""
    return AugmentConfig(policy="one", kinds=AUGMENT_KINDS)


def wide_pool() -> AugmentConfig:
    """Two augmentations per image from ten built-in kinds, among them strong ones able to
    destroy the label: crops down to 8 % of the area, cutout, any rotation, heavy noise."""
    return AugmentConfig(policy="k:2", kinds=("rotate", "noise", "hflip", "vflip", "rotate180",
                                              "crop", "cutout", "blur", "perspective",
                                              "heavy-noise"))


@dataclass(frozen=True)
class PoolSpec:
    """One pool of a study: a name (for tables) and how it is generated."""

    name: str
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        sane_numbers(self)
        if not _KIND_NAME.match(self.name):
            raise ConfigError(f"pool name {self.name!r}: use lower-case letters, digits, '-', "
                             f"'_' and '.'")

    def to_dict(self) -> dict:
        return {"name": self.name, "augment": self.augment.to_dict()}


def sequential_looks(seeds: int, max_seeds: int | None = None,
                     seeds_per_round: int | None = None) -> list[int]:
    """The seeds at each look of a study that adds seeds until decided: ``seeds``, then a
    round of ``seeds_per_round`` (default ``seeds``) more at a time, up to ``max_seeds``."""
    top, step = max_seeds or seeds, seeds_per_round or seeds
    out = [seeds]
    while out[-1] < top:
        out.append(min(out[-1] + step, top))
    return out


@dataclass(frozen=True)
class Hypothesis:
    """A comparison declared before the study runs: ``selector`` against ``random`` on
    ``pool`` at ``budget`` (and ``loss``), decided at ``margin`` (the smallest difference in
    accuracy that matters, a fraction: 0.005 = half a point) by the paired difference's
    interval and an equivalence test (``smartaug.core.stats.decide``)."""

    selector: str
    pool: str
    budget: float
    margin: float
    loss: str = "ce"
    against: str = "random"  # what it is compared with: random, or another of the grid's arms
    # the spread of one seed's paired difference expected before the run (a pilot study's
    # sd_within): what ``smartaug study --plan`` and the report's planned detectable use
    sd_prior: float | None = None

    def __post_init__(self) -> None:
        sane_numbers(self)
        if self.sd_prior is not None and not (isinstance(self.sd_prior, int | float)
                                              and 0 < self.sd_prior < 1):
            raise ConfigError(f"hypothesis {self.selector} on {self.pool} at {self.budget}: "
                              f"sd_prior must be in (0, 1), the spread of one seed's paired "
                              f"difference in accuracy (0.006 = 0.6 points), got "
                              f"{self.sd_prior!r}")
        if not (isinstance(self.margin, int | float) and 0 < self.margin < 1):
            raise ConfigError(f"hypothesis {self.selector} on {self.pool} at {self.budget}: "
                              f"margin must be in (0, 1), a fraction of accuracy (0.005 = half "
                              f"a point), got {self.margin!r}")
        object.__setattr__(self, "budget", float(self.budget))
        object.__setattr__(self, "margin", float(self.margin))

    def to_dict(self) -> dict:
        """The fields; ``against`` only when not random (every id made before it stays)."""
        d = asdict(self)
        if d["against"] == "random":
            del d["against"]
        if d["sd_prior"] is None:
            del d["sd_prior"]
        return d


ONLINE_ANCHORS = ("trivialaugment-wide", "randaugment", "autoaugment-cifar10")


def online_policy(policy: str) -> bool:
    """Whether ``policy`` names an online policy (smartaug.core.online): none, an anchor,
    space:..., bin:... or a policy file (*.json)."""
    return (policy in ONLINE_ANCHORS or policy in ("none", "identity")
            or policy.startswith(("space:", "bin:")) or policy.endswith(".json"))


CHOOSE_SEED_OFFSET = 1000  # SCORE@val is chosen on seeds seed + 1000 ..: never a reported one


ARM_POLICIES = ("uniform", "none", "identity", "recommended", "atlas-only", *ONLINE_ANCHORS)


ARM_SOURCES = ("policy", "schedule", "self-paced", "infobatch", "matched")
# the fields each source reads beyond name, pools and budgets (to_dict keeps only these)
_ARM_FIELDS = {"policy": ("source", "policy", "max_flip"),
               "schedule": ("source", "order", "pacing", "start", "growth", "step", "score",
                            "every"),
               "self-paced": ("source", "every", "score", "position"),
               "infobatch": ("source", "prune", "anneal"),
               "matched": ("source", "matches")}


@dataclass(frozen=True)
class Arm:
    """A study arm that is not a static selection. ``source``:

    - ``policy``: a training of the study's protocol whose augmentations come fresh every
      epoch from ``policy``: ``uniform`` (the pool's kinds, one drawn uniformly per
      augmentation), ``none`` (the originals only: fewer images and gradient steps),
      ``identity`` (the originals again in place of the augmentations: the same images and
      gradient steps as every arm, no augmentation), ``recommended`` (``smartaug
      recommend``'s race on the replicate's dataset with the study's model and training, at
      its default budget; the policy file's cost is the study's too), ``atlas-only`` (the
      policy of the pool's atlas at ``max_flip``: ``smartaug policy``), an anchor
      (``trivialaugment-wide``, ``randaugment``, ``autoaugment-cifar10``) or a policy file
      (``*.json``). At pool P and budget b it sees ``round(b * |P|)`` fresh augmentations
      every epoch, of originals drawn afresh each epoch: the images and gradient steps of a
      static selection at that budget.
    - ``schedule``: a curriculum over the pool's ``score`` ranking in ``order``
      (``easy-to-hard``, ``hard-to-easy``, ``random-order``: the control), paced by
      ``pacing`` (``linear``, ``step``, ``exponential``: ``start``, ``growth``, ``step``
      epochs; ``smartaug.core.curriculum.pacing``); it shows as many augmentations over the
      training as the static selectors at its budget (``pacing_sizes``). ``every`` = R
      re-ranks the pool every R epochs with the model being trained (default: never, the
      baseline's ranking).
    - ``self-paced``: every epoch the window at ``position`` of the ``score`` ranking, the
      pool re-scored every ``every`` epochs (default 1) by the model being trained.
    - ``infobatch``: InfoBatch's dynamic pruning over the originals and the whole pool
      (``prune`` share of the well-learned items left out each epoch, the last ``anneal``
      share of the epochs on everything); it runs at budget 1.0, beside ``all``.
    - ``matched``: a static random selection (stratified, like ``random``) as large as the
      distinct augmentations the schedule arm ``matches`` shows over its training (its
      largest epoch): the control that sees as many distinct augmentations as the schedule,
      to tell a pacing's gain from the extra data it shows.

    ``pools`` and ``budgets``: where it runs (default: everywhere)."""

    name: str
    source: str = "policy"
    policy: str = "uniform"
    pools: tuple[str, ...] | None = None
    budgets: tuple[float, ...] | None = None
    max_flip: float = 0.2
    order: str = "easy-to-hard"
    pacing: str = "linear"
    start: float = 0.2
    growth: float = 2.0
    step: int = 1
    score: str = "avh"
    every: int | None = None
    position: str = "easiest"
    prune: float = 0.5
    anneal: float = 0.125
    matches: str | None = None

    def __post_init__(self) -> None:
        sane_numbers(self)
        if not _KIND_NAME.match(self.name):
            raise ConfigError(f"arm name {self.name!r}: use lower-case letters, digits, '-', "
                              f"'_' and '.'")
        where = f"arm {self.name}"

        def choose(value, options, what):
            if value not in options:
                raise ConfigError(f"{where}: unknown {what} {value!r}; valid: "
                                  f"{', '.join(options)}")

        choose(self.source, ARM_SOURCES, "source")
        if self.source == "policy" and not (self.policy in ("uniform", "recommended",
                                                            "atlas-only")
                                            or online_policy(self.policy)):
            raise ConfigError(f"{where}: unknown policy {self.policy!r}; valid: "
                              f"{', '.join(ARM_POLICIES)}, space:KIND,KIND (kinds drawn "
                              f"uniformly), bin:KIND@B/N (one kind in one magnitude bin), or "
                              f"a policy file (*.json)")
        if not 0.0 <= self.max_flip <= 1.0:
            raise ConfigError(f"{where}: max_flip must be in [0, 1], got {self.max_flip}")
        if self.source in ("schedule", "self-paced"):
            choose(self.score, SCORE_COLUMNS, "score")
            if self.every is not None and not (isinstance(self.every, int) and self.every >= 1):
                raise ConfigError(f"{where}: every (R, the epochs between re-scorings by the "
                                  f"model being trained) must be an integer >= 1, got "
                                  f"{self.every!r}")
        if self.source == "schedule":
            choose(self.order, ORDERS, "order")
            choose(self.pacing, PACINGS, "pacing")
            if not 0.0 < self.start <= 1.0:
                raise ConfigError(f"{where}: start (the pacing's starting fraction) must be in "
                                  f"(0, 1], got {self.start}")
            pacing(self.pacing, 2, start=self.start, growth=self.growth, step=self.step)
        if self.source == "self-paced":
            choose(self.position, tuple(POSITIONS), "position")
        if self.source == "matched" and not self.matches:
            raise ConfigError(f"{where}: a matched arm names the schedule arm whose distinct "
                              f"augmentations it matches: matches = \"NAME\"")
        if self.source == "infobatch" and not 0.0 <= self.prune < 1.0:
            raise ConfigError(f"{where}: prune (the share of well-learned items left out) must "
                              f"be in [0, 1), got {self.prune}")
        if self.source == "infobatch" and not 0.0 <= self.anneal <= 1.0:
            raise ConfigError(f"{where}: anneal (the share of the last epochs trained on "
                              f"everything) must be in [0, 1], got {self.anneal}")
        for name in ("pools", "budgets"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(float(b) for b in v) if name == "budgets"
                                   else tuple(v))

    @property
    def rescore_every(self) -> int:
        """Epochs between re-scorings by the model being trained (0: never)."""
        if self.source == "self-paced":
            return self.every or 1
        return self.every or 0

    def check_budget(self, budget: float, epochs: int) -> None:
        """A schedule must be able to spend ``budget`` within the pool (``pacing_sizes``'s
        rule, before the pool's size is known: its last epoch needs
        ``budget * E * max(g) / sum(g)`` of the pool)."""
        if self.source != "schedule":
            return
        g = pacing(self.pacing, epochs, start=self.start, growth=self.growth, step=self.step)
        need = budget * epochs * g.max() / g.sum()
        if need > 1.0 + 1e-9:
            raise ConfigError(
                f"arm {self.name}: pacing {self.pacing} (start {self.start:g}) over {epochs} "
                f"epochs never reaches budget {budget:g}: its last epoch would need "
                f"{need:.0%} of the pool. It reaches budgets up to "
                f"{g.sum() / (epochs * g.max()):.3g}; raise start, or give the arm "
                f"budgets = [...] below that")

    def to_dict(self) -> dict:
        """Name, pools, budgets and the fields its source reads (a policy arm's dict, and so
        every study id made before the other sources, is unchanged)."""
        d = asdict(self)
        keep = {"name", "pools", "budgets", *_ARM_FIELDS[self.source]}
        if self.source == "schedule":
            keep -= {"growth"} if self.pacing != "exponential" else set()
            keep -= {"step"} if self.pacing == "linear" else set()
        if self.every is None:
            keep.discard("every")
        return {k: v for k, v in d.items() if k in keep}


def parse_schedule(text: str) -> Arm:
    """A schedule named in one string, ``ORDER[:PACING[:START]]`` (``easy-to-hard:linear:0.2``;
    defaults linear, 0.2): what ``smartaug reselect --schedule`` and the nightly deployment's
    ``schedule`` parameter take."""
    parts = text.split(":")
    if not 1 <= len(parts) <= 3 or not parts[0]:
        raise ConfigError(f"schedule {text!r}: give ORDER[:PACING[:START]], e.g. "
                          f"easy-to-hard:linear:0.2 (orders: {', '.join(ORDERS)}; pacings: "
                          f"{', '.join(PACINGS)})")
    try:
        start = float(parts[2]) if len(parts) > 2 else 0.2
    except ValueError:
        raise ConfigError(f"schedule {text!r}: start {parts[2]!r} is not a number in (0, 1]"
                          ) from None
    try:
        return Arm(name="schedule", source="schedule", order=parts[0],
                   pacing=parts[1] if len(parts) > 1 else "linear", start=start)
    except ConfigError as e:
        raise ConfigError(f"schedule {text!r}: {str(e).removeprefix('arm schedule: ')}"
                          ) from None


def _default_pools() -> tuple[PoolSpec, ...]:
    return (PoolSpec("seed", seed_pool()), PoolSpec("wide", wide_pool()))


SELECTOR_KINDS = ("random", "random-unstratified", "window", "chosen", "coverage", "none",
                  "all", "arm")


@dataclass(frozen=True)
class Selector:
    """How one row of a study's grid picks its augmentations, by ``kind``: ``random``
    (stratified), ``random-unstratified``, ``window`` (a window of ``score``'s ranking at
    ``position``, a ``POSITIONS`` name), ``chosen`` (``score``'s window at the position chosen
    on validation, ``SCORE@val``: the runs of a window, never trained for itself), ``coverage``
    (of ``score``), the references ``none`` (originals only) and ``all`` (the whole pool), or
    ``arm`` (the study's arm named ``arm``). ``name`` is how tables, runs and hypotheses spell
    it; ``parse`` reads it back."""

    kind: str
    score: str | None = None
    position: str | None = None
    arm: str | None = None

    @property
    def name(self) -> str:
        if self.kind == "window":
            return f"{self.score}@{self.position}"
        if self.kind == "chosen":
            return f"{self.score}@val"
        if self.kind == "arm":
            return self.arm
        return f"{self.kind}-{self.score}" if self.score else self.kind  # coverage-avh

    @property
    def family(self) -> str:
        """The cell kind it trains as (``random``, ``window``, ``coverage``, ``reference``,
        ``arm``), as the runs and a study's cells record it."""
        return {"random-unstratified": "random", "chosen": "window", "none": "reference",
                "all": "reference"}.get(self.kind, self.kind)

    @classmethod
    def parse(cls, name: str, arms: tuple[str, ...] | list[str] = ()) -> Selector:
        """The selector ``name`` spells (``arms``: the study's arm names). ConfigError for a
        name no selector has."""
        if name in arms:
            return cls("arm", arm=name)
        if name in ("random", "random-unstratified", "none", "all"):
            return cls(name)
        kind, dash, score = name.rpartition("-")
        if dash and kind in SELECTION_RULES and score in SCORE_DIRECTIONS:  # coverage-avh
            return cls(kind, score=score)
        score, at, position = name.partition("@")
        if at and score in SCORE_DIRECTIONS and position == "val":
            return cls("chosen", score=score)
        if at and score in SCORE_DIRECTIONS and position in POSITIONS:
            return cls("window", score=score, position=position)
        raise ConfigError(f"unknown selector {name!r}; valid: random, random-unstratified, "
                          f"SCORE@POSITION ({', '.join(POSITIONS)}, val), KIND-SCORE (coverage), "
                          f"none, all" + (f", or an arm: {', '.join(arms)}" if arms else ""))


def _scored(params: dict) -> dict:
    """A score-ranked rule's query parameters: its own, less ``n`` (the class quotas carry
    it), and the score's direction."""
    return {**{k: v for k, v in params.items() if k != "n"},
            "direction": SCORE_DIRECTIONS[params["score"]]}


def _window(sel: Selector, n: int, *, budget: float, start: float | None, per_class: bool,
            **_) -> dict:
    lo = start if start is not None else POSITIONS[sel.position](budget)
    return {"score": sel.score, "n": int(n), "lo": float(lo), "per_class": bool(per_class)}


@dataclass(frozen=True)
class SelectionRule:
    """How a selector kind picks exactly ``n`` items of a scoring run: its query
    (``smartaug/steps/sql/<sql>``) and ``method`` name, the parameters its selection id hashes
    (``params(selector, n, budget=, start=, seed=, per_class=, drop=, bins=)``), the query's
    bound parameters beside the run's files (``bind(params)``), the class quotas it fills
    (``mix``: the run's class mix; ``defined``: the mix of the items whose score is defined,
    or one group over all classes when not per class; None), and ``check(params)``: what is
    wrong with them, or None. ``smartaug.steps.select.pick`` runs any of them; a new kind is
    one entry here (and a line in ``StudyConfig.grid``) and its SQL file."""

    method: str
    sql: str
    params: Callable[..., dict]
    bind: Callable[[dict], dict] = lambda params: {}
    quotas: str | None = None
    check: Callable[[dict], str | None] = lambda params: None


SELECTION_RULES: dict[str, SelectionRule] = {
    "random": SelectionRule(
        "random", "random_stratified.sql",
        lambda sel, n, *, seed, **_: {"n": int(n), "seed": int(seed), "stratified": True},
        bind=lambda p: {"seed": p["seed"]}, quotas="mix"),
    "random-unstratified": SelectionRule(
        "random", "random.sql", lambda sel, n, *, seed, **_: {"n": int(n), "seed": int(seed)},
        bind=lambda p: p),
    "window": SelectionRule(
        "window", "window.sql", _window, bind=_scored, quotas="defined",
        check=lambda p: None if 0.0 <= p["lo"] <= 1.0 else
        f"window start {p['lo']} lies outside [0, 1]"),
    "coverage": SelectionRule(
        "coverage", "coverage.sql",
        lambda sel, n, *, seed, per_class, drop, bins, **_: {
            "score": sel.score, "n": int(n), "drop": float(drop), "bins": int(bins),
            "seed": int(seed), "per_class": bool(per_class)},
        bind=_scored, quotas="defined",
        check=lambda p: None if 0.0 <= p["drop"] < 1.0 and p["bins"] >= 1 else
        f"coverage needs 0 <= drop < 1 and bins >= 1, got drop {p['drop']}, bins {p['bins']}"),
    "all": SelectionRule("all", "all.sql", lambda sel, n, **_: {}),
}


@dataclass(frozen=True)
class GridCell:
    """One reported row of a study's grid: a pool (its name), a budget (1.0 for the whole
    pool, 0.0 for ``none``), a selector and a loss; its seeds are the study's."""

    pool: str
    budget: float
    selector: Selector
    loss: str


@dataclass(frozen=True)
class StudyConfig:
    """A grid on one dataset and one baseline model: pools x budgets x selectors x losses x
    seeds, every cell a training from the same protocol (``retrain``, ``init``) on the
    originals plus the cell's augmentations.

    budgets: fractions of each pool, in (0, 1]; every selector gets exactly
    ``round(budget * pool size)`` augmentations. Selectors: ``random`` (stratified: the pool's
    class mix), a window of each of ``scores`` at each of ``positions`` (``POSITIONS``; the
    position per score is also chosen on validation), ``coverage`` (per listed score: drop the
    hardest ``coverage_drop``, then sample evenly across ``coverage_bins`` equal-width score
    bins), and the ``references`` (``none``: originals only, ``all``: the whole pool).
    Windows and coverage are drawn within each class to the pool's class mix, like random
    (``per_class``, the default: hardness is then not confounded with rebalancing the
    classes); with ``per_class = false`` they are over the whole pool and an unstratified
    random, ``random-unstratified``, is trained beside them. Seeds: ``seed`` .. ``seed +
    seeds - 1``, the same for every cell (up to ``max_seeds`` for the hypotheses' cells).
    ``SCORE@val`` positions are chosen on the validation accuracy of ``choose_seeds`` other
    trainings per position (seeds from ``seed + CHOOSE_SEED_OFFSET``, never reported on test;
    0: no ``@val`` rows). ``baselines`` = B repeats the baseline's training (seed ``seed +
    b``), the pools' seeds (``+ b``) and the validation split (``DataConfig.val_split = b``)
    B times, each replicate scored and selected on its own, the hypotheses tested over
    replicates and seeds (``smartaug.core.stats.two_level``). ``stack`` = K trains up to K
    cells of one training-set size (a budget's seeds and selectors) as one model
    (``smartaug.core.stacked``: LeNet models; the others, and arms, train alone); it is not
    part of the study's id, and the stored config records the stack the cells trained in.
    """

    preset: str = "custom"
    data: DataConfig = field(default_factory=lambda: DataConfig(val_fraction=1 / 11))
    model: str = "lenet5"
    baseline: TrainConfig = field(default_factory=TrainConfig)
    retrain: TrainConfig = field(default_factory=TrainConfig)
    init: str = "scratch"
    seed: int = 0
    seeds: int = 5
    pools: tuple[PoolSpec, ...] = field(default_factory=_default_pools)
    budgets: tuple[float, ...] = (0.1, 0.2, 0.5)
    scores: tuple[str, ...] = ("avh", "el2n", "loss", "margin")
    positions: tuple[str, ...] = tuple(POSITIONS)
    coverage: tuple[str, ...] = ("avh",)
    coverage_drop: float = 0.1
    coverage_bins: int = 50
    per_class: bool = True
    references: tuple[str, ...] = REFERENCES
    losses: tuple[str, ...] = ("ce",)
    avh_lam: float = 1.0
    primary: Hypothesis | None = None
    secondary: tuple[Hypothesis, ...] = ()
    max_seeds: int | None = None  # seeds until decided: at most this many (None = seeds)
    seeds_per_round: int | None = None  # seeds added per round (None = seeds)
    arms: tuple[Arm, ...] = ()  # per-epoch sources of augmentations (policies) beside selectors
    baselines: int = 1  # replicates of the baseline, the pools' seeds and the validation split
    choose_seeds: int = 3  # seeds (apart from the reported ones) that choose SCORE@val
    stack: int = 1  # cells of one training-set size trained together as one model (1: alone)

    def looks(self) -> list[int]:
        """The seeds at each look of the sequential design (``sequential_looks``)."""
        return sequential_looks(self.seeds, self.max_seeds, self.seeds_per_round)

    def selectors(self) -> list[str]:
        """The grid's selectors other than ``random`` and the references, by name."""
        seen: dict[str, None] = {}
        for c in self.grid():
            if c.selector.kind not in ("random", "random-unstratified", "none", "all"):
                seen.setdefault(c.selector.name)
        return list(seen)

    def grid(self) -> Iterator[GridCell]:
        """Every reported row of the grid, the one order planning, selection, the leaderboard
        and the report's tables follow: pool by pool, each budget's ``random``
        (``random-unstratified`` beside unstratified windows), each score's windows then its
        ``SCORE@val``, coverage and the arms at that budget, each with every loss; then
        ``none`` (one set of trainings for every pool: budget 0), ``all`` and the arms that
        train on the whole pool (InfoBatch), at budget 1."""
        arms = self.arm_cells()
        for pool in self.pools:
            for b in self.budgets:
                at_b = [Selector("random")]
                if not self.per_class:  # unstratified windows get an unstratified random
                    at_b.append(Selector("random-unstratified"))
                for s in self.scores:
                    at_b += [Selector("window", s, p) for p in self.positions]
                    if self.chooses():
                        at_b.append(Selector("chosen", s))
                at_b += [Selector("coverage", s) for s in self.coverage]
                at_b += [Selector("arm", arm=a.name) for a, p, budget in arms
                         if p == pool.name and budget == b and a.source != "infobatch"]
                yield from (GridCell(pool.name, b, sel, loss) for sel in at_b
                            for loss in self.losses)
            whole = [(0.0, Selector(r)) for r in ("none", "all") if r in self.references]
            whole += [(1.0, Selector("arm", arm=a.name)) for a, p, _ in arms
                      if p == pool.name and a.source == "infobatch"]
            yield from (GridCell(pool.name, 1.0 if sel.kind == "all" else b, sel, loss)
                        for b, sel in whole for loss in self.losses)

    def arm_cells(self) -> list[tuple[Arm, str, float]]:
        """(arm, pool, budget) wherever each arm runs (an infobatch arm: at budget 1.0, on
        the whole pool, once per pool)."""
        return [(a, p.name, b) for a in self.arms for p in self.pools
                if a.pools is None or p.name in a.pools
                for b in ((1.0,) if a.source == "infobatch" else self.budgets)
                if a.source == "infobatch" or a.budgets is None or b in a.budgets]

    def chooses(self) -> bool:
        """Whether the study has ``SCORE@val`` rows (positions to choose, seeds to choose on)."""
        return len(self.positions) > 1 and self.choose_seeds > 0

    def hypotheses(self) -> list[tuple[str, Hypothesis]]:
        """(role, hypothesis): the primary first, then the secondaries."""
        return ([("primary", self.primary)] if self.primary else []) + [
            ("secondary", h) for h in self.secondary]

    def _check_arms(self) -> None:
        names = [a.name for a in self.arms]
        taken = {"random", "random-unstratified", "none", "all"}
        for a in self.arms:
            try:  # a name a grid selector spells (coverage-avh) would be two rows
                taken.add(Selector.parse(a.name).name)
            except ConfigError:
                pass
            if a.name in taken or names.count(a.name) > 1:
                raise ConfigError(f"arm name {a.name!r} is taken (another arm, random, none, "
                                  f"all or a selector's name); give each arm its own name")
            for v, valid, what in ((a.pools, [p.name for p in self.pools], "pool"),
                                   (a.budgets, [float(b) for b in self.budgets], "budget")):
                bad = [x for x in (v or ()) if x not in valid]
                if bad:
                    raise ConfigError(f"arm {a.name}: {what} {bad[0]!r} is not in the study's "
                                      f"grid; valid: {', '.join(map(str, valid))}")
            for _, _, b in (c for c in self.arm_cells() if c[0] is a):
                a.check_budget(b, self.retrain.epochs)
            if a.source == "matched":
                target = next((b for b in self.arms if b.name == a.matches), None)
                if target is None or target.source != "schedule" or target.every:
                    raise ConfigError(
                        f"arm {a.name}: matches {a.matches!r} must name a schedule arm of the "
                        f"study that keeps the baseline's ranking (no every), whose distinct "
                        f"augmentations are known before it trains; schedule arms: "
                        f"{', '.join(b.name for b in self.arms if b.source == 'schedule') or 'none'}")
                missing = [(p, b) for _, p, b in (c for c in self.arm_cells() if c[0] is a)
                           if (target, p, b) not in self.arm_cells()]
                if missing:
                    raise ConfigError(f"arm {a.name}: it runs at pool {missing[0][0]}, budget "
                                      f"{missing[0][1]:g}, where {a.matches} does not; give it "
                                      f"the same pools and budgets")
            if a.source == "infobatch" and any(x != "ce" for x in self.losses):
                raise ConfigError(f"arm {a.name}: infobatch rescales each item's cross-entropy "
                                  f"and trains with loss ce only; the study's losses are "
                                  f"{list(self.losses)}: run it in a study with losses = "
                                  f"[\"ce\"]")

    def _check_hypotheses(self) -> None:
        pools, selectors = [p.name for p in self.pools], self.selectors()
        seen = set()
        for role, h in self.hypotheses():
            where = f"{role} hypothesis ({h.selector}, pool {h.pool}, budget {h.budget:g})"
            whole = {"all", *(a.name for a in self.arms if a.source == "infobatch")}
            budgets = [*self.budgets, *([1.0] if h.selector in whole else [])]
            for value, valid, what in ((h.selector, selectors, "selector"),
                                       (h.pool, pools, "pool"),
                                       (h.budget, budgets, "budget"),
                                       (h.loss, list(self.losses), "loss")):
                if value not in valid:
                    raise ConfigError(f"{where}: {what} {value!r} is not in the study's grid; "
                                      f"valid: {', '.join(map(str, valid))}")
            others = [*selectors, *(["all"] if "all" in self.references else [])]
            if h.against != "random" and (h.against not in others or h.against ==
                                          h.selector):
                raise ConfigError(f"{where}: against {h.against!r} must be random, all (when "
                                  f"a reference) or another selector or arm of the grid; "
                                  f"valid: {', '.join(x for x in others if x != h.selector)}")
            key = (h.selector, h.pool, h.budget, h.loss, h.against)
            if key in seen:
                raise ConfigError(f"{where} is declared twice")
            seen.add(key)

    def __post_init__(self) -> None:
        sane_numbers(self)
        object.__setattr__(self, "secondary", tuple(self.secondary))
        object.__setattr__(self, "arms", tuple(self.arms))
        self._check_arms()
        for name in ("pools", "budgets", "scores", "positions", "coverage", "references",
                     "losses"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "budgets", tuple(float(b) for b in self.budgets))
        _choose(self.init, ("scratch", "baseline"), "init")
        if not self.pools:
            raise ConfigError("the study's grid is empty: give at least one pool "
                             "([[pools]] name = ..., augment = {...})")
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ConfigError(f"pool names must be distinct, got {names}")
        if not self.budgets:
            raise ConfigError("the study's grid is empty: give at least one budget, a fraction "
                             "of the pool in (0, 1], e.g. budgets = [0.1, 0.2, 0.5]")
        bad = [b for b in self.budgets if not 0.0 < b <= 1.0]
        if bad:
            raise ConfigError(f"budget {bad[0]} lies outside (0, 1]: a budget is the fraction "
                             f"of each pool a selector keeps, e.g. budgets = [0.1, 0.2, 0.5]")
        if len(set(self.budgets)) != len(self.budgets):
            raise ConfigError(f"budgets must be distinct, got {list(self.budgets)}")
        for s in (*self.scores, *self.coverage):
            if s not in SCORE_DIRECTIONS:
                raise ConfigError(f"unknown score {s!r}: scoring runs store "
                                 f"{', '.join(SCORE_COLUMNS)}")
        for p in self.positions:
            _choose(p, POSITIONS, "window position")
        for r in self.references:
            _choose(r, REFERENCES, "reference")
        if not self.losses:
            raise ConfigError(f"give at least one loss; valid: {', '.join(STUDY_LOSSES)}")
        for loss in self.losses:
            _choose(loss, STUDY_LOSSES, "study loss")
        for name in ("scores", "positions", "coverage", "references", "losses"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ConfigError(f"{name} must be distinct, got {list(values)}")
        if not (self.scores and self.positions) and not self.coverage:
            raise ConfigError("the study's grid is empty: no selector to compare with random "
                             "(give scores and positions for windows, or coverage scores)")
        if self.seeds < 2:
            raise ConfigError(f"seeds must be >= 2 for a paired test against random, got "
                             f"{self.seeds} (5 or more give a usable interval)")
        if not 0.0 <= self.coverage_drop < 1.0:
            raise ConfigError(f"coverage_drop must be in [0, 1), got {self.coverage_drop}")
        if self.coverage_bins < 1:
            raise ConfigError(f"coverage_bins must be >= 1, got {self.coverage_bins}")
        if not (0 <= self.avh_lam < float("inf")):
            raise ConfigError(f"avh_lam must be a finite number >= 0, got {self.avh_lam}")
        if self.chooses() and self.data.val_fraction <= 0:
            raise ConfigError("choosing a window's position needs a validation split: set "
                             "data.val_fraction > 0 (the test split is never used to choose)")
        self._check_hypotheses()
        if self.max_seeds is not None:
            if self.max_seeds < self.seeds:
                raise ConfigError(f"max_seeds ({self.max_seeds}) must be >= seeds "
                                  f"({self.seeds}): the study starts at seeds and adds more, in "
                                  f"rounds, up to max_seeds")
            if self.max_seeds > self.seeds and not self.hypotheses():
                raise ConfigError("max_seeds adds seeds until the declared hypotheses are "
                                  "decided: declare a [primary] (or [[secondary]]) hypothesis")
        if self.seeds_per_round is not None and self.seeds_per_round < 1:
            raise ConfigError(f"seeds_per_round must be >= 1, got {self.seeds_per_round}")
        if max(self.seeds, self.max_seeds or 0) > CHOOSE_SEED_OFFSET:
            raise ConfigError(f"at most {CHOOSE_SEED_OFFSET} seeds (seeds from "
                              f"seed + {CHOOSE_SEED_OFFSET} choose window positions)")
        for name, low in (("baselines", 1), ("choose_seeds", 0), ("stack", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(
                    f"{name} must be an integer >= {low}, got {value!r}" + (
                        ": each replicate trains its own baseline, pools and validation split "
                        "(1: one of each)" if name == "baselines" else
                        ": the trainings per window position that choose SCORE@val (0: no "
                        "@val rows)" if name == "choose_seeds" else
                        ": the trainings of one size trained together as one model (1: each "
                        "alone)"))

    def loss_spec(self, loss: str) -> LossSpec:
        return LossSpec() if loss == "ce" else LossSpec("additive", "square", lam=self.avh_lam)

    def protocol(self) -> ExperimentConfig:
        """The training protocol of every cell, as the experiment steps take it (the pool and
        methods are the cells')."""
        return ExperimentConfig(preset=self.preset, data=self.data, model=self.model,
                                baseline=self.baseline, retrain=self.retrain, init=self.init,
                                methods=(MethodSpec("study"),), reps=self.seeds, seed=self.seed,
                                stack=self.stack)

    def to_dict(self) -> dict:
        """The fields; ``primary`` and ``secondary`` only when declared (a study without
        hypotheses keeps its id)."""
        d = {**asdict(self), "data": self.data.to_dict(), "baseline": self.baseline.to_dict(),
             "retrain": self.retrain.to_dict(), "pools": [p.to_dict() for p in self.pools],
             "arms": [a.to_dict() for a in self.arms],
             "primary": self.primary.to_dict() if self.primary else None,
             "secondary": [h.to_dict() for h in self.secondary]}
        for name in ("primary", "secondary", "max_seeds", "seeds_per_round", "arms"):
            if not d[name]:
                del d[name]
        for name in ("baselines", "stack"):  # the default: a study keeps its id
            if d[name] == 1:
                del d[name]
        if len(self.positions) < 2:  # nothing to choose
            del d["choose_seeds"]
        return d


for _cls in (DataConfig, AugmentConfig, LossSpec, TrainConfig, MethodSpec, ExperimentConfig,
             PoolSpec, Hypothesis, Arm, StudyConfig):
    _cls.__pydantic_config__ = _STRICT  # pydantic reads it: an unknown key is an error


@functools.cache
def _experiment_adapter() -> TypeAdapter:
    return TypeAdapter(ExperimentConfig)


def config_from_dict(d: dict) -> ExperimentConfig:
    """An ExperimentConfig from its ``to_dict()`` (or stored JSON); an unknown or misspelt key
    is an error (``pydantic.ValidationError``), never silently dropped."""
    return _experiment_adapter().validate_python(d)


@functools.cache
def _study_adapter() -> TypeAdapter:
    return TypeAdapter(StudyConfig)


def study_from_dict(d: dict) -> StudyConfig:
    """A StudyConfig from its ``to_dict()``; an unknown key is an error."""
    return _study_adapter().validate_python(d)


# The shapes a study's config has been stored in (a studies row, a report's study.json), each
# told by its keys: to_dict() never writes a version, so that the ids stay what they were.
#   1: before ``per_class``: windows and coverage over the whole pool (unstratified)
#   2: ``per_class``; before ``choose_seeds``: no trainings chose SCORE@val
#   3: today's (``choose_seeds`` wherever there is a position to choose)
STUDY_FORMAT = 3


def study_format(d: dict) -> int:
    """Which of the stored shapes (``STUDY_FORMAT``'s list) ``d`` is."""
    if "per_class" not in d:
        return 1
    if "choose_seeds" not in d and len(d.get("positions", POSITIONS)) > 1:
        return 2
    return STUDY_FORMAT


def upgrade_study(d: dict) -> dict:
    """A stored study config in today's shape, one explicit step per format (the values that
    reproduce what that study did); today's is returned as it is."""
    d = dict(d)
    fmt = study_format(d)
    if fmt == 1:
        d["per_class"] = False
        fmt = 2
    if fmt == 2:
        d["choose_seeds"] = 0
    return d


def load_study(d: dict) -> StudyConfig:
    """The typed config of a stored study (any format: ``upgrade_study``); the one schema and
    set of defaults the report and the rounds read."""
    return study_from_dict(upgrade_study(d))


def study_preset(name: str) -> StudyConfig:
    """The study at an experiment preset's size: its data, model and training, both pools,
    budgets 0.1 / 0.2 / 0.5, every selector, 5 paired seeds."""
    p = preset(name)
    return StudyConfig(preset=name, data=p.data, model=p.model, baseline=p.baseline,
                       retrain=p.retrain, init=p.init, seed=p.seed, seeds=5)


def apply_study_overrides(cfg: StudyConfig, **overrides) -> StudyConfig:
    """The experiment's overrides (``apply_overrides``) on a study; ``seeds`` (or ``reps``,
    the experiment's name for it) sets the number of paired seeds, ``stack`` how many cells
    train as one model."""
    seeds = overrides.pop("seeds", None)
    reps = overrides.pop("reps", None)
    stack = overrides.pop("stack", None)
    materialize = overrides.pop("materialize", None)
    exp = apply_overrides(cfg.protocol(), **overrides)
    n = seeds if seeds is not None else reps if reps is not None else cfg.seeds
    pools = cfg.pools if materialize is None else tuple(
        replace(p, augment=replace(p.augment, materialize=materialize)) for p in cfg.pools)
    return replace(cfg, data=exp.data, model=exp.model, baseline=exp.baseline,
                   retrain=exp.retrain, seeds=n, pools=pools,
                   stack=cfg.stack if stack is None else stack)


PRESETS = ("quick", "paper", "gpu")


def preset(name: str) -> ExperimentConfig:
    """``quick`` (the README's main job, minutes on 2 cores), ``paper`` (seed 000's protocol)
    or ``gpu`` (sized for one modern GPU)."""
    if name == "quick":
        return ExperimentConfig(
            preset="quick",
            # 1100 per class, 100 of them held out: 1000 train images per class
            data=DataConfig("fashion-mnist", per_class_train=1100, per_class_test=None,
                            val_fraction=1 / 11, seed=0),
            model="lenet5",
            baseline=TrainConfig(epochs=5, batch_size=128, lr=1e-3),
            retrain=TrainConfig(epochs=5, batch_size=128, lr=1e-3),
            methods=standard_methods(),
            reps=3,
        )
    if name == "paper":
        # seed 000 (chunshanl/ELEC576final, avhreweight.py): Adam lr 1e-4, batches of 1000,
        # 25 epochs fine-tuning the restored baseline, batch-sum AVH^2 (lam = batch size).
        return ExperimentConfig(
            preset="paper",
            data=DataConfig("fashion-mnist", per_class_train=1100, per_class_test=100,
                            val_fraction=1 / 11, seed=0),
            model="lenet5-wide",
            baseline=TrainConfig(epochs=25, batch_size=1000, lr=1e-4),
            retrain=TrainConfig(epochs=25, batch_size=1000, lr=1e-4),
            init="baseline",
            methods=standard_methods(lam=1000.0, ablations=True),
            reps=5,
        )
    if name == "gpu":
        # one modern GPU: seed 004's ResNet on CIFAR-10's full train split (50 000 32x32 RGB
        # images; no validation split: the experiment's band is fixed, nothing is tuned), the
        # wide pool at K=4 (200 000 augmentations: 600 MB of pixels, so stored as recipes),
        # 5 seeds. SGD (nesterov, momentum 0.9), batch 512, on CUDA: a machine without a GPU
        # is told so (--device cpu runs it there, slowly).
        train = TrainConfig(epochs=10, batch_size=512, lr=0.05, optimizer="sgd",
                            weight_decay=5e-4, device="cuda")
        return ExperimentConfig(
            preset="gpu",
            data=DataConfig("cifar10", per_class_train=None, per_class_test=None,
                            val_fraction=0.0, seed=0),
            model="resnet",
            augment=replace(wide_pool(), policy="k:4"),
            baseline=train,
            retrain=train,
            methods=standard_methods(),
            reps=5,
        )
    raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")


OVERRIDES = ("dataset", "data", "grayscale", "image_size", "per_class_train", "per_class_test",
             "epochs", "reps", "model", "device", "materialize", "stack")


def apply_overrides(cfg: ExperimentConfig, **overrides) -> ExperimentConfig:
    """Overrides by the CLI's names (None = keep): dataset (another dataset than the preset's
    is used whole unless per_class_* are given), data (the files' directory),
    grayscale, image_size, per_class_train, per_class_test, epochs (baseline and retraining),
    reps, model, device, materialize (how the pool is stored: auto, always, never), stack
    (trainings of one size as one model)."""
    unknown = set(overrides) - set(OVERRIDES)
    if unknown:
        raise ConfigError(f"unknown overrides {sorted(unknown)}; valid: {', '.join(OVERRIDES)}")
    o = {k: v for k, v in overrides.items() if v is not None}
    if o.get("dataset", cfg.data.dataset) != cfg.data.dataset:
        # a preset's subset sizes belong to its own dataset: another one is used whole
        # unless sizes are given too
        o.setdefault("per_class_train", None)
        o.setdefault("per_class_test", None)
        cfg = replace(cfg, data=replace(cfg.data, per_class_train=o.pop("per_class_train"),
                                        per_class_test=o.pop("per_class_test")))
    data = replace(cfg.data, **{k: o[k] for k in ("dataset", "grayscale", "image_size",
                                                  "per_class_train", "per_class_test")
                                if k in o})
    if "data" in o:
        data = replace(data, root=o["data"])
    train = {k: o[k] for k in ("epochs", "device") if k in o}
    augment = replace(cfg.augment, materialize=o["materialize"]) if "materialize" in o \
        else cfg.augment
    return replace(cfg, data=data, baseline=replace(cfg.baseline, **train),
                   retrain=replace(cfg.retrain, **train), model=o.get("model", cfg.model),
                   reps=o.get("reps", cfg.reps), augment=augment,
                   stack=o.get("stack", cfg.stack))
