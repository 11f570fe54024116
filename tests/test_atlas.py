"""Which augmentations help: magnitudes as data, the atlas of one scoring run, the recommended
policy and ``smartaug.policy.load`` in a training loop."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest

from smartaug.config import AugmentConfig
from smartaug.core import augment as aug
from smartaug.core.magnitude import SCALES, bin_of, grid_draw, magnitude_of, scale_of
from tests.conftest import smartaug, write_image_folder

KINDS = ("rotate", "noise", "hflip", "vflip", "rotate180", "crop", "cutout", "jpeg")


def test_grid_items_sit_inside_their_bins_and_regenerate_bit_for_bit():
    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28, 1), dtype=np.uint8)
    cfg = AugmentConfig(policy="all", kinds=tuple(SCALES)[:6] + ("hflip",), magnitude_bins=4)
    items = aug.plan([f"train/{i}" for i in range(12)], cfg)
    out, angle, sigma, _, applied = aug._apply(images, items, cfg)
    for (_, _, seed, kind), params, a, s in zip(items, applied, angle, sigma, strict=True):
        p = json.loads(params)
        scale = scale_of(kind, cfg.max_angle)
        if scale is None:  # a flip: no magnitude
            assert "magnitude" not in p
            continue
        m, b, sign = grid_draw(seed, 4, scale)
        assert p["magnitude"] == m and p["magnitude_bin"] == b == bin_of(m, 4, scale)
        assert scale.lo + (scale.hi - scale.lo) * b / 4 <= m <= scale.lo + (
            scale.hi - scale.lo) * (b + 1) / 4
        if kind == "rotate":  # the applied angle is the magnitude, with its sign
            assert a == sign * m and abs(p["angle"]) == pytest.approx(m, abs=1e-6)
        if kind == "noise":
            assert s == m
        if kind == "crop":  # the kept share of the area, read back from what it applied
            assert magnitude_of(kind, {k: v for k, v in p.items() if k != "magnitude"},
                                28, 28, scale) == pytest.approx(m, abs=0.08)
    assert np.array_equal(aug.regenerate(images, items, cfg), out)  # a recipe pool's pixels
    bins = {}
    for (_, _, seed, kind) in items:
        s = scale_of(kind, cfg.max_angle)
        if s is not None:
            bins.setdefault(kind, []).append(grid_draw(seed, 4, s)[1])
    counts = np.bincount(np.concatenate(list(bins.values())), minlength=4)
    assert counts.min() >= 8 and counts.sum() == 72  # 72 items over 4 bins: every bin used
    assert AugmentConfig().to_dict() == {k: v for k, v in AugmentConfig(
        magnitude_bins=0).to_dict().items()}  # no grid: every pool id as before
    assert "magnitude_bins" not in AugmentConfig().to_dict()


def test_magnitudes_read_from_what_a_kind_applied():
    assert magnitude_of("rotate", {"angle": -12.5}, 28, 28, scale_of("rotate")) == 12.5
    assert magnitude_of("noise", {"sigma": 0.1}, 28, 28, scale_of("noise")) == 0.1
    # a crop of 14 x 14 pixels of a 28 x 28 image keeps a quarter of its area
    assert magnitude_of("crop", {"crop_coords": [0, 0, 14, 14]}, 28, 28,
                        scale_of("crop")) == 0.25
    assert magnitude_of("hflip", {"flipped": True}, 28, 28, scale_of("hflip")) is None
    assert scale_of("rotate", 45).hi == 45 and not SCALES["jpeg"].higher


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A small image folder's lake: a 2-epoch baseline, a magnitude-grid pool of 8 kinds
    (6 augmentations an image, 3 bins) and its scoring run."""
    tmp = tmp_path_factory.mktemp("atlas")
    root = write_image_folder(tmp / "images", per_class=(40, 10), size=(28, 28))
    lake = tmp / "lake"
    ids = {}
    for name, args in (
            ("dataset", ["ingest", "--dataset", f"imagefolder:{root}", "--grayscale"]),
            ("model", ["baseline", "--dataset-id", "{dataset}", "--epochs", "2"]),
            ("pool", ["augment", "--dataset-id", "{dataset}", "--policy", "k:6", "--kinds",
                      ",".join(KINDS), "--magnitude-bins", "3"]),
            ("run", ["score", "--model-id", "{model}", "--pool-id", "{pool}"])):
        import subprocess
        import sys

        cmd = [sys.executable, "-m", "smartaug.cli", *(a.format(**ids) for a in args),
               "--storage", str(lake)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        ids[name] = out.stdout.split()[-1]
    return lake, ids


def test_atlas_counts_flips_and_rates_agree_with_the_baselines_predictions(scored, capsys):
    lake, ids = scored
    code, out, err = smartaug(capsys, "atlas", "--scoring-run-id", ids["run"], "--bins", "3",
                              "--storage", str(lake))
    assert code == 0, err
    atlas_id = out.split()[-1]
    code, out, err = smartaug(
        capsys, "sql", f"select kind, magnitude_bin, label, n, n_orig_correct, n_flipped, "
        f"flip_rate from atlas where atlas_id = '{atlas_id}'", "--csv", "--limit", "100000",
        "--storage", str(lake))
    assert code == 0, err
    import csv
    import io

    rows = [{k: (None if v == "" else float(v) if k == "flip_rate" else
                 v if k == "kind" else int(v)) for k, v in r.items()}
            for r in csv.DictReader(io.StringIO(out))]
    assert rows
    from smartaug.lake import Lake

    lk = Lake(lake)
    kinds = lk.sql(f"select kind, count(*) n from augmentations where pool_id = "
                   f"'{ids['pool']}' group by kind").to_pylist()
    per_kind = {}
    for r in rows:
        per_kind[r["kind"]] = per_kind.get(r["kind"], 0) + r["n"]
        assert r["n_flipped"] <= r["n_orig_correct"] <= r["n"]
        assert r["flip_rate"] is None or 0 <= r["flip_rate"] <= 1
        if r["n_orig_correct"]:
            assert r["flip_rate"] == pytest.approx(r["n_flipped"] / r["n_orig_correct"])
    assert per_kind == {k["kind"]: k["n"] for k in kinds}  # every augmentation, once
    # the flips, recomputed from the baseline's own predictions on originals and augmentations
    originals = lk.read("atlas", atlas_id).to_pylist()[0]["originals_run_id"]
    again = lk.sql(f"""
        select a.kind, s.label, count(*) filter (where o.correct) n_right,
               count(*) filter (where o.correct and not s.correct) n_flipped
        from scores s join augmentations a on a.aug_id = s.item_id
        join scores o on o.item_id = a.sample_id and o.scoring_run_id = '{originals}'
        where s.scoring_run_id = '{ids['run']}' group by all""").to_pylist()
    mine = {}
    for r in rows:
        c = mine.setdefault((r["kind"], r["label"]), [0, 0])
        c[0] += r["n_orig_correct"]
        c[1] += r["n_flipped"]
    assert {(r["kind"], r["label"]): [r["n_right"], r["n_flipped"]] for r in again} == mine
    # the grid's bins: every kind with a magnitude has all 3
    assert {(r["kind"], r["magnitude_bin"]) for r in rows} >= {
        (k, b) for k in KINDS if k in SCALES for b in range(3)}
    report = lake / "reports" / atlas_id
    assert (report / "plots" / "flip_rate.png").stat().st_size > 1000
    assert (report / "plots" / "gallery.png").stat().st_size > 1000
    data = json.loads((report / "atlas.json").read_text())
    assert data["classes"] and {"kind", "lowest", "highest", "spread"} <= set(data["classes"][0])
    assert "flip_rate" in (report / "atlas.md").read_text()
    # the same run again: found, nothing written
    code, out2, _ = smartaug(capsys, "atlas", "--scoring-run-id", ids["run"], "--bins", "3",
                             "--storage", str(lake))
    assert code == 0 and out2.split()[-1] == atlas_id

    # the recommended policy: albumentations' own file, loaded as a callable
    path = lake.parent / "policy.json"
    code, out, err = smartaug(capsys, "policy", "--atlas", atlas_id, "--out", str(path),
                              "--max-flip", "0.3", "--storage", str(lake))  # the old name
    assert code == 0, err
    assert "note: --atlas is now --atlas-id (policy)" in err
    assert out.split()[-1] == str(path)
    compose = A.from_dict(json.loads(path.read_text()))
    assert isinstance(compose, A.Compose)
    meta = json.loads(path.read_text())["smartaug"]
    assert meta["atlas_id"] == atlas_id and abs(sum(
        k["weight"] for k in meta["kinds"].values()) - 1) < 1e-9
    for kind, k in meta["kinds"].items():  # every kept kind's kept bins flip at most 0.3
        cells = {}
        for r in rows:
            if r["kind"] == kind and r["magnitude_bin"] in k["bins"]:
                c = cells.setdefault(r["magnitude_bin"], [0, 0])
                c[0] += r["n_flipped"]
                c[1] += r["n_orig_correct"]
        assert all(f <= 0.3 * n for f, n in cells.values())
    from smartaug.policy import load

    policy = load(path, seed=0)
    image = np.random.default_rng(1).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    for label in (None, 0, 2):
        got = policy(image) if label is None else policy(image, label)
        assert got.shape == image.shape and got.dtype == np.uint8
    assert load(path, seed=3)(image).tobytes() == load(path, seed=3)(image).tobytes()


def test_the_readmes_training_loop_runs(scored, capsys, tmp_path, monkeypatch):
    """The README's policy block, as written (an ImageFolder dataset with the policy as a
    transform), on a policy file the CLI wrote; then a loop drawing fresh ones each epoch."""
    lake, ids = scored
    code, out, err = smartaug(capsys, "atlas", "--scoring-run-id", ids["run"], "--bins", "3",
                              "--storage", str(lake))
    assert code == 0, err
    path = tmp_path / "policy.json"
    assert smartaug(capsys, "policy", "--atlas-id", out.split()[-1], "--out", str(path),
                    "--storage", str(lake))[0] == 0
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (loop,) = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
               if "load_policy" in b]
    assert len(loop.strip().splitlines()) <= 13
    from tests.conftest import write_image_folder

    write_image_folder(tmp_path / "pets", per_class=(3, 1), size=(36, 36))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(loop.replace("/data/pets", str(tmp_path / "pets")), "README.md", "exec"),
         scope)  # noqa: S102 - the README's own code
    x, y = scope["train"][0]
    assert tuple(x.shape) == (1, 28, 28) and len(scope["train"]) == 9
    import torch

    from smartaug.policy import load

    policy = load(path, seed=0)
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(64) % 3
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # every epoch draws fresh augmentations
        for i in range(0, 64, 16):
            x = torch.stack([torch.from_numpy(policy(im, int(y))).permute(2, 0, 1).float() / 255
                             for im, y in zip(images[i:i + 16], labels[i:i + 16], strict=True)])
            loss = torch.nn.functional.cross_entropy(model(x), torch.from_numpy(labels[i:i + 16]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("args, words", [
    (["--max-flip", "1.5"], "--max-flip must be in [0, 1]"),
    (["--max-flip", "-0.1"], "--max-flip must be in [0, 1]"),
])
def test_a_policy_with_a_bad_cut_is_refused(scored, capsys, tmp_path, args, words):
    lake, ids = scored
    code, out, _ = smartaug(capsys, "atlas", "--scoring-run-id", ids["run"], "--bins", "3",
                            "--storage", str(lake))
    path = tmp_path / "p.json"
    code, _, err = smartaug(capsys, "policy", "--atlas-id", out.split()[-1], "--out", str(path),
                            *args, "--storage", str(lake))
    assert code == 2 and words in err and "Traceback" not in err and not path.exists()


def test_an_atlas_of_too_few_items_names_the_cells(scored, capsys):
    lake, ids = scored
    code, _, err = smartaug(capsys, "atlas", "--scoring-run-id", ids["run"], "--bins", "40",
                            "--min-items", "50", "--storage", str(lake))
    text = " ".join(err.split())
    assert code == 2 and "hold fewer than 50 augmentations" in text and "rotate bin 0:" in text
    assert "Traceback" not in err


def test_a_policy_file_albumentations_cannot_load_is_refused(tmp_path):
    from smartaug.policy import PolicyFileError, load

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"transform": {"__class_fullname__": "NoSuchThing"}}))
    with pytest.raises(PolicyFileError, match="albumentations cannot load"):
        load(bad)
    bad.write_text("{not json")
    with pytest.raises(PolicyFileError, match="is not JSON"):
        load(bad)
    with pytest.raises(PolicyFileError, match="cannot read"):
        load(tmp_path / "missing.json")


