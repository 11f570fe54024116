"""Augmentation pool (pipeline/augment.py): correct, deterministic, parameters recorded."""

import numpy as np
import pytest

from pipeline.config import AugmentConfig, parse_policy
from pipeline.core.augment import augment_images, plan


def images(n=40, c=1, size=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size, c), dtype=np.uint8)
    return x, [f"train/{i:06d}" for i in range(n)]


def test_same_pool_whatever_workers_and_chunking():
    x, ids = images(300)
    cfg = AugmentConfig(seed=5)
    _, a, pa_ = augment_images(x, ids, cfg, workers=1, chunk=1000)
    _, b, pb = augment_images(x, ids, cfg, workers=2, chunk=37)
    assert np.array_equal(a, b)
    for k in pa_:
        np.testing.assert_array_equal(pa_[k], pb[k])
    # and an item does not depend on which other items are in the batch
    _, c, _ = augment_images(x[100:110], ids[100:110], cfg, workers=1)
    assert np.array_equal(c, a[100:110])
    _, d, _ = augment_images(x, ids, AugmentConfig(seed=6), workers=1)
    assert not np.array_equal(a, d)


@pytest.mark.parametrize("channels", [1, 3])
def test_each_kind_does_what_it_says(channels):
    x, ids = images(60, c=channels)
    items, out, p = augment_images(x, ids, AugmentConfig(policy="all"), workers=1)
    assert out.dtype == np.uint8 and out.shape == (180, 20, 20, channels)
    kinds = np.array([it[3] for it in items])
    rows = np.array([it[0] for it in items])
    flips = kinds == "hflip"
    assert np.array_equal(out[flips], x[rows[flips]][:, :, ::-1])
    assert p["flipped"][flips].all() and not p["flipped"][~flips].any()
    noise = kinds == "noise"
    resid = out[noise].astype(float) - x[rows[noise]].astype(float)
    interior = (x[rows[noise]] > 60) & (x[rows[noise]] < 195)  # away from clipping
    assert abs(resid[interior].std() / 255 - 0.1) < 0.01
    assert np.allclose(p["sigma"][noise], 0.1) and np.isnan(p["sigma"][~noise]).all()
    rot = kinds == "rotate"
    assert (np.abs(p["angle"][rot]) <= 20).all() and np.isnan(p["angle"][~rot]).all()


def test_rotation_angle_is_the_applied_one():
    # a bright bar along the x axis; after rotation its principal axis angle is the angle
    x = np.zeros((1, 41, 41, 1), np.uint8)
    x[0, 20, 5:36] = 255
    for seed in range(50):  # a seed whose angle is far from 0
        _, out, p = augment_images(x, ["train/000000"], AugmentConfig(kinds=("rotate",),
                                   seed=seed), workers=1)
        if abs(p["angle"][0]) > 5:
            break
    else:
        pytest.fail("no seed in 0..49 gives a rotation larger than 5 degrees")
    ys, xs = np.nonzero(out[0, :, :, 0] > 100)
    # image rows grow downwards: counter-clockwise on screen = negative slope in row units
    slope = np.degrees(np.arctan2(-(ys - ys.mean()) @ (xs - xs.mean()),
                                  (xs - xs.mean()) @ (xs - xs.mean())))
    assert abs(slope - p["angle"][0]) < 2.0


def test_policies():
    x, ids = images(10)
    assert len(plan(ids, AugmentConfig(policy="one"))) == 10
    assert len(plan(ids, AugmentConfig(policy="k:3"))) == 30
    allp = plan(ids, AugmentConfig(policy="all"))
    assert [it[3] for it in allp[:3]] == ["rotate", "noise", "hflip"]
    kinds = [it[3] for it in plan([f"s{i}" for i in range(3000)], AugmentConfig())]
    counts = np.unique(kinds, return_counts=True)[1]
    assert (np.abs(counts - 1000) < 100).all()  # drawn uniformly
    with pytest.raises(ValueError, match="valid: one, all, k:N"):
        parse_policy("some")
    with pytest.raises(ValueError, match="unknown augmentation kind.*'shear'.*valid: rotate"):
        AugmentConfig(kinds=("rotate", "shear"))


def test_rotation_matrix_is_albumentations_own():
    import cv2
    from albumentations.augmentations.geometric import functional as fg

    for shape, a in (((28, 28), 13.3), ((32, 20), -19.9), ((5, 5), 0.0)):
        c = fg.center(shape)
        ref = fg.create_affine_transformation_matrix({"x": 0, "y": 0}, {"x": 0, "y": 0},
                                                     {"x": 1, "y": 1}, a, c)
        # what the rotate kind warps with: OpenCV's matrix, as a 3x3
        mine = np.vstack([cv2.getRotationMatrix2D(c, a, 1.0), (0.0, 0.0, 1.0)])
        np.testing.assert_allclose(mine, ref, atol=1e-12)


