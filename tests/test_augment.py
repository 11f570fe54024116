"""Augmentation pool (smartaug/augment.py): correct, deterministic, parameters recorded."""

import numpy as np
import pytest

from smartaug.config import AugmentConfig, parse_policy
from smartaug.core.augment import augment_images, plan


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

    from smartaug.core.augment import rotation_center

    for shape, a in (((28, 28), 13.3), ((32, 20), -19.9), ((5, 5), 0.0)):
        ref = fg.create_affine_transformation_matrix({"x": 0, "y": 0}, {"x": 0, "y": 0},
                                                     {"x": 1, "y": 1}, a, fg.center(shape))
        # what the rotate kind warps with: OpenCV's matrix about the project's centre, as 3x3
        mine = np.vstack([cv2.getRotationMatrix2D(rotation_center(*shape), a, 1.0),
                          (0.0, 0.0, 1.0)])
        np.testing.assert_allclose(mine, ref, atol=1e-12)
    assert rotation_center(28, 28) == (13.5, 13.5)  # the pixel grid's middle, not (14, 14)
    assert rotation_center(32, 20) == (9.5, 15.5)  # (x, y): x runs along the width


# the default space's pool before the space became data: ids, plan and applied parameters, and
# the pixels of every kind but rotate, the same with any OpenCV
DEFAULT_POOL_PIN = {
    "one": "3e37fb2847fea7b1", "all": "e693a712ae3ed578", "k:2": "8f29e3c0ed0cf1b7",
}
DEFAULT_PIXEL_PIN = {
    ((28, 28, 1), "one"): "2b9e57a8934a93a9", ((28, 28, 1), "all"): "286970b45d0ca446",
    ((28, 28, 1), "k:2"): "16e6c11c593d0955", ((32, 32, 3), "one"): "ad8ba34d6c49af79",
    ((32, 32, 3), "all"): "bbc42ffd1e73a7a0", ((32, 32, 3), "k:2"): "d27dbce7db629c73",
}
# rotated pixels, bit for bit for a given OpenCV: warpAffine's fixed-point rounding moves a few
# pixels by one grey level between releases (6 of 94 080 from 5.0 to 5.1)
ROTATED_PIN = {
    "4.13": ("cceef636c8c59e76", "3e0fb624da76f4fd", "6286e2a8637f57eb",
             "0899ee10524150a2", "70411aca898d0df8", "9203bd98a238c351"),
    "5.0": ("8b9aa59667286966", "b25a2bd73b2c9bdb", "3e8b67fea7d6c4a1",
            "6fe6363461fbaa3b", "e02fc66f58de1a83", "b08de809fe3a5bda"),
    "5.1": ("cd5bdd6076715c5b", "a9a5f22469ae5cdf", "90c3fd00d6a2d1b1",
            "83907e77964e7f10", "fd51e3183979793e", "dc44751922dd9fc7"),
}
ROTATED_PIN["4.14"] = ROTATED_PIN["4.13"]


def bilinear_rotation(img: np.ndarray, angle: float) -> np.ndarray:
    """Exact (float64) bilinear rotation about albumentations' centre, corners filled with 0."""
    import cv2

    h, w = img.shape[:2]
    m = np.linalg.inv(np.vstack([cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, 1.0),
                                 (0.0, 0.0, 1.0)]))
    ys, xs = np.mgrid[0:h, 0:w]
    sx, sy = m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    f = img.reshape(h, w, -1).astype(np.float64)

    def at(y, x):
        inside = ((y >= 0) & (y < h) & (x >= 0) & (x < w))[..., None]
        return np.where(inside, f[y.clip(0, h - 1), x.clip(0, w - 1)], 0.0)

    return (at(y0, x0) * (1 - fx) * (1 - fy) + at(y0, x0 + 1) * fx * (1 - fy)
            + at(y0 + 1, x0) * (1 - fx) * fy + at(y0 + 1, x0 + 1) * fx * fy)


def test_default_space_gives_the_same_pool_as_before():
    import hashlib

    import cv2

    def digest(*arrays):
        h = hashlib.sha256()
        for a in arrays:
            h.update(a if isinstance(a, bytes) else np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    # OpenCV 5 rounds the exact bilinear value; OpenCV 4 first snaps source coordinates to 1/32
    # of a pixel (up to 1/64 off in x and in y: 255 / 32 grey levels on noise), weights to 1/1024
    tolerance = 0.55 if int(cv2.__version__.split(".")[0]) >= 5 else 255 / 32 + 0.5 + 0.25
    rotated = []
    rng = np.random.default_rng(7)
    for shape in ((28, 28, 1), (32, 32, 3)):
        imgs = rng.integers(0, 256, size=(40, *shape), dtype=np.uint8)
        ids = [f"train/{i:06d}" for i in range(40)]
        for policy in ("one", "all", "k:2"):
            items, out, params = augment_images(imgs, ids, AugmentConfig(policy=policy, seed=3),
                                                workers=1)
            plan_digest = digest(repr(items).encode(),
                                 *(params[k] for k in ("angle", "sigma", "flipped")))
            assert plan_digest == DEFAULT_POOL_PIN[policy], policy
            rot = np.array([it[3] == "rotate" for it in items])
            assert digest(out[~rot]) == DEFAULT_PIXEL_PIN[(shape, policy)], (shape, policy)
            for i in np.flatnonzero(rot):  # any OpenCV: the exact rotation, rounded
                exact = bilinear_rotation(imgs[items[i][0]], params["angle"][i])
                assert np.abs(out[i].reshape(exact.shape) - exact).max() < tolerance, (shape, policy, i)
            rotated.append(digest(out[rot]))
    release = ".".join(cv2.__version__.split(".")[:2])
    if release in ROTATED_PIN:
        assert tuple(rotated) == ROTATED_PIN[release], release


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_every_builtin_kind_is_a_pure_function_of_its_seed(shape):
    import json

    from smartaug.config import BUILTIN_KINDS

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

    from smartaug.core.augment import SpaceError, load_space

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
