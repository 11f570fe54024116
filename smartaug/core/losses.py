"""Training losses that add Angular Visual Hardness to cross-entropy.

Three kinds, chosen by name:

* ``additive``:        ``L = mean_i CE_i + lam * mean_i f(AVH_i)``, f in {square (default),
  identity, exp}. Seed 000's best variant is f = square.
* ``multiplicative``:  ``L = mean_i CE_i * g(AVH_i)``, g in {exp (default), square, sqrt}.
* ``none``:            ``L = mean_i CE_i``.

About ``lam``. Seed 000's reference code added the batch *sum* of AVH^2 to every sample's CE
before taking the mean, i.e. ``mean_i (CE_i + sum_j AVH_j^2) = mean CE + B * mean AVH^2`` for a
batch of B samples: in the mean form used here that is ``lam = batch size`` (1000 there).
Our default is ``lam = 1`` on the batch mean, which keeps the AVH term on the scale of CE
whatever the batch size; the ``paper`` preset sets ``lam`` to its batch size to reproduce the
seed.

Samples whose AVH is undefined (a zero feature vector, see ``smartaug.core.hardness``) contribute
their CE only; their AVH term is dropped, with finite gradients for everything else.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from smartaug.config import LossSpec
from smartaug.core.hardness import _angles64, _avh64, _check_fw, _check_labels

__all__ = ["LossSpec", "ADDITIVE_FNS", "MULTIPLICATIVE_FNS", "compute_loss"]

ADDITIVE_FNS: dict[str, Callable[[Tensor], Tensor]] = {
    "square": lambda a: a * a,
    "identity": lambda a: a,
    "exp": torch.exp,
}
MULTIPLICATIVE_FNS: dict[str, Callable[[Tensor], Tensor]] = {
    "exp": torch.exp,
    "square": lambda a: a * a,
    "sqrt": torch.sqrt,
}



def compute_loss(
    spec: LossSpec, logits: Tensor, features: Tensor, weights: Tensor, labels: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """The scalar training loss and its detached parts (for logging, no device sync).

    logits: [B, C], features: [B, D], weights: [C, D] (the head's weight, in the graph so the
    AVH term trains it too), labels: [B] int. Returns ``(loss, {"ce": .., "avh": ..})``.
    """
    ce = F.cross_entropy(logits, labels, reduction="none")  # (B,)
    if spec.kind == "none":
        loss = ce.mean()
        return loss, {"ce": loss.detach()}

    _check_fw(features, weights)
    _check_labels(labels, features.shape[0], weights.shape[0])
    a = _avh64(_angles64(features, weights), labels).to(logits.dtype)  # (B,)
    ok = torch.isfinite(a)
    # Fill undefined entries with a harmless value (sqrt'(0) is inf, 0 * inf = NaN).
    a_safe = torch.where(ok, a, torch.full_like(a, 0.5))
    if spec.kind == "additive":
        term = ADDITIVE_FNS[spec.fn](a_safe)
        n_ok = ok.sum().clamp_min(1)
        loss = ce.mean() + spec.lam * torch.where(ok, term, torch.zeros_like(term)).sum() / n_ok
    else:
        factor = torch.where(ok, MULTIPLICATIVE_FNS[spec.fn](a_safe), torch.ones_like(a_safe))
        loss = (ce * factor).mean()
    avh_mean = torch.where(ok, a_safe, torch.zeros_like(a_safe)).sum() / ok.sum()
    return loss, {"ce": ce.mean().detach(), "avh": avh_mean.detach()}
