"""The study (smartaug/steps/study.py, study_report.py): exact equal budgets through the window,
coverage and stratified random SQL; Holm's correction; the grid's bad input refused before any
work; and whole studies on real Fashion-MNIST: cells as runs, resumed with no repeated work, a
cell equal to the same training done by hand, the leaderboard's shape, the CLI and the file."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from smartaug.config import (
    POSITIONS,
    AugmentConfig,
    DataConfig,
    PoolSpec,
    StudyConfig,
    TrainConfig,
    apply_study_overrides,
    study_from_dict,
    study_preset,
)
from smartaug.lake import Lake
from smartaug.steps import select as S
from smartaug.steps.select import SelectionError
from smartaug.steps.study_report import holm
from tests.conftest import write_image_folder
from tests.test_select import known_run

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def lake(tmp_path):
    return Lake(tmp_path)


def items(lake, sel) -> list[int]:
    return sorted(int(x[4:]) for x in S.read_selection(lake, sel)["aug_id"].to_pylist())


# ------------------------------------------------------------------ known answers


def test_windows_at_each_position_hold_the_known_items(lake):
    run = known_run(lake)  # avh of item i = i / 10000 (higher = harder); loss = -avh
    n = 2000
    lo = {p: f(0.2) for p, f in POSITIONS.items()}
    assert items(lake, S.window(lake, run, n, score="avh", lo=lo["easiest"])) == \
        list(range(0, 2000))
    assert items(lake, S.window(lake, run, n, score="avh", lo=lo["offset"])) == \
        list(range(200, 2200))  # seed 000's band: the 2-22 % of AVH
    assert items(lake, S.window(lake, run, n, score="avh", lo=lo["median"])) == \
        list(range(4000, 6000))
    assert items(lake, S.window(lake, run, n, score="avh", lo=lo["hardest"])) == \
        list(range(8000, 10000))
    # loss grows with hardness too, and here it is -avh: its hardest are AVH's easiest
    assert items(lake, S.window(lake, run, n, score="loss", lo=lo["hardest"])) == \
        list(range(0, 2000))
    # per class: each class's hardest 200 (class = i % 10)
    sel = items(lake, S.window(lake, run, n, score="avh", lo=1 - 0.2, per_class=True))
    assert sel == list(range(8000, 10000))


@pytest.mark.parametrize("per_class", [False, True])
def test_every_selector_yields_exactly_the_budget(lake, per_class):
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(1003), 1)  # heavy ties: only 11 distinct values
    run = known_run(lake, scores=scores, classes=7)
    for b in (0.001, 0.1, 0.333, 0.5, 0.9, 1.0):
        n = round(b * 1003)
        got = {S.window(lake, run, n, score="avh", lo=f(b), per_class=per_class)
               for f in POSITIONS.values()}
        got.add(S.coverage(lake, run, n, score="avh", drop=0.1, bins=5, seed=1,
                           per_class=per_class))
        got.add(S.random_stratified(lake, run, n, seed=1))
        for sel in got:
            assert S.read_selection(lake, sel).num_rows == n, (b, sel)


def test_stratified_random_and_per_class_windows_share_the_pools_class_mix(lake):
    run = known_run(lake, n=1000, classes=3)  # classes 334 / 333 / 333
    quotas = S.class_quotas({0: 334, 1: 333, 2: 333}, 100)
    assert quotas == {0: 34, 1: 33, 2: 33}
    for sel in (S.random_stratified(lake, run, 100, seed=4),
                S.window(lake, run, 100, score="avh", lo=0.5, per_class=True)):
        assert Counter(S.read_selection(lake, sel)["label"].to_pylist()) == quotas
    a, b = S.random_stratified(lake, run, 100, seed=4), S.random_stratified(lake, run, 100,
                                                                          seed=5)
    assert items(lake, a) != items(lake, b)
    assert S.random_stratified(lake, run, 100, seed=4) == a  # found, not redrawn


def test_class_quotas_largest_remainder():
    assert S.class_quotas({0: 5, 1: 3, 2: 2}, 5) == {0: 3, 1: 1, 2: 1}  # 2.5, 1.5, 1: tie
    assert S.class_quotas({3: 1, 1: 1, 2: 1}, 2) == {3: 0, 1: 1, 2: 1}  # lower labels first
    assert sum(S.class_quotas({i: 7 + i for i in range(10)}, 33).values()) == 33
    with pytest.raises(SelectionError, match="does not fit"):
        S.class_quotas({0: 5}, 6)


def test_coverage_drops_the_hardest_and_draws_evenly_across_bins(lake):
    run = known_run(lake)  # avh uniform on [0, 1)
    sel = S.coverage(lake, run, 1000, score="avh", drop=0.1, bins=9, seed=0)
    got = np.asarray(items(lake, sel))
    assert got.max() < 9000  # the hardest 10 % dropped
    assert Counter(got // 1000).most_common()[-1][1] >= 111  # ~111 from each of 9 bins
    assert set(Counter(got // 1000).values()) <= {111, 112}
    # a sparse bin gives all it has; the others make up the rest (exactly the budget)
    scores = np.concatenate([np.linspace(0, 0.1, 5), np.linspace(0.5, 1, 995)])
    run2 = known_run(lake, run="run0000000000002", scores=scores)
    sel = S.coverage(lake, run2, 100, score="avh", drop=0.0, bins=2, seed=0)
    got = S.read_selection(lake, sel)["score"].to_numpy()
    assert len(got) == 100 and (got < 0.5).sum() == 5 + 0  # bin 0 = [0, 0.5): its 5 items


def test_windows_count_only_defined_scores(lake):
    scores = np.arange(100) / 100
    scores[:30] = np.nan  # undefined AVH (zero feature vectors)
    run = known_run(lake, scores=scores)
    assert items(lake, S.window(lake, run, 70, score="avh", lo=0.0)) == list(range(30, 100))
    with pytest.raises(SelectionError, match="larger than the 70 of 100 items"):
        S.window(lake, run, 71, score="avh", lo=0.0)


def test_holm_known_answer():
    # sorted 0.01, 0.03, 0.04: x3, x2, x1, made monotone
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == []


# ------------------------------------------------------------------ the grid's bad input


@pytest.mark.parametrize("change, msg", [
    ({"pools": ()}, "grid is empty: give at least one pool"),
    ({"budgets": ()}, "grid is empty: give at least one budget"),
    ({"budgets": (0.0, 0.2)}, "budget 0.0 lies outside"),
    ({"budgets": (0.2, 1.5)}, "budget 1.5 lies outside"),
    ({"scores": ("avh", "hardness")}, "unknown score 'hardness'"),
    ({"coverage": ("nope",)}, "unknown score 'nope'"),
    ({"scores": (), "coverage": ()}, "no selector to compare with random"),
    ({"seeds": 1}, "seeds must be >= 2 for a paired test"),
    ({"positions": ("easiest", "middle")}, "unknown window position 'middle'"),
    ({"losses": ("focal",)}, "unknown study loss 'focal'"),
    ({"data": DataConfig(val_fraction=0.0)}, "needs a validation split"),
])
def test_bad_grids_are_refused(change, msg):
    with pytest.raises(ValueError, match=msg):
        replace(StudyConfig(), **change)


def test_presets_round_trip_and_overrides():
    s = study_preset("quick")
    assert [p.name for p in s.pools] == ["seed", "wide"] and s.seeds == 5
    assert len(set(s.pools[1].augment.kinds)) >= 8
    assert {"crop", "cutout", "rotate180", "heavy-noise"} <= set(s.pools[1].augment.kinds)
    assert study_from_dict(s.to_dict()) == s
    o = apply_study_overrides(s, dataset="imagefolder:/x", epochs=2, reps=3, model="resnet")
    assert (o.data.dataset, o.retrain.epochs, o.baseline.epochs, o.seeds, o.model) == \
        ("imagefolder:/x", 2, 2, 3, "resnet")
    assert o.data.per_class_train is None  # another dataset is used whole
    with pytest.raises(ValueError, match="seeds must be >= 2"):
        apply_study_overrides(s, reps=1)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("args, msg", [
    (["--seeds", "1"], "seeds must be >= 2"),
    (["--config", "{dir}/grid.toml"], "budget 1.5 lies outside (0, 1]"),
    (["--config", "{dir}/empty.toml"], "grid is empty: give at least one budget"),
    (["--config", "{dir}/score.toml"], "unknown score 'hardness'"),
    (["--config", "{dir}/pools.toml"], "grid is empty: give at least one pool"),
    (["--workers", "0"], "--workers must be >= 1"),
])
def test_cli_refuses_a_bad_grid_before_any_work(tmp_path, capsys, args, msg):
    """Validation, in this process (the CLI's contract, exit 2 and no traceback, is held for
    every command by tests/test_bad_input.py)."""
    from tests.conftest import smartaug

    (tmp_path / "grid.toml").write_text('preset = "quick"\nbudgets = [0.1, 1.5]\n')
    (tmp_path / "empty.toml").write_text('preset = "quick"\nbudgets = []\n')
    (tmp_path / "score.toml").write_text('preset = "quick"\nscores = ["avh", "hardness"]\n')
    (tmp_path / "pools.toml").write_text('preset = "quick"\npools = []\n')
    storage = tmp_path / "storage"
    code, _, err = smartaug(capsys, "study", *[a.format(dir=tmp_path) for a in args],
                            "--storage", str(storage))
    assert code == 2, err
    assert "error:" in err and msg in " ".join(err.split()), err
    assert "Traceback" not in err
    assert _tree(storage) == []


# ------------------------------------------------------------------ whole studies


def tiny_study(root: str, **change) -> StudyConfig:
    """Real Fashion-MNIST, 30 train (6 held out) and 10 test images per class, 1 epoch."""
    return replace(StudyConfig(
        data=DataConfig(root=root, per_class_train=30, per_class_test=10, val_fraction=0.2),
        baseline=TrainConfig(epochs=1, device="cpu"), retrain=TrainConfig(epochs=1,
                                                                           device="cpu"),
        pools=(PoolSpec("seed", AugmentConfig()),
               PoolSpec("wide", AugmentConfig(policy="k:2", kinds=(
                   "rotate", "noise", "hflip", "vflip", "rotate180", "crop", "cutout", "blur",
                   "heavy-noise")))),
        budgets=(0.2, 0.5), scores=("avh", "margin"), positions=("easiest", "hardest"),
        coverage=("el2n",), seeds=2, choose_seeds=1), **change)


KEYS = {"pool", "budget", "selector", "loss", "n_items", "n_seeds", "test_acc_mean",
        "test_acc_std", "ci95", "diff_vs_random", "p_holm"}


@pytest.mark.slow
def test_a_study_runs_resumes_and_matches_training_by_hand(tmp_path, fashion_root):
    import torch

    from smartaug.core.train import build_model, evaluate, train
    from smartaug.steps.retrain import training_data
    from smartaug.steps.study import run_study

    cfg = tiny_study(fashion_root, losses=("ce", "avh"))
    lake = Lake(tmp_path / "lake")
    sid, location = run_study(cfg, lake, workers=2, log=None)
    study = lake.row("studies", sid)
    cells = json.loads(study["cells"])
    # 2 pools x 2 budgets x (random + 2 scores x 2 positions + coverage) x 2 losses x 2 seeds,
    # + all per pool and none once (x 2 losses x 2 seeds), + the trainings that choose
    # SCORE@val (2 pools x 2 budgets x 2 scores x 2 positions x 2 losses x 1 seed)
    assert len(cells) == 2 * 2 * 6 * 2 * 2 + (2 + 1) * 2 * 2 + 2 * 2 * 2 * 2 * 2
    choosing = [c for c in cells if c["choose"]]
    assert len(choosing) == 32 and {c["rep"] for c in choosing} == {1000}
    runs = {r["run_id"]: r for r in lake.sql("select * from runs").to_pylist()}
    assert set(runs) == {c["run_id"] for c in cells}
    pool_n = {name: lake.row("pools", p["pool_id"])["n_items"]
              for name, p in json.loads(study["pools"]).items()}
    assert pool_n == {"seed": 240, "wide": 480}
    by_budget: dict = {}
    for c in cells:  # equal budget, exact: every selector, every seed
        if c["kind"] != "reference":
            n = S.read_selection(lake, c["selection_id"]).num_rows
            by_budget.setdefault((c["pool"], c["budget"]), set()).add(n)
            assert n == round(c["budget"] * pool_n[c["pool"]])
        assert runs[c["run_id"]]["n_augmented"] == c["n_items"]
        assert runs[c["run_id"]]["seed"] == cfg.seed + c["rep"]  # paired: the same seeds
    assert all(len(v) == 1 for v in by_budget.values())

    from tests.test_experiment import check_contracts

    tables = check_contracts(lake)  # keys unique, no NULL where none belongs
    assert tables["studies"] == 1 and tables["runs"] == len(runs)
    report = json.loads((Path(location) / "study.json").read_text())
    rows = report["leaderboard"]
    assert all(KEYS <= set(r) for r in rows)
    for r in rows:
        assert 0 <= r["test_acc_mean"] <= 1 and 0 <= r["ci95"][0] <= r["ci95"][1] <= 1
        assert r["n_seeds"] == 2
    groups = {(r["pool"], r["budget"], r["selector"], r["loss"]) for r in rows}
    assert len(groups) == len(rows)
    assert ("wide", 0.5, "avh@val", "avh") in groups and ("seed", 0.0, "none", "ce") in groups
    for r in rows:
        assert [x["seed"] for x in r["seeds"]] == [0, 1] and r["run_ids"] == [
            x["run_id"] for x in r["seeds"]]
        assert r["test_acc_mean"] == pytest.approx(np.mean([x["test_acc"] for x in r["seeds"]]))
        if r["selector"] == "random":  # what the others are compared with: no test of its own
            assert r["role"] == "random" and r["diff_vs_random"] is None
            assert r["p_value"] is None and r["p_holm"] is None
        if r["chosen_on"]:  # the runs of a fixed position: never counted twice in a family
            assert r["role"] == "chosen-on-validation" and r["p_holm"] is None
            assert r["same_runs_as"] in {x["selector"] for x in rows}
        if r["role"] == "exploratory":
            assert r["p_holm"] is not None and r["q_bh"] is not None and r["p_maxt"] > 0
        if r["kind"] in ("window", "coverage"):
            rnd = next(x for x in rows if (x["pool"], x["budget"], x["loss"], x["selector"])
                       == (r["pool"], r["budget"], r["loss"], "random"))
            assert r["diff_vs_random"] == pytest.approx(r["test_acc_mean"]
                                                        - rnd["test_acc_mean"])
            assert r["p_holm"] is None or r["p_holm"] >= (r["p_value"] or 0)
    # the position of SCORE@val: the best mean validation accuracy of the choosing trainings
    # (seed 1000, never a reported one), never the test's
    assert len(report["chosen_positions"]) == 2 * 2 * 2 * 2
    for ch in report["chosen_positions"]:
        best = max(ch["val_acc_by_position"].values())
        assert ch["val_acc_by_position"][ch["position"]] == best and ch["choose_seeds"] == [1000]
        for p, v in ch["val_acc_by_position"].items():
            (c,) = [c for c in choosing if (c["pool"], c["budget"], c["loss"], c["selector"])
                    == (ch["pool"], ch["budget"], ch["loss"], f"{ch['score']}@{p}")]
            assert v == runs[c["run_id"]]["val_acc"]
        row = next(r for r in rows if r["selector"] == f"{ch['score']}@val" and
                   (r["pool"], r["budget"], r["loss"]) == (ch["pool"], ch["budget"],
                                                           ch["loss"]))
        fixed = next(r for r in rows if r["selector"] == f"{ch['score']}@{ch['position']}"
                     and (r["pool"], r["budget"], r["loss"]) == (ch["pool"], ch["budget"],
                                                                 ch["loss"]))
        assert row["test_acc_mean"] == fixed["test_acc_mean"]
    kept = {(k["pool"], k["budget"], k["selector"]): k for k in report["kept"]}
    assert {(r["pool"], r["budget"], r["selector"]) for r in rows if r["selection_ids"]} == set(
        kept)  # a position chosen on validation and its fixed row: each its own entry
    assert report["hypotheses"] == [] and "exploratory" in report["verdict"]
    assert sum(kept[("wide", 0.2, "random")]["by_kind"].values()) == pytest.approx(1)
    for k in report["kept"]:  # windows and coverage keep the pool's class mix, like random
        if k["selector"] not in ("all", "none"):
            assert k["by_class"] == kept[(k["pool"], k["budget"], "random")]["by_class"]
    assert report["verdict"] and (Path(location) / "study.html").exists()
    assert (Path(location) / "plots" / "accuracy_vs_budget.png").stat().st_size > 1000
    md = (Path(location) / "study.md").read_text()
    assert "## wide pool, budget 0.5" in md and "Holm" in md

    # one cell is exactly the protocol done by hand: originals + its augmentations, seed
    c = next(c for c in cells if c["selector"] == "avh@hardest" and c["rep"] == 1
             and c["loss"] == "ce" and c["pool"] == "wide")
    data = training_data(lake, study["dataset_id"], c["pool_id"])
    x, y, n_aug = data.with_selection(lake, c["selection_id"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the study's workers train: the same sums, bit for bit
    try:
        model = build_model("lenet5", 10, 1, 28, seed=1)
        train(model, x, y, replace(cfg.retrain, seed=1), log=None)
        acc = evaluate(model, data.test.images, data.test.labels)["acc"]
    finally:
        torch.set_num_threads(threads)
    assert n_aug == c["n_items"] and acc == runs[c["run_id"]]["test_acc"]

    # a finished study does nothing (the reruns in this process: worker processes trained
    # the cells above, bit for bit as by hand)
    before = _tree(lake.local_path(""))
    assert run_study(cfg, lake, workers=1, log=None) == (sid, location)
    assert _tree(lake.local_path("")) == before
    # a deleted report is written again, nothing retrained
    import shutil

    shutil.rmtree(location)
    assert run_study(cfg, lake, workers=1, log=None) == (sid, location)
    assert (Path(location) / "study.json").exists()
    assert lake.sql("select count(*) n from runs").to_pylist()[0]["n"] == len(runs)
    # a crash after some cells: the rest are trained, the done ones found
    lost = [c["run_id"] for c in cells[:3]]
    for r in lost:
        lake.remove(lake.partition_dir("runs", r))
        lake.remove(lake.partition_dir("history", r))
    lake.remove(lake.partition_dir("studies", sid))
    kept_at = {r["run_id"]: r["created_at"] for r in lake.sql("select * from runs").to_pylist()}
    run_study(cfg, lake, workers=1, log=None)
    after = {r["run_id"]: r for r in lake.sql("select * from runs").to_pylist()}
    assert set(after) == set(runs)
    assert all(after[r]["created_at"] == t for r, t in kept_at.items())  # not retrained
    assert all(after[r]["test_acc"] == runs[r]["test_acc"] for r in lost)  # deterministic


@pytest.mark.slow
def test_unstratified_windows_get_an_unstratified_random_beside_them(tmp_path, fashion_root):
    from smartaug.steps.study import run_study

    cfg = tiny_study(fashion_root, pools=(PoolSpec("seed", AugmentConfig()),), budgets=(0.2,),
                     scores=("avh",), positions=("offset",), coverage=(), references=(),
                     per_class=False)
    lake = Lake(tmp_path / "lake")
    sid, location = run_study(cfg, lake, workers=1, log=None)
    report = json.loads((Path(location) / "study.json").read_text())
    rows = {r["selector"]: r for r in report["leaderboard"]}
    assert set(rows) == {"random", "random-unstratified", "avh@offset"}
    control = rows["random-unstratified"]
    assert control["role"] == "control" and control["p_holm"] is None  # outside the family
    assert control["diff_vs_random"] is not None and rows["avh@offset"]["p_holm"] is not None
    cells = json.loads(lake.row("studies", sid)["cells"])
    for c in cells:  # a plain uniform draw, fresh per seed, of exactly the budget
        if c["selector"] == "random-unstratified":
            sel = S.read_selection(lake, c["selection_id"]).to_pylist()
            assert len(sel) == 48 and {x["sql_file"] for x in sel} == {"random.sql"}
            assert {x["params"] for x in sel} == {json.dumps({"n": 48, "seed": c["rep"]})}
    assert "unstratified" in report["protocol"]


@pytest.mark.slow
def test_cli_study_preset_with_overrides_prints_the_report_last(tmp_path):
    images = write_image_folder(tmp_path / "images", classes=("ant", "bee", "cow", "doe"),
                                per_class=(15, 5), size=(20, 20), mode="L")
    storage = tmp_path / "storage"
    # the command of the README and docs/studies.md, on a generated image folder
    res = subprocess.run([str(BIN / "smartaug"), "study", "--preset", "quick", "--dataset",
                          f"imagefolder:{images}", "--grayscale", "--image-size", "28",
                          "--epochs", "1", "--seeds", "2", "--storage", str(storage)],
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    out = Path(res.stdout.strip().splitlines()[-1])
    report = json.loads((out / "study.json").read_text())
    rows = report["leaderboard"]
    assert {r["pool"] for r in rows} == {"seed", "wide"}
    assert {r["budget"] for r in rows if r["kind"] != "reference"} == {0.1, 0.2, 0.5}
    sels = {r["selector"] for r in rows}
    for s in ("avh", "el2n", "loss", "margin"):
        assert {f"{s}@{p}" for p in (*POSITIONS, "val")} <= sels
    assert {"random", "coverage-avh", "none", "all"} <= sels
    assert all(KEYS <= set(r) for r in rows)
    # the same command again: nothing to do, the same report
    again = subprocess.run(res.args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == str(out)
    assert "nothing to do" in again.stderr


@pytest.mark.slow
def test_a_study_file_with_a_space_and_relative_paths(tmp_path, fashion_root):
    import albumentations as A

    from smartaug.experiment_file import ConfigError, load_study

    dark = A.to_dict(A.RandomBrightnessContrast(brightness_limit=(-0.6, -0.4),
                                                contrast_limit=(0, 0), p=1.0))
    (tmp_path / "space.json").write_text(json.dumps({"kinds": {"rotate180": "builtin",
                                                               "dark": dark}}))
    f = tmp_path / "study.toml"
    f.write_text(f"""preset = "quick"
