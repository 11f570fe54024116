"""On-the-fly training: fresh augmentations every epoch, from a space, a policy file or
torchvision's anchors, deterministic in (seed, epoch, sample)."""

from __future__ import annotations

import numpy as np
import pytest

from smartaug.config import AugmentConfig, TrainConfig
from smartaug.core import augment as aug
from smartaug.core.online import Online, _seed
from smartaug.core.train import build_model, train
from smartaug.errors import ConfigError
from tests.conftest import tiny_study_data

RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
Y = np.arange(40) % 4


@pytest.mark.parametrize("policy", ["space:rotate,noise,hflip", "trivialaugment-wide",
                                    "randaugment", "autoaugment-cifar10"])
def test_each_epoch_is_fresh_and_the_same_again(policy):
    a, b = Online(policy, X, Y, seed=3), Online(policy, X, Y, seed=3)
    (e1, y1), (e2, _) = a.epoch(1), a.epoch(2)
    assert np.array_equal(y1, Y)  # one of each original, in order
    assert e1.shape == X.shape and e1.dtype == np.uint8
    assert np.array_equal(e1, b.epoch(1)[0])  # the same seed and epoch: the same images
    assert not np.array_equal(e1, e2)  # a fresh draw every epoch
    assert not np.array_equal(e1, Online(policy, X, Y, seed=4).epoch(1)[0])
    # a budget: 50 fresh augmentations of originals drawn afresh each epoch
    c = Online(policy, X, Y, seed=3, count=50)
    (x50, y50), rows = c.epoch(1), c.rows(1)
    assert x50.shape == (50, 28, 28, 1) and np.array_equal(y50, Y[rows])
    assert sorted(rows[:40].tolist()) == list(range(40))  # a permutation, then repeated
    assert not np.array_equal(rows, c.rows(2))
    assert Online("none", X, Y, seed=3).epoch(1) is None


def test_a_space_draw_is_the_pools_pure_function_of_seed_epoch_and_sample():
    got, _ = Online("space:rotate,noise,hflip", X, Y, seed=7).epoch(2)
    cfg = AugmentConfig()
    for i in (0, 13, 39):
        s = _seed(7, 2, f"train/{i}", 0)
        item = (0, 2, s, cfg.kinds[(s >> 17) % 3])
        assert np.array_equal(got[i], aug._apply(X[i:i + 1], [item], cfg, record=False)[0])


def test_online_training_sees_originals_plus_one_draw_each_and_repeats_itself():
    cfg = TrainConfig(epochs=2, batch_size=16, device="cpu", augment="online",
                      policy="space:rotate,noise,hflip")
    h1 = train(build_model("lenet5", 4, 1, 28, seed=0), X, Y, cfg, log=None)
    h2 = train(build_model("lenet5", 4, 1, 28, seed=0), X, Y, cfg, log=None)
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]
    none = TrainConfig(epochs=2, batch_size=16, device="cpu", augment="online", policy="none")
    static = TrainConfig(epochs=2, batch_size=16, device="cpu")
    h3 = train(build_model("lenet5", 4, 1, 28, seed=0), X, Y, none, log=None)
    h4 = train(build_model("lenet5", 4, 1, 28, seed=0), X, Y, static, log=None)
    assert [r["train_loss"] for r in h3] == [r["train_loss"] for r in h4]  # none: originals
    # online over originals + draws: twice the images of the originals alone each epoch
    pool = Online("space:rotate,noise,hflip", X, Y, seed=0)
    both = np.concatenate([X, pool.epoch(1)[0]])
    assert both.shape[0] == 2 * len(X)


