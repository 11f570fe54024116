"""``smartaug demo``: train a baseline on a dataset (no lake) and measure how well each hardness
score separates its test errors from its correct predictions (the pipeline's first half, in
one command)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import mannwhitneyu

from smartaug.config import TrainConfig
from smartaug.core.datasets import Dataset
from smartaug.core.scoring import score_batches
from smartaug.core.train import build_model, resolve_device, train

__all__ = ["DEMO_SCORES", "auroc", "demo"]

DEMO_SCORES = ("avh", "loss", "el2n", "entropy", "confidence", "margin", "feature_norm")


def auroc(wrong: np.ndarray, right: np.ndarray) -> float:
    """P(a wrong item's score > a right item's score), ties counting a half (the Mann-Whitney
    U statistic over n_wrong x n_right); NaN scores are left out, NaN when a side is empty.
    > 0.5: a higher score marks the errors."""
    wrong, right = wrong[np.isfinite(wrong)], right[np.isfinite(right)]
    if not len(wrong) or not len(right):
        return float("nan")
    return float(mannwhitneyu(wrong, right).statistic / (len(wrong) * len(right)))


def demo(ds: Dataset, *, model: str = "lenet5", cfg: TrainConfig,
         log: Callable[[str], None] | None = print) -> dict:
    """Train ``model`` on ``ds.train`` (one log line per epoch), score ``ds.test``; returns
    ``accuracy``, ``mean_avh`` and, per score of ``DEMO_SCORES``, the mean over correct and
    over wrong test items and the AUROC of wrong vs correct."""
    net = build_model(model, ds.num_classes, ds.in_channels, ds.image_size, seed=cfg.seed)
    train(net, ds.train.images, ds.train.labels, cfg,
          eval_sets={"test": (ds.test.images, ds.test.labels)}, log=log)
    x, y = ds.test.images, ds.test.labels
    batches = [(None, y[i : i + 1024], x[i : i + 1024]) for i in range(0, len(y), 1024)]
    parts = list(score_batches(net, batches, device=resolve_device(cfg.device),
                               image_shape=ds.image_shape))
    s = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "item_id"}
    ok = s["correct"]
    scores = {}
    for k in DEMO_SCORES:
        wrong, right = s[k][~ok], s[k][ok]
        scores[k] = {"correct_mean": float(np.nanmean(right)) if len(right) else None,
                     "wrong_mean": float(np.nanmean(wrong)) if len(wrong) else None,
                     "auroc": auroc(wrong, right)}
    return {"accuracy": float(ok.mean()), "mean_avh": float(np.nanmean(s["avh"])),
            "scores": scores}
