"""Statistics over seeds: mean, sample std and t interval of a method's accuracies; paired
differences between two methods trained on the same seeds, their interval, equivalence test
(TOST) and the decision a declared hypothesis gets; the two-level analysis when the baseline,
pool and validation split are replicated (``two_level``); the smallest difference a design
could detect (``detectable``); the family corrections of exploratory rows (Holm,
Benjamini-Hochberg, Westfall-Young max-T over sign-flipped paired differences)."""

from __future__ import annotations

import functools
import itertools
import math
import warnings

import numpy as np
from scipy import optimize, stats

__all__ = ["ALPHA", "DECISIONS", "POWER", "benjamini_hochberg", "decide", "decide_paired",
           "decide_sequential", "detectable", "detectable_for", "family_alphas", "holm",
           "max_t", "method_stats", "more_units", "obf_boundaries", "paired", "planned",
           "power_t", "spending_levels", "t_interval", "sampling_se", "tost", "two_level",
           "unit_sd", "units"]

ALPHA = 0.05  # every test's and interval's error rate (95 % intervals)
DECISIONS = ("better", "worse", "equivalent", "smaller-than-margin", "undecided")
POWER = 0.8  # the power ``detectable`` states a design's smallest detectable difference at


WEAK_ACCURACY = 0.6  # a baseline below this accuracy (or twice chance) is called weak


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion ``k`` of ``n`` (None when ``n`` is 0): honest
    at the ends and at small n, where k/n +- z*se is not (0 of 6 is [0, 0.39], not [0, 0])."""
    if n <= 0:
        return None
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else
            min(1.0, centre + half))


def weak_baseline(accuracy: float | None, classes: int) -> str | None:
    """What makes a baseline too weak to judge augmentations by, in one line, or None: below
    ``WEAK_ACCURACY`` (or twice chance) its flips measure its own fragility more than what an
    augmentation does (the README's failure case: on CIFAR-10 a 52 %-accurate baseline's atlas
    left out mirror flips, and its policy lost 2 points to uniform)."""
    if accuracy is None or classes < 2:
        return None
    chance = 1.0 / classes
    if accuracy <= 1.5 * chance:
        return (f"the baseline is at chance ({100 * accuracy:.1f} % accurate, chance "
                f"{100 * chance:.1f} %): its flips say nothing about the augmentations; train it "
                f"longer or on more images first")
    if accuracy < max(WEAK_ACCURACY, 2 * chance):
        return (f"the baseline is weak ({100 * accuracy:.1f} % accurate, chance "
                f"{100 * chance:.1f} %): its flip rates measure its own fragility as much as "
                f"the augmentations (on CIFAR-10 a 52 %-accurate baseline cut mirror flips and "
                f"its policy lost 2 points to uniform); `smartaug recommend` measures benefit "
                f"directly")
    return None


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


def _simpson(c: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (odd) points on [-c, c] and their Simpson weights."""
    z = np.linspace(-c, c, n)
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return z, w * (z[1] - z[0]) / 3


@functools.lru_cache(maxsize=256)
def _boundaries(fractions: tuple[float, ...], alpha: float, grid: int) -> tuple[float, ...]:
    side = alpha / 2  # each side spends f(t) = 2 - 2 Phi(z_{1 - side/2} / sqrt(t))
    z_side = stats.norm.isf(side / 2)
    spend = [2 * float(2 - 2 * stats.norm.cdf(z_side / math.sqrt(t))) for t in fractions]
    out: list[float] = []
    z = w = dens = None
    spent, prev = 0.0, 0.0
    for t, total in zip(fractions, spend, strict=True):
        step = max(total - spent, 1e-300)
        if dens is None:  # the first look: Z_1 ~ N(0, 1)
            c = float(stats.norm.isf(step / 2))
        else:  # Z_k | Z_{k-1} = u ~ N(u r, s^2), from the Brownian motion of the score
            r, s = math.sqrt(prev / t), math.sqrt((t - prev) / t)

            def crossing(c, z=z, w=w, dens=dens, r=r, s=s, step=step):
                return float(np.sum(w * dens * (stats.norm.sf((c - z * r) / s)
                                                + stats.norm.cdf((-c - z * r) / s)))) - step

            c = float(optimize.brentq(crossing, 1e-6, 40.0, xtol=1e-12))
        out.append(c)
        z_new, w_new = _simpson(c, grid)
        dens = (stats.norm.pdf(z_new) if dens is None else
                (stats.norm.pdf((z_new[:, None] - z[None, :] * r) / s) / s) @ (w * dens))
        z, w, spent, prev = z_new, w_new, total, t
    return tuple(out)


