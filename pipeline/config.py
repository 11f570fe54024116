"""Frozen configuration objects, one per stage, composed into the experiment config."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