# the default space's pool before the space became data (ids, plan, pixels, parameters)
DEFAULT_POOL_PIN = {
    ((28, 28, 1), "one"): "cb234e055105f858", ((28, 28, 1), "all"): "d6c5e46220745c4c",
    ((28, 28, 1), "k:2"): "0fc8ff6c62f6ecd3", ((32, 32, 3), "one"): "68fcd3f5e45a8d78",
    ((32, 32, 3), "all"): "8e19c7b958afacaf", ((32, 32, 3), "k:2"): "2df2551c478656c0",
}


def test_default_space_gives_the_same_pool_as_before():
    import hashlib

    rng = np.random.default_rng(7)
    for shape in ((28, 28, 1), (32, 32, 3)):
        imgs = rng.integers(0, 256, size=(40, *shape), dtype=np.uint8)
        ids = [f"train/{i:06d}" for i in range(40)]
        for policy in ("one", "all", "k:2"):
            items, out, params = augment_images(imgs, ids, AugmentConfig(policy=policy, seed=3),
                                                workers=1)
            h = hashlib.sha256(out.tobytes())
            h.update(repr(items).encode())
            for k in ("angle", "sigma", "flipped"):
                h.update(np.ascontiguousarray(params[k]).tobytes())
            assert h.hexdigest()[:16] == DEFAULT_POOL_PIN[(shape, policy)], (shape, policy)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_every_builtin_kind_is_a_pure_function_of_its_seed(shape):
    import json

    from pipeline.config import BUILTIN_KINDS

    x = np.random.default_rng(1).integers(0, 256, size=(30, *shape), dtype=np.uint8)
    ids = [f"train/{i:06d}" for i in range(30)]
    cfg = AugmentConfig(policy="all", kinds=BUILTIN_KINDS, seed=5)
    items, a, pa_ = augment_images(x, ids, cfg, workers=1)
    _, b, pb = augment_images(x, ids, cfg, workers=2, chunk=37)
    assert a.shape == (30 * len(BUILTIN_KINDS), *shape) and np.array_equal(a, b)
    assert pa_["params"] == pb["params"]
    kinds = [it[3] for it in items]
    params = [json.loads(p) for p in pa_["params"]]
    changed = {k: 0 for k in BUILTIN_KINDS}
    for (row, _, _, kind), img, p in zip(items, a, params, strict=True):
        changed[kind] += int(not np.array_equal(img, x[row]))
        if kind in ("rotate", "rotate180"):
            assert abs(p["angle"]) <= (20 if kind == "rotate" else 180)
        if kind == "crop":
            assert len(p["crop_coords"]) == 4
        if kind == "jpeg":
            assert 20 <= p["quality"] <= 60
    assert all(v >= 25 for v in changed.values()), changed  # every kind changes the images
    assert kinds.count("cutout") == 30


def test_space_file_in_albumentations_format(tmp_path):
    """The issue's file shape, exactly: a built-in kind by name and a transform as
    A.to_dict writes it; a transform that changes the size is resized back."""
    import json

    import albumentations as A

    from pipeline.core.augment import SpaceError, load_space

    f = tmp_path / "space.yaml"
    f.write_text("kinds:\n"
                 "  rotate: builtin            # a built-in kind by name\n"
                 "  grid:                      # A.to_dict(A.GridDistortion(num_steps=5, p=1.0))\n"
                 "    __version__: 2.0.8\n"
                 "    transform: {__class_fullname__: GridDistortion, num_steps: 5, p: 1.0}\n"
                 "  small: " + json.dumps(A.to_dict(A.RandomCrop(height=20, width=18, p=1.0)))
                 + "\n")
    kinds, space = load_space(f)
    assert kinds == ("rotate", "grid", "small") and [n for n, _ in space] == ["grid", "small"]
    cfg = AugmentConfig(policy="all", kinds=kinds, space=space)
    x, ids = images(12)
    items, out, params = augment_images(x, ids, cfg, workers=1)
    assert out.shape == (36, *x.shape[1:])
    assert json.loads(params["params"][2])["crop_coords"]  # the crop's applied window
    # the same pool from a JSON file
    g = tmp_path / "space.json"
    g.write_text(json.dumps({"kinds": {"rotate": "builtin", "grid": json.loads(space[0][1]),
                                       "small": json.loads(space[1][1])}}))
    assert load_space(g) == (kinds, space)
    for text, words in (
        ("kinds: {shear: builtin}", "not a built-in kind"),
        ("kinds: {x: {transform: {num_steps: 5}}}", "not albumentations' format"),
        ("kinds: {x: {__version__: 2.0.8, transform: {__class_fullname__: GridDistortion, "
         "num_steps: -5, p: 1.0}}}", "albumentations refused GridDistortion"),
        ("kinds: {x: {__version__: 2.0.8, transform: {__class_fullname__: NoSuchThing}}}",
         "albumentations refused NoSuchThing"),
        ("augment: [rotate]", "'kinds'"),
        ("kinds: [rotate", "not valid YAML"),
    ):
        f.write_text(text)
        with pytest.raises(SpaceError, match=words):
            load_space(f)
    rgb = AugmentConfig(kinds=("torgb",), space=(("torgb", json.dumps(A.to_dict(
        A.ToRGB(p=1.0)))),))
    with pytest.raises(SpaceError, match="1-channel image into 3 channels"):
        augment_images(x, ids, rgb, workers=1)