def obf_boundaries(looks: list[int], alpha: float = ALPHA, *, grid: int = 1001
                   ) -> list[float]:
    """The exact two-sided group-sequential boundaries (|Z| >= c_k stops at look k) of
    Lan-DeMets O'Brien-Fleming-type alpha spending for the looks of ``looks`` (the seeds at
    each, the last the most there can be; information fraction t_k = n_k / n_K).

    Each side spends f(t) = 2 - 2 Phi(z_{1 - alpha/4} / sqrt(t)) (alpha/2 a side by t = 1:
    gsDesign's ``sfLDOF`` with alpha = 0.025 and ``test.type = 2``, ldbounds' ``iuse = 1``).
    c_1 = z_{1 - f(t_1)}; each later c_k solves P(|Z_j| < c_j for j < k, |Z_k| >= c_k) =
    2 (f(t_k) - f(t_{k-1})) for the Brownian motion of the score (Armitage, McPherson and
    Rowe's recursion: the sub-density of continuing carried from look to look on a Simpson
    grid of ``grid`` points; the crossing solved by Brent's method). Agrees with gsDesign to
    1e-4 (five equal looks: 4.8769, 3.3569, 2.6803, 2.2898, 2.0310)."""
    if not looks or any(b <= a for a, b in itertools.pairwise(looks)) or looks[0] <= 0:
        raise ValueError(f"looks must be increasing positive seed counts, got {looks}")
    fractions = tuple(n / looks[-1] for n in looks)
    return list(_boundaries(fractions, float(alpha), grid | 1))


def spending_levels(looks: list[int], alpha: float = ALPHA) -> list[float]:
    """The interval level at each look of a group-sequential design that adds seeds in
    rounds (``looks``): 1 - 2 (1 - Phi(c_k)) for the exact Lan-DeMets O'Brien-Fleming
    boundary c_k (``obf_boundaries``). The intervals at these levels are repeated
    confidence intervals: together they cover the true difference at every look with
    probability 1 - alpha (normal theory; the t quantile at the same level is used for the
    small-sample interval). One look: 1 - alpha."""
    if len(looks) == 1:
        return [1 - alpha]
    return [float(1 - 2 * stats.norm.sf(c)) for c in obf_boundaries(looks, alpha)]


def decide_sequential(d, margin: float, looks: list[int], alpha: float = 0.05, *,
                      n_seeds: int | None = None) -> dict:
    """``decide`` at the look the seeds reach (``spending_levels``): with ``looks`` = [5, 10,
    ..., 30] and 10 seeds, look 2's level. ``n_seeds``: the seeds per replicate when ``d``
    holds replicate means (default ``len(d)``). Adds ``look`` (1-based) and ``looks`` (how
    many there can be)."""
    n = len(d) if n_seeds is None else n_seeds
    reached = [i for i, x in enumerate(looks) if x <= n]
    k = reached[-1] if reached else 0
    out = decide(d, margin, spending_levels(looks, alpha)[k])
    return {**out, "look": k + 1, "looks": len(looks)}


# ------------------------------------------------------------------ replicates


def units(d: dict[tuple[int, int], float]) -> dict[int, float]:
    """The independent units of a paired analysis over ``d`` ((replicate, seed) ->
    difference): with one replicate, its seeds (seed -> difference); with more, the
    replicates (replicate -> its mean difference over its seeds). Seeds inside a replicate
    share its baseline, pool and validation split: they are repeated measures of it, not
    independent of each other."""
    reps = sorted({r for r, _ in d})
    if len(reps) <= 1:
        return {s: v for (_, s), v in sorted(d.items())}
    return {r: float(np.mean([v for (q, _), v in d.items() if q == r])) for r in reps}