def test_a_declared_magnitude_must_name_a_number(tmp_path):
    space = tmp_path / "space.yaml"
    t = A.to_dict(A.ImageCompression(compression_type="jpeg", quality_range=(20, 60), p=1.0))
    space.write_text(json.dumps({"kinds": {"squash": {**t, "magnitude": {
        "param": "image_type", "lo": 0, "hi": 1}}}}))
    kinds, defined = aug.load_space(space)
    cfg = AugmentConfig(kinds=kinds, space=defined)
    with pytest.raises(aug.SpaceError, match="not a number"):
        aug.check_kinds(np.zeros((28, 28, 1), np.uint8), cfg)
    space.write_text(json.dumps({"kinds": {"squash": {**t, "magnitude": {
        "param": "quality", "lo": 60, "hi": 10}}}}))
    with pytest.raises(aug.SpaceError, match="lo < hi"):
        aug.load_space(space)
    space.write_text(json.dumps({"kinds": {"squash": {**t, "magnitude": {
        "param": "quality", "lo": 10, "hi": 90, "stronger": "lower"}}}}))
    kinds, defined = aug.load_space(space)
    aug.check_kinds(np.zeros((28, 28, 1), np.uint8), AugmentConfig(kinds=kinds, space=defined))
    assert json.loads(dict(defined)["squash"])["magnitude"]["param"] == "quality"


