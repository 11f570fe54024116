"""Step ``study report``: a study's runs -> ``<root>/reports/<study_id>/``: study.json,
study.md, a self-contained study.html and the plots.

Per (pool, budget, selector, loss): test accuracy mean, std and 95 % t interval over the paired
seeds; the paired difference to ``random`` at the same pool, budget, loss and replicate, its
95 % t interval and t-test's p (over seeds with one replicate, over the replicates' means with
several: ``smartaug.core.stats.two_level``); the seeds won, tied and lost. Declared hypotheses
are decided; every other comparison is exploratory, with Holm, Benjamini-Hochberg and max-T
over its family. ``SCORE@val``: per score and replicate, the window position whose choosing
trainings (seeds never reported) have the best mean validation accuracy (test accuracy is
never used to choose). The verdict claims only what the tests show.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np
import torch

from smartaug.config import CHOOSE_SEED_OFFSET, Arm, GridCell, Selector, StudyConfig, load_study
from smartaug.core.curriculum import distinct_shown
from smartaug.core.stats import (
    ALPHA,
    POWER,
    benjamini_hochberg,
    decide_paired,
    detectable,
    family_alphas,
    holm,
    max_t,
    method_stats,
    more_units,
    planned,
    sampling_se,
    spending_levels,
    two_level,
    units,
)
from smartaug.core.train import resolve_device
from smartaug.lake import Lake, LakeError, git_sha
from smartaug.lake.readers import classes as dataset_classes
from smartaug.steps.report import accuracy_cells, at_chance, figure_png, render_report_files
from smartaug.steps.sql import query

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the non-interactive backend

__all__ = ["exploratory", "holm", "hypotheses", "leaderboard", "reanalyse",
           "rewrite_study_report", "statement", "study_verdict", "unequal",
           "write_study_report"]

MAXT_PERMUTATIONS = 10_000  # or every sign flip, when there are fewer
# a smallest detectable difference this large (in accuracy) detects nothing a study can show
NOTHING_DETECTABLE = 0.5


def _key(c: dict) -> tuple[int, int]:
    """A cell's place in the paired design: (replicate, rep)."""
    return c.get("replicate", 0), c["rep"]


def _seeds(cells, by_run, base_seed: int) -> list[dict]:
    """Every seed's figures of a row (what anyone needs to recompute it): seed, replicate,
    test and validation accuracy, run and selection ids."""
    return [{"seed": base_seed + c["rep"], "rep": c["rep"], "replicate": c.get("replicate", 0),
             "test_acc": by_run[c["run_id"]]["test_acc"], "val_acc": by_run[c["run_id"]]["val_acc"],
             "run_id": c["run_id"], "selection_id": c["selection_id"]}
            for c in sorted(cells, key=_key)]


def _row(pool, budget, selector, loss, cells, by_run, random_accs, base_seed: int = 0,
         **extra) -> dict:
    test = {_key(c): by_run[c["run_id"]]["test_acc"] for c in cells}
    val = [by_run[c["run_id"]]["val_acc"] for c in cells]
    s = method_stats(list(units(test).values()))  # the interval over the independent units
    row = {"pool": pool, "budget": budget, "selector": selector, "loss": loss,
           "n_items": cells[0]["n_items"], "n_seeds": len({k[1] for k in test}),
           "n_replicates": len({k[0] for k in test}),
           "test_acc_mean": s["test_acc_mean"],
           "test_acc_std": float(np.std(list(test.values()), ddof=1)) if len(test) > 1 else 0.0,
           "ci95": [max(0.0, s["ci95"][0]), min(1.0, s["ci95"][1])],  # accuracies
           "val_acc_mean": float(np.mean(val)) if all(v is not None for v in val) else None,
           "diff_vs_random": None, "diff_ci95": None, "p_value": None, "p_holm": None,
           "wins": None, "ties": None, "losses": None, "significant": False,
           "kind": cells[0]["kind"], "score": cells[0]["score"],
           "position": cells[0]["position"], "chosen_on": None,
           "selection_ids": sorted({c["selection_id"] for c in cells if c["selection_id"]}),
           "run_ids": [c["run_id"] for c in sorted(cells, key=lambda c: c["rep"])],
           "seeds": _seeds(cells, by_run, base_seed), "role": "exploratory",
           "q_bh": None, "p_maxt": None, "zero_variance": False,
           **_counts(cells, by_run), **extra}
    if selector == "random":
        row["role"] = "random"  # what every comparison is against: no test of its own
    elif random_accs is not None:
        d = {k: test[k] - random_accs[k] for k in sorted(set(test) & set(random_accs))}
        tl = two_level(d)
        row.update(diff_vs_random=tl["diff"], diff_ci95=tl["ci"], p_value=tl["p_value"],
                   zero_variance=tl["zero_variance"], sd_between=tl["sd_between"],
                   wins=sum(v > 0 for v in d.values()), ties=sum(v == 0 for v in d.values()),
                   losses=sum(v < 0 for v in d.values()))
    if selector == "random-unstratified":
        row["role"] = "control"  # what stratifying random changes: outside every family
    return row


def _counts(cells, by_run) -> dict:
    """Per training, averaged over the row's runs: ``n_distinct`` (distinct augmentations the
    training saw: a fresh draw of an online policy counts as one), ``items_seen``
    (augmentations through a backward pass over the whole training), ``backward_passes``
    (every item through one), ``gradient_steps`` and ``seconds``; None for runs recorded
    before the counts were."""
    runs = [by_run[c["run_id"]] for c in cells]
    out = {}
    for k in ("n_distinct", "items_seen", "backward_passes", "gradient_steps", "seconds"):
        v = [r.get(k) for r in runs]
        out[k if k != "seconds" else "seconds_mean"] = (
            None if not v or any(x is None for x in v) else
            float(np.mean(v)) if k == "seconds" else round(float(np.mean(v))))
    return out


def _arm_fields(arm: Arm) -> dict:
    """What a leaderboard row says of an arm: its source and that source's settings."""
    return {"source": arm.source, "policy": arm.policy if arm.source == "policy" else None,
            "arm": {k: v for k, v in arm.to_dict().items()
                    if k not in ("name", "pools", "budgets")}}


def _versus(row: dict, other: dict) -> None:
    """``row``'s paired difference to ``other`` (the whole pool's ``all``), and the share of
    its backward passes and wall time: ``vs_all``."""
    tl = two_level(_diffs(row, other))
    share = {k: row[k] / other[k] if row.get(k) and other.get(k) else None
             for k in ("backward_passes", "seconds_mean")}
    row["vs_all"] = {"diff": tl["diff"], "ci95": tl["ci"], "p_value": tl["p_value"],
                     "backward_share": share["backward_passes"],
                     "seconds_share": share["seconds_mean"]}


def _diffs(row: dict, random_row: dict) -> dict[tuple[int, int], float]:
    """(replicate, seed) -> the row's test accuracy minus random's, where both have it."""
    rnd = {(s["replicate"], s["seed"]): s["test_acc"] for s in random_row["seeds"]}
    return {(s["replicate"], s["seed"]): s["test_acc"] - rnd[(s["replicate"], s["seed"])]
            for s in row["seeds"] if (s["replicate"], s["seed"]) in rnd}


EQUAL_DATA = ("n_distinct", "items_seen", "backward_passes", "gradient_steps")