def two_level(d: dict[tuple[int, int], float], level: float = 0.95) -> dict:
    """The paired difference over replicates and seeds (``d``: (replicate, seed) ->
    selector - random), as a two-level model: diff_rs = mu + u_r + e_rs, the replicate's
    effect u_r random. The mean of the replicate means estimates mu and their t interval
    (replicates - 1 degrees of freedom) is the balanced random-effects model's exact
    interval, whatever the two variances; with one replicate it is the paired t over the
    seeds. Returns diff, ci, p_value (one-sample t of the units; 0 / 1 when they are all
    equal, ``zero_variance``), n_replicates, n_seeds (per replicate, the fewest), df, and
    the variance components: sd_within (seeds inside a replicate) and sd_between (of the
    replicates' true means, ANOVA estimate truncated at 0; None with one replicate)."""
    u = np.asarray(list(units(d).values()), dtype=float)
    by_rep: dict[int, list[float]] = {}
    for (r, _), v in d.items():
        by_rep.setdefault(r, []).append(v)
    per = min((len(v) for v in by_rep.values()), default=0)
    within = [np.var(v, ddof=1) for v in by_rep.values() if len(v) > 1]
    sd_within = float(np.sqrt(np.mean(within))) if within else None
    sd_between = None
    if len(by_rep) > 1 and len(u) > 1:
        var_b = float(np.var(u, ddof=1)) - (sd_within ** 2 / per if sd_within else 0.0)
        sd_between = float(np.sqrt(max(var_b, 0.0)))
    p, zero = None, False
    if len(u) > 1:
        if np.ptp(u) <= 1e-12:
            zero = True
            p = 0.0 if abs(float(u.mean())) > 1e-12 else 1.0
        else:
            p = float(stats.ttest_1samp(u, 0.0).pvalue)
    return {"diff": float(u.mean()) if len(u) else None, "ci": t_interval(u, level),
            "p_value": p, "zero_variance": zero, "n_replicates": len(by_rep),
            "n_seeds": per, "df": len(u) - 1, "sd_within": sd_within,
            "sd_between": sd_between}


def power_t(delta: float, sd: float, n: int, level: float = 0.95) -> float:
    """The power of the two-sided one-sample t test at ``level`` over ``n`` units of spread
    ``sd`` against a true difference ``delta``: P(|T| > t_{(1+level)/2, n-1}) with T
    noncentral t, n - 1 degrees of freedom, noncentrality delta sqrt(n) / sd."""
    df = n - 1
    crit = stats.t.ppf((1 + level) / 2, df)
    nc = abs(delta) * math.sqrt(n) / sd  # symmetric in delta
    near = float(stats.nct.sf(crit, df, nc))
    far = float(stats.nct.cdf(-crit, df, nc))  # below -crit: tiny, and NaN in scipy's tail
    if not math.isfinite(near):
        near = float(nc > crit)
    return near + (far if math.isfinite(far) else 0.0)


def detectable_for(sd: float | None, n: int, level: float = 0.95, power: float = POWER
                   ) -> float | None:
    """The smallest true difference that ``n`` units of spread ``sd`` detect with ``power``
    by an interval at ``level`` (two-sided), by the exact noncentral t (``power_t``); None
    under 2 units or without a spread. An equivalence test at margin m needs about the same
    distance between the true difference and m."""
    if sd is None or not sd > 0 or n < 2:
        return None
    hi = 2 * sd * (stats.t.ppf((1 + level) / 2, n - 1) + stats.t.ppf(power, n - 1)) \
        / math.sqrt(n)  # twice the central-t approximation
    while power_t(hi, sd, n, level) < power:
        hi *= 2
    return float(optimize.brentq(lambda x: power_t(x, sd, n, level) - power, 0.0, hi,
                                 xtol=1e-10 * sd))


def detectable(u, level: float = 0.95, power: float = POWER) -> float | None:
    """``detectable_for`` the units ``u``'s observed spread (after the fact: the spread is
    itself an estimate; ``planned`` gives the same from a stated prior spread)."""
    u = np.asarray(u, dtype=float)
    if len(u) < 2 or np.ptp(u) == 0:
        return None
    return detectable_for(float(u.std(ddof=1)), len(u), level, power)


def unit_sd(sd_within: float | None, sd_between: float | None, seeds: int,
            replicates: int) -> float | None:
    """The spread of a paired design's units: with one replicate its seeds' (sd_within: the
    replicate's own effect is not measured, and not in the interval), with R > 1 the
    replicates' means, sqrt(sd_between^2 + sd_within^2 / seeds)."""
    if sd_within is None:
        return None
    if replicates <= 1:
        return sd_within
    return math.sqrt((sd_between or 0.0) ** 2 + sd_within ** 2 / seeds)


def planned(sd_within: float | None, sd_between: float | None, seeds: int, replicates: int,
            level: float = 0.95, power: float = POWER) -> float | None:
    """The smallest true difference a design of ``replicates`` x ``seeds`` detects with
    ``power`` at ``level``, from prior variance components (``unit_sd``)."""
    n = replicates if replicates > 1 else seeds
    return detectable_for(unit_sd(sd_within, sd_between, seeds, replicates), n, level, power)


