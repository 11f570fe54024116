"""Fair arms and right numbers: every declared hypothesis of every committed study recomputed
from study.json alone, each against what it names; exact group-sequential boundaries and a
family-wise error of alpha; the exact noncentral-t detectable difference; distinct
augmentations counted and unequal comparisons flagged; a study's plan before any training."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as sps

from smartaug.config import Arm, Hypothesis, PoolSpec, StudyConfig, TrainConfig, sequential_looks
from smartaug.core.stats import (
    detectable_for,
    family_alphas,
    obf_boundaries,
    planned,
    power_t,
    sampling_se,
    spending_levels,
)
from smartaug.steps.study_report import hypotheses, reanalyse, rewrite_study_report, unequal
from tests.conftest import smartaug, tiny_study_data, write_image_folder

DOCS = Path(__file__).resolve().parents[1] / "docs" / "results"
COMMITTED = sorted(p.parent for p in DOCS.rglob("study.json")
                   if json.loads(p.read_text()).get("hypotheses"))


# ------------------------------------------------------------------ boundaries and power


def test_the_exact_boundaries_spend_alpha_as_declared_by_simulation():
    """Brownian paths of the score at 6 equal looks: the chance of crossing any boundary is
    alpha, and each look's crossing is what its spending function spends there (within
    Monte Carlo error, 400 000 paths: standard error 0.00035)."""
    looks = [5, 10, 15, 20, 25, 30]
    c = np.asarray(obf_boundaries(looks))
    rng = np.random.default_rng(0)
    t = np.asarray(looks) / looks[-1]
    steps = rng.standard_normal((400_000, len(looks))) * np.sqrt(np.diff(t, prepend=0.0))
    z = np.cumsum(steps, axis=1) / np.sqrt(t)
    crossed = np.abs(z) >= c
    first = np.where(crossed.any(1), crossed.argmax(1), -1)
    assert (first >= 0).mean() == pytest.approx(0.05, abs=0.0015)
    side = 2 - 2 * sps.norm.cdf(sps.norm.isf(0.0125) / np.sqrt(t))  # gsDesign's sfLDOF
    spent = np.diff(2 * side, prepend=0.0)
    for k in range(len(looks)):
        assert (first == k).mean() == pytest.approx(spent[k], abs=0.0012)
    # a union bound's levels (each look at 1 - its spend) are looser than the exact ones
    assert spending_levels(looks)[-1] < 1 - spent[-1]


def test_bad_looks_are_refused():
    for looks in ([], [10, 5], [0, 5], [5, 5]):
        with pytest.raises(ValueError, match="increasing positive"):
            obf_boundaries(looks)


@pytest.mark.parametrize("n, level", [(3, 0.95), (5, 0.95), (5, 0.9993), (20, 0.9753)])
def test_detectable_is_the_exact_noncentral_t_and_holds_in_simulation(n, level):
    d = detectable_for(0.01, n, level)
    assert power_t(d, 0.01, n, level) == pytest.approx(0.8, abs=1e-6)
    # a t test at that level on n normal units of sd 1 point finds it 80 % of the time
    rng = np.random.default_rng(1)
    x = rng.normal(d, 0.01, (200_000, n))
    t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))
    assert (np.abs(t) > sps.t.ppf((1 + level) / 2, n - 1)).mean() == pytest.approx(0.8,
                                                                                   abs=0.004)
    normal = (sps.t.ppf((1 + level) / 2, n - 1) + sps.t.ppf(0.8, n - 1)) * 0.01 / math.sqrt(n)
    assert d > 0.99 * normal  # the normal shortcut was optimistic, never by much at 95 %
    assert detectable_for(None, n) is None and detectable_for(0.01, 1) is None


def test_planned_detectable_from_variance_components():
    # one replicate: the seeds' spread alone; several: the replicates' means
    assert planned(0.01, None, 10, 1) == pytest.approx(detectable_for(0.01, 10))
    unit = math.sqrt(0.004 ** 2 + 0.01 ** 2 / 10)
    assert planned(0.01, 0.004, 10, 5) == pytest.approx(detectable_for(unit, 5))
    assert planned(0.01, 0.004, 20, 5) < planned(0.01, 0.004, 10, 5)


def test_the_family_shares_alpha():
    assert family_alphas(0) == (0.05, None)
    for k in (1, 2, 3, 7):
        primary, each = family_alphas(k)
        assert primary + k * each == pytest.approx(0.05)


def test_the_test_sets_own_error():
    assert sampling_se(0.5, 0.5, 2000) == pytest.approx(math.sqrt(0.5 / 2000))
    assert sampling_se(0.86, 0.86, 10_000) < 0.005 < sampling_se(0.52, 0.53, 2000)
    assert sampling_se(0.5, 0.5, None) is None


# ------------------------------------------------------------------ hypotheses


def _study(seeds, primary, *secondary) -> StudyConfig:
    """A study whose grid has the rows these tests compare: pool p at budget 0.5, two arms
    a and b beside random, and all."""
    return StudyConfig(seeds=seeds, pools=(PoolSpec("p"),), budgets=(0.5,),
                       arms=(Arm("a", policy="uniform"), Arm("b", policy="uniform")),
                       primary=primary, secondary=secondary)


def _row(selector, accs, **counts):
    return {"pool": "p", "budget": 0.5, "selector": selector, "loss": "ce",
            "role": "exploratory", "test_acc_mean": float(np.mean(accs)),
            "seeds": [{"seed": i, "replicate": 0, "test_acc": a} for i, a in enumerate(accs)],
            **{"n_distinct": 100, "items_seen": 500, "backward_passes": 1000,
               "gradient_steps": 20, **counts}}


def test_a_hypothesis_against_another_arm_has_its_own_p_and_interval():
    rng = np.random.default_rng(3)
    base = rng.normal(0.8, 0.01, 8)
    rows = [_row("random", base - 0.03), _row("b", base + rng.normal(0, 0.002, 8)),
            _row("a", base + 0.004 + rng.normal(0, 0.002, 8), n_distinct=160)]
    cfg = _study(8, Hypothesis("a", "p", 0.5, 0.005, against="b"),
                 Hypothesis("a", "p", 0.5, 0.005))
    h, s = hypotheses(cfg, rows, n_test=2000)
    a, b, rnd = ([x["test_acc"] for x in r["seeds"]] for r in (rows[2], rows[1], rows[0]))
    assert h["p_value"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert s["p_value"] == pytest.approx(sps.ttest_rel(a, rnd).pvalue)
    assert h["p_value"] > 1e-6 > s["p_value"]  # not random's p
    d = np.subtract(a, b)
    assert h["ci95"] == pytest.approx(list(sps.t.interval(
        0.975, 7, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(8))))
    assert (h["alpha"], s["alpha"]) == (0.025, 0.025)
    assert h["unequal"] == ["n_distinct 160 vs 100"] and "not equal in data" in h["statement"]
    assert s["unequal"] == ["n_distinct 160 vs 100"]
    assert h["test_set_se"] == pytest.approx(sampling_se(np.mean(a), np.mean(b), 2000))
    assert rows[2]["role"] == "secondary"  # the row against random carries the secondary


def test_a_hypothesis_against_all_at_a_budget_pairs_with_the_whole_pool():
    """``all`` trains on the whole pool (its row at budget 1.0): a selection at 0.5 declared
    against it is paired with that row, not refused after the run."""
    rng = np.random.default_rng(4)
    base = rng.normal(0.8, 0.01, 6)
    whole = {**_row("all", base + 0.01, n_distinct=200), "budget": 1.0}
    rows = [_row("random", base), _row("a", base + 0.002), whole]
    (h,) = hypotheses(_study(6, Hypothesis("a", "p", 0.5, 0.005, against="all")), rows)
    assert h["against_budget"] == 1.0 and h["diff"] == pytest.approx(-0.008)
    assert h["unequal"] == ["n_distinct 100 vs 200"]


def test_unequal_names_each_count_that_differs():
    a, b = _row("a", [0.5]), _row("b", [0.5], items_seen=400, gradient_steps=None)
    assert unequal(a, b) == ["items_seen 500 vs 400"]  # an unrecorded count is not compared
    assert unequal(a, a) == []


# ------------------------------------------------------------------ the committed studies


def _units(d: dict) -> list[float]:
    reps = sorted({r for r, _ in d})
    if len(reps) == 1:
        return [d[k] for k in sorted(d)]
    return [float(np.mean([v for (r, _), v in d.items() if r == q])) for q in reps]


def _detectable(u, level):
    sd, n = float(np.std(u, ddof=1)), len(u)
    crit = sps.t.ppf((1 + level) / 2, n - 1)

    def power(x):
        nc = x * math.sqrt(n) / sd
        far = sps.nct.cdf(-crit, n - 1, nc)  # negligible; scipy gives NaN deep in the tail
        return sps.nct.sf(crit, n - 1, nc) + (0.0 if np.isnan(far) else far) - 0.8

    return optimize.brentq(power, 1e-9, 50 * sd)


def test_there_are_committed_studies_with_hypotheses():
    assert len(COMMITTED) >= 8 and sum(len(json.loads((d / "study.json").read_text())[
        "hypotheses"]) for d in COMMITTED) >= 20


@pytest.mark.parametrize("where", COMMITTED, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_declared_number_recomputes_from_study_json(where):
    """Independently of the report's code: each hypothesis' difference to what it names, its
    interval at the level its look and its share of alpha give, its own p, the equivalence
    p, the decision, the detectable difference and Holm among the secondaries."""
    r = json.loads((where / "study.json").read_text())
    cfg = r["config"]
    looks = sequential_looks(cfg["seeds"], cfg.get("max_seeds"), cfg.get("seeds_per_round"))
    k = len(cfg.get("secondary") or [])
    rows = {(x["pool"], x["budget"], x["selector"], x["loss"]): x for x in r["leaderboard"]}
    secondary_p = []
    for h in r["hypotheses"]:
        a = rows[(h["pool"], h["budget"], h["selector"], h["loss"])]
        b = rows[(h["pool"], h.get("against_budget", h["budget"]), h.get("against", "random"),
                  h["loss"])]
        other = {(s["replicate"], s["seed"]): s["test_acc"] for s in b["seeds"]}
        d = {(s["replicate"], s["seed"]): s["test_acc"] - other[(s["replicate"], s["seed"])]
             for s in a["seeds"] if (s["replicate"], s["seed"]) in other}
        u = _units(d)
        alpha = 0.05 if not k else (0.025 if h["role"] == "primary" else 0.025 / k)
        per = min(sum(1 for q, _ in d if q == rep) for rep in {q for q, _ in d})
        look = max(i for i, n in enumerate(looks) if n <= per)
        level = spending_levels(looks, alpha)[look]
        assert h["alpha"] == pytest.approx(alpha) and h["look"] == look + 1
        assert h["ci_level"] == pytest.approx(level, abs=1e-9)
        assert h["diff"] == pytest.approx(np.mean(u), abs=1e-12)
        ci = sps.t.interval(level, len(u) - 1, loc=np.mean(u),
                            scale=np.std(u, ddof=1) / math.sqrt(len(u)))
        assert h["ci95"] == pytest.approx(list(ci), abs=1e-9)
        assert h["p_value"] == pytest.approx(sps.ttest_1samp(u, 0.0).pvalue, rel=1e-6)
        se = np.std(u, ddof=1) / math.sqrt(len(u))
        tost = max(sps.t.sf((np.mean(u) + h["margin"]) / se, len(u) - 1),
                   sps.t.cdf((np.mean(u) - h["margin"]) / se, len(u) - 1))
        assert h["p_equivalence"] == pytest.approx(tost, rel=1e-6, abs=1e-12)
        lo, hi, m = *ci, h["margin"]
        decision = ("better" if lo > m else "worse" if hi < -m else
                    ("equivalent" if lo <= 0 <= hi else "smaller-than-margin")
                    if -m < lo and hi < m else "undecided")
        assert h["decision"] == decision
        assert h["detectable"] == pytest.approx(_detectable(u, level), rel=1e-6)
        for j in range(look):  # it stopped at its first decisive look: each earlier undecided
            early = _units({q: v for q, v in d.items() if q[1] < cfg["seed"] + looks[j]})
            lv = spending_levels(looks, alpha)[j]
            lo_j, hi_j = sps.t.interval(lv, len(early) - 1, loc=np.mean(early),
                                        scale=np.std(early, ddof=1) / math.sqrt(len(early)))
            assert lo_j <= h["margin"] and hi_j >= -h["margin"]  # neither better nor worse
            assert not (-h["margin"] < lo_j and hi_j < h["margin"])  # nor inside the margin
        assert h["unequal"] == [f"{c} {a[c]} vs {b[c]}" for c in (
            "n_distinct", "items_seen", "backward_passes", "gradient_steps")
            if a.get(c) is not None and b.get(c) is not None and a[c] != b[c]]
        if h["role"] == "secondary":
            secondary_p.append((h["p_value"], h["p_holm_secondary"]))
    ps = sorted(secondary_p)
    for i, (_, holm) in enumerate(ps):  # Holm's step-down, recomputed
        assert holm == pytest.approx(min(1.0, max((len(ps) - j) * q for j, (q, _h) in
                                                  enumerate(ps[: i + 1]))))
    # the committed report is what this version's code makes of it (floats to 1e-6: the
    # boundaries' integration and the root finding may round otherwise on another CPU)
    again = reanalyse(r)
    for h0, h1 in zip(r["hypotheses"], again["hypotheses"], strict=True):
        _same(h0, json.loads(json.dumps(h1, default=str)))


def _same(a, b):
    """``a`` equals ``b``, floats to 1e-6 relative (1e-12 absolute), anything else exactly."""
    if isinstance(a, float) or isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-12)
    elif isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    else:
        assert a == b


def test_a_committed_report_is_rewritten_in_place_and_unchanged_when_current(tmp_path):
    src = DOCS / "curriculum-cifar10"
    out = shutil.copytree(src, tmp_path / "study")
    rewrite_study_report(out)
    _same(json.loads((src / "study.json").read_text())["hypotheses"],
          json.loads((out / "study.json").read_text())["hypotheses"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left
    assert (out / "study.toml").read_bytes() == (src / "study.toml").read_bytes()  # kept
    md = (out / "study.md").read_text()
    assert "easy-to-hard vs random-order" in md and "Family-wise error" in md
    assert (out / "plots" / "paired_differences.png").stat().st_size > 1000


def test_a_report_without_per_seed_values_cannot_be_recomputed(tmp_path, capsys):
    out = shutil.copytree(DOCS / "study-fashion-mnist", tmp_path / "old")
    code, _, err = smartaug(capsys, "study-report", str(out))
    assert code == 2 and "predates per-seed records" in err
    code, _, err = smartaug(capsys, "study-report", str(tmp_path / "nowhere"))
    assert code == 2 and "no study.json" in err
    for text in ("{not json", '{"config": {}}', "[1, 2]"):  # corrupt or not a report
        bad = tmp_path / "bad"
        bad.mkdir(exist_ok=True)
        (bad / "study.json").write_text(text)
        code, _, err = smartaug(capsys, "study-report", str(bad))
        assert code == 2 and "not a study report" in err and "Traceback" not in err, err
        assert sorted(p.name for p in bad.iterdir()) == ["study.json"]  # nothing written
        assert (bad / "study.json").read_text() == text


# ------------------------------------------------------------------ distinct augmentations


def _train(**kw):
    from smartaug.core.train import build_model, train

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 3, 60)
    model = build_model("lenet5", 3, 1, 28, seed=0)
    cfg = TrainConfig(epochs=3, batch_size=16, device="cpu", **kw.pop("cfg", {}))
    return train(model, x, y, cfg, log=None, **kw)


def test_distinct_augmentations_are_counted_by_the_training():
    static = _train(n_originals=20)  # 20 originals, 40 augmentations repeated every epoch
    assert [h["distinct"] for h in static] == [40, 40, 40]
    assert sum(h["augmented"] for h in static) == 120

    class Growing:  # a curriculum: epoch e trains on the originals and the first 10 e items
        needs_losses = False

        def plan(self, epoch, model):
            from smartaug.core.curriculum import Plan

            return Plan(np.concatenate([np.arange(20), 20 + np.arange(10 * epoch)]))

    grown = _train(n_originals=20, curriculum=Growing())
    assert [h["distinct"] for h in grown] == [10, 20, 30]
    online = _train(cfg={"augment": "online", "policy": "space:rotate", "augmentations": 30})
    assert [h["distinct"] for h in online] == [30, 60, 90]  # fresh draws, every epoch


def test_stacked_trainings_count_their_own_distinct_augmentations():
    from smartaug.core.stacked import train_stacked
    from smartaug.core.train import build_model

    rng = np.random.default_rng(0)
    data = [(rng.integers(0, 256, (50, 28, 28, 1), dtype=np.uint8), rng.integers(0, 3, 50))
            for _ in range(2)]
    models = [build_model("lenet5", 3, 1, 28, seed=s) for s in (0, 1)]
    cfgs = [TrainConfig(epochs=2, batch_size=16, device="cpu", seed=s) for s in (0, 1)]
    hists = train_stacked(models, data, cfgs, log=None, n_originals=20)
    assert [[h["distinct"] for h in hist] for hist in hists] == [[30, 30], [30, 30]]


# ------------------------------------------------------------------ the plan


PLAN_STUDY = """
budgets = [0.2]
scores = ["avh"]
positions = ["offset"]
coverage = []
seeds = 3
max_seeds = 9
seeds_per_round = 3
{data}