def unequal(row: dict, other: dict) -> list[str]:
    """What two rows' trainings differ in, of ``EQUAL_DATA`` (distinct augmentations seen,
    augmentations through a backward pass, all backward passes, gradient steps): a
    comparison between them measures that difference too, not the idea alone. A count one
    of them did not record is not compared."""
    out = []
    for k in EQUAL_DATA:
        a, b = row.get(k), other.get(k)
        if a is not None and b is not None and a != b:
            out.append(f"{k} {a} vs {b}")
    return out


def _flag_unequal(rows: list[dict]) -> None:
    """Each row compared with random (and each pruning arm with ``all``) says what their
    trainings' data differ in: ``unequal_vs_random`` (``unequal``), ``vs_all["unequal"]``."""
    randoms = {(r["pool"], r["budget"], r["loss"]): r for r in rows if r["selector"] == "random"}
    wholes = {(r["pool"], r["loss"]): r for r in rows if r["selector"] == "all"}
    for r in rows:
        rnd = randoms.get((r["pool"], r["budget"], r["loss"]))
        r["unequal_vs_random"] = unequal(r, rnd) if r["diff_vs_random"] is not None and rnd \
            else []
        if r.get("vs_all") and wholes.get((r["pool"], r["loss"])):
            r["vs_all"]["unequal"] = unequal(r, wholes[(r["pool"], r["loss"])])


def whole_pool(cfg: StudyConfig) -> set[str]:
    """The arms that train on the whole pool, at budget 1.0: ``all`` and InfoBatch's."""
    return {"all", *(a.name for a in cfg.arms if a.source == "infobatch")}


def hypotheses(cfg: StudyConfig, rows: list[dict], *, n_test: int | None = None
               ) -> list[dict]:
    """The declared hypotheses, each decided (``smartaug.core.stats.decide_paired``) from the
    per-seed differences of its selector to what it is compared ``against`` (random unless
    named; over the replicates' means when there are several): its own p, interval, level
    and decision. The family-wise error over the declared hypotheses is alpha
    (``family_alphas``: the primary alone at 0.05; with k secondaries, the primary at 0.025
    and each secondary at 0.025 / k, Holm's p among the secondaries as a column), each look
    of a sequential design at its exact boundary's level (``spending_levels``). Each carries
    what its two arms' data differ in (``unequal``), the test set's own standard error of
    the difference (``n_test``: the test images), and the detectable difference planned
    from ``sd_prior`` (when the study file gives one) beside the observed one."""
    declared = cfg.hypotheses()
    k = sum(role == "secondary" for role, _ in declared)
    a_primary, a_secondary = family_alphas(k)
    looks = cfg.looks()
    out = []
    whole = whole_pool(cfg)
    for role, h in declared:
        key = (h.pool, h.budget, h.selector, h.loss)
        against = h.against
        against_budget = 1.0 if against in whole else h.budget  # all runs on the whole pool
        row = next(r for r in rows if (r["pool"], r["budget"], r["selector"], r["loss"]) == key)
        rnd = next(r for r in rows if (r["pool"], r["budget"], r["selector"], r["loss"])
                   == (key[0], against_budget, against, key[3]))
        d = _diffs(row, rnd)
        alpha = a_primary if role == "primary" else a_secondary
        dec = decide_paired(d, h.margin, looks, alpha)
        if against == "random":  # a row compared with another arm stays in its family
            row["role"] = role
        if len(looks) == 1:
            why = "one look: the study's seeds"
        elif dec["decision"] != "undecided":
            why = f"decided at look {dec['look']} of {len(looks)}: no more seeds needed"
        else:
            why = f"max_seeds ({looks[-1]}) reached" if dec["look"] == len(looks) else \
                f"stopped at look {dec['look']} of {len(looks)}, undecided (run it again)"
        reps = dec["n_replicates"]
        final = spending_levels(looks, alpha)[-1]
        prior = h.sd_prior
        se = sampling_se(row["test_acc_mean"], rnd["test_acc_mean"], n_test)
        out.append({"role": role, "selector": h.selector, "against": against,
                    "against_budget": against_budget, "pool": h.pool,
                    "budget": h.budget, "loss": key[3], "margin": h.margin,
                    "n_seeds": dec["n_seeds"], "n_replicates": reps,
                    "seeds": sorted({s for _, s in d}), "diff": dec["diff"],
                    "ci95": dec["ci"], "ci_level": dec["ci_level"], "p_value": dec["p_value"],
                    "zero_variance": dec["zero_variance"],
                    "p_equivalence": dec["p_equivalence"], "decision": dec["decision"],
                    "alpha": alpha, "family_alpha": ALPHA, "look": dec["look"],
                    "looks": looks, "why_seeds": why,
                    "detectable": dec["detectable"], "power": POWER, "df": dec["df"],
                    "sd_within": dec["sd_within"], "sd_between": dec["sd_between"],
                    "detectable_planned": None if prior is None else planned(
                        prior, None, looks[-1], reps, final),
                    "sd_prior": prior,
                    "more": more_units(dec["sd_within"], dec["sd_between"], dec["n_seeds"],
                                       reps, dec["ci_level"]),
                    "test_set_se": se, "n_test": n_test,
                    "test_set_se_over_margin": None if se is None else se > h.margin,
                    "unequal": unequal(row, rnd),
                    **{f"{k}_{side}": x.get(k) for k in EQUAL_DATA
                       for side, x in (("selector", row), ("against", rnd))}})
    secondary = [h for h in out if h["role"] == "secondary"]
    for h, p in zip(secondary, holm([h["p_value"] for h in secondary]), strict=True):
        h["p_holm_secondary"] = p
    for h in out:
        h["statement"] = statement(h)
    return out


def _pp(x: float) -> str:
    """A difference in accuracy (a fraction) in points, as a sentence says it: 0.0091 ->
    "0.91"; one past any accuracy difference -> "more than 100"."""
    return "more than 100" if x >= 1 else f"{100 * x:.2f}"