def test_a_scoring_run_of_originals_is_not_an_atlas(scored, capsys):
    lake, ids = scored
    from smartaug.lake import Lake

    lk = Lake(lake)
    dataset = lk.row("pools", ids["pool"])["dataset_id"]
    code, out, _ = smartaug(capsys, "score", "--model-id", ids["model"], "--dataset-id",
                            dataset, "--storage", str(lake))
    code, _, err = smartaug(capsys, "atlas", "--scoring-run-id", out.split()[-1], "--storage",
                            str(lake))
    assert code == 2 and "not a pool" in err
    assert Path(lake).exists()


# ------------------------------------------------------------------ the policy's rule, cell by cell


def test_a_policy_cut_steps_over_empty_bins_and_states_its_doubts():
    """A kind that fills only some magnitude bins (noise at a fixed sigma fills bin 2 of 3)
    is judged on those, never left out for its empty weakest bin; each cut names the bin that
    decided it with its count and Wilson interval, and says when the interval spans the cut or
    fewer than MIN_DECIDING images decided it."""
    from scipy.stats import binomtest

    from smartaug.core.magnitude import scale_of
    from smartaug.steps.policy import MIN_DECIDING, _cut, said

    scales = {"noise": scale_of("noise", 20.0), "hflip": None, "rotate": scale_of("rotate", 20.0)}
    cells = {("noise", 2): [8, 90],  # 0.089: bins 0 and 1 hold nothing
             ("hflip", 0): [12, 48],  # 0.25 over 48 images: out, but uncertain and few
             ("rotate", 0): [1, 400], ("rotate", 1): [30, 400], ("rotate", 2): [200, 400]}
    out = _cut(cells, None, ["noise", "hflip", "rotate"], 3, scales, 0.2)
    assert out["noise"]["bins"] == [2] and out["noise"]["limit"] == pytest.approx(
        scales["noise"].hi)  # kept, up to the edge of the bin it was judged on
    assert out["noise"]["decided_by"]["n"] == 90
    hflip = out["hflip"]
    assert hflip["bins"] == [] and not hflip["empty"]
    d = hflip["decided_by"]
    want = binomtest(12, 48).proportion_ci(method="wilson")
    assert d["ci95"] == pytest.approx([want.low, want.high])
    assert d["uncertain"] and d["few"] and 48 < MIN_DECIDING
    assert said(d) == ("bin 0: flip rate 0.250 [0.149, 0.388] on 48 images; uncertain: the "
                       "interval spans the cut; decided by fewer than 50 images")
    rotate = out["rotate"]  # cut at bin 2 (0.5), on 400 images: neither doubt
    assert rotate["bins"] == [0, 1] and rotate["decided_by"]["bin"] == 2
    assert not rotate["decided_by"]["uncertain"] and not rotate["decided_by"]["few"]
    assert _cut({}, None, ["noise"], 3, scales, 0.2)["noise"]["empty"]