def more_units(sd_within: float | None, sd_between: float | None, seeds: int,
               replicates: int, level: float = 0.95) -> dict | None:
    """What doubling the seeds, or the replicates, would detect (``planned``), and which
    of the two narrows the interval more: the advice the variance components give."""
    if sd_within is None:
        return None
    now = planned(sd_within, sd_between, seeds, replicates, level)
    seeds2 = planned(sd_within, sd_between, 2 * seeds, replicates, level)
    if replicates <= 1:  # the replicates' spread is unmeasured: only seeds can be costed
        return None if now is None else {
            "now": now, "double_seeds": seeds2, "double_replicates": None,
            "advice": "seeds (one replicate: the interval is about this baseline, pool and "
                      "split; replicates would make it about any)"}
    reps2 = planned(sd_within, sd_between, seeds, 2 * replicates, level)
    if now is None or seeds2 is None or reps2 is None:
        return None
    return {"now": now, "double_seeds": seeds2, "double_replicates": reps2,
            "advice": "replicates" if reps2 < seeds2 else "seeds"}


def sampling_se(acc_a: float, acc_b: float, n_test: int) -> float | None:
    """The test set's own sampling error of a difference of two accuracies measured on the
    same ``n_test`` images: sqrt((a (1 - a) + b (1 - b)) / n), the standard error when the
    two models' errors are independent. Two models' errors on one test set are positively
    correlated (they share the hard images), so the paired standard error is smaller: this
    is an upper bound. Seeds do not reduce it: a second test set of the same size would
    move every arm's difference by about this much."""
    if not n_test or acc_a is None or acc_b is None:
        return None
    return math.sqrt((acc_a * (1 - acc_a) + acc_b * (1 - acc_b)) / n_test)


def family_alphas(n_secondary: int, alpha: float = ALPHA) -> tuple[float, float | None]:
    """(the primary's alpha, each secondary's) so that the family-wise error over a study's
    declared hypotheses is at most ``alpha`` (Bonferroni over the family: a decision is
    wrong only when its interval misses the true difference, so the chance of any wrong
    decision is at most the sum of the levels' errors). No secondaries: the primary has all
    of alpha; with k of them, the primary alpha / 2 and each secondary alpha / (2 k)."""
    if n_secondary == 0:
        return alpha, None
    return alpha / 2, alpha / (2 * n_secondary)


def decide_paired(d: dict[tuple[int, int], float], margin: float, looks: list[int],
                  alpha: float = 0.05) -> dict:
    """A declared hypothesis decided on ``d`` ((replicate, seed) -> selector - random):
    ``decide_sequential`` over the two-level units (``units``) at the look its seeds per
    replicate reach, with the variance components of ``two_level`` and the smallest
    difference the design detects at that look's level (``detectable``)."""
    u = list(units(d).values())
    tl = two_level(d)
    out = decide_sequential(u, margin, looks, alpha, n_seeds=tl["n_seeds"])
    return {**out, "n_seeds": tl["n_seeds"], "n_replicates": tl["n_replicates"],
            "df": tl["df"], "sd_within": tl["sd_within"], "sd_between": tl["sd_between"],
            "p_value": tl["p_value"], "zero_variance": tl["zero_variance"],
            "detectable": detectable(u, out["ci_level"])}


def rank_agreement(predicted, measured, *, boot: int = 10_000, seed: int = 0
                   ) -> tuple[float, float, float, int]:
    """(Spearman's rho of ``predicted`` and ``measured``, the 95 % percentile bootstrap
    interval over the pairs (``boot`` resamples, seeded; a resample with no spread in
    either is left out), the resamples kept); all NaN when either has no spread (rho is
    then undefined)."""
    p, g = np.asarray(predicted, float), np.asarray(measured, float)
    if np.ptp(p) == 0 or np.ptp(g) == 0:
        return float("nan"), float("nan"), float("nan"), 0
    rho = float(stats.spearmanr(p, g).statistic)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(boot):
        i = rng.integers(0, len(p), len(p))
        if np.ptp(p[i]) > 0 and np.ptp(g[i]) > 0:
            draws.append(stats.spearmanr(p[i], g[i]).statistic)
    if not draws:
        return rho, float("nan"), float("nan"), 0
    lo, hi = (float(x) for x in np.percentile(draws, [2.5, 97.5]))
    return rho, lo, hi, len(draws)
