"""smartaug recommend: candidates, the rung plan and its cost, stacked online trainings, the
veto on a known answer, the policy's shape, and the command end to end on real images."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from smartaug.config import TrainConfig
from smartaug.core.online import Online
from smartaug.core.search import (
    IDENTITY,
    MIN_PER_CLASS,
    Candidate,
    SearchError,
    Trainer,
    candidates,
    cost,
    op_policy,
    plan,
    policy_of,
    race,
    veto,
)
from smartaug.core.stacked import train_stacked
from smartaug.core.train import build_model, evaluate, train
from smartaug.policy import load
from tests.conftest import smartaug, write_image_folder


def test_candidates_are_ranges_from_the_weakest_end():
    c = {x.name: x for x in candidates(["rotate", "crop", "jpeg", "hflip", "vflip"])}
    assert set(c) == {"rotate[0, 10]", "rotate[0, 20]", "crop[0.54, 1]", "crop[0.08, 1]",
                      "jpeg[50, 90]", "jpeg[10, 90]", "hflip", "vflip"}
    assert c["rotate[0, 10]"].limit() == 10.0  # stronger is higher: the top of the range
    assert c["crop[0.54, 1]"].limit() == pytest.approx(0.54)  # stronger is lower
    assert c["hflip"].lo is None and c["hflip"].to_dict() == {"kind": "hflip", "lo": None,
                                                              "hi": None}
    space = candidates(["mine"], space=[("mine", json.dumps(
        {"__version__": "2.0.0", "transform": {"__class_fullname__": "HorizontalFlip",
                                               "p": 1.0}}))])
    assert [x.name for x in space] == ["mine"]


def test_a_candidate_draws_its_magnitudes_inside_its_range():
    img = np.zeros((32, 32, 1), np.uint8)
    img[:, 12:20] = 255  # a vertical bar: a rotation tilts it
    p = op_policy(Candidate("rotate", 0.0, 5.0, 0.25), 32, 32)
    p.pooled.set_random_seed(0)
    tilt = [np.abs(p(img).astype(int) - img).sum() for _ in range(50)]
    big = op_policy(Candidate("rotate", 0.0, 20.0, 1.0), 32, 32)
    big.pooled.set_random_seed(0)
    tilt_big = [np.abs(big(img).astype(int) - img).sum() for _ in range(50)]
    assert max(tilt) < max(tilt_big)  # 5 degrees at most move fewer pixels than 20


def test_plan_spends_the_budget_and_refuses_one_too_small():
    rungs = plan(26, 4.0, 900, spent=1.0)
    assert [r["candidates"] for r in rungs] == [26, 9, 3]
    assert [r["seeds"] for r in rungs] == [1, 2, 2]
    assert rungs[1]["share"] == pytest.approx(2 * rungs[0]["share"])
    spent = sum(r["seeds"] * (r["candidates"] + 1) * r["share"] for r in rungs)
    assert spent == pytest.approx(3.0, abs=1e-6) and cost(26, rungs[0]["share"]) == \
        pytest.approx(spent)
    # known answer: (27 * 1 + 10 * 2 * 2 + 4 * 2 * 4) * f = 99 f full trainings
    assert cost(26, 0.01) == pytest.approx(0.99)
    with pytest.raises(SearchError, match="too small") as e:
        plan(26, 2.0, 60, spent=1.0)
    smallest = float(e.value.args[0].split("smallest that fits is ")[1].split(" ")[0])
    assert smallest == pytest.approx(math.ceil((1.0 + cost(26, MIN_PER_CLASS / 60)) * 100) / 100)
    assert plan(26, smallest, 60, spent=1.0)  # the budget it names fits
    assert plan(2, 100.0, 60)[0]["share"] == 1.0  # never more than all the originals


def _halves(n: int, seed: int = 0):
    """28x28 images, class 0 bright on the left, class 1 bright on the right: a mirror swaps
    the label, a vertical flip keeps it."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, (n, 28, 28, 1)).astype(np.uint8)
    y = np.arange(n) % 2
    x[y == 0, :, :14] += 180
    x[y == 1, :, 14:] += 180
    return x, y.astype(np.int64)


def test_the_veto_removes_an_op_that_destroys_the_label_and_keeps_one_that_does_not():
    x, y = _halves(200)
    ref = build_model("lenet5", 2, 1, 28, seed=0)
    train(ref, x, y, TrainConfig(epochs=2, batch_size=32, device="cpu"), log=None)
    assert evaluate(ref, x, y)["acc"] == 1.0
    vetoes, seen = veto(ref, [Candidate("hflip"), Candidate("vflip")], x, y, max_flip=0.5,
                        seed=0)
    assert seen["confident"] > 100
    assert [(v["kind"], v["label"]) for v in vetoes] == [("hflip", None)]
    assert vetoes[0]["flip_rate"] > 0.9
    assert seen["cells"]["vflip"]["pooled"] < 0.1