@pytest.mark.parametrize("kwargs, words", [
    ({"augment": "online"}, "needs a policy"),
    ({"augment": "online", "policy": "autoaugment-imagenet"}, "unknown online policy"),
    ({"policy": "randaugment"}, "are for augment = 'online'"),
    ({"augment": "online", "policy": "none", "augmentations": 0}, "must be an integer >= 1"),
    ({"augment": "sometimes"}, "augment"),
])
def test_bad_online_configs_are_refused(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig(**kwargs)


def test_static_configs_keep_their_ids():
    assert "augment" not in TrainConfig().to_dict() and "policy" not in TrainConfig().to_dict()
    d = TrainConfig(augment="online", policy="randaugment").to_dict()
    assert d["augment"] == "online" and d["policy"] == "randaugment"


def test_an_anchor_refuses_images_it_cannot_take():
    with pytest.raises(ConfigError, match="1 or 3 channels"):
        Online("trivialaugment-wide", np.zeros((2, 28, 28, 2), np.uint8), np.zeros(2), 0)


ARMS_STUDY = """preset = "quick"
budgets = [0.5]
scores = ["avh"]
positions = ["offset"]
coverage = []
references = ["none"]
seeds = 2
primary = {selector = "trivialaugment", pool = "seed", budget = 0.5, margin = 0.01}
arms = [{name = "trivialaugment", source = "policy", policy = "trivialaugment-wide"},
        {name = "uniform", policy = "uniform"},
        {name = "atlas-only", policy = "atlas-only", max_flip = 0.5}]
""" + tiny_study_data(24, 6) + """

[[pools]]
name = "seed"
[pools.augment]
policy = "k:8"
"""


@pytest.mark.slow
def test_a_study_with_policy_arms_puts_them_on_the_leaderboard(tmp_path, capsys):
    import json
    from pathlib import Path

    from tests.conftest import smartaug, write_image_folder

    write_image_folder(tmp_path / "images", per_class=(24, 6), size=(28, 28))
    (tmp_path / "study.toml").write_text(ARMS_STUDY)
    code, out, err = smartaug(capsys, "study", "--config", str(tmp_path / "study.toml"),
                              "--storage", str(tmp_path / "lake"))
    assert code == 0, err
    report = json.loads((Path(out.split()[-1]) / "study.json").read_text())
    rows = {r["selector"]: r for r in report["leaderboard"]}
    assert {"trivialaugment", "uniform", "atlas-only"} <= set(rows)
    n = rows["random"]["n_items"]
    for name, policy in (("trivialaugment", "trivialaugment-wide"), ("uniform", "uniform"),
                         ("atlas-only", "atlas-only")):
        r = rows[name]
        assert r["kind"] == "arm" and r["policy"] == policy and r["n_items"] == n
        assert r["n_seeds"] == 2 and r["selection_ids"] == [] and r["diff_vs_random"] is not None
    (h,) = report["hypotheses"]  # an arm can be a declared hypothesis
    assert h["selector"] == "trivialaugment" and h["decision"] in (
        "better", "worse", "equivalent", "smaller-than-margin", "undecided")
    from smartaug.lake import Lake

    lake = Lake(tmp_path / "lake")
    runs = {r["run_id"]: r for r in lake.sql("select * from runs").to_pylist()}
    originals = lake.sql("select n_train from datasets").to_pylist()[0]["n_train"]
    for s in rows["uniform"]["seeds"]:  # the originals + the budget's fresh ones, each epoch
        assert runs[s["run_id"]]["n_augmented"] == n
        assert runs[s["run_id"]]["n_train"] == originals + n
    assert list((tmp_path / "lake" / "policies").glob("*-max-flip-0.5.json"))
    assert costs_ok(rows)


def costs_ok(rows) -> bool:
    """An arm's cost: its retrainings; the atlas's policy also needs baseline and scoring."""
    return (rows["trivialaugment"]["cost"]["scoring_s"] == 0
            and rows["atlas-only"]["cost"]["scoring_s"] > 0
            and all(r["cost"]["retraining_s"] > 0 for r in rows.values()))


def test_an_arm_outside_the_grid_is_refused(tmp_path, capsys):
    from tests.conftest import smartaug

    (tmp_path / "images").mkdir()
    for extra, words in (("budgets = [0.3]", "budget 0.3 is not in the study's grid"),
                         ("pools = ['wide']", "pool 'wide' is not in the study's grid")):
        text = ARMS_STUDY.replace('{name = "uniform", ', f'{{name = "uniform", {extra}, ')
        (tmp_path / "study.toml").write_text(text)
        code, _, err = smartaug(capsys, "config", "check", str(tmp_path / "study.toml"))
        assert code == 2 and words in " ".join(err.split()), err
    text = ARMS_STUDY.replace('policy = "uniform"', 'policy = "autoaugment-svhn"')
    (tmp_path / "study.toml").write_text(text)
    code, _, err = smartaug(capsys, "config", "check", str(tmp_path / "study.toml"))
    assert code == 2 and "unknown policy 'autoaugment-svhn'" in err


def test_a_bin_policy_draws_one_kind_inside_one_magnitude_bin():
    from smartaug.core.online import parse_bin

    kind, b, n, scale = parse_bin("bin:rotate@4/5")
    assert (kind, b, n) == ("rotate", 4, 5) and scale.hi == 20.0
    got, _ = Online("bin:rotate@4/5", X, Y, seed=1).epoch(1)
    assert got.shape == X.shape and not np.array_equal(got, X)
    for bad in ("bin:rotate", "bin:hflip@0/5", "bin:rotate@5/5"):
        with pytest.raises(ConfigError):
            parse_bin(bad)


def test_the_prediction_check_ranks_arms_against_their_gains(tmp_path):
    """Spearman of predicted benefit (1 - flip rate) and measured gain over none: a perfect
    ranking gives 1, a reversed one -1; too few arms is an error."""
    from smartaug.lake import Lake
    from smartaug.steps.atlas import AtlasError, check_prediction, predicted_benefit

    rows = [{"kind": k, "magnitude_bin": 0, "label": 0, "n_orig_correct": 100,
             "n_flipped": f, "bins": 1} for k, f in (("rotate", 10), ("noise", 30),
                                                      ("crop", 60), ("vflip", 90))]
    assert predicted_benefit(rows, "space:noise") == pytest.approx(0.7)
    assert predicted_benefit(rows, "bin:crop@0/1") == pytest.approx(0.4)
    assert predicted_benefit(rows, "trivialaugment-wide") is None

    def seeds(accs):
        return [{"seed": i, "replicate": 0, "test_acc": a} for i, a in enumerate(accs)]

    def study(gains):
        board = [{"selector": "none", "kind": "reference", "seeds": seeds([0.80, 0.81, 0.79])}]
        board += [{"selector": f"only-{k}", "kind": "arm", "policy": f"space:{k}",
                   "pool": "p", "budget": 0.1,
                   "seeds": seeds([0.80 + g, 0.81 + g, 0.79 + g])} for k, g in gains.items()]
        return {"study_id": "s", "leaderboard": board}

    lake = Lake(tmp_path / "lake")
    lake.write("atlas", "a1", {"atlas_id": ["a1"] * 4, "scoring_run_id": ["r"] * 4,
                               "originals_run_id": ["o"] * 4, "bins": [1] * 4,
                               **{k: [r[k] for r in rows] for k in
                                  ("kind", "magnitude_bin", "label", "n_orig_correct",
                                   "n_flipped")}, "n": [100] * 4,
                               **{c: [None] * 4 for c in (
                                   "magnitude_min", "magnitude_max", "flip_rate",
                                   "confidence_drop_mean", "class_name",
                                   *(f"{s}_{q}" for s in ("avh", "loss", "margin")
                                     for q in ("mean", "q1", "median", "q3")))}})
    good = check_prediction(lake, "a1", study({"rotate": 0.02, "noise": 0.01, "crop": 0.0,
                                               "vflip": -0.03}), boot=200)
    assert good["spearman"] == pytest.approx(1.0) and good["n_arms"] == 4
    assert good["arms"][0]["gain"] == pytest.approx(0.02)
    bad = check_prediction(lake, "a1", study({"rotate": -0.03, "noise": 0.0, "crop": 0.01,
                                              "vflip": 0.02}), boot=200)
    assert bad["spearman"] == pytest.approx(-1.0)
    with pytest.raises(AtlasError, match="at least 3"):
        check_prediction(lake, "a1", study({"rotate": 0.01, "noise": 0.0}), boot=10)


def test_a_hypothesis_against_another_arm(tmp_path, capsys):
    from tests.conftest import smartaug

    (tmp_path / "images").mkdir()
    text = ARMS_STUDY.replace('selector = "trivialaugment", ',
                              'selector = "trivialaugment", against = "uniform", ')
    (tmp_path / "study.toml").write_text(text)
    code, out, err = smartaug(capsys, "config", "check", str(tmp_path / "study.toml"))
    assert code == 0 and 'against = "uniform"' in out, err
    (tmp_path / "study.toml").write_text(text.replace('against = "uniform"',
                                                      'against = "autoaugment"'))
    code, _, err = smartaug(capsys, "config", "check", str(tmp_path / "study.toml"))
    assert code == 2 and "must be random, all (when a reference) or another" in " ".join(
        err.split())


def test_a_policy_file_albumentations_cannot_load_is_refused_before_any_work(tmp_path, capsys):
    import json

    from tests.conftest import smartaug

    (tmp_path / "images").mkdir()
    (tmp_path / "bad.json").write_text(json.dumps(
        {"transform": {"__class_fullname__": "NoSuchTransform", "p": 1.0}}))
    text = ARMS_STUDY.replace('policy = "uniform"', 'policy = "bad.json"')
    (tmp_path / "study.toml").write_text(text)
    code, _, err = smartaug(capsys, "study", "--config", str(tmp_path / "study.toml"),
                            "--storage", str(tmp_path / "lake"))
    assert code == 2 and "albumentations cannot load" in err and "Traceback" not in err
    assert not (tmp_path / "lake").exists() or not any((tmp_path / "lake").rglob("*.parquet"))
