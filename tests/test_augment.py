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
    with pytest.raises(ValueError, match="kinds"):
        AugmentConfig(kinds=("rotate", "blur"))


def test_rotation_matrix_is_albumentations_own():
    from albumentations.augmentations.geometric import functional as fg

    from pipeline.core.augment import _rotation_matrix

    for shape, a in (((28, 28), 13.3), ((32, 20), -19.9), ((5, 5), 0.0)):
        c = fg.center(shape)
        ref = fg.create_affine_transformation_matrix({"x": 0, "y": 0}, {"x": 0, "y": 0},
                                                     {"x": 1, "y": 1}, a, c)
        np.testing.assert_allclose(_rotation_matrix(c, a), ref, atol=1e-12)
