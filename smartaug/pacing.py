"""The pacing rules of a curriculum, a leaf (numpy and ``smartaug.errors`` only) so that the
configs can check a schedule without loading the training code.

Budget rule (``pacing_sizes``): at pool P, budget b and E epochs a static selection shows
``n = round(b * |P|)`` augmentations every epoch, ``E * n`` in all. A schedule shows the same
``E * n`` in all, spread over the epochs by its pacing: epoch e trains on the originals and the
first ``n_e`` items of the ordering, ``n_e`` proportional to the pacing's value at e and
``sum(n_e) = E * n`` exactly. A pacing whose last epoch would need more items than the pool
holds cannot reach the budget and is refused, naming the budget (or start) at which it would.
"""

from __future__ import annotations

import numpy as np

from smartaug.errors import ConfigError

__all__ = ["ORDERS", "PACINGS", "distinct_shown", "pacing", "pacing_sizes"]

ORDERS = ("easy-to-hard", "hard-to-easy", "random-order")
PACINGS = ("linear", "step", "exponential")


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