def test_stacked_online_trainings_equal_lone_ones():
    """K trainings, each with its own op, as one model: within a few images of each trained
    alone (grouped convolutions sum in another order)."""
    x, y = _halves(128)
    cfg = TrainConfig(epochs=2, batch_size=32, device="cpu", seed=3)
    ops = [IDENTITY, Candidate("vflip"), Candidate("rotate", 0.0, 10.0, 0.5)]

    def source(c):
        return Online("identity" if c is IDENTITY else op_policy(c, 28, 28), x, y, 3)

    alone = []
    for c in ops:
        m = build_model("lenet5", 2, 1, 28, seed=3)
        h = train(m, x, y, cfg, log=None, online_source=source(c))
        alone.append((m, h))
    models = [build_model("lenet5", 2, 1, 28, seed=3) for _ in ops]
    hists = train_stacked(models, [(x, y)] * 3, [cfg] * 3, online=[source(c) for c in ops])
    for (m, h), ms, hs in zip(alone, models, hists, strict=True):
        assert hs[-1]["samples"] == h[-1]["samples"] == 256
        assert hs[-1]["train_loss"] == pytest.approx(h[-1]["train_loss"], rel=1e-3, abs=1e-4)
        assert abs(evaluate(ms, x, y)["acc"] - evaluate(m, x, y)["acc"]) <= 3 / 128
    # the identity's draws are the originals again: no distinct augmentation seen
    assert hists[0][-1]["distinct"] == 0 and hists[1][-1]["distinct"] == 256
    assert Online("identity", x, y, 0).fresh is False
    assert Online(op_policy(IDENTITY, 28, 28), x, y, 0).fresh is False


def test_policy_of_keeps_the_winners_one_range_a_kind_and_per_class_vetoes():
    cands = candidates(["rotate", "hflip", "noise"])
    by = {c.name: c for c in cands}
    ranking = [{**by[n].to_dict(), "name": n, "rung": 1, "score": s}
               for n, s in (("rotate[0, 10]", 0.02), ("rotate[0, 20]", 0.01), ("hflip", 0.005),
                            ("noise[0, 0.2]", -0.01))]
    ranking += [{**c.to_dict(), "name": c.name, "rung": 0, "score": 0.1} for c in cands]
    vetoes = [{**by["hflip"].to_dict(), "label": 1, "flip_rate": 0.9, "n": 20}]
    pooled, per_class, kept = policy_of(ranking, cands, vetoes, [0, 1, 2], 28, 28)
    assert [(k["kind"], k["hi"]) for k in kept] == [("rotate", 10.0), ("hflip", None)]
    ops = pooled["transform"]["transforms"][0]["transforms"]
    assert [t["__class_fullname__"] for t in ops] == ["Rotate", "HorizontalFlip"]
    assert set(per_class) == {"0", "1", "2"}
    assert [t["__class_fullname__"] for t in
            per_class["1"]["transform"]["transforms"][0]["transforms"]] == ["Rotate"]
    assert per_class["0"] == pooled
    # nothing beats the identity: the policy is the identity
    losing = [dict(r, score=-0.01) for r in ranking]
    pooled, per_class, kept = policy_of(losing, cands, [], [0, 1], 28, 28)
    assert kept == [] and per_class is None
    assert [t["__class_fullname__"] for t in
            pooled["transform"]["transforms"][0]["transforms"]] == ["NoOp"]


def test_the_race_halves_and_scores_against_the_identity():
    x, y = _halves(240)
    cands = [Candidate("vflip"), Candidate("rotate", 0.0, 10.0, 0.5),
             Candidate("noise", 0.0, 0.1, 0.5), Candidate("hflip")]
    trainer = Trainer(lambda s: build_model("lenet5", 2, 1, 28, seed=s),
                      TrainConfig(epochs=1, batch_size=32, device="cpu"), stack=4)
    rungs = plan(len(cands), 3.0, 120)
    assert [r["candidates"] for r in rungs] == [4, 3]
    vx, vy = _halves(60, seed=1)
    ranking = race(trainer, cands, rungs, train=(x, y), val=(vx, vy), seed=0)
    assert [r["rung"] for r in ranking] == [0, 0, 0, 0, 1, 1, 1]
    assert trainer.trainings == 5 + 2 * 4
    held = ranking[0]["held_out"]  # the validation split and the originals left out
    assert held == 60 + 240 - len(np.concatenate(
        [np.flatnonzero(y == c)[: max(2, round(rungs[0]["share"] * 120))] for c in (0, 1)]))
    # the mirror swaps this dataset's labels: its trainings learn the task worse
    assert min(ranking[:4], key=lambda r: r["score"])["kind"] == "hflip"