budgets = [0.25]
scores = ["avh"]
positions = ["easiest", "hardest"]
coverage = []
seeds = 2
references = ["none"]

[data]
root = "{fashion_root}"
per_class_train = 20
per_class_test = 5

[retrain]
epochs = 1

[baseline]
epochs = 1

[[pools]]
name = "mine"
[pools.augment]
policy = "all"
space = "space.json"
""")
    cfg = load_study(f)
    assert cfg.pools[0].augment.kinds == ("rotate180", "dark") and cfg.budgets == (0.25,)
    assert cfg.retrain.batch_size == 128 and cfg.data.val_fraction == pytest.approx(1 / 11)
    from smartaug.steps.study import run_study

    sid, location = run_study(cfg, Lake(tmp_path / "lake"), workers=1, log=None)
    report = json.loads((Path(location) / "study.json").read_text())
    kinds = {k: v for x in report["kept"] if x["selector"] == "random"
             for k, v in x["by_kind"].items()}
    assert set(kinds) == {"rotate180", "dark"}
    bad = tmp_path / "bad.toml"
    bad.write_text('preset = "quick"\nbudget = [0.1]\n')
    with pytest.raises(ConfigError, match="unknown key 'budget'; valid: .*budgets"):
        load_study(bad)


def test_a_study_without_validation_images_is_refused_before_training(tmp_path):
    images = write_image_folder(tmp_path / "images", per_class=(4, 2), size=(16, 16))
    storage = tmp_path / "storage"
    res = subprocess.run([str(BIN / "smartaug"), "study", "--dataset", f"imagefolder:{images}",
                          "--storage", str(storage)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 2 and "no validation images" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    lake = Lake(storage)
    count = {t: lake.sql(f"select count(*) n from {t}").to_pylist()[0]["n"]
             for t in ("samples", "models", "pools", "runs")}
    assert count["samples"] > 0  # ingested: the dataset said what it holds
    assert count["models"] == count["pools"] == count["runs"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_workers_die_with_a_killed_study_and_write_nothing_after(tmp_path, fashion_root, sig):
    """`study --workers 2` killed mid-grid: its worker processes (and multiprocessing's
    resource tracker) end within seconds, and no cell is committed after the kill."""
    import psutil

    f = tmp_path / "study.toml"
    f.write_text(f"""preset = "quick"