def statement(h: dict) -> str:
    """What the decision says, from its numbers (never more)."""
    lo, hi = h["ci95"] if h["ci95"] else (float("nan"), float("nan"))
    m = 100 * h["margin"]
    over = f"{h['n_seeds']} seeds" + (f" in each of {h['n_replicates']} replicates"
                                      if h.get("n_replicates", 1) > 1 else "")
    ci = (f"{h['ci_level'] * 100:.4g} % interval [{100 * lo:+.2f}, {100 * hi:+.2f}] points "
          f"over {over}" + (f" (look {h['look']} of {len(h['looks'])})"
                            if len(h.get("looks", [])) > 1 else ""))
    other = h.get("against", "random")
    what = f"{h['selector']} vs {other} on the {h['pool']} pool at budget {h['budget']:g}"
    text = {
        "better": f"better than {other} by more than the {m:.2g}-point margin: the {ci} lies "
                  f"above +{m:.2g}",
        "worse": f"worse than {other} by more than the {m:.2g}-point margin: the {ci} lies "
                 f"below -{m:.2g}",
        "equivalent": f"equivalent to {other} within +-{m:.2g} points: the {ci} lies inside "
                      f"the margin",
        "smaller-than-margin": f"different from {other}, but by less than the {m:.2g}-point "
                               f"margin: the {ci} excludes 0 and lies inside +-{m:.2g}",
        "undecided": f"undecided: the {ci} spans the +-{m:.2g}-point margin",
    }[h["decision"]]
    if h["decision"] == "undecided" and (lo > 0 or hi < 0):
        text += (f"; it excludes 0, so {'the selector beats' if lo > 0 else f'{other} beats'} "
                 f"{other if lo > 0 else 'the selector'}, by an amount not shown to reach "
                 f"the margin")
    if h["ci95"] and h["ci95"][0] == h["ci95"][1]:
        text += " (every seed gave the same difference: the interval is a point, not a measured spread)"
    if h.get("detectable") is not None and h["detectable"] >= NOTHING_DETECTABLE:
        text += (". At this size it cannot detect any difference accuracy can show (the "
                 "seeds' spread is too wide for their number)")
    elif h.get("detectable") is not None:
        text += (f". At this size it detects a true difference of "
                 f"{_pp(h['detectable'])} points with {100 * h['power']:.0f} % power "
                 f"(from the observed spread"
                 + (f"; {_pp(h['detectable_planned'])} planned from sd_prior"
                    if h.get("detectable_planned") is not None else "") + ")")
    more = h.get("more")
    if more and h["decision"] == "undecided" and more["double_seeds"] is not None:
        text += (f". From the variance components, twice the seeds would detect "
                 f"{_pp(more['double_seeds'])} points"
                 + (f", twice the replicates {_pp(more['double_replicates'])}"
                    if more["double_replicates"] is not None else "")
                 + f": add {more['advice']}")
    if h.get("unequal"):
        text += (f". Its two arms' trainings are not equal in data ({'; '.join(h['unequal'])}"
                 f"): the difference measures that too")
    if h.get("test_set_se") is not None and h["test_set_se"] > h["margin"]:
        text += (f". The test set's own standard error of this difference, about "
                 f"{_pp(h['test_set_se'])} points over {h['n_test']} images (independent "
                 f"errors; models that err on the same images make it smaller), is larger "
                 f"than the margin: on another test set of this size the difference could "
                 f"move by that much, whatever the seeds")
    return f"{h['role'].capitalize()} hypothesis, {what}: {text}."


def _choose(cfg: StudyConfig, choosing: list[dict], by_run: dict, replicate: int
            ) -> tuple | None:
    """The position with the best mean validation accuracy over replicate ``replicate``'s
    choosing trainings (``choosing``: their cells; ties to the first position), and the
    means by position; None when there is nothing to choose on."""
    means = {}
    for p in cfg.positions:
        v = [by_run[c["run_id"]]["val_acc"] for c in choosing
             if c["position"] == p and c.get("replicate", 0) == replicate]
        if not v or any(x is None for x in v):
            return None
        means[p] = float(np.mean(v))
    best = max(cfg.positions, key=lambda p: (means[p], -cfg.positions.index(p)))
    return best, means