def _ingested(root, per_class, val_fraction):
    """(lake, dataset_id): a real PNG image folder of 3 classes under ``root``, ingested grey
    with ``val_fraction`` held out for validation."""
    write_image_folder(root / "images", per_class=per_class, size=(28, 28), ext=".png")
    from smartaug.config import DataConfig
    from smartaug.lake import Lake
    from smartaug.steps.ingest import ingest

    lake = Lake(root / "lake")
    return lake, ingest(lake, DataConfig(dataset=f"imagefolder:{root / 'images'}",
                                         grayscale=True, val_fraction=val_fraction))


@pytest.fixture(scope="module")
def folder_lake(tmp_path_factory):
    """3 classes of real PNG files, 100 train (25 % held out for validation) and 10 test
    images a class, 28 x 28 grey, ingested into a lake."""
    root = tmp_path_factory.mktemp("rec")
    return (root, *_ingested(root, (100, 10), 0.25))


@pytest.mark.slow
def test_recommend_end_to_end_writes_a_loadable_policy_its_cost_and_rungs(folder_lake, capsys):
    root, lake, dataset_id = folder_lake
    out = root / "policy.json"
    args = ["recommend", "--dataset-id", dataset_id, "--out", str(out), "--kinds",
            "rotate,hflip,noise,heavy-noise", "--budget", "3", "--stack", "4", "--seed", "1",
            "--epochs", "2",
            "--storage", str(lake.root)]
    code, stdout, err = smartaug(capsys, *args)
    assert code == 0, err
    assert stdout.strip().splitlines()[-1] == str(out)
    assert "cost:" in err and "full trainings" in err
    data = json.loads(out.read_text())
    meta = data["smartaug"]
    assert isinstance(meta["cost_trainings"], float) and meta["cost_trainings"] <= 3 + 1e-9
    assert meta["cost"]["reference"] == 1.0
    assert all(set(v) >= {"kind", "lo", "hi", "label"} for v in meta["vetoed"])
    rungs = meta["rungs"]
    raced = rungs[0]["candidates"]
    assert raced + len({(v["kind"], v["lo"], v["hi"]) for v in meta["vetoed"]
                        if v["label"] is None}) == 7
    assert len(meta["ranking"]) == sum(r["candidates"] for r in rungs)
    assert all(set(r) >= {"kind", "lo", "hi", "rung", "score"} for r in meta["ranking"])
    policy = load(out, seed=0)  # albumentations' serialisation, as the policy file's reader
    img = np.full((28, 28, 1), 90, np.uint8)
    assert policy(img, 2).shape == img.shape
    # the same seed gives the same race
    code, _, err = smartaug(capsys, *args[:4], str(root / "again.json"), *args[5:])
    assert code == 0, err
    again = json.loads((root / "again.json").read_text())["smartaug"]
    assert [(r["name"], r["score"]) for r in again["ranking"]] == \
        [(r["name"], r["score"]) for r in meta["ranking"]]
    # the check: every rung-0 candidate trained fully over paired seeds
    code, stdout, err = smartaug(capsys, "recommend-check", "--policy", str(out), "--seeds",
                                 "2", "--storage", str(lake.root))
    assert code == 0, err
    assert stdout.startswith("spearman ")
    check = json.loads((root / "policy.check.json").read_text())
    assert check["n_candidates"] == raced and check["trainings"] == (raced + 1) * 2
    gains = [c["gain_test"] for c in check["candidates"]]
    scores = [c["rung0_score"] for c in check["candidates"]]
    if check["spearman"] is None:  # undefined only where nothing varies
        assert np.ptp(gains) == 0 or np.ptp(scores) == 0
    else:
        assert -1.0 <= check["spearman"] <= 1.0