budgets = [0.25, 0.5]
scores = ["avh"]
positions = ["easiest", "hardest"]
coverage = []
seeds = 8
references = ["none"]
[data]
root = "{fashion_root}"
per_class_train = 20
per_class_test = 5
[retrain]
epochs = 3
[baseline]
epochs = 1
""")
    storage = tmp_path / "lake"
    proc = subprocess.Popen([str(BIN / "smartaug"), "study", "--config", str(f), "--workers",
                             "2", "--storage", str(storage)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def runs() -> set[str]:
        d = storage / "runs"
        return {p.name for p in d.glob("run_id=*")} if d.is_dir() else set()

    try:
        deadline = time.time() + 600
        while len(runs()) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, "the study ended before it could be killed"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2
        proc.send_signal(sig)
        proc.wait(timeout=30)
        at_kill = runs()
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [(p.pid, p.name()) for p in alive]
        time.sleep(1)
        assert runs() == at_kill
    finally:
        if proc.poll() is None:
            proc.kill()


def test_smartaug_workers_sets_the_default_worker_count(monkeypatch):
    from smartaug.errors import InputError
    from smartaug.steps.study import default_workers

    cfg = StudyConfig(retrain=TrainConfig(device="cpu"))
    monkeypatch.setenv("SMARTAUG_WORKERS", "3")
    assert default_workers(cfg) == 3
    monkeypatch.delenv("SMARTAUG_WORKERS")
    assert default_workers(cfg) == len(os.sched_getaffinity(0))
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("SMARTAUG_WORKERS", bad)
        with pytest.raises(InputError, match="SMARTAUG_WORKERS must be a positive integer"):
            default_workers(cfg)


def _talk(lake, n, fail=False, log=None):
    """A step for a worker: ``n`` log lines, then its pid (or a user error)."""
    from smartaug.errors import InputError

    for i in range(n):
        if log is not None:
            log(f"line {i} of {n}")
        time.sleep(0.02)
    if fail:
        raise InputError(f"step {n} refused")
    return os.getpid()


def test_process_runner_runs_steps_from_threads_with_their_own_log_lines(tmp_path):
    """What a Prefect flow's grid does: each task's thread runs its training in a worker
    process (``ProcessRunner.run``), several at once; each thread gets its own step's log
    lines in order and its result, a user error comes back as itself, and ``close`` leaves no
    process behind (the workers and the log queues' server)."""
    import threading

    import psutil

    from smartaug.errors import InputError
    from smartaug.steps.runners import ProcessRunner

    before = {p.pid for p in psutil.Process().children(recursive=True)}  # other tests'
    runner = ProcessRunner(Lake(tmp_path), 2, log=None)
    lines: dict[int, list] = {5: [], 9: []}
    pids: dict[int, int] = {}
    try:
        threads = [threading.Thread(target=lambda n=n: pids.__setitem__(
            n, runner.run(_talk, (n,), log=lines[n].append))) for n in (5, 9)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert lines == {n: [f"line {i} of {n}" for i in range(n)] for n in (5, 9)}
        assert set(pids) == {5, 9} and os.getpid() not in pids.values()
        assert runner.run(_talk, (2,)) in {p.pid for p in psutil.Process().children()}
        with pytest.raises(InputError, match="step 3 refused"):
            runner.run(_talk, (3, True), log=[].append)
    finally:
        runner.close()

    def ours():
        return [c for c in psutil.Process().children(recursive=True) if c.pid not in before
                and "resource_tracker" not in " ".join(c.cmdline())]

    deadline = time.time() + 10
    while ours() and time.time() < deadline:
        time.sleep(0.1)
    assert not ours()