def leaderboard(cfg: StudyConfig, cells: list[dict], by_run: dict[str, dict], *,
                family: bool = True, n_test: int | None = None) -> tuple[list, list, list]:
    """The leaderboard rows (one per pool, budget, selector, loss: ``cfg.grid()``'s rows, pool
    by pool and loss by loss), the positions chosen on validation and the declared
    hypotheses, decided; ``family``: with the exploratory family's corrections (the rounds of
    a sequential study need only the hypotheses)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    choosing: dict[tuple, list[dict]] = defaultdict(list)
    for c in cells:
        key = (c["pool"], c["budget"], c["score"] if c.get("choose") else c["selector"],
               c["loss"])
        (choosing if c.get("choose") else groups)[key].append(c)
    arms = {a.name: a for a in cfg.arms}
    grid = list(cfg.grid())
    rows, chosen = [], []
    for pool in cfg.pools:
        for loss in cfg.losses:
            rnd_accs = whole = None
            for g in (g for g in grid if g.pool == pool.name and g.loss == loss):
                sel = g.selector
                cs = groups.get((None if sel.kind == "none" else g.pool, g.budget, sel.name,
                                 loss))
                arm = arms.get(sel.arm)
                if sel.kind == "chosen":
                    _chosen(cfg, g, groups, choosing.get((g.pool, g.budget, sel.score, loss)),
                            by_run, rnd_accs, rows, chosen)
                elif sel.kind in ("none", "all") or arm and arm.source == "infobatch":
                    if cs:  # a reference; pruning on the whole pool beside all
                        rows.append(_row(g.pool, g.budget, sel.name, loss, cs, by_run, None,
                                         cfg.seed, **(_arm_fields(arm) if arm else {})))
                        if arm is None:
                            rows[-1]["role"] = "reference"
                        elif whole is not None:
                            _versus(rows[-1], whole)
                        whole = rows[-1] if sel.kind == "all" else whole
                elif cs or sel.kind in ("random", "window", "coverage"):
                    rows.append(_row(g.pool, g.budget, sel.name, loss, cs or [], by_run,
                                     rnd_accs, cfg.seed,
                                     **(_arm_fields(arm) if arm else {})))
                    if sel.kind == "random":
                        rnd_accs = {_key(c): by_run[c["run_id"]]["test_acc"] for c in cs}
    _flag_unequal(rows)
    decided = hypotheses(cfg, rows, n_test=n_test)
    if family:
        exploratory(rows, seed=cfg.seed)
    return rows, chosen, decided


def _chosen(cfg: StudyConfig, g: GridCell, groups: dict, choosing: list[dict] | None,
            by_run: dict, rnd_accs: dict | None, rows: list[dict], chosen: list[dict]) -> None:
    """The ``SCORE@val`` row of ``g``: per replicate, the position its choosing trainings
    chose on validation (``_choose``), reported with that position's runs; and each choice
    (``chosen``). Nothing when there was nothing to choose on."""
    s, pool, budget, loss = g.selector.score, g.pool, g.budget, g.loss
    picks = [_choose(cfg, choosing, by_run, b) for b in range(cfg.baselines)] \
        if choosing else []
    if not picks or not all(picks):
        return
    cs = [c for b, (best, _) in enumerate(picks) for c in
          groups[(pool, budget, Selector("window", s, best).name, loss)]
          if c.get("replicate", 0) == b]
    same = sorted({Selector("window", s, best).name for best, _ in picks})
    rows.append(_row(pool, budget, g.selector.name, loss, cs, by_run, rnd_accs, cfg.seed,
                     chosen_on="validation", same_runs_as=", ".join(same)))
    rows[-1].update(kind="window, position chosen on validation", role="chosen-on-validation",
                    position=picks[0][0] if len(same) == 1 else None,
                    choose_run_ids=[c["run_id"] for c in choosing])
    chosen += [{"pool": pool, "budget": budget, "loss": loss, "score": s, "replicate": b,
                "position": best,
                "choose_seeds": sorted({cfg.seed + c["rep"] for c in choosing}),
                "val_acc_by_position": means} for b, (best, means) in enumerate(picks)]


def exploratory(rows: list[dict], *, seed: int = 0) -> None:
    """The exploratory family: every tested row that is not a declared hypothesis, each
    counted once (an ``@val`` row reuses a fixed position's runs: it is left out). Holm,
    Benjamini-Hochberg and Westfall-Young max-T (sign flips of the seeds, the rows'
    correlation kept) over it; ``significant`` = Holm's p < 0.05."""
    family = [i for i, r in enumerate(rows) if r["p_value"] is not None
              and r["role"] == "exploratory"]
    ps = [rows[i]["p_value"] for i in family]
    randoms = {(r["pool"], r["budget"], r["loss"]): r for r in rows if r["role"] == "random"}
    diffs = [units(_diffs(rows[i], randoms[(rows[i]["pool"], rows[i]["budget"],
                                            rows[i]["loss"])])) for i in family]
    level = 1 - ALPHA / max(len(family), 1)  # Holm's first step: Bonferroni's level
    for i, p, q, t, d in zip(family, holm(ps), benjamini_hochberg(ps),
                             max_t(diffs, permutations=MAXT_PERMUTATIONS, seed=seed), diffs,
                             strict=True):
        rows[i].update(p_holm=p, q_bh=q, p_maxt=t, significant=p < ALPHA,
                       detectable=detectable(list(d.values()), level))


def study_verdict(rows: list[dict], n_seeds: int, decided: list[dict] | None = None) -> str:
    """The declared hypotheses' statements, then one paragraph on the exploratory rows that
    claims only what their Holm-corrected paired tests show."""
    decided = decided or []
    tested = [r for r in rows if r["p_value"] is not None and r["role"] == "exploratory"]
    m = len(tested)
    wins = [r for r in tested if r["significant"] and r["diff_vs_random"] > 0]
    losses = [r for r in tested if r["significant"] and r["diff_vs_random"] < 0]

    def show(r):
        lo, hi = r["diff_ci95"]
        return (f"{r['selector']} ({r['loss']}) on the {r['pool']} pool at budget "
                f"{r['budget']:g}: {100 * r['diff_vs_random']:+.2f} points "
                f"[{100 * lo:+.2f}, {100 * hi:+.2f}], Holm p = {r['p_holm']:.3g}")

    parts = [h["statement"] for h in decided]
    if not decided:
        parts.append("No hypothesis was declared before the run: every comparison is "
                     "exploratory.")
    if not m:
        parts.append("No other comparison was made: nothing exploratory to report.")
        return " ".join(parts)
    parts.append(f"Exploratory: over {n_seeds} paired seeds and {m} comparisons with random at "
                 f"the same budget (Holm-corrected, alpha {ALPHA}),")
    if wins:
        wins.sort(key=lambda r: -r["diff_vs_random"])
        parts.append(f"{len(wins)} selector(s) beat random: " + "; ".join(map(show, wins[:6]))
                     + ("; ..." if len(wins) > 6 else "") + ".")
    else:
        parts.append("no hardness-based selector beat random.")
    if losses:
        losses.sort(key=lambda r: r["diff_vs_random"])
        parts.append(f"{len(losses)} lost to random, the largest: "
                     + "; ".join(map(show, losses[:3])) + ".")
    else:
        parts.append("None lost to random either.")
    sizes = [r["detectable"] for r in tested if r.get("detectable") is not None]
    if sizes and float(np.median(sizes)) >= NOTHING_DETECTABLE:
        parts.append("At this size a corrected exploratory test cannot detect any difference "
                     "accuracy can show: add seeds before reading these rows.")
    elif sizes:
        parts.append(f"At this size a corrected exploratory test detects, with "
                     f"{100 * POWER:.0f} % power, a true difference of about "
                     f"{_pp(float(np.median(sizes)))} points (median over the rows; "
                     f"{_pp(min(sizes))} to {_pp(max(sizes))}), not a smaller one.")
    parts.append("A difference that is not significant is not shown to be absent: only a "
                 "declared hypothesis decided 'equivalent' says that.")
    return " ".join(parts)


# ------------------------------------------------------------------ plots


def plot_budget(rows: list[dict], cfg: StudyConfig, which) -> bytes:
    """Test accuracy against budget per pool: one line per selector (``which``), its 95 %
    interval as a band; the references as horizontal lines."""
    pools = [p.name for p in cfg.pools]
    fig, axes = plt.subplots(1, len(pools), figsize=(6.5 * len(pools), 4.5), squeeze=False)
    for ax, pool in zip(axes[0], pools, strict=True):
        by_sel: dict[tuple, list] = defaultdict(list)
        for r in rows:
            if r["pool"] == pool and r["kind"] != "reference" and which(r):
                by_sel[(r["selector"], r["loss"])].append(r)
        for (sel, loss), rs in by_sel.items():
            rs.sort(key=lambda r: r["budget"])
            x = [r["budget"] for r in rs]
            y = np.array([100 * r["test_acc_mean"] for r in rs])
            lo = np.array([100 * r["ci95"][0] for r in rs])
            hi = np.array([100 * r["ci95"][1] for r in rs])
            style = "-" if loss == "ce" else "--"
            line, = ax.plot(x, y, style, marker="o", label=f"{sel} ({loss})",
                            lw=2.5 if sel == "random" else 1.3,
                            color="black" if sel == "random" else None)
            ax.fill_between(x, lo, hi, alpha=0.12, color=line.get_color())
        for r in rows:
            if r["pool"] == pool and r["kind"] == "reference":
                ax.axhline(100 * r["test_acc_mean"], ls=":", color="grey")
                ax.text(min(cfg.budgets),
                        100 * r["test_acc_mean"], f" {r['selector']} ({r['loss']})",
                        va="bottom", fontsize=8, color="grey")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(cfg.budgets, [f"{b:g}" for b in cfg.budgets])
        ax.set_xlabel("budget (fraction of the pool)")
        ax.set_ylabel("test accuracy % (mean, 95 % CI)")
        ax.set_title(f"{pool} pool")
        ax.legend(fontsize=7, loc="best")
    return figure_png(fig)


def plot_differences(rows: list[dict], cfg: StudyConfig) -> bytes:
    """Each selector's paired difference to random (points, 95 % interval) against budget, one
    line a selector and loss, one panel a pool; the legend beside the panels, never over the
    intervals."""
    pools = [p.name for p in cfg.pools]
    fig, axes = plt.subplots(1, len(pools), figsize=(6.5 * len(pools) + 2.5, 4.5),
                             squeeze=False)
    for ax, pool in zip(axes[0], pools, strict=True):
        by_sel: dict[tuple, list] = defaultdict(list)
        for r in rows:
            if r["pool"] == pool and r["diff_vs_random"] is not None and r["diff_ci95"]:
                by_sel[(r["selector"], r["loss"])].append(r)
        for i, ((sel, loss), rs) in enumerate(by_sel.items()):
            rs.sort(key=lambda r: r["budget"])
            dodge = 1.04 ** (i - (len(by_sel) - 1) / 2)  # side by side, not on top
            x = np.array([r["budget"] for r in rs]) * dodge
            y = np.array([100 * r["diff_vs_random"] for r in rs])
            err = np.array([[100 * (r["diff_vs_random"] - r["diff_ci95"][0]),
                             100 * (r["diff_ci95"][1] - r["diff_vs_random"])] for r in rs]).T
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, lw=1.3,
                        ls="-" if loss == "ce" else "--", label=f"{sel} ({loss})")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(cfg.budgets, [f"{b:g}" for b in cfg.budgets])
        ax.set_xlabel("budget (fraction of the pool)")
        ax.set_ylabel("test accuracy minus random's, points (95 % CI)")
        ax.set_title(f"{pool} pool: each selector against random")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0, 1 - 2.4 / fig.get_figwidth(), 1))
    return figure_png(fig)


