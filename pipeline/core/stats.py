"""Statistics over seeds: mean, sample std and t interval of a method's accuracies; paired
differences between two methods trained on the same seeds."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

__all__ = ["method_stats", "paired"]


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


def paired(a: dict[int, float], b: dict[int, float]) -> dict:
    """Paired difference a - b over the reps both have; p-value of the paired t-test (None
    when it is undefined: one pair, or identical differences)."""
    reps = sorted(set(a) & set(b))
    d = np.asarray([a[r] - b[r] for r in reps])
    p = None
    if len(reps) > 1 and np.ptp(d) > 1e-12:
        with warnings.catch_warnings():  # near-identical pairs: scipy warns, the p stands
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_rel([a[r] for r in reps], [b[r] for r in reps]).pvalue)
    return {"mean_diff": float(d.mean()) if len(d) else None, "p_value": p, "n_pairs": len(reps)}
