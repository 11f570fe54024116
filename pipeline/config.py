"""Frozen configuration objects, one per stage, composed into the experiment config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline.augment import AugmentConfig
from pipeline.hardness import SCORE_DIRECTIONS
from pipeline.losses import LossSpec
from pipeline.train import TrainConfig


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

    def to_dict(self) -> dict:
        return asdict(self)


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
        kinds = ("none", "all", "band", "random_matched")
        if self.selection not in kinds:
            raise ValueError(f"unknown selection {self.selection!r}; valid: {', '.join(kinds)}")
        if self.selection == "band":
            if self.band is None or len(self.band) != 2:
                raise ValueError(f"method {self.name}: a band selection needs band=(lo, hi)")
            object.__setattr__(self, "band", (float(self.band[0]), float(self.band[1])))
        if self.selection == "random_matched" and not self.matched_to:
            raise ValueError(f"method {self.name}: random_matched needs matched_to=METHOD")

    def to_dict(self) -> dict:
        return asdict(self)


def _ce() -> LossSpec:
    return LossSpec()


def _avh2(lam: float = 1.0) -> LossSpec:
    return LossSpec("additive", "square", lam=lam)


def hardness_band(band: tuple[float, float], score: str) -> tuple[float, float]:
    """The quantile band of ``score`` that holds the same hardness range as ``band`` of AVH.

    AVH, loss, entropy and EL2N grow with hardness, so the band is the same; confidence,
    margin, the true class's AVC and the feature norm shrink with it, so the band is mirrored
    (the 2-22 % easiest by AVH are the 78-98 % quantiles of confidence).
    """
    if score not in SCORE_DIRECTIONS:
        raise ValueError(f"unknown score {score!r}; valid: {', '.join(SCORE_DIRECTIONS)}")
    lo, hi = band
    return (lo, hi) if SCORE_DIRECTIONS[score] > 0 else (round(1 - hi, 12), round(1 - lo, 12))


def standard_methods(band=(0.02, 0.22), *, lam: float = 1.0, ablations: bool = False,
                     other_scores: tuple[str, ...] = ()) -> tuple[MethodSpec, ...]:
    """Seed 000's M0 / M1 / M2, optionally the ablations and same-size bands of other scores."""
    methods = [
        MethodSpec("M0", "all", loss=_ce()),
        MethodSpec("M1", "random_matched", matched_to="M2", loss=_ce()),
        MethodSpec("M2", "band", band=band, loss=_avh2(lam)),
    ]
    if ablations:
        methods += [
            MethodSpec("M2-ce", "band", band=band, loss=_ce()),  # band without the loss
            MethodSpec("M1-avh", "random_matched", matched_to="M2", loss=_avh2(lam)),  # loss only
        ]
    for score in other_scores:
        methods.append(MethodSpec(f"band-{score}", "band", band=hardness_band(band, score),
                                  score=score, loss=_ce()))
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

    def __post_init__(self) -> None:
        if self.init not in ("scratch", "baseline"):
            raise ValueError(f"unknown init {self.init!r}; valid: scratch, baseline")
        if self.reps < 1:
            raise ValueError(f"reps must be >= 1, got {self.reps}")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"method names must be distinct and not empty: {names}")
        for m in self.methods:
            if m.matched_to is not None and m.matched_to not in names:
                raise ValueError(f"method {m.name} matches unknown method {m.matched_to!r}")
        if self.band_grid and self.data.val_fraction <= 0:
            raise ValueError("a band search needs a validation split: set val_fraction > 0")

    def to_dict(self) -> dict:
        return asdict(self)


def preset(name: str) -> ExperimentConfig:
    """``quick`` (the README's main job, minutes on 2 cores) or ``paper`` (seed 000's protocol)."""
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
    raise ValueError(f"unknown preset {name!r}; valid: quick, paper")


OVERRIDES = ("dataset", "data", "grayscale", "image_size", "per_class_train", "per_class_test",
             "epochs", "reps", "model", "device")


def apply_overrides(cfg: ExperimentConfig, **overrides) -> ExperimentConfig:
    """Overrides by the CLI's names (None = keep): dataset (another dataset than the preset's
    is used whole unless per_class_* are given), data (the files' directory),
    grayscale, image_size, per_class_train, per_class_test, epochs (baseline and retraining),
    reps, model, device."""
    from dataclasses import replace

    unknown = set(overrides) - set(OVERRIDES)
    if unknown:
        raise ValueError(f"unknown overrides {sorted(unknown)}; valid: {', '.join(OVERRIDES)}")
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
    base, retrain = cfg.baseline, cfg.retrain
    if "epochs" in o:
        base, retrain = replace(base, epochs=o["epochs"]), replace(retrain, epochs=o["epochs"])
    if "device" in o:
        base, retrain = replace(base, device=o["device"]), replace(retrain, device=o["device"])
    return replace(cfg, data=data, baseline=base, retrain=retrain,
                   model=o.get("model", cfg.model), reps=o.get("reps", cfg.reps))