def plot_forest(rows: list[dict], decided: list[dict], cfg: StudyConfig, *,
                exploratory: bool = True) -> bytes:
    """Per pool: the declared hypotheses on top, each its selector's paired difference to
    what it names (``against``) with its interval at its own level, decision and margin
    band; then the exploratory rows' differences to random (95 % t intervals, uncorrected),
    ``@val`` rows left out (their fixed row is there). Each label says what it is compared
    with."""
    pools = [p.name for p in cfg.pools]
    entries: dict[str, list[tuple]] = {p: [] for p in pools}
    for h in decided:
        if h["ci95"]:
            entries[h["pool"]].append((
                f"{h['selector']} vs {h['against']} @ {h['budget']:g} [{h['role']}, "
                f"{100 * h['ci_level']:.3g} %]", h["diff"], h["ci95"], h))
    for r in sorted((r for r in rows if exploratory and r["diff_ci95"]
                     and r["role"] == "exploratory"), key=lambda r: (r["budget"], r["selector"])):
        entries[r["pool"]].append((f"{r['selector']} vs random @ {r['budget']:g}",
                                   r["diff_vs_random"], r["diff_ci95"], None))
    height = max(3.0, 0.28 * max([len(v) for v in entries.values()] + [1]) + 1.5)
    fig, axes = plt.subplots(1, len(pools), figsize=(7.5 * len(pools), height), squeeze=False)
    for ax, pool in zip(axes[0], pools, strict=True):
        es = entries[pool]
        for i, (_, diff, (lo, hi), h) in enumerate(es):
            y = len(es) - 1 - i
            colour = "black" if h else "tab:blue"
            ax.plot([100 * lo, 100 * hi], [y, y], color=colour, lw=2.2 if h else 1.2)
            ax.plot([100 * diff], [y], "o", color=colour)
            if h:
                ax.axhspan(y - 0.45, y + 0.45, color="#eee", zorder=0)
                m = 100 * h["margin"]
                ax.plot([-m, -m], [y - 0.45, y + 0.45], color="tab:red", lw=1)
                ax.plot([m, m], [y - 0.45, y + 0.45], color="tab:red", lw=1)
                ax.text(100 * hi, y, f"  {h['decision']}", va="center", fontsize=8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(es)), [e[0] for e in reversed(es)], fontsize=7)
        ax.set_xlabel("paired test accuracy difference, points: each row's arm minus the arm "
                      "it names\n(grey rows: declared, at their own level; blue: exploratory, "
                      "95 %; red: ±margin)", fontsize=8)
        ax.set_title(f"{pool} pool: paired differences")
    return figure_png(fig)


# ------------------------------------------------------------------ collect and write


def _kept(lake: Lake, rows: list[dict], class_names: list[str]) -> list[dict]:
    """What each selector kept, by kind and class (its first seed's selection), one entry per
    row (a position chosen on validation and its fixed-position row each get theirs)."""
    tested = [r for r in rows if r["selection_ids"]]
    if not tested:
        return []
    counts = query(lake, "study_kept", ids=sorted({r["selection_ids"][0] for r in tested}))
    by_selection: dict[str, list[dict]] = defaultdict(list)
    for c in counts.to_pylist():
        by_selection[c["selection_id"]].append(c)
    out = []
    for r in tested:
        sid = r["selection_ids"][0]
        k = {"pool": r["pool"], "budget": r["budget"], "selector": r["selector"],
             "loss": r["loss"], "selection_id": sid, "n": 0, "by_kind": {}, "by_class": {}}
        for c in by_selection[sid]:
            k["n"] += c["n"]
            k["by_kind"][c["kind"]] = k["by_kind"].get(c["kind"], 0) + c["n"]
            name = (class_names[c["label"]] if 0 <= c["label"] < len(class_names)
                    else str(c["label"]))
            k["by_class"][name] = k["by_class"].get(name, 0) + c["n"]
        if k["n"]:
            k["by_kind"] = {a: v / k["n"] for a, v in sorted(k["by_kind"].items())}
            k["by_class"] = {a: k["by_class"].get(a, 0) / k["n"] for a in class_names}
            out.append(k)
    return out


def _costs(rows: list[dict], cells: list[dict], by_run: dict, baseline_s: float,
           scoring_s: dict[str, float], searches: dict[str, list[dict]] | None = None) -> None:
    """Each row's cost in seconds: the baselines and the pool's scorings (what a hardness
    selector, a curriculum by hardness and a self-paced arm need first; random, a
    random-order schedule, InfoBatch and the references need neither), its selections and its
    retrainings over its seeds (an ``@val`` row: its position's and the choosing ones; a
    self-paced arm's re-scorings are inside its retrainings)."""
    by_id = {c["run_id"]: c for c in cells}
    for r in rows:
        ids = r["run_ids"] + r.get("choose_run_ids", [])
        arm = r.get("arm") or {}
        hardness = (r["kind"] != "arm" and r.get("score") is not None) or r["chosen_on"] is not None or (
            r["kind"] == "arm" and r.get("policy") == "atlas-only") or (  # its atlas: both
            r.get("source") in ("schedule", "self-paced")  # ranked by the baseline's scores
            and arm.get("order") != "random-order")
        cost = {"baseline_s": baseline_s if hardness else 0.0,
                "scoring_s": scoring_s.get(r["pool"], 0.0) if hardness else 0.0,
                "selection_s": sum(by_id[i].get("selection_seconds") or 0.0 for i in ids),
                "retraining_s": sum(by_run[i]["seconds"] or 0.0 for i in ids)}
        if r["kind"] == "arm" and r.get("policy") == "recommended":  # its races, beside
            found = (searches or {}).get(r["pool"], [])
            cost["search_s"] = sum(x["seconds"] for x in found)
            cost["search_trainings"] = sum(x["cost_trainings"] for x in found)
        cost["total_s"] = sum(v for k, v in cost.items() if k.endswith("_s"))
        r["cost"] = cost


def _device(cfg: StudyConfig) -> str:
    """Where the cells trained (as this process resolves the study's device)."""
    try:
        dev = resolve_device(cfg.retrain.device)
    except ValueError:
        return str(cfg.retrain.device)
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return "cpu (one thread per worker process)"