def test_wilson_intervals_and_weak_baselines_are_named():
    from scipy.stats import binomtest

    from smartaug.core.stats import weak_baseline, wilson

    for k, n in ((0, 6), (6, 6), (12, 48), (3, 1000)):
        want = binomtest(k, n).proportion_ci(method="wilson")
        assert wilson(k, n) == pytest.approx((want.low, want.high), abs=1e-12)
    assert wilson(0, 6)[0] == 0.0 and wilson(6, 6)[1] == 1.0 and wilson(0, 0) is None
    assert "at chance (33.3 % accurate, chance 33.3 %)" in weak_baseline(1 / 3, 3)
    assert "weak (52.0 % accurate, chance 10.0 %)" in weak_baseline(0.52, 10)
    assert "52 %-accurate baseline" in weak_baseline(0.52, 10)  # the README's failure case
    assert weak_baseline(0.85, 10) is None and weak_baseline(None, 10) is None


def test_the_atlas_and_the_policy_name_a_weak_baseline(scored, capsys, tmp_path):
    """The atlas and its policy say, in one line, when the baseline they judge by is too weak
    to judge augmentations (and the atlas's table gives every cell its interval)."""
    from smartaug.lake import Lake
    from smartaug.steps.atlas import baseline_health

    lake, ids = scored
    code, out, err = smartaug(capsys, "atlas", "--scoring-run-id", ids["run"], "--bins", "3",
                              "--storage", str(lake))
    assert code == 0, err
    atlas_id = out.split()[-1]
    health = baseline_health(Lake(lake), ids["model"])
    assert health["classes"] == 3 and 0 <= health["accuracy"] <= 1
    assert (health["weak"] is not None) == (health["accuracy"] < 2 / 3)
    assert ("warning: the baseline is" in err) == (health["weak"] is not None)
    data = json.loads((lake / "reports" / atlas_id / "atlas.json").read_text())
    assert data["baseline"] == health
    assert data["command"] == (f"smartaug atlas --scoring-run-id {ids['run']} --bins 3 "
                               f"--storage {Lake(lake).url()}")  # what reproduces it, in full
    assert all(c["flip_rate_ci95"] is None or c["flip_rate_ci95"][0] <= c["flip_rate"]
               <= c["flip_rate_ci95"][1] for c in data["cells"])
    assert "95 % interval (Wilson)" in (lake / "reports" / atlas_id / "atlas.md").read_text()
    code, out, err = smartaug(capsys, "policy", "--atlas-id", atlas_id, "--out",
                              str(tmp_path / "p.json"), "--storage", str(lake))
    assert code == 0, err
    assert ("warning: the baseline is" in err) == (health["weak"] is not None)
    meta = json.loads((tmp_path / "p.json").read_text())["smartaug"]
    assert meta["baseline"] == health
    for kind, k in meta["kinds"].items():  # each kept kind names the bin that decided it
        assert k["decided_by"]["kind"] == kind and k["decided_by"]["n"] > 0


