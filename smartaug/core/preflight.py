"""Everything a run will need from its config, checked when the config is read: before the
lake is opened and before any step writes (a run that trains for hours must not fail at its
last step on a value it was given at its first). ``smartaug config check`` runs exactly this;
so do ``smartaug experiment`` and ``smartaug study`` (and their flows) before anything else.

Checked beyond what each config checks of itself (``smartaug.config``): the devices (this
machine has them), the model (built-in, or a name of torchvision's or timm's registry, or a
module that can be found), and every online or arm policy (a bin in range, a space's kinds, a
policy file albumentations loads)."""

from __future__ import annotations

from smartaug.config import ONLINE_ANCHORS, ExperimentConfig, StudyConfig, TrainConfig
from smartaug.core.online import check_online
from smartaug.core.train import resolve_device
from smartaug.errors import ConfigError
from smartaug.models import check_model

__all__ = ["preflight"]

_ARM_OWN = ("uniform", "recommended", "atlas-only", *ONLINE_ANCHORS)  # the study makes these


def _training(name: str, t: TrainConfig) -> None:
    resolve_device(t.device)
    if t.augment == "online":
        try:
            check_online(t.policy)
        except ConfigError as e:
            raise ConfigError(f"{name}: {e}") from None


def preflight(cfg: ExperimentConfig | StudyConfig) -> None:
    """A ``UserError`` naming the first value of ``cfg`` a run could not use."""
    _training("baseline", cfg.baseline)
    _training("retrain", cfg.retrain)
    check_model(cfg.model)
    for arm in getattr(cfg, "arms", ()):
        if arm.source == "policy" and arm.policy not in _ARM_OWN:
            try:
                check_online(arm.policy)
            except ConfigError as e:
                raise ConfigError(f"arm {arm.name}: {e}") from None