def _collect(lake: Lake, sid: str, command: str | None) -> dict:
    row = lake.row("studies", sid)
    stored = json.loads(row["config"])
    cfg = load_study(stored)
    cells = json.loads(row["cells"])
    runs = query(lake, "study_runs", ids=[c["run_id"] for c in cells]).to_pylist()
    by_run = {r["run_id"]: r for r in runs}
    missing = [c["run_id"] for c in cells if c["run_id"] not in by_run]
    if missing:
        raise LakeError(f"study {sid}: {len(missing)} cells have no runs row (e.g. "
                         f"{missing[0]}); rerun the study to train them")
    n_test = lake.row("datasets", row["dataset_id"])["n_test"]
    rows, chosen, decided = leaderboard(cfg, cells, by_run, n_test=n_test)
    names = dataset_classes(lake, row["dataset_id"])
    baseline = lake.row("models", row["baseline_model_id"])
    pools = json.loads(row["pools"])
    reps = {name: p.get("replicates") or [{"replicate": 0, "dataset_id": row["dataset_id"],
                                           "baseline_model_id": row["baseline_model_id"], **p}]
            for name, p in pools.items()}
    scoring = {name: sum(lake.row("scoring_runs", x["scoring_run_id"])["seconds"] for x in r)
               for name, r in reps.items()}
    models = {x["baseline_model_id"] for r in reps.values() for x in r}
    baselines = {m: lake.row("models", m) for m in sorted(models)}
    races = []
    for f in sorted(lake.local_path("policies").glob("recommend-*.json")) \
            if lake.local_path("policies").is_dir() else ():
        meta = json.loads(f.read_text()).get("smartaug") or {}
        if meta.get("model") == cfg.model:
            races.append(meta)
    searches = {name: [m for m in races if m.get("dataset_id") in {x["dataset_id"] for x in r}]
                for name, r in reps.items()}
    _costs(rows, cells, by_run, sum(b["seconds"] for b in baselines.values()), scoring,
           searches)
    n_reps, seed, retrain = cfg.baselines, cfg.seed, cfg.retrain
    return {
        "study_id": sid, "command": command, "git_sha": git_sha(), "config": stored,
        "dataset_id": row["dataset_id"], "baseline_model_id": row["baseline_model_id"],
        "baseline": {"test_acc": baseline["test_acc"], "val_acc": baseline["val_acc"]},
        "baselines": [{"model_id": m, "test_acc": b["test_acc"], "val_acc": b["val_acc"]}
                      for m, b in baselines.items()],
        "pools": pools, "n_cells": len(cells), "device": _device(cfg), "n_test": n_test,
        "n_trainings": len({c["run_id"] for c in cells}),
        "seconds": row["seconds"],
        "protocol": (f"every cell trains {cfg.model} ({cfg.init}) for "
                     f"{retrain.epochs} epochs (batch {retrain.batch_size}, "
                     f"{retrain.optimizer} lr {retrain.lr:g}) on the "
                     f"train split's originals plus the cell's augmentations, at seeds "
                     f"{seed}..{seed + cfg.seeds - 1} (model init and batch "
                     f"order; random and coverage draw afresh per seed; more for the declared "
                     f"hypotheses up to max_seeds); accuracy after the last epoch. Windows "
                     f"and coverage are "
                     + ("drawn within each class to the pool's class mix, like random"
                        if cfg.per_class else
                        "drawn over the whole pool (unstratified; random-unstratified beside "
                        "them)")
                     + (f". {n_reps} replicates: each its own validation split, baseline "
                        f"(seed {seed}..{seed + n_reps - 1}), pools (their seed "
                        f"+ replicate) and selections, every cell trained in each"
                        if n_reps > 1 else ". One replicate: one baseline, pool and "
                        "validation split (the seeds measure retraining noise only)")),
        "how_chosen": (f"SCORE@val rows: per pool, budget, loss, score and replicate, the "
                       f"window position with the highest mean validation accuracy over "
                       f"{cfg.choose_seeds if cfg.chooses() else 0} choosing trainings per "
                       f"position at seeds from {seed + CHOOSE_SEED_OFFSET}, never reported on "
                       f"test (the "
                       f"validation split is held out of the train split; test accuracy is "
                       f"never used to choose); the row reports that position's runs at the "
                       f"study's seeds, so it is left out of the exploratory family (its "
                       f"fixed-position row is in it)."),
        "hypotheses": decided, "leaderboard": rows, "chosen_positions": chosen,
        "kept": _kept(lake, rows, names), "classes": names,
        "verdict": " ".join(x for x in (
            at_chance([*(b["test_acc"] for b in baselines.values()),
                       *(x["test_acc_mean"] for x in rows)], len(names)),
            study_verdict(rows, cfg.seeds, decided)) if x),
        "statistics": STATISTICS,
    }


STATISTICS = (
    "Hypotheses (declared in the study file before any run): each the paired difference of "
    "its selector to what it names (against; random unless named) over the seeds (with "
    "several replicates, a two-level analysis: each replicate's mean difference over its seeds "
    "is a unit and the t interval is over the replicates, replicates - 1 degrees of freedom, "
    "the balanced random-effects model's exact interval; sd_within and sd_between give the two "
    "variances), its t interval, its own paired t-test's p and two one-sided t-tests at "
    "+-margin (p_equivalence); the decision follows from the interval and the margin. "
    "Family-wise error: a decision is wrong only when its interval misses the true difference, "
    "so the declared hypotheses share alpha = 0.05 by Bonferroni: a primary alone is judged at "
    "0.05; with k secondaries the primary at 0.025 and each secondary at 0.025 / k (Holm's p "
    "among the secondaries as a column). The chance that any declared decision of a study is "
    "wrong is at most 0.05. With max_seeds the study adds seeds in rounds to the cells the "
    "undecided hypotheses need; look j is judged at the level of the exact two-sided "
    "Lan-DeMets O'Brien-Fleming boundary for the declared looks (gsDesign's sfLDOF, alpha / 2 "
    "a side; the boundaries computed by numerical integration, Armitage-McPherson-Rowe), so "
    "the intervals of all looks together cover the true difference with probability 1 - "
    "alpha (repeated confidence intervals; normal theory, the t quantile at each level); one "
    "look: 1 - alpha. Exploratory rows (every other comparison with random, an @val row left "
    "out as it reuses a fixed position's runs): paired t-test p, Holm, Benjamini-Hochberg q "
    "and Westfall-Young max-T over sign-flipped seeds (every flip when 2^seeds <= "
    f"{MAXT_PERMUTATIONS}, else {MAXT_PERMUTATIONS} seeded ones). Equal differences on every "
    "seed (zero_variance): the interval is a point and p is 0 for a non-zero shift. "
    "Detectable: the smallest true difference the design finds with "
    f"{100 * POWER:.0f} % power at its level by the exact noncentral t, from the observed "
    "spread (and, given sd_prior, planned before the run). Test-set error: the accuracies are "
    "measured on one fixed test set; test_set_se is the standard error of a difference of two "
    "accuracies on it (independent errors: an upper bound), which seeds do not reduce. Equal "
    "data: every row reports n_distinct (distinct augmentations seen), items_seen, "
    "backward_passes and gradient_steps; a comparison whose arms differ in any of them is "
    "flagged (unequal).")


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def _tables(r: dict) -> dict[str, list[list[str]]]:
    """Markdown/HTML tables: one leaderboard per pool and budget (references after)."""
    head = ["selector", "loss", "augmentations", "test acc % (mean ± std)", "95 % CI",
            "Δ vs random (pp)", "Δ 95 % CI", "p", "p (Holm)", "q (BH)", "p (max-T)", "W/T/L",
            "distinct seen", "items seen", "backward passes", "steps", "role"]
    out: dict[str, list[list[str]]] = {}
    for row in r["leaderboard"]:
        key = (f"{row['pool']} pool, budget {row['budget']:g}" if row["kind"] != "reference"
               else f"{row['pool']} pool, references")
        t = out.setdefault(key, [head])
        d = row["diff_vs_random"]
        t.append([
            row["selector"] + (" *" if row["significant"] else ""), row["loss"],
            str(row["n_items"]),
            *accuracy_cells(row["test_acc_mean"], row["test_acc_std"], row["ci95"],
                            row["n_seeds"]),
            "" if d is None else f"{100 * d:+.2f}",
            "" if not row["diff_ci95"] else
            f"[{100 * row['diff_ci95'][0]:+.2f}, {100 * row['diff_ci95'][1]:+.2f}]",
            "" if row["p_value"] is None else f"{row['p_value']:.3g}",
            "" if row["p_holm"] is None else f"{row['p_holm']:.3g}",
            "" if row["q_bh"] is None else f"{row['q_bh']:.3g}",
            "" if row["p_maxt"] is None else f"{row['p_maxt']:.3g}",
            "" if row["wins"] is None else f"{row['wins']}/{row['ties']}/{row['losses']}",
            *("" if row.get(k) is None else str(row[k])
              for k in ("n_distinct", "items_seen", "backward_passes", "gradient_steps")),
            row["role"] + (" (zero variance)" if row["zero_variance"] else "")
            + ("; unequal data vs random: " + ", ".join(row["unequal_vs_random"])
               if row.get("unequal_vs_random") else "")
            + _versus_text(row.get("vs_all"))])
    for t in out.values():
        t[1:] = sorted(t[1:], key=lambda x: -float(x[3].split(" ")[0]))
    return out