[primary]
selector = "avh@offset"
pool = "seed"
budget = 0.2
margin = 0.01
sd_prior = 0.008

[[secondary]]
selector = "avh@offset"
against = "all"
pool = "seed"
budget = 0.2
margin = 0.01

[[pools]]
name = "seed"
[pools.augment]
policy = "one"
"""


def test_a_plan_answers_before_any_training_and_writes_no_lake(tmp_path, capsys,
                                                               monkeypatch):
    write_image_folder(tmp_path / "images", per_class=(12, 4))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.toml").write_text(PLAN_STUDY.format(data=tiny_study_data(12, 4)))
    code, out, err = smartaug(capsys, "study", "--config", "study.toml", "--plan",
                              "--storage", str(tmp_path / "lake"))
    assert code == 0, err
    assert not (tmp_path / "lake").exists() and not (tmp_path / "storage").exists()
    plan = json.loads(out.splitlines()[-1])
    n_train = plan["n_train"]
    assert plan["pool_sizes"] == {"seed": n_train}
    # random, avh@offset at one budget, all and none, 3 seeds each; then 6 more seeds of
    # each arm the hypotheses pair (avh@offset, random, and all on the whole pool)
    assert plan["cells_first_look"] == 4 * 3 and plan["trainings_first_look"] == 13
    assert plan["trainings_at_most"] == 13 + 3 * 6
    assert plan["seconds_first_look"] > 0 and plan["seconds_at_most"] > plan[
        "seconds_first_look"]
    primary, secondary = plan["hypotheses"]
    assert primary["alpha"] == secondary["alpha"] == 0.025
    assert primary["levels"] == pytest.approx(spending_levels([3, 6, 9], 0.025))
    assert primary["detectable"] == pytest.approx(
        [planned(0.008, None, n, 1, lv) for n, lv in zip([3, 6, 9], primary["levels"], strict=True)])
    assert primary["detectable"][0] > primary["detectable"][-1]
    assert secondary["detectable"] == [None] * 3 and "no prior spread" in err
    assert "look 3 (9 seeds" in err
    code, _, err = smartaug(capsys, "study", "--config", "study.toml", "--plan", "--pilot",
                            str(tmp_path / "nothing"))
    assert code == 2 and "no study.json" in err
    code, _, err = smartaug(capsys, "study", "--config", "study.toml", "--pilot",
                            str(DOCS / "curriculum-cifar10"))
    assert code == 2 and "--pilot goes with --plan" in err
    (tmp_path / "pilot.json").write_text("{broken")
    code, _, err = smartaug(capsys, "study", "--config", "study.toml", "--plan", "--pilot",
                            "pilot.json")
    assert code == 2 and "is not JSON" in err and "Traceback" not in err
    assert not (tmp_path / "storage").exists()


def test_a_plan_takes_its_spread_from_a_pilot_report(tmp_path, capsys, monkeypatch):
    write_image_folder(tmp_path / "images", per_class=(12, 4))
    monkeypatch.chdir(tmp_path)
    text = PLAN_STUDY.format(data=tiny_study_data(12, 4)).replace("sd_prior = 0.008\n", "")
    (tmp_path / "study.toml").write_text(text)
    pilot = DOCS / "study-cifar10-decided"
    code, out, err = smartaug(capsys, "study", "--config", "study.toml", "--plan", "--pilot",
                              str(pilot))
    assert code == 0, err
    primary = json.loads(out.splitlines()[-1])["hypotheses"][0]
    want = json.loads((pilot / "study.json").read_text())["hypotheses"][0]["sd_within"]
    assert primary["sd_within"] == pytest.approx(want) and primary["spread_from"] == \
        "pilot hypothesis"


def test_meaningless_numbers_are_said_in_words():
    """A training at chance, an interval of zero width and a design that can detect nothing
    each say so in one line instead of printing a number that means nothing."""
    from smartaug.steps.report import accuracy_cells, at_chance
    from smartaug.steps.study_report import statement, study_verdict

    assert accuracy_cells(1 / 3, 0.0, [1 / 3, 1 / 3], 3) == ("33.33 on every seed",
                                                             "none: no spread")
    assert accuracy_cells(0.5, 0.01, [0.49, 0.51], 3) == ("50.00 ± 1.00", "[49.00, 51.00]")
    line = at_chance([1 / 3, 0.34, 0.30], 3)
    assert line.startswith("Every training is at chance level (at most 34.0 % accurate, "
                           "chance 33.3 %)")
    assert at_chance([0.34, 0.9], 3) is None and at_chance([], 3) is None
    h = {"role": "primary", "selector": "a", "against": "random", "pool": "p", "budget": 0.5,
         "margin": 0.005, "n_seeds": 2, "ci95": [-0.3, 0.4], "ci_level": 0.95, "looks": [2],
         "decision": "undecided", "detectable": 11.0, "power": 0.8}
    text = statement(h)
    assert "cannot detect any difference accuracy can show" in text and "1.1e" not in text
    assert "more than 100" not in text
    rows = [{"p_value": 0.5, "role": "exploratory", "significant": False,
             "diff_vs_random": 0.01, "detectable": 3.0}]
    assert "cannot detect any difference accuracy can show" in study_verdict(rows, 2)
