"""What one training sees epoch by epoch: curricula over a pool's hardness ranking, the
self-paced window that the model being trained re-scores, and InfoBatch's dynamic pruning.

Each is a ``Plan`` source for ``smartaug.core.train.train``: the training tensor holds the
originals (rows ``0 .. n_orig - 1``) and then the whole pool (rows ``n_orig ..``), and
``plan(epoch, model)`` says which rows epoch ``epoch`` trains on, with optional per-row loss
weights. Pure functions of their seed and the scores they are given, so a training is
reproducible bit for bit.

The pacings and their budget rule (``pacing_sizes``) live in ``smartaug.pacing``, a leaf the
configs check schedules with; they are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from smartaug.errors import ConfigError
from smartaug.pacing import ORDERS, PACINGS, distinct_shown, pacing, pacing_sizes

__all__ = ["ORDERS", "PACINGS", "InfoBatch", "Plan", "Schedule", "SelfPaced", "distinct_shown",
           "pacing", "pacing_sizes", "rank", "window_rows"]


@dataclass
class Plan:
    """One epoch: ``rows`` into the training tensor (originals first, then the pool) and, where
    the loss of a row is rescaled, ``weights`` (one per row)."""

    rows: np.ndarray
    weights: np.ndarray | None = None


def rank(scores: np.ndarray, labels: np.ndarray, *, direction: int, per_class: bool,
         order: str = "easy-to-hard", seed: int = 0) -> np.ndarray:
    """Pool positions in the order a curriculum takes them. ``easy-to-hard``: by hardness
    (``scores * direction``, ascending; NaN last, ties by position); ``hard-to-easy`` the
    reverse (NaN still last); ``random-order``: a permutation drawn from ``seed``. With
    ``per_class`` the items are interleaved by their quantile within their class, so that every
    prefix keeps the pool's class mix."""
    n = len(scores)
    if order == "random-order":
        key = np.random.default_rng(seed).permutation(n).astype(np.float64)
    elif order in ("easy-to-hard", "hard-to-easy"):
        h = np.asarray(scores, np.float64) * direction
        key = -h if order == "hard-to-easy" else h
        key = np.where(np.isnan(key), np.inf, key)
    else:
        raise ConfigError(f"unknown order {order!r}; valid: {', '.join(ORDERS)}")
    pos = np.arange(n)
    if not per_class:
        return np.lexsort((pos, key))
    q = np.empty(n)
    for c in np.unique(labels):  # the item's quantile in its class: a prefix keeps the mix
        idx = np.flatnonzero(labels == c)
        within = idx[np.lexsort((idx, key[idx]))]
        q[within] = (np.arange(len(within)) + 0.5) / len(within)
    return np.lexsort((pos, q))


def window_rows(scores: np.ndarray, labels: np.ndarray, n: int, *, direction: int, lo: float,
                per_class: bool) -> np.ndarray:
    """A window of ``n`` pool positions starting at the ``lo`` quantile of the hardness
    ranking (0 = the easiest), moved back so it fits: ``window.sql``'s rule, in memory, for
    scores that live only inside a training. Per class, each class gets its share of ``n``
    (largest remainders)."""
    h = np.asarray(scores, np.float64) * direction
    ok = ~np.isnan(h)
    pos = np.arange(len(h))
    groups = np.unique(labels[ok]) if per_class else np.array([-1])
    members = [pos[ok & (labels == g)] if per_class else pos[ok] for g in groups]
    sizes = np.array([len(m) for m in members], np.float64)
    raw = n * sizes / max(sizes.sum(), 1.0)
    quota = np.floor(raw).astype(np.int64)
    for i in np.argsort(-(raw - quota), kind="stable")[: n - int(quota.sum())]:
        quota[i] += 1
    out = []
    for m, k in zip(members, quota, strict=True):
        ranked = m[np.lexsort((m, h[m]))]
        start = max(min(round(lo * len(ranked)), len(ranked) - k), 0)
        out.append(ranked[start : start + k])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def _with_originals(n_orig: int, pool_rows: np.ndarray) -> np.ndarray:
    return np.concatenate([np.arange(n_orig, dtype=np.int64), n_orig + pool_rows])


