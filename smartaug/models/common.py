"""Pieces every model shares."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from smartaug.errors import UserError


class ModelError(UserError, ValueError):
    """A model that cannot be built, loaded or used as asked; the message says why."""


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` inside the model, so a checkpoint is self-contained.

    Defaults: mean 0.5, std 0.25 per channel (inputs are images in [0, 1]).
    """

    def __init__(self, channels: int, mean=None, std=None):
        super().__init__()
        mean = tuple(mean) if mean is not None else (0.5,) * channels
        std = tuple(std) if std is not None else (0.25,) * channels
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values, got {mean} / {std}")
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"expected images [N, {self.mean.shape[1]}, H, W], got {tuple(x.shape)}"
            )
        return (x - self.mean) / self.std
