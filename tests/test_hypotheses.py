"""The study decides: declared hypotheses, their intervals, equivalence tests and decisions,
the exploratory family's corrections, and a study.json anyone can recompute."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from smartaug.core.stats import (
    benjamini_hochberg,
    decide,
    max_t,
    paired,
    t_interval,
    tost,
)
from tests.conftest import smartaug, tiny_study_data


@pytest.mark.parametrize("d, decision", [
    ([0.020, 0.021, 0.019, 0.020, 0.020], "better"),
    ([-0.020, -0.021, -0.019, -0.020, -0.020], "worse"),
    ([0.001, -0.001, 0.0005, -0.0005, 0.0], "equivalent"),
    ([0.0020, 0.0021, 0.0019, 0.0020, 0.0020], "smaller-than-margin"),
    ([0.01, -0.01, 0.02, -0.015, 0.005], "undecided"),
    ([0.01], "undecided"),  # one seed: no interval
])
def test_each_decision_from_its_interval(d, decision):
    out = decide(d, 0.005)
    assert out["decision"] == decision and out["n_seeds"] == len(d)
    if len(d) > 1:
        lo, hi = out["ci"]
        assert lo <= np.mean(d) <= hi


def test_known_answers():
    # t interval of [1, 2, 3]: 2 +- t(0.975, 2) / sqrt(3), t(0.975, 2) = 4.302653
    lo, hi = t_interval([1, 2, 3])
    assert (lo, hi) == pytest.approx((2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)))
    # TOST of [1, 2, 3] at +-5: the upper test decides, t = -3 / (1 / sqrt 3); with 2 degrees
    # of freedom the t CDF is 1/2 + t / (2 sqrt(2 + t^2))
    t = -3 * math.sqrt(3)
    assert tost([1, 2, 3], 5) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)))
    assert tost([0.001, 0.001], 0.005) == 0.0 and tost([0.01, 0.01], 0.005) == 1.0
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.005, None]) == pytest.approx(
        [0.02, 0.04, 0.04, 0.02, None])
    # a constant non-zero shift is the strongest evidence there is, not "no test"
    p = paired({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.4, 1: 0.5, 2: 0.6})
    assert p["p_value"] == 0.0 and p["zero_variance"] and p["mean_diff"] == pytest.approx(0.1)
    assert paired({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})["p_value"] == 1.0


def test_max_t_is_the_exact_sign_flip_test_and_keeps_correlation():
    # 3 seeds: all 8 sign flips. A constant shift is beaten only by itself and its mirror.
    assert max_t([{0: 0.01, 1: 0.01, 2: 0.01}]) == [0.25]
    # a second, identical row changes nothing (perfectly correlated), where Bonferroni doubles
    assert max_t([{0: 0.01, 1: 0.01, 2: 0.01}] * 2) == [0.25, 0.25]
    rows = [{s: v for s, v in enumerate(r)} for r in np.random.default_rng(0).normal(
        0, 0.01, size=(6, 5))]
    adjusted = max_t(rows)  # 32 flips: each p a multiple of 1/32, at least 2/32 (+- itself)
    assert all(2 / 32 <= a <= 1 and (32 * a) == round(32 * a) for a in adjusted)
    # more seeds than flips allowed: sampled, reproducibly, from the seed given
    many = [{s: 0.01 * ((s % 3) - 1) + 0.003 for s in range(16)}]
    assert max_t(many, permutations=2000, seed=1) == max_t(many, permutations=2000, seed=1)


STUDY = """preset = "quick"
budgets = [0.25]
scores = ["avh"]
positions = ["easiest", "offset"]
coverage = []
seeds = 3
references = []
""" + tiny_study_data(12, 5) + """
[primary]
selector = "avh@offset"
pool = "seed"
budget = 0.25
margin = 0.005

[[secondary]]
selector = "avh@easiest"
pool = "seed"
budget = 0.25
margin = 0.01

