"""What one training sees epoch by epoch: curricula over a pool's hardness ranking, the
self-paced window that the model being trained re-scores, and InfoBatch's dynamic pruning.

Each is a ``Plan`` source for ``pipeline.core.train.train``: the training tensor holds the
originals (rows ``0 .. n_orig - 1``) and then the whole pool (rows ``n_orig ..``), and
``plan(epoch, model)`` says which rows epoch ``epoch`` trains on, with optional per-row loss
weights. Pure functions of their seed and the scores they are given, so a training is
reproducible bit for bit.

Budget rule (``pacing_sizes``): at pool P, budget b and E epochs a static selection shows
``n = round(b * |P|)`` augmentations every epoch, ``E * n`` in all. A schedule shows the same
``E * n`` in all, spread over the epochs by its pacing: epoch e trains on the originals and the
first ``n_e`` items of the ordering, ``n_e`` proportional to the pacing's value at e and
``sum(n_e) = E * n`` exactly. A pacing whose last epoch would need more items than the pool
holds cannot reach the budget and is refused, naming the budget (or start) at which it would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.errors import ConfigError

__all__ = ["ORDERS", "PACINGS", "InfoBatch", "Plan", "Schedule", "SelfPaced", "distinct_shown",
           "pacing", "pacing_sizes", "rank", "window_rows"]

ORDERS = ("easy-to-hard", "hard-to-easy", "random-order")
PACINGS = ("linear", "step", "exponential")


@dataclass
class Plan:
    """One epoch: ``rows`` into the training tensor (originals first, then the pool) and, where
    the loss of a row is rescaled, ``weights`` (one per row)."""

    rows: np.ndarray
    weights: np.ndarray | None = None


def pacing(name: str, epochs: int, *, start: float, growth: float = 2.0, step: int = 1
           ) -> np.ndarray:
    """The pacing's value at epochs 1..E, relative to its last (Hacohen & Weinshall 2019):
    ``linear`` rises from ``start`` to 1 evenly; ``step`` is ``start`` for the first ``step``
    epochs, then 1 (their single step); ``exponential`` is ``start * growth ** k`` for the k-th
    block of ``step`` epochs, capped at 1 (fixed exponential pacing)."""
    if not 0.0 < start <= 1.0:
        raise ConfigError(f"pacing start must be in (0, 1], got {start}")
    if step < 1:
        raise ConfigError(f"pacing step must be >= 1 epoch, got {step}")
    e = np.arange(epochs, dtype=np.float64)
    if name == "linear":
        g = start + (1.0 - start) * (e / (epochs - 1) if epochs > 1 else np.ones_like(e))
    elif name == "step":
        g = np.where(e < step, start, 1.0)
    elif name == "exponential":
        if growth <= 1.0:
            raise ConfigError(f"exponential pacing: growth must be > 1, got {growth}")
        g = np.minimum(1.0, start * growth ** np.floor(e / step))
    else:
        raise ConfigError(f"unknown pacing {name!r}; valid: {', '.join(PACINGS)}")
    return g


def pacing_sizes(name: str, epochs: int, n: int, pool: int, *, start: float,
                 growth: float = 2.0, step: int = 1) -> np.ndarray:
    """Items of the ordering each epoch trains on: proportional to the pacing, summing to
    exactly ``epochs * n`` (largest remainders), none above ``pool``. ConfigError when the
    pacing cannot spend the budget within the pool, saying at what budget or start it can."""
    g = pacing(name, epochs, start=start, growth=growth, step=step)
    total = epochs * n
    raw = total * g / g.sum()
    if raw.max() > pool + 1e-9:
        fits = g.sum() / (epochs * g.max())
        lo = _least_start(name, epochs, n, pool, growth, step)
        hint = f" or a start of at least {lo:.3g}" if lo is not None else ""
        raise ConfigError(
            f"pacing {name} (start {start:g}) over {epochs} epochs never reaches the budget: "
            f"to show {n} augmentations an epoch on average ({total} in all), its last epochs "
            f"would need {raw.max() / pool:.0%} of the pool's {pool} items. It reaches it at "
            f"a budget of at most {fits:.3g}{hint}")
    sizes = np.floor(raw).astype(np.int64)
    short = total - int(sizes.sum())
    if short:  # the largest remainders first, later epochs first on ties
        order = sorted(range(epochs), key=lambda i: (-(raw[i] - sizes[i]), -i))
        for i in order[:short]:
            sizes[i] += 1
    return np.minimum(sizes, pool)


def distinct_shown(name: str, epochs: int, n: int, pool: int, *, start: float,
                   growth: float = 2.0, step: int = 1) -> int:
    """The distinct items a schedule that keeps its ordering shows over the training: its
    largest epoch (each epoch is a prefix of the one ordering, ``pacing_sizes``)."""
    return int(pacing_sizes(name, epochs, n, pool, start=start, growth=growth,
                            step=step).max())


def _least_start(name, epochs, n, pool, growth, step) -> float | None:
    """The smallest start at which the pacing fits (bisection; None if none does)."""
    def fits(s):
        g = pacing(name, epochs, start=s, growth=growth, step=step)
        return epochs * n * g.max() / g.sum() <= pool + 1e-9
    if not fits(1.0):
        return None
    lo, hi = 1e-6, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


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