def _versus_text(v: dict | None) -> str:
    if not v or v["diff"] is None:
        return ""
    ci = v["ci95"]
    text = f"; vs all {100 * v['diff']:+.2f}" + (
        f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else "")
    for k, what in (("backward_share", "backward passes"), ("seconds_share", "wall time")):
        if v.get(k) is not None:
            text += f", {100 * v[k]:.0f} % of its {what}"
    if v.get("unequal"):
        text += "; unequal data vs all: " + ", ".join(v["unequal"])
    return text


def _summary_tables(r: dict) -> dict[str, list[list[str]]]:
    """Per pool and loss: a selector per row, a budget per column, each cell the test
    accuracy % (mean ± std; for SCORE@val, after the position chosen) and the difference to
    random in points; fixed window positions other than the seed's (``offset``, of the first
    score) are left to the full tables."""
    cfg = load_study(r["config"])
    out: dict[str, list[list[str]]] = {}
    grid = list(cfg.grid())
    arms = {a.name: a for a in cfg.arms}

    def summarised(sel: Selector) -> bool:  # each score's @val, the first's offset, ...
        return sel.kind in ("random", "random-unstratified", "chosen", "coverage") or (
            sel.kind == "window" and sel.score == cfg.scores[0] and sel.position == "offset"
        ) or (sel.kind == "arm" and arms[sel.arm].source != "infobatch")

    for pool in [p.name for p in cfg.pools]:
        for loss in cfg.losses:
            rows = {(x["selector"], x["budget"]): x for x in r["leaderboard"]
                    if x["pool"] == pool and x["loss"] == loss}
            mine = [g.selector for g in grid if g.pool == pool and g.loss == loss]
            shown = list(dict.fromkeys(
                [x.name for x in mine if summarised(x)]
                + [x["selector"] for x in r["leaderboard"] if x["pool"] == pool
                   and x["chosen_on"]]))  # a report that chose on its own seeds
            whole = list(dict.fromkeys(x.name for x in mine if x.kind in ("none", "all") or (
                x.kind == "arm" and arms[x.arm].source == "infobatch")))
            t = [["selector", *(f"budget {b:g}" for b in cfg.budgets)]]
            for sel in shown:
                cells = []
                for b in cfg.budgets:
                    x = rows.get((sel, b))
                    if x is None:
                        cells.append("")
                        continue
                    cell = accuracy_cells(x["test_acc_mean"], x["test_acc_std"], x["ci95"],
                                          x["n_seeds"])[0]
                    if x["chosen_on"]:
                        cell = f"{x['position']}: {cell}"
                    if sel != "random" and x["diff_vs_random"] is not None:
                        cell += (f" ({100 * x['diff_vs_random']:+.2f}"
                                 + (", *" if x["significant"] else "") + ")")
                    cells.append(cell)
                if any(cells):
                    t.append([sel, *cells])
            for ref in whole:
                x = next((x for x in r["leaderboard"] if x["pool"] == pool
                          and x["loss"] == loss and x["selector"] == ref), None)
                if x is not None:
                    what = (f"originals only, {x['gradient_steps']} gradient steps"
                            if ref == "none" and x.get("gradient_steps") else "originals only"
                            if ref == "none" else f"{x['n_items']} augmentations")
                    t.append([f"{ref} ({what})",
                              accuracy_cells(x["test_acc_mean"], x["test_acc_std"], x["ci95"],
                                             x["n_seeds"])[0],
                              *[""] * (len(cfg.budgets) - 1)])
            out[f"{pool} pool" + (f", loss {loss}" if len(cfg.losses) > 1 else "")] = t
    return out


def _hypotheses_table(r: dict) -> list[list[str]]:
    """The declared hypotheses and their decisions (no rows: none declared)."""
    if not r["hypotheses"]:
        return []
    out = [["role", "selector", "against", "pool", "budget", "margin (pp)", "seeds", "Δ (pp)",
            "interval", "p", "p (equivalence)", "alpha", "decision", "detects (pp)",
            "test-set SE (pp)", "equal data", "seeds: why"]]
    for h in r["hypotheses"]:
        lo, hi = h["ci95"] or (None, None)
        det = h.get("detectable")
        plan = h.get("detectable_planned")
        se = h.get("test_set_se")
        out.append([h["role"], h["selector"], h.get("against", "random"), h["pool"],
                    f"{h['budget']:g}",
                    f"±{100 * h['margin']:.2g}", str(h["n_seeds"]),
                    "" if h["diff"] is None else f"{100 * h['diff']:+.2f}",
                    "" if lo is None else
                    f"{100 * h['ci_level']:.4g} %: [{100 * lo:+.2f}, {100 * hi:+.2f}]",
                    "" if h["p_value"] is None else f"{h['p_value']:.3g}",
                    "" if h["p_equivalence"] is None else f"{h['p_equivalence']:.3g}",
                    f"{h['alpha']:.3g}", h["decision"],
                    ("" if det is None else f"{100 * det:.2f} observed")
                    + ("" if plan is None else f", {100 * plan:.2f} planned"),
                    "" if se is None else f"≤ {100 * se:.2f}"
                    + (" (> margin)" if se > h["margin"] else ""),
                    "yes" if not h.get("unequal") else "no: " + "; ".join(h["unequal"]),
                    h.get("why_seeds", "")])
    return out


def _cost_table(r: dict) -> list[list[str]]:
    """Seconds each arm cost (the hypotheses' and random's, and every other arm's); with a
    recommended arm, its races' seconds and full trainings too."""
    races = any("search_s" in (x.get("cost") or {}) for x in r["leaderboard"])
    out = [["pool", "budget", "selector", "loss", "seeds", "baseline s", "scoring s",
            "selection s", *(["search s", "search (full trainings)"] if races else []),
            "retraining s", "total s"]]
    for x in r["leaderboard"]:
        c = x.get("cost")
        if c is None:
            continue
        search = [f"{c['search_s']:.1f}", f"{c['search_trainings']:.2f}"] if "search_s" in c \
            else ["", ""]
        out.append([str(x["pool"]), f"{x['budget']:g}", x["selector"], x["loss"],
                    str(x["n_seeds"]), *(f"{c[k]:.1f}" for k in (
                        "baseline_s", "scoring_s", "selection_s")), *(search if races else []),
                    *(f"{c[k]:.1f}" for k in ("retraining_s", "total_s"))])
    return out


def _kept_tables(r: dict) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for k in r["kept"]:
        key = f"{k['pool']} pool, budget {k['budget']:g}"
        kinds = sorted({a for x in r["kept"] if x["pool"] == k["pool"] for a in x["by_kind"]})
        t = out.setdefault(key, [["selector", *kinds, "top class", "bottom class"]])
        by_class = sorted(k["by_class"].items(), key=lambda kv: -kv[1])
        t.append([k["selector"], *(f"{100 * k['by_kind'].get(a, 0):.0f}" for a in kinds),
                  f"{by_class[0][0]} {100 * by_class[0][1]:.0f}",
                  f"{by_class[-1][0]} {100 * by_class[-1][1]:.0f}"])
    return out