[[pools]]
name = "seed"
[pools.augment]
policy = "one"
"""


@pytest.mark.slow
def test_a_study_with_declared_hypotheses_anyone_can_recompute(tmp_path, capsys, fashion_root):
    (tmp_path / "study.toml").write_text(STUDY.replace(
        'dataset = "imagefolder:images"\ngrayscale = true\nimage_size = 28\n'
        'per_class_train = 12', f'root = "{fashion_root}"\nper_class_train = 40'))
    code, out, err = smartaug(capsys, "study", "--config", str(tmp_path / "study.toml"),
                              "--storage", str(tmp_path / "lake"))
    assert code == 0, err
    report = json.loads((Path(out.split()[-1]) / "study.json").read_text())
    rows = report["leaderboard"]
    hyps = report["hypotheses"]
    assert [(h["role"], h["selector"]) for h in hyps] == [("primary", "avh@offset"),
                                                         ("secondary", "avh@easiest")]
    random = next(r for r in rows if r["selector"] == "random")
    rnd = {s["seed"]: s for s in random["seeds"]}
    for r in rows:  # every figure from the per-seed values alone
        for s in r["seeds"]:
            assert {"seed", "replicate", "test_acc", "val_acc"} <= set(s)
        if r["diff_vs_random"] is None:
            continue
        d = [s["test_acc"] - rnd[s["seed"]]["test_acc"] for s in r["seeds"]]
        assert r["diff_vs_random"] == pytest.approx(np.mean(d))
        assert r["diff_ci95"] == pytest.approx(list(sps.t.interval(
            0.95, len(d) - 1, loc=np.mean(d), scale=np.std(d, ddof=1) / math.sqrt(len(d))))
            if np.ptp(d) > 0 else [np.mean(d)] * 2)
        if np.ptp(d) > 0:
            assert r["p_value"] == pytest.approx(sps.ttest_rel(
                [s["test_acc"] for s in r["seeds"]],
                [rnd[s["seed"]]["test_acc"] for s in r["seeds"]]).pvalue)
    for h, level in zip(hyps, (0.975, 0.975), strict=True):  # alpha 0.05 shared by the two
        row = next(r for r in rows if (r["pool"], r["budget"], r["selector"])
                   == (h["pool"], h["budget"], h["selector"]))
        assert row["role"] == h["role"] and row["p_holm"] is None  # not exploratory
        d = [s["test_acc"] - rnd[s["seed"]]["test_acc"] for s in row["seeds"]]
        again = decide(d, h["margin"], level)
        assert h["n_seeds"] == 3 and h["diff"] == pytest.approx(np.mean(d))
        assert h["ci95"] == pytest.approx(again["ci"]) and h["decision"] == again["decision"]
        assert h["ci_level"] == pytest.approx(level) and h["alpha"] == pytest.approx(0.025)
        if np.ptp(d) > 0:  # its own comparison's p
            assert h["p_value"] == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue)
        assert h["unequal"] == [] and h["n_distinct_selector"] == h["n_distinct_against"]
        assert h["decision"] in ("better", "worse", "equivalent", "smaller-than-margin",
                                 "undecided")
        assert h["statement"] in report["verdict"] and f"{100 * h['margin']:.2g}" in h[
            "statement"]
    md = (Path(out.split()[-1]) / "study.md").read_text()
    assert "## Decisions: the hypotheses declared before the run" in md and "exploratory" in md
    assert "![paired_differences](plots/paired_differences.png)" in md
    assert "### What each arm cost (seconds on cpu" in md
    # read top-down: the decisions and their chart, then each selector against random, then
    # the summary; every full table folded below
    order = [md.index(x) for x in ("**Verdict.**", "## Decisions", "![decisions]",
                                   "![differences]", "## Summary", "<details>")]
    assert order == sorted(order)
    assert md.index("<details><summary>Full tables") < md.index("### seed pool, budget")
    assert (Path(out.split()[-1]) / "plots" / "decisions.png").stat().st_size > 1000
    assert (Path(out.split()[-1]) / "plots" / "differences.png").stat().st_size > 1000
    costs = {r["selector"]: r["cost"] for r in rows}
    assert costs["random"]["baseline_s"] == costs["random"]["scoring_s"] == 0  # only its own
    assert costs["avh@offset"]["baseline_s"] > 0 and costs["avh@offset"]["scoring_s"] > 0
    assert all(c["retraining_s"] > 0 and c["total_s"] == pytest.approx(sum(
        v for k, v in c.items() if k != "total_s")) for c in costs.values())
    assert (Path(out.split()[-1]) / "plots" / "paired_differences.png").stat().st_size > 1000
    for r in rows:  # distinct augmentations seen: a static selection's whole size
        assert r["n_distinct"] == (0 if r["selector"] == "none" else r["n_items"]), r
    assert "Family-wise error over these 2 declared hypotheses: at most 0.05" in md
    assert len({round(h["diff"], 9) for h in hyps} | {h["ci95"][0] for h in hyps}) > 1


@pytest.mark.parametrize("extra, words", [
    ("[primary]\nselector = 'avh@middle'\npool = 'seed'\nbudget = 0.25\nmargin = 0.005\n",
     "selector 'avh@middle' is not in the study's grid"),
    ("[primary]\nselector = 'avh@offset'\npool = 'wide'\nbudget = 0.25\nmargin = 0.005\n",
     "pool 'wide' is not in the study's grid"),
    ("[primary]\nselector = 'avh@offset'\npool = 'seed'\nbudget = 0.3\nmargin = 0.005\n",
     "budget 0.3 is not in the study's grid"),
    ("[primary]\nselector = 'avh@offset'\npool = 'seed'\nbudget = 0.25\nmargin = 0\n",
     "margin must be in (0, 1)"),
    ("[primary]\nselector = 'avh@offset'\npool = 'seed'\nbudget = 0.25\nmargin = -0.01\n",
     "margin must be in (0, 1)"),
    ("[primary]\nselector = 'random'\npool = 'seed'\nbudget = 0.25\nmargin = 0.01\n",
     "selector 'random' is not in the study's grid"),
])
def test_a_hypothesis_outside_the_grid_is_refused_before_any_training(tmp_path, capsys,
                                                                       extra, words):
    (tmp_path / "images").mkdir()
    text = STUDY.split("[primary]")[0] + extra + "[[pools]]\nname = 'seed'\n"
    (tmp_path / "study.toml").write_text(text)
    lake = tmp_path / "lake"
    code, _, err = smartaug(capsys, "study", "--config", str(tmp_path / "study.toml"),
                            "--storage", str(lake))
    assert code == 2 and words in " ".join(err.split()) and "Traceback" not in err, err
    assert not lake.exists() or not any((lake / "models").glob("model_id=*"))


def test_spending_levels_known_answers():
    from smartaug.core.stats import obf_boundaries, spending_levels

    assert spending_levels([5]) == pytest.approx([0.95])
    # gsDesign::gsDesign(k = 5, test.type = 2, alpha = 0.025, sfu = sfLDOF)$upper$bound
    assert obf_boundaries([5, 10, 15, 20, 25]) == pytest.approx(
        [4.8769, 3.3569, 2.6803, 2.2898, 2.0310], abs=2e-4)
    assert obf_boundaries([10, 20, 30]) == pytest.approx([3.7103, 2.5114, 1.9930], abs=2e-4)
    levels = spending_levels([10, 20])
    assert levels == pytest.approx([1 - 2 * sps.norm.sf(c) for c in obf_boundaries([10, 20])])
    assert levels[0] > levels[1] > 0.95  # an early look is stricter; the last spends the rest


@pytest.mark.slow
def test_seeds_are_added_until_decided_only_where_the_hypotheses_need_them(tmp_path, capsys,
                                                                          fashion_root):
    text = STUDY.replace('dataset = "imagefolder:images"\ngrayscale = true\nimage_size = 28\n'
                         'per_class_train = 12', f'root = "{fashion_root}"\nper_class_train = 40')
    text = text.replace("seeds = 3\n", "seeds = 2\nmax_seeds = 4\nseeds_per_round = 1\n")
    text = text.replace("margin = 0.005", "margin = 0.0001")  # too small to decide at 4 seeds
    text = text.split("[[secondary]]")[0] + "[[pools]]" + text.split("[[pools]]")[1]
    (tmp_path / "study.toml").write_text(text)
    code, out, err = smartaug(capsys, "study", "--config", str(tmp_path / "study.toml"),
                              "--storage", str(tmp_path / "lake"))
    assert code == 0, err
    report = json.loads((Path(out.split()[-1]) / "study.json").read_text())
    seeds = {r["selector"]: [s["seed"] for s in r["seeds"]] for r in report["leaderboard"]}
    assert seeds["avh@offset"] == seeds["random"] == [0, 1, 2, 3]  # the hypothesis' cells
    assert seeds["avh@easiest"] == [0, 1]  # exploratory: the study's seeds only
    (h,) = report["hypotheses"]
    assert h["n_seeds"] == 4 and h["looks"] == [2, 3, 4] and h["look"] == 3
    assert h["decision"] == "undecided" and h["why_seeds"] == "max_seeds (4) reached"
    assert "undecided at 2 seeds; adding seeds 2..2" in err
    assert "undecided at 3 seeds; adding seeds 3..3" in err
    again = smartaug(capsys, "study", "--config", str(tmp_path / "study.toml"), "--storage",
                     str(tmp_path / "lake"))
    assert again[0] == 0 and "nothing to do" in again[2]


@pytest.mark.parametrize("top, words", [
    ("max_seeds = 2\n", "max_seeds (2) must be >= seeds (3)"),
    ("seeds_per_round = 0\n", "seeds_per_round must be >= 1"),
])
def test_a_sequential_design_that_cannot_run_is_refused(tmp_path, capsys, top, words):
    (tmp_path / "images").mkdir()
    (tmp_path / "study.toml").write_text(top + STUDY)
    code, _, err = smartaug(capsys, "config", "check", str(tmp_path / "study.toml"))
    assert code == 2 and words in " ".join(err.split()) and "Traceback" not in err, err
    (tmp_path / "plain.toml").write_text("max_seeds = 10\n" + STUDY.split("[primary]")[0]
                                         + "[[pools]]\nname = 'seed'\n")
    code, _, err = smartaug(capsys, "config", "check", str(tmp_path / "plain.toml"))
    assert code == 2 and "declare a [primary]" in " ".join(err.split()), err


def test_two_level_known_answers():
    from smartaug.core.stats import decide_paired, detectable, two_level, units

    # one replicate: the paired t over the seeds, exactly
    d = {(0, 0): 0.01, (0, 1): 0.03, (0, 2): 0.02}
    one = two_level(d)
    assert one["ci"] == pytest.approx(t_interval([0.01, 0.03, 0.02]))
    assert one["p_value"] == pytest.approx(sps.ttest_1samp([0.01, 0.03, 0.02], 0).pvalue)
    assert one["n_replicates"] == 1 and one["n_seeds"] == 3 and one["sd_between"] is None
    # three replicates of two seeds: the units are the replicates' means (0.02, 0.0, 0.04),
    # the interval has 2 degrees of freedom: 0.02 +- 4.302653 * 0.02 / sqrt(3)
    d = {(0, 0): 0.01, (0, 1): 0.03, (1, 0): -0.01, (1, 1): 0.01, (2, 0): 0.03, (2, 1): 0.05}
    assert units(d) == pytest.approx({0: 0.02, 1: 0.0, 2: 0.04})
    tl = two_level(d)
    half = 4.302653 * 0.02 / math.sqrt(3)
    assert tl["diff"] == pytest.approx(0.02) and tl["ci"] == pytest.approx([0.02 - half,
                                                                           0.02 + half])
    assert tl["df"] == 2 and tl["n_seeds"] == 2 and tl["n_replicates"] == 3
    # variance components: within = sqrt(mean of the per-replicate variances) = sqrt(2e-4);
    # between = sqrt(var of the means - within^2 / 2) = sqrt(4e-4 - 1e-4)
    assert tl["sd_within"] == pytest.approx(math.sqrt(2e-4))
    assert tl["sd_between"] == pytest.approx(math.sqrt(3e-4))
    # a decision over replicates: 6 runs, but only 3 units; it is the replicates' interval
    dec = decide_paired(d, 0.005, [2])
    assert dec["ci"] == pytest.approx(tl["ci"]) and dec["decision"] == "undecided"
    assert dec["n_seeds"] == 2 and dec["n_replicates"] == 3
    # the smallest detectable difference: the noncentral t's, 2 df, sd 0.02 over 3 units
    # (a little above the central-t shortcut (t_0.975 + t_0.8) * sd / sqrt(3))
    d = detectable([0.02, 0.0, 0.04])
    crit = sps.t.ppf(0.975, 2)
    assert sps.nct.sf(crit, 2, d * math.sqrt(3) / 0.02) == pytest.approx(0.8, abs=1e-3)
    assert d > (crit + sps.t.ppf(0.8, 2)) * 0.02 / math.sqrt(3)
    assert dec["detectable"] == pytest.approx(detectable([0.02, 0.0, 0.04]))
    assert detectable([0.01]) is None and detectable([0.01, 0.01]) is None


@pytest.mark.slow
def test_replicated_baselines_are_analysed_over_replicates(tmp_path, capsys, fashion_root):
    """baselines = 2: two validation splits, baselines, pools and selections; the hypotheses
    over the replicates' means, recomputed from study.json alone."""
    text = STUDY.replace('dataset = "imagefolder:images"\ngrayscale = true\nimage_size = 28\n'
                         'per_class_train = 12', f'root = "{fashion_root}"\nper_class_train = 30')
    text = text.replace("seeds = 3\n", "seeds = 2\nbaselines = 2\nchoose_seeds = 1\n")
    (tmp_path / "study.toml").write_text(text)
    lake_dir = tmp_path / "lake"
    code, out, err = smartaug(capsys, "study", "--config", str(tmp_path / "study.toml"),
                              "--storage", str(lake_dir))
    assert code == 0, err
    report = json.loads((Path(out.split()[-1]) / "study.json").read_text())
    (pool,) = report["pools"].values()
    reps = pool["replicates"]
    assert [r["replicate"] for r in reps] == [0, 1]
    for key in ("dataset_id", "baseline_model_id", "pool_id", "scoring_run_id"):
        assert reps[0][key] != reps[1][key]  # each replicate its own
    assert len(report["baselines"]) == 2

    from smartaug.lake import Lake
    from smartaug.lake.readers import read_split

    lake = Lake(lake_dir)
    vals = [set(read_split(lake, r["dataset_id"], "val").sample_ids) for r in reps]
    trains = [set(read_split(lake, r["dataset_id"], "train").sample_ids) for r in reps]
    assert vals[0] != vals[1] and vals[0] | trains[0] == vals[1] | trains[1]  # another split
    rows = report["leaderboard"]
    random = next(r for r in rows if r["selector"] == "random")
    rnd = {(s["replicate"], s["seed"]): s["test_acc"] for s in random["seeds"]}
    for r in rows:
        assert {(s["replicate"], s["seed"]) for s in r["seeds"]} == {(0, 0), (0, 1), (1, 0),
                                                                     (1, 1)}
    for h in report["hypotheses"]:
        row = next(r for r in rows if (r["pool"], r["budget"], r["selector"])
                   == (h["pool"], h["budget"], h["selector"]))
        means = [np.mean([s["test_acc"] - rnd[(b, s["seed"])] for s in row["seeds"]
                          if s["replicate"] == b]) for b in (0, 1)]
        assert h["n_replicates"] == 2 and h["n_seeds"] == 2
        assert h["diff"] == pytest.approx(np.mean(means))
        assert h["ci_level"] == pytest.approx(0.975)  # a primary and a secondary share 0.05
        if np.ptp(means) > 0:  # 1 degree of freedom: the replicates' interval
            assert h["ci95"] == pytest.approx(list(sps.t.interval(
                0.975, 1, loc=np.mean(means), scale=np.std(means, ddof=1) / math.sqrt(2))))
        assert h["decision"] == decide(means, h["margin"], 0.975)["decision"]
        assert "in each of 2 replicates" in h["statement"]
    # SCORE@val is chosen per replicate, on that replicate's choosing trainings
    assert sorted((c["replicate"], c["score"]) for c in report["chosen_positions"]) == [
        (0, "avh"), (1, "avh")]


def test_zero_baselines_are_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    for bad, words in (("baselines = 0\n", "baselines must be an integer >= 1, got 0"),
                       ("choose_seeds = -1\n", "choose_seeds must be an integer >= 0")):
        (tmp_path / "study.toml").write_text(bad + STUDY)
        lake = tmp_path / "lake"
        code, _, err = smartaug(capsys, "study", "--config", str(tmp_path / "study.toml"),
                                "--storage", str(lake))
        assert code == 2 and words in " ".join(err.split()) and "Traceback" not in err, err
        assert not lake.exists() or not any((lake / "models").glob("model_id=*"))
