"""Statistics over seeds: mean, sample std and t interval of a method's accuracies; paired
differences between two methods trained on the same seeds, their interval, equivalence test
(TOST) and the decision a declared hypothesis gets; the family corrections of exploratory rows
(Holm, Benjamini-Hochberg, Westfall-Young max-T over sign-flipped paired differences)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
from scipy import stats

__all__ = ["ALPHA", "DECISIONS", "benjamini_hochberg", "decide", "decide_sequential", "holm",
           "max_t", "method_stats", "paired", "spending_levels", "t_interval", "tost"]

ALPHA = 0.05  # every test's and interval's error rate (95 % intervals)
DECISIONS = ("better", "worse", "equivalent", "smaller-than-margin", "undecided")


def method_stats(accs: list[float]) -> dict:
    """Mean, std (ddof=1), 95 % t interval and n of a list of accuracies."""
    a = np.asarray(accs, dtype=float)
    n = len(a)
    mean = float(a.mean()) if n else float("nan")
    std = float(a.std(ddof=1)) if n > 1 else 0.0
    ci = [mean, mean]
    if n > 1 and std > 0:  # scipy's interval is undefined for a zero scale
        ci = [float(x) for x in stats.t.interval(0.95, n - 1, loc=mean, scale=std / np.sqrt(n))]
    return {"test_acc_mean": mean, "test_acc_std": std, "ci95": ci, "n": n}


def t_interval(d, level: float = 0.95) -> list[float] | None:
    """The t interval of the mean of ``d`` at ``level`` (None under 2 values; a point when
    every value is equal: no spread to estimate, see ``paired``'s ``zero_variance``)."""
    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return None
    sd = d.std(ddof=1)
    if sd == 0:
        return [float(d.mean())] * 2
    return [float(x) for x in stats.t.interval(level, len(d) - 1, loc=d.mean(),
                                               scale=sd / math.sqrt(len(d)))]


def paired(a: dict[int, float], b: dict[int, float]) -> dict:
    """Paired difference a - b over the seeds both have; the paired t-test's two-sided p.
    When every difference is equal the t statistic is unbounded: p = 0 for a non-zero
    shift, 1 for none (``zero_variance`` says so); None with fewer than 2 pairs."""
    reps = sorted(set(a) & set(b))
    d = np.asarray([a[r] - b[r] for r in reps])
    p, zero = None, False
    if len(reps) > 1:
        if np.ptp(d) <= 1e-12:
            zero = True
            p = 0.0 if abs(float(d.mean())) > 1e-12 else 1.0
        else:
            with warnings.catch_warnings():  # near-identical pairs: scipy warns, the p stands
                warnings.simplefilter("ignore", RuntimeWarning)
                p = float(stats.ttest_rel([a[r] for r in reps], [b[r] for r in reps]).pvalue)
    return {"mean_diff": float(d.mean()) if len(d) else None, "p_value": p, "n_pairs": len(reps),
            "zero_variance": zero}


def tost(d, margin: float) -> float | None:
    """Two one-sided t-tests of equivalence within +-``margin``: the larger of the p-values
    of H0 "diff <= -margin" and H0 "diff >= +margin" (small: equivalent)."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n < 2:
        return None
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        return 0.0 if abs(mean) < margin else 1.0
    se = sd / math.sqrt(n)
    p_low = float(stats.t.sf((mean + margin) / se, n - 1))
    p_high = float(stats.t.cdf((mean - margin) / se, n - 1))
    return max(p_low, p_high)


def decide(d, margin: float, level: float = 0.95) -> dict:
    """The decision on the paired differences ``d`` (selector - random) with the interval at
    ``level``: ``better`` (lo > margin), ``worse`` (hi < -margin), ``equivalent`` (-margin <
    lo <= 0 <= hi < margin), ``smaller-than-margin`` (inside +-margin, excluding 0: real but
    too small to matter), else ``undecided``."""
    d = np.asarray(d, dtype=float)
    ci = t_interval(d, level)
    out = {"n_seeds": len(d), "diff": float(d.mean()) if len(d) else None, "ci": ci,
           "ci_level": level, "p_equivalence": tost(d, margin), "decision": "undecided"}
    if ci is None:
        return out
    lo, hi = ci
    if lo > margin:
        out["decision"] = "better"
    elif hi < -margin:
        out["decision"] = "worse"
    elif -margin < lo and hi < margin:
        out["decision"] = "equivalent" if lo <= 0 <= hi else "smaller-than-margin"
    return out


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None = no test: left out of the
    family, and None in the result)."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def benjamini_hochberg(pvalues: list[float | None]) -> list[float | None]:
    """Benjamini-Hochberg q-values (the false discovery rate step-up); None stays None."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 1.0
    for rank in range(m - 1, -1, -1):
        i = idx[rank]
        running = min(running, pvalues[i] * m / (rank + 1))
        out[i] = min(1.0, running)
    return out


def _t_stats(d: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """|t| of each row's mean over its seeds (``mask``), rows x seeds; a zero spread gets a
    tiny floor so that a constant shift counts as the largest statistic."""
    n = mask.sum(axis=1)
    mean = (d * mask).sum(axis=1) / n
    var = (((d - mean[:, None]) * mask) ** 2).sum(axis=1) / np.maximum(n - 1, 1)
    se = np.sqrt(var / n)
    return np.abs(mean) / np.maximum(se, 1e-12)


def max_t(diffs: list[dict[int, float]], *, permutations: int = 10_000, seed: int = 0
          ) -> list[float]:
    """Westfall-Young single-step max-T adjusted p-values of a family of paired comparisons
    (``diffs``: per row, seed -> difference). Under the null a paired difference is as likely
    negative as positive: each permutation flips the sign of every seed's differences, the
    same seeds in every row (the rows' correlation is kept). All 2^n flips when there are at
    most ``permutations`` of them, else ``permutations`` random ones from ``seed``."""
    if not diffs:
        return []
    seeds = sorted({s for d in diffs for s in d})
    col = {s: j for j, s in enumerate(seeds)}
    d = np.zeros((len(diffs), len(seeds)))
    mask = np.zeros_like(d)
    for i, row in enumerate(diffs):
        for s, v in row.items():
            d[i, col[s]], mask[i, col[s]] = v, 1.0
    observed = _t_stats(d, mask)
    if 2 ** len(seeds) <= permutations:
        flips = np.array(list(itertools.product((1.0, -1.0), repeat=len(seeds))))
    else:
        rng = np.random.default_rng(seed)
        flips = rng.choice((1.0, -1.0), size=(permutations, len(seeds)))
        flips[0] = 1.0  # the observed signs are one of the permutations
    maxima = np.array([_t_stats(d * f, mask).max() for f in flips])
    return [float((maxima >= t - 1e-9).mean()) for t in observed]


def spending_levels(looks: list[int], alpha: float = 0.05) -> list[float]:
    """The interval level at each look of a group-sequential design that adds seeds in
    rounds (``looks``: the seeds at each look, the last the most there can be): Lan-DeMets
    alpha spending with the O'Brien-Fleming-type function alpha(t) = 2 - 2 Phi(z_{1-alpha/2}
    / sqrt(t)), t = seeds / the last look's seeds; look k is judged at level 1 - (alpha(t_k) -
    alpha(t_{k-1})), what it spends (a union bound over the looks: the error rate stays at
    most alpha). One look: level 1 - alpha."""
    z = stats.norm.ppf(1 - alpha / 2)
    spent, levels = 0.0, []
    for n in looks:
        t = n / looks[-1]
        total = float(2 - 2 * stats.norm.cdf(z / math.sqrt(t)))
        levels.append(1 - max(total - spent, 1e-12))
        spent = total
    return levels


def decide_sequential(d, margin: float, looks: list[int], alpha: float = 0.05) -> dict:
    """``decide`` at the look the seeds of ``d`` reach (``spending_levels``): with ``looks``
    = [5, 10, ..., 30] and 10 differences, look 2's level. Adds ``look`` (1-based) and
    ``looks`` (how many there can be)."""
    reached = [i for i, n in enumerate(looks) if n <= len(d)]
    k = reached[-1] if reached else 0
    out = decide(d, margin, spending_levels(looks, alpha)[k])
    return {**out, "look": k + 1, "looks": len(looks)}