def _chosen_table(r: dict) -> list[list[str]]:
    """The positions chosen on validation (no rows: a single position, nothing chosen)."""
    if not r["chosen_positions"]:
        return []
    return [["pool", "budget", "loss", "score", "replicate", "chosen", "choosing seeds",
             "val acc % by position"],
            *([c["pool"], f"{c['budget']:g}", c["loss"], c["score"], str(c["replicate"]),
               c["position"], f"{c['choose_seeds'][0]}..{c['choose_seeds'][-1]}",
               ", ".join(f"{p} {_pct(v)}" for p, v in c["val_acc_by_position"].items())]
              for c in r["chosen_positions"])]


def _render(out: Path, r: dict, *, html: bool = True) -> Path:
    cfg = load_study(r["config"])
    plots = {**({"decisions": plot_forest(r["leaderboard"], r["hypotheses"], cfg,
                                          exploratory=False)} if r["hypotheses"] else {}),
             "differences": plot_differences(r["leaderboard"], cfg),
             "paired_differences": plot_forest(r["leaderboard"], r["hypotheses"], cfg),
             "accuracy_vs_budget": plot_budget(
        r["leaderboard"], cfg, lambda x: x["selector"] == "random" or x["chosen_on"]
        or x["kind"] == "coverage")}
    if cfg.scores and len(cfg.positions) > 1:
        first = cfg.scores[0]
        plots[f"{first}_positions"] = plot_budget(
            r["leaderboard"], cfg, lambda x: x["selector"] == "random"
            or (x["score"] == first and x["kind"] == "window"))
    return render_report_files(out, "study", r, plots, html=html, tables=_tables(r),
                               summary=_summary_tables(r), kept=_kept_tables(r),
                               chosen=_chosen_table(r), hypotheses=_hypotheses_table(r),
                               cost=_cost_table(r))


def write_study_report(lake: Lake, sid: str, *, command: str | None = None) -> Path:
    """Write study.json, study.md, study.html and the plots; returns the directory (on a
    remote lake, the local copy of what was uploaded)."""
    r = _collect(lake, sid, command)
    out = _render(lake.local_path(f"reports/{sid}"), r)
    lake.upload(out, f"reports/{sid}")
    return out


# ------------------------------------------------------------------ from study.json alone


def _n_test(r: dict) -> int | None:
    """The test images a report's accuracies were measured on: recorded since n_test was;
    before, from the data config (``per_class_test`` x classes, or Fashion-MNIST's 10 000)."""
    if r.get("n_test"):
        return r["n_test"]
    data = load_study(r["config"]).data
    if data.per_class_test:
        return data.per_class_test * len(r["classes"])
    if data.dataset == "fashion-mnist":
        return 10_000
    return None


def _derived_distinct(row: dict, cfg: StudyConfig, pool_size: dict[str, int]) -> int | None:
    """The distinct augmentations a row recorded before ``n_distinct`` was, where its
    design fixes them: a static selection its items, ``none`` 0, an online policy one fresh
    draw per item seen (``none``: 0), a schedule without re-ranking its largest epoch (each
    epoch a prefix of one ordering), InfoBatch the whole pool (its first epoch trains on
    every row). None where the training decides (re-ranked schedules, self-paced)."""
    if row["selector"] == "none":
        return 0
    arm = row.get("arm") or {}
    source = row.get("source") if row["kind"] == "arm" else None
    if source is None:
        return row["n_items"]
    if source == "policy":
        return 0 if arm.get("policy") in ("none", "identity") else row.get("items_seen")
    if source == "infobatch":
        return row["n_items"]
    if source == "schedule" and not arm.get("every") and row["pool"] in pool_size:
        return distinct_shown(arm.get("pacing", "linear"), cfg.retrain.epochs,
                              row["n_items"], pool_size[row["pool"]],
                              start=arm.get("start", 0.2), growth=arm.get("growth", 2.0),
                              step=arm.get("step", 1))
    return None


def reanalyse(r: dict) -> dict:
    """A study report recomputed from its own study.json: every row's per-seed accuracies
    are kept; the declared hypotheses, the exploratory family, the equal-data flags, the
    verdict and the statistics' text are computed again by this version's rules (the study
    and run ids are unchanged). Rows recorded before ``n_distinct`` get the count their
    design fixes (``_derived_distinct``)."""
    r = json.loads(json.dumps(r))  # a copy
    cfg, rows = load_study(r["config"]), r["leaderboard"]
    if not all("seeds" in x and "role" in x for x in rows):
        raise LakeError(f"study {r.get('study_id')}: its report predates per-seed records "
                        f"(the leaderboard rows have no seeds): it cannot be recomputed from "
                        f"study.json; rerun the study to report it again")
    pool_size = {x["pool"]: x["n_items"] for x in rows if x["selector"] == "all"}
    epochs = cfg.retrain.epochs
    arms = {a.name: a for a in cfg.arms}
    for x in rows:
        if x["kind"] == "arm" and x.get("source") is None and x["selector"] in arms:
            x.update(_arm_fields(arms[x["selector"]]))  # reports before arms were described
        arm = x.get("arm") or {}
        if x.get("items_seen") is None and (x["kind"] != "arm" or x.get("source") == "policy"):
            # recorded before the counts: a static selection and an online policy show their
            # items every epoch, the originals-only ones none
            none = x["selector"] == "none" or arm.get("policy") in ("none", "identity")
            x["items_seen"] = 0 if none else x["n_items"] * epochs
            x["counts_derived"] = True
        if x.get("n_distinct") is None and x.get("items_seen") is not None:
            x["n_distinct"] = _derived_distinct(x, cfg, pool_size)
            x["counts_derived"] = x["n_distinct"] is not None
        if x["role"] in ("primary", "secondary"):
            x["role"] = "exploratory"  # hypotheses() gives the role back
        x.update(p_holm=None, q_bh=None, p_maxt=None, significant=False)  # exploratory()'s
        x.pop("detectable", None)
    r["n_test"] = _n_test(r)
    _flag_unequal(rows)
    r["hypotheses"] = hypotheses(cfg, rows, n_test=r["n_test"])
    exploratory(rows, seed=cfg.seed)
    r["verdict"] = study_verdict(rows, cfg.seeds, r["hypotheses"])
    r["statistics"] = STATISTICS
    r["reanalysed"] = {"git_sha": git_sha(), "from_git_sha": r.get("reanalysed", {}).get(
        "from_git_sha", r["git_sha"])}
    return r


def rewrite_study_report(directory: str | Path) -> Path:
    """``reanalyse`` the study.json in ``directory`` and write its json, md and plots there
    again (an html too when one is there); every file is written whole, then renamed into
    place (what else the directory holds is kept)."""
    out = Path(directory)
    path = out / "study.json"
    if not path.is_file():
        raise LakeError(f"no study.json in {out}: give the directory of a study's report")
    try:
        r = reanalyse(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        if isinstance(e, LakeError):
            raise
        raise LakeError(f"{path} is not a study report smartaug can recompute ({type(e).__name__}"
                        f": {e}); nothing was written") from None
    html = (out / "study.html").is_file()
    with tempfile.TemporaryDirectory(prefix=".study-report-", dir=out) as tmp:
        new = _render(Path(tmp) / "new", r, html=html)  # the same file system: renames
        if (out / "plots").exists():
            (out / "plots").rename(Path(tmp) / "old-plots")
        (new / "plots").rename(out / "plots")
        for name in ("study.json", "study.md", "study.html"):
            if (new / name).is_file():
                (new / name).replace(out / name)
    return out