def test_recommend_bad_input_is_refused_before_any_training(folder_lake, capsys):
    root, lake, dataset_id = folder_lake
    base = ["recommend", "--dataset-id", dataset_id, "--out", str(root / "p.json"),
            "--storage", str(lake.root)]
    code, _, err = smartaug(capsys, *base, "--budget", "1.5")
    assert code == 2 and "too small" in err and "smallest that fits is" in err
    code, _, err = smartaug(capsys, *base, "--kinds", "rotate,nosuch")
    assert code == 2 and "nosuch" in err
    code, _, err = smartaug(capsys, *base, "--kinds", "rotate", "--space", "x.yaml")
    assert code == 2 and "not both" in err
    code, _, err = smartaug(capsys, *base, "--reference", "nosuch")
    assert code == 2 and "--reference" in err
    code, _, err = smartaug(capsys, "recommend", "--dataset-id", dataset_id, "--out",
                            str(root / "nodir" / "p.json"), "--storage", str(lake.root))
    assert code == 2 and "does not exist" in err
    # every candidate vetoed: said, with what to change, and no file written
    import albumentations as A

    invert = A.to_dict(A.InvertImg(p=1.0))  # these classes differ by brightness alone
    (root / "invert.json").write_text(json.dumps({"kinds": {"invert": invert}}))
    code, _, err = smartaug(capsys, *base, "--space", str(root / "invert.json"), "--epochs", "1",
                            "--max-flip", "0.5")
    assert code == 2 and "every candidate was vetoed" in err and "--max-flip" in err
    assert not (root / "p.json").exists()


def test_recommend_needs_a_validation_split(tmp_path, capsys):
    lake, dataset_id = _ingested(tmp_path, (20, 4), 0.0)
    code, _, err = smartaug(capsys, "recommend", "--dataset-id", dataset_id, "--out",
                            str(tmp_path / "p.json"), "--storage", str(lake.root))
    assert code == 2 and "no validation split" in err and "--val-fraction" in err


def test_a_model_that_cannot_stack_trains_alone_and_says_why():
    trainer = Trainer(lambda s: build_model("resnet", 3, 1, 28, seed=s),
                      TrainConfig(epochs=1, batch_size=32, device="cpu"), stack=8)
    assert trainer.stack == 1 and "slower than training alone" in trainer.alone
    lenet = Trainer(lambda s: build_model("lenet5", 3, 1, 28, seed=s),
                    TrainConfig(epochs=1, batch_size=32, device="cpu"), stack=8)
    assert lenet.stack == 8 and lenet.alone is None


def test_a_study_arm_names_the_race_or_the_atlas():
    from smartaug.config import Arm

    assert Arm("a", policy="recommended").policy == "recommended"
    assert Arm("b", policy="atlas-only", max_flip=0.3).to_dict()["max_flip"] == 0.3
    with pytest.raises(Exception, match="atlas-only"):
        Arm("c", policy="nosuch")


def test_a_recommended_arm_reports_its_race_beside_its_trainings():
    from smartaug.steps.study_report import _cost_table, _costs

    rows = [{"kind": "arm", "policy": "recommended", "pool": "p", "run_ids": ["a"],
             "chosen_on": None, "budget": 0.1, "selector": "recommended", "loss": "ce",
             "n_seeds": 1},
            {"kind": "arm", "policy": "trivialaugment-wide", "pool": "p", "run_ids": ["b"],
             "chosen_on": None, "budget": 0.1, "selector": "ta", "loss": "ce", "n_seeds": 1}]
    cells = [{"run_id": "a", "selection_seconds": 0.0}, {"run_id": "b"}]
    by_run = {"a": {"seconds": 10.0}, "b": {"seconds": 12.0}}
    _costs(rows, cells, by_run, 5.0, {"p": 3.0},
           {"p": [{"seconds": 40.0, "cost_trainings": 3.5}]})
    assert rows[0]["cost"]["search_s"] == 40.0 and rows[0]["cost"]["search_trainings"] == 3.5
    assert rows[0]["cost"]["total_s"] == 50.0  # seconds only: the trainings count is not summed
    assert rows[0]["cost"]["baseline_s"] == 0.0  # the race needs no baseline, no scoring
    assert "search_s" not in rows[1]["cost"]
    table = _cost_table({"leaderboard": rows})
    assert table[0][8:10] == ["search s", "search (full trainings)"]
    assert table[1][8:10] == ["40.0", "3.50"] and table[2][8:10] == ["", ""]


def test_recommend_refuses_a_class_too_small_to_race(tmp_path, capsys):
    lake, dataset_id = _ingested(tmp_path, (8, 2), 0.25)
    code, _, err = smartaug(capsys, "recommend", "--dataset-id", dataset_id, "--out",
                            str(tmp_path / "p.json"), "--storage", str(lake.root))
    assert code == 2 and "train images" in err and "at least 8 a class" in err
    assert not (tmp_path / "p.json").exists()
