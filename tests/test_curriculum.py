"""Curricula inside one training: pacing with known answers, the budget rule, orderings that
keep the class mix, the in-memory window equal to the SQL one, InfoBatch's rule, the counts a
training records, re-scorings linked to their training, and the study arms end to end."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from smartaug.config import Arm
from smartaug.core import curriculum as C
from smartaug.core.scoring import score_arrays, score_batches
from smartaug.core.train import TrainConfig, build_model, train
from smartaug.errors import ConfigError
from tests.conftest import smartaug, tiny_study_data, write_image_folder


def test_pacing_functions_give_their_known_values():
    assert C.pacing("linear", 5, start=0.2).tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert C.pacing("step", 5, start=0.5, step=2).tolist() == [0.5, 0.5, 1.0, 1.0, 1.0]
    assert C.pacing("exponential", 5, start=0.25, growth=2.0).tolist() == [
        0.25, 0.5, 1.0, 1.0, 1.0]
    assert C.pacing("exponential", 6, start=0.1, growth=3.0, step=2).tolist() == pytest.approx(
        [0.1, 0.1, 0.3, 0.3, 0.9, 0.9])
    assert C.pacing("linear", 1, start=0.3).tolist() == [1.0]


@pytest.mark.parametrize("name,kw", [("linear", {"start": 0.2}), ("linear", {"start": 1.0}),
                                     ("step", {"start": 0.5, "step": 2}),
                                     ("exponential", {"start": 0.25, "growth": 2.0}),
                                     ("exponential", {"start": 0.1, "growth": 1.5, "step": 2})])
@pytest.mark.parametrize("epochs,n,pool", [(5, 100, 1000), (7, 333, 1000), (3, 1, 10),
                                           (10, 250, 600)])
def test_a_schedule_shows_exactly_the_static_selectors_items(name, kw, epochs, n, pool):
    try:
        sizes = C.pacing_sizes(name, epochs, n, pool, **kw)
    except ConfigError as e:  # only when the pacing's last epoch would outgrow the pool
        g = C.pacing(name, epochs, **kw)
        assert epochs * n * g.max() / g.sum() > pool and "never reaches the budget" in str(e)
        return
    assert int(sizes.sum()) == epochs * n  # budget-honest: E * round(b * |P|), exactly
    assert sizes.max() <= pool and (np.diff(sizes) >= 0).all()  # growing pacings grow


def test_a_pacing_that_cannot_spend_the_budget_says_when_it_could():
    with pytest.raises(ConfigError, match=r"never reaches the budget.*117%.*at most 0\.6 or a "
                                          r"start of at least 0\.4"):
        C.pacing_sizes("linear", 5, 700, 1000, start=0.2)
    arm = Arm(name="c", source="schedule", pacing="linear", start=0.2)
    with pytest.raises(ConfigError, match="never reaches budget 0.7.*budgets up to 0.6"):
        arm.check_budget(0.7, 5)
    arm.check_budget(0.6, 5)  # exactly fits


def test_orders_rank_by_hardness_keep_the_class_mix_and_put_undefined_last():
    scores = np.array([0.3, np.nan, 0.1, 0.9, 0.5, 0.2])
    labels = np.zeros(6, int)
    assert C.rank(scores, labels, direction=1, per_class=False).tolist() == [2, 5, 0, 4, 3, 1]
    assert C.rank(scores, labels, direction=1, per_class=False,
                  order="hard-to-easy").tolist() == [3, 4, 0, 5, 2, 1]
    # a lower-is-harder score (confidence) reverses the hardness order
    assert C.rank(scores, labels, direction=-1, per_class=False).tolist()[:2] == [3, 4]
    r1 = C.rank(scores, labels, direction=1, per_class=False, order="random-order", seed=1)
    assert sorted(r1) == list(range(6)) and (r1 == C.rank(
        scores, labels, direction=1, per_class=False, order="random-order", seed=1)).all()
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [30, 60, 90])
    order = C.rank(rng.random(180), labels, direction=1, per_class=True)
    for k in (6, 60, 120):  # every prefix of a per-class order keeps the 1:2:3 mix
        assert np.bincount(labels[order[:k]]).tolist() == [k // 6, k // 3, k // 2]
    with pytest.raises(ConfigError, match="unknown order"):
        C.rank(scores, labels[:6], direction=1, per_class=False, order="sideways")


@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("lo", [0.0, 0.02, 0.5, 1.0])
def test_the_in_memory_window_is_the_sql_window(small_lake, per_class, lo):
    from smartaug.steps import select as S

    lake, run = small_lake["lake"], small_lake["run_id"]
    t = lake.read("scores", run, columns=["item_id", "label", "avh"])
    n = 37
    rows = C.window_rows(t["avh"].to_numpy(zero_copy_only=False), t["label"].to_numpy(), n,
                         direction=1, lo=lo, per_class=per_class)
    mine = sorted(t["item_id"].to_numpy(zero_copy_only=False)[rows].tolist())
    sql = S.read_selection(lake, S.window(lake, run, n, score="avh", lo=lo,
                                          per_class=per_class))["aug_id"].to_pylist()
    assert len(mine) == n and mine == sorted(sql)


def test_infobatch_prunes_a_share_of_the_well_learned_and_rescales_the_rest():
    ib = C.InfoBatch(10_000, 8, prune=0.5, anneal=0.25, seed=0)
    first = ib.plan(1, None)  # nothing known yet: everything, unscaled
    assert len(first.rows) == 10_000 and first.weights is None
    loss = np.random.default_rng(1).exponential(1.0, 10_000)
    ib.observe(np.arange(10_000), loss)
    p = ib.plan(2, None)
    well = loss < loss.mean()
    kept_well = well[p.rows]
    assert not np.isin(np.flatnonzero(~well), p.rows, invert=True).any()  # hard ones all kept
    share = 1 - kept_well.sum() / well.sum()
    assert 0.47 < share < 0.53  # about prune of the well-learned left out
    assert np.allclose(p.weights[kept_well], 2.0) and np.allclose(p.weights[~kept_well], 1.0)
    assert len(ib.plan(6, None).rows) < 10_000  # 8 - ceil(0.25 * 8) = 6: still pruning
    last = ib.plan(7, None)  # the annealing epochs: everything, unscaled
    assert len(last.rows) == 10_000 and last.weights is None
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match=r"prune must be in \[0, 1\)"):
            C.InfoBatch(10, 2, prune=bad, anneal=0.1, seed=0)


def _data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = (rng.integers(0, 60, (n, 28, 28, 1)) + 19 * y[:, None, None, None]).astype(np.uint8)
    return x, y


def test_a_scheduled_training_counts_what_it_saw_and_is_reproducible():
    x, y = _data()
    n_orig, pool = 120, 120  # the first half are "originals", the rest the pool
    sizes = C.pacing_sizes("linear", 4, 48, pool, start=0.2)
    cfg = TrainConfig(epochs=4, batch_size=32, device="cpu", seed=3)

    def run():
        order = C.rank(np.arange(pool, dtype=float), y[n_orig:], direction=1, per_class=False)
        model = build_model("lenet5", 10, 1, 28, seed=0)
        hist = train(model, x, y, cfg, log=None, n_originals=n_orig,
                     curriculum=C.Schedule(n_orig, order, sizes))
        return model, hist

    (m1, h1), (m2, h2) = run(), run()
    assert h1 == [{**h, "seconds": a["seconds"], "plan_seconds": a["plan_seconds"]}
                  for h, a in zip(h2, h1, strict=True)]
    assert [h["augmented"] for h in h1] == sizes.tolist()  # the first sizes[e] of the order
    assert sum(h["augmented"] for h in h1) == 4 * 48
    assert [h["samples"] for h in h1] == [n_orig + s for s in sizes]
    assert [h["steps"] for h in h1] == [-(-(n_orig + s) // 32) for s in sizes]
    assert all((a == b).all() for a, b in zip(m1.state_dict().values(),
                                              m2.state_dict().values(), strict=True))


def test_self_paced_rescores_with_the_model_being_trained_every_r_epochs():
    x, y = _data()
    n_orig = 120
    calls = []

    def rescore(model, epoch):
        calls.append((epoch, model.training))
        return score_arrays(model, x[n_orig:], y[n_orig:])["avh"]

    model = build_model("lenet5", 10, 1, 28, seed=0)
    sp = C.SelfPaced(n_orig, np.zeros(120), y[n_orig:], 30, every=2, direction=1, lo=0.0,
                     per_class=True, rescore=rescore)
    hist = train(model, x, y, TrainConfig(epochs=5, batch_size=32, device="cpu"), log=None,
                 curriculum=sp, n_originals=n_orig)
    assert [e for e, _ in calls] == [3, 5] and all(training for _, training in calls)
    assert [h["augmented"] for h in hist] == [30] * 5
    with pytest.raises(ConfigError, match="every .* must be >= 1"):
        C.SelfPaced(1, np.zeros(2), np.zeros(2), 1, every=0, direction=1, lo=0.0,
                    per_class=False, rescore=rescore)


def test_in_process_scoring_gives_the_scoring_steps_scores():
    """score_arrays (a folded, NHWC copy) against score_batches on the model as it is."""
    x, y = _data(300)
    model = build_model("lenet5", 10, 1, 28, seed=0)
    train(model, x, y, TrainConfig(epochs=1, batch_size=32, device="cpu"), log=None)
    model.train()
    fast = score_arrays(model, x, y, batch_size=128)
    assert model.training  # the model being trained is left as it was
    model.eval()
    plain = next(score_batches(model, iter([(np.arange(300), y, x)]), device=model.head.weight
                               .device, image_shape=(28, 28, 1)))
    for k in ("avh", "loss", "confidence", "margin"):
        assert np.allclose(fast[k], plain[k], rtol=1e-4, atol=1e-5), k
    assert (fast["pred"] == plain["pred"]).mean() > 0.99


ARMS = """
[[arms]]
name = "curriculum"
source = "schedule"
order = "easy-to-hard"      # hard-to-easy, random-order
pacing = "linear"           # step, exponential
start = 0.2
score = "avh"
[[arms]]
name = "self-paced"
source = "self-paced"
every = 1                   # re-score every R epochs
score = "avh"
position = "easiest"
[[arms]]
name = "infobatch"
source = "infobatch"
prune = 0.5
anneal = 0.125
[[arms]]
name = "curriculum-data"    # static random, as many distinct augmentations as curriculum
source = "matched"
matches = "curriculum"
[[arms]]
name = "repeated"           # the originals again: equal images and steps, no augmentation
policy = "identity"
"""

SECONDARY = ('secondary = [{selector = "infobatch", against = "all", pool = "seed", '
             'budget = 1.0, margin = 0.01}]\n')
STUDY = """preset = "quick"
budgets = [0.5]
scores = ["avh"]
positions = ["offset"]
coverage = []
references = ["none", "all"]
seeds = 2
pools = [{name = "seed", augment = {policy = "k:2"}}]
""" + SECONDARY + tiny_study_data(24, 6, epochs=3) + ARMS


@pytest.mark.slow
def test_a_study_with_curriculum_arms_counts_items_and_links_its_rescorings(tmp_path, capsys):
    write_image_folder(tmp_path / "images", per_class=(24, 6), size=(28, 28))
    (tmp_path / "study.toml").write_text(STUDY)
    lake = str(tmp_path / "lake")
    code, out, err = smartaug(capsys, "study", "--config", str(tmp_path / "study.toml"),
                              "--storage", lake, "--workers", "2")
    assert code == 0, err
    report = json.loads((Path(out.split()[-1]) / "study.json").read_text())
    rows = {r["selector"]: r for r in report["leaderboard"]}
    assert set(rows) == {"random", "avh@offset", "curriculum", "self-paced", "none", "all",
                         "infobatch", "curriculum-data", "repeated"}
    assert all(r["items_seen"] is not None and r["backward_passes"] for r in rows.values()
               if r["selector"] != "none")
    pool = rows["all"]["n_items"]  # 72 train images, two augmentations each
    n = round(0.5 * pool)
    for s in ("random", "avh@offset", "curriculum", "self-paced"):  # budget-honest
        assert rows[s]["items_seen"] == 3 * n, s
    assert rows["none"]["items_seen"] == 0 and rows["all"]["items_seen"] == 3 * pool
    # distinct augmentations: a static set its size, a growing pacing its largest epoch
    shown = int(C.pacing_sizes("linear", 3, n, pool, start=0.2).max())
    assert shown > n
    assert rows["random"]["n_distinct"] == rows["avh@offset"]["n_distinct"] == n
    assert rows["curriculum"]["n_distinct"] == shown
    assert rows["curriculum"]["unequal_vs_random"] == [f"n_distinct {shown} vs {n}"]
    assert rows["curriculum-data"]["n_items"] == rows["curriculum-data"]["n_distinct"] == shown
    assert rows["curriculum-data"]["items_seen"] == 3 * shown
    assert n <= rows["self-paced"]["n_distinct"] <= pool
    assert rows["all"]["n_distinct"] == rows["infobatch"]["n_distinct"] == pool
    assert rows["none"]["n_distinct"] == rows["repeated"]["n_distinct"] == 0
    for k in ("items_seen", "backward_passes", "gradient_steps"):  # equal but for the idea
        assert rows["repeated"][k] == rows["random"][k], k
    assert rows["none"]["gradient_steps"] < rows["random"]["gradient_steps"]
    assert rows["infobatch"]["backward_passes"] < rows["all"]["backward_passes"]
    assert rows["infobatch"]["vs_all"]["backward_share"] == pytest.approx(
        rows["infobatch"]["backward_passes"] / rows["all"]["backward_passes"])
    hyp = report["hypotheses"][0]
    assert hyp["selector"] == "infobatch" and hyp["against"] == "all"
    # each self-paced training re-scored the pool before epochs 2 and 3, linked to its run
    code, out, err = smartaug(capsys, "sql", "--storage", lake, "--csv",
                              "select r.run_id, s.epoch, count(*) n, avg(sc.avh) avh from runs r "
                              "join scoring_runs s on s.train_run_id = r.run_id join scores sc "
                              "using (scoring_run_id) group by 1, 2 order by 1, 2")
    assert code == 0, err
    linked = list(csv.DictReader(io.StringIO(out)))
    assert sorted({x["run_id"] for x in linked}) == sorted(rows["self-paced"]["run_ids"])
    assert [int(x["epoch"]) for x in linked] == [2, 3] * 2
    assert all(int(x["n"]) == pool for x in linked)
    docs = (Path(__file__).resolve().parent.parent / "docs" / "studies.md").read_text()
    query = next(b for b in re.findall(r"```sql\n(.*?)```", docs, flags=re.S)
                 if "train_run_id" in b)
    code, out, err = smartaug(capsys, "sql", "--storage", lake, "--csv", query)
    assert code == 0, err
    moved = list(csv.DictReader(io.StringIO(out)))  # docs/studies.md's query, on a real lake
    assert len(moved) == 4 and all(0 <= float(x["mean_avh"]) <= 1 for x in moved)


@pytest.mark.parametrize("arm,message", [
    ('source = "self-paced"\nevery = 0', "every .* must be an integer >= 1"),
    ('source = "schedule"\nstart = 0.0', r"start .* must be in \(0, 1\]"),
    ('source = "schedule"\nstart = 1.5', r"start .* must be in \(0, 1\]"),
    ('source = "infobatch"\nprune = 1.0', r"prune .* must be in \[0, 1\)"),
    ('source = "schedule"\nstart = 0.05\npacing = "exponential"\ngrowth = 4.0',
     "never reaches budget 0.5"),
    ('source = "schedule"\norder = "sideways"', "arm c: unknown order 'sideways'; valid: easy-to-hard"),
    ('source = "matched"', "a matched arm names the schedule arm"),
    ('source = "matched"\nmatches = "nothing"', "matches 'nothing' must name a schedule arm"),
])
def test_bad_curriculum_arms_are_refused_before_anything_is_written(tmp_path, capsys, arm,
                                                                   message):
    write_image_folder(tmp_path / "images", per_class=(4, 2), size=(28, 28))
    (tmp_path / "study.toml").write_text(STUDY.split("[[arms]]")[0].replace(SECONDARY, "")
                                         + f"[[arms]]\nname = \"c\"\n{arm}\n")
    code, _, err = smartaug(capsys, "study", "--config", str(tmp_path / "study.toml"),
                            "--storage", str(tmp_path / "lake"))
    assert code == 2 and "error:" in err and "Traceback" not in err, err

    assert re.search(message, err), err
    assert not (tmp_path / "lake").exists()


RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
COMMITTED = sorted(p.parent.name for p in RESULTS.glob("*/study.toml")
                   if (p.parent / "study.json").exists())


# where the committed CIFAR-10 studies found their images: an ImageFolder's path is part of
# its dataset's identity (and so of the study's id), so their ids are found again only there
CIFAR10_MINI_THEN = Path("/work/data/cifar10-mini")


@pytest.mark.parametrize("name", COMMITTED)
def test_every_committed_study_file_still_gives_its_study_id(name, monkeypatch):
    """A new field (an arm source, a hypothesis' against) never changes an old study's id:
    `smartaug study --config docs/results/NAME/study.toml` finds the committed study again."""
    from smartaug.experiment_file import load_study
    from smartaug.steps.study import study_id

    folder = RESULTS / name
    text = (folder / "study.toml").read_text()
    if "SMARTAUG_CIFAR10_MINI" in text:
        if not CIFAR10_MINI_THEN.is_dir():
            pytest.skip(f"the CIFAR-10 subset is not at {CIFAR10_MINI_THEN}, where the "
                        f"committed studies ran (docs/results.md says how to make it)")
        monkeypatch.setenv("SMARTAUG_CIFAR10_MINI", str(CIFAR10_MINI_THEN))
    recorded = json.loads((folder / "study.json").read_text())["study_id"]
    assert study_id(load_study(folder / "study.toml")) == recorded
