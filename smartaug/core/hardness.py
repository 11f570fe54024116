"""Hardness scores of a classifier's samples: Angular Visual Hardness and friends.

For a sample with penultimate feature ``x`` (the input of the last linear layer) and class
weight rows ``w_1..w_C`` of that layer (bias ignored), with ``A(u, v) = arccos(<u,v>/(|u||v|))``:

* ``AVH(x) = A(x, w_y) / sum_c A(x, w_c)`` in (0, 1): **higher AVH = harder** (Chen et al.,
  "Angular Visual Hardness", ICML 2020).
* ``AVC(c|x) = (pi - A(x, w_c)) / sum_k (pi - A(x, w_k))``: angular visual confidence,
  **higher = more confident**.

Numerics. Cosines are formed in float64 whatever the input dtype and clamped to
``[-1 + eps, 1 - eps]`` (eps = float64 machine epsilon) before ``arccos``, so the angles are
accurate to ~1e-8 rad even for a feature parallel to its class weight, and their gradients
stay finite at cos = +-1. Outputs are cast back to the input dtype. A zero feature vector or
a zero weight row has no angle: the affected entries are NaN (never 0), and gradients through
the remaining entries stay finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from smartaug.config import SCORE_DIRECTIONS
from smartaug.errors import InputError

__all__ = ["angles", "avh", "avc", "hardness_scores", "SCORE_DIRECTIONS"]

_EPS = torch.finfo(torch.float64).eps



def _check_fw(features: Tensor, weights: Tensor) -> None:
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {tuple(features.shape)}")
    if weights.ndim != 2:
        raise ValueError(f"weights must be [C, D], got shape {tuple(weights.shape)}")
    if features.shape[1] != weights.shape[1]:
        raise ValueError(
            f"feature dim {features.shape[1]} != weight dim {weights.shape[1]} "
            f"(features {tuple(features.shape)}, weights {tuple(weights.shape)})"
        )
    if not features.is_floating_point() or not weights.is_floating_point():
        raise TypeError("features and weights must be floating point tensors")


def _check_labels(labels: Tensor, n: int, num_classes: int) -> None:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must be [N] with N={n}, got shape {tuple(labels.shape)}")
    if labels.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError("labels must be an integer tensor")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise InputError(
            f"label {int(bad[0])} is out of range for {num_classes} classes "
            f"(valid labels are 0..{num_classes - 1})"
        )


def _angles64(features: Tensor, weights: Tensor) -> Tensor:
    """Angles in float64, NaN where a feature or weight row has zero norm. (N, C)"""
    x = features.double()  # (N, D)
    w = weights.double()  # (C, D)
    denom = x.norm(dim=1, keepdim=True) * w.norm(dim=1)  # (N, C)
    ok = denom > 0
    cos = (x @ w.T) / torch.where(ok, denom, torch.ones_like(denom))  # (N, C)
    cos = cos.clamp(-1.0 + _EPS, 1.0 - _EPS)
    # Select before arccos so no NaN ever enters a backward pass of a kept entry.
    cos = torch.where(ok, cos, torch.zeros_like(cos))
    ang = torch.acos(cos)
    return torch.where(ok, ang, torch.full_like(ang, float("nan")))


def _avh64(ang: Tensor, labels: Tensor) -> Tensor:
    return ang.gather(1, labels.long().view(-1, 1)).squeeze(1) / ang.sum(dim=1)  # (N,)


def angles(features: Tensor, weights: Tensor) -> Tensor:
    """Angle in radians between every feature and every class weight row.

    features: [N, D], weights: [C, D] -> [N, C] in [0, pi], dtype of ``features``.
    """
    _check_fw(features, weights)
    return _angles64(features, weights).to(features.dtype)


def avh(features: Tensor, weights: Tensor, labels: Tensor) -> Tensor:
    """Angular Visual Hardness of each sample for its label. Higher = harder.

    features: [N, D], weights: [C, D], labels: [N] int -> [N] in (0, 1), dtype of features.
    Differentiable with respect to features and weights.
    """
    _check_fw(features, weights)
    _check_labels(labels, features.shape[0], weights.shape[0])
    return _avh64(_angles64(features, weights), labels).to(features.dtype)


def avc(features: Tensor, weights: Tensor) -> Tensor:
    """Angular Visual Confidence of every class. Higher = more confident; rows sum to 1.

    features: [N, D], weights: [C, D] -> [N, C], dtype of features.
    """
    _check_fw(features, weights)
    slack = torch.pi - _angles64(features, weights)  # (N, C)
    return (slack / slack.sum(dim=1, keepdim=True)).to(features.dtype)


def hardness_scores(
    logits: Tensor, features: Tensor, weights: Tensor, labels: Tensor
) -> dict[str, Tensor]:
    """Every per-sample score the pipeline stores, from one forward pass.

    logits: [N, C], features: [N, D], weights: [C, D] (last linear layer, bias ignored),
    labels: [N] int. Returns a dict of [N] tensors:

    - ``avh`` (higher = harder), ``avc_true`` (AVC of the true class, higher = easier)
    - ``confidence``: softmax probability of the true class (higher = easier)
    - ``margin``: true-class logit minus the largest other logit (higher = easier)
    - ``loss``: cross-entropy (higher = harder); ``entropy`` of the softmax (higher = harder)
    - ``el2n``: L2 norm of softmax minus one-hot (higher = harder)
    - ``feature_norm``: |x| of the penultimate feature
    - ``pred`` (int64) and ``correct`` (bool)

    Float scores have the dtype of ``logits``.
    """
    _check_fw(features, weights)
    if logits.ndim != 2 or logits.shape != (features.shape[0], weights.shape[0]):
        raise ValueError(
            f"logits must be [N, C] = {(features.shape[0], weights.shape[0])}, "
            f"got {tuple(logits.shape)}"
        )
    _check_labels(labels, features.shape[0], weights.shape[0])
    dtype = logits.dtype
    y = labels.long().view(-1, 1)  # (N, 1)

    ang = _angles64(features, weights)  # (N, C)
    slack = torch.pi - ang
    avc_true = slack.gather(1, y).squeeze(1) / slack.sum(dim=1)

    logp = F.log_softmax(logits.float() if dtype != torch.float64 else logits, dim=1)  # (N, C)
    p = logp.exp()
    logp_true = logp.gather(1, y).squeeze(1)
    p_true = logp_true.exp()
    true_logit = logits.gather(1, y).squeeze(1)
    others = logits.scatter(1, y, float("-inf"))
    margin = true_logit - others.max(dim=1).values
    # |p - onehot|^2 = sum p^2 - 2 p_y + 1
    el2n = ((p * p).sum(dim=1) - 2 * p_true + 1).clamp_min(0).sqrt()
    entropy = -(p * logp).sum(dim=1)

    out = {
        "avh": _avh64(ang, labels),
        "avc_true": avc_true,
        "confidence": p_true,
        "margin": margin,
        "loss": -logp_true,
        "entropy": entropy,
        "el2n": el2n,
        "feature_norm": features.norm(dim=1),
    }
    out = {k: v.to(dtype) for k, v in out.items()}
    out["pred"] = logits.argmax(dim=1)
    out["correct"] = out["pred"] == labels.long()
    return out