class Schedule:
    """A curriculum: epoch e trains on the originals and the first ``sizes[e - 1]`` items of
    ``ordering`` (pool positions; ``rank``). ``rescore``, when given, re-ranks the pool every
    ``every`` epochs with the model being trained: ``rescore(model, epoch) -> scores`` and
    ``reorder(scores) -> ordering``."""

    def __init__(self, n_orig: int, ordering: np.ndarray, sizes: np.ndarray, *,
                 every: int = 0, rescore: Callable | None = None,
                 reorder: Callable[[np.ndarray], np.ndarray] | None = None):
        self.n_orig, self.ordering, self.sizes = n_orig, ordering, sizes
        self.every, self.rescore, self.reorder = every, rescore, reorder

    def plan(self, epoch: int, model) -> Plan:
        if self.every and epoch > 1 and (epoch - 1) % self.every == 0:
            self.ordering = self.reorder(self.rescore(model, epoch))
        return Plan(_with_originals(self.n_orig, self.ordering[: self.sizes[epoch - 1]]))

    needs_losses = False


class SelfPaced:
    """Self-paced selection: every epoch the originals and a window of ``n`` pool items at
    ``lo`` (``window_rows``) of the current scores; every ``every`` epochs the model being
    trained re-scores the pool first (``rescore(model, epoch) -> scores``), so the window
    follows what that model now finds easy (or hard). Epoch 1 uses the baseline's scores."""

    def __init__(self, n_orig: int, scores: np.ndarray, labels: np.ndarray, n: int, *,
                 every: int, direction: int, lo: float, per_class: bool,
                 rescore: Callable):
        if every < 1:
            raise ConfigError(f"self-paced: every (R, epochs between re-scorings) must be "
                              f">= 1, got {every}")
        self.n_orig, self.scores, self.labels, self.n = n_orig, scores, labels, n
        self.every, self.direction, self.lo, self.per_class = every, direction, lo, per_class
        self.rescore = rescore

    def plan(self, epoch: int, model) -> Plan:
        if epoch > 1 and (epoch - 1) % self.every == 0:
            self.scores = self.rescore(model, epoch)
        return Plan(_with_originals(self.n_orig, window_rows(
            self.scores, self.labels, self.n, direction=self.direction, lo=self.lo,
            per_class=self.per_class)))

    needs_losses = False


class InfoBatch:
    """InfoBatch (Qin et al., ICLR 2024) over every row (originals and the whole pool): each
    row keeps its last training loss (unseen rows: +inf, so epoch 1 trains on all). Before an
    epoch, of the rows whose loss is below the mean of the known losses, a random ``prune``
    share is left out and the rest have their loss scaled by ``1 / (1 - prune)``, keeping the
    gradient's expectation; the last ``ceil(anneal * epochs)`` epochs train on every row,
    unscaled."""

    def __init__(self, n_rows: int, epochs: int, *, prune: float, anneal: float, seed: int):
        if not 0.0 <= prune < 1.0:
            raise ConfigError(f"infobatch: prune must be in [0, 1), got {prune}")
        if not 0.0 <= anneal <= 1.0:
            raise ConfigError(f"infobatch: anneal must be in [0, 1], got {anneal}")
        self.loss = np.full(n_rows, np.inf)
        self.prune, self.rng = prune, np.random.default_rng(seed)
        self.last_pruned = epochs - math.ceil(anneal * epochs)  # epochs 1..this may prune

    def plan(self, epoch: int, model) -> Plan:
        rows = np.arange(len(self.loss), dtype=np.int64)
        known = np.isfinite(self.loss)
        if epoch > self.last_pruned or not known.any() or self.prune == 0.0:
            return Plan(rows)
        well = known & (self.loss < self.loss[known].mean())
        drop = well & (self.rng.random(len(rows)) < self.prune)
        weights = np.where(well, 1.0 / (1.0 - self.prune), 1.0)
        keep = ~drop
        return Plan(rows[keep], weights[keep])

    needs_losses = True

    def observe(self, rows: np.ndarray, losses: np.ndarray) -> None:
        """The unscaled training losses of ``rows``, as the last batch computed them."""
        self.loss[rows] = losses