def test_a_policy_refuses_a_label_it_was_not_made_for_and_takes_tensors():
    """A 3-class policy refuses label 7 (and -1, and 'cat') instead of answering with the
    pooled policy; a torch tensor [C, H, W], uint8 or float, goes through as torchvision's
    transforms take it and comes back in its own layout and dtype."""
    import albumentations as A
    import torch

    from smartaug.policy import PolicyInputError, from_dict

    flip = A.to_dict(A.Compose([A.HorizontalFlip(p=1.0)]))
    keep = A.to_dict(A.Compose([A.NoOp()]))
    pooled = from_dict({**flip, "smartaug": {"classes": 3}}, name="p.json")
    per_class = from_dict(flip, {"0": keep, "1": flip, "2": flip}, name="p.json")
    img = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)
    for policy in (per_class, pooled):
        for bad in (7, -1, 3):
            with pytest.raises(PolicyInputError, match=rf"label {bad} is not a class of this "
                               r"policy \(p.json: labels 0..2\)"):
                policy(img, bad)
        with pytest.raises(PolicyInputError, match="a label is a class index"):
            policy(img, "cat")
    assert np.array_equal(per_class(img, np.int64(0)), img)  # class 0 keeps it
    assert np.array_equal(per_class(img, torch.tensor(1)), img[:, ::-1])
    assert pooled.classes == 3 and per_class.classes == 3  # the file's, or its classes
    chw = torch.from_numpy(img).permute(2, 0, 1)
    got = per_class(chw, 1)
    assert got.dtype == torch.uint8 and got.shape == chw.shape
    assert torch.equal(got, torch.from_numpy(np.ascontiguousarray(img[:, ::-1])).permute(2, 0, 1))
    f = chw.float() / 255
    got = per_class(f, 2)
    assert got.dtype == torch.float32 and torch.allclose(got, f.flip(-1), atol=1 / 255)
    with pytest.raises(PolicyInputError, match="uint8 or float"):
        per_class(chw.to(torch.int32), 1)
    with pytest.raises(PolicyInputError, match="has no pixels"):
        per_class(np.zeros((0, 0, 3), np.uint8))
