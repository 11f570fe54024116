"""Recipe pools (--materialize auto|always|never): a pool without pixels gives back, by
regenerating them, bit for bit the pixels a materialised pool stores, for every built-in kind,
through every reader (scoring, selections, SelectionDataset, export, retraining, the report's
gallery); a recipe row is small; a recipe whose kind changed is refused by name."""

import glob
import os
import shutil
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest

from smartaug.config import BUILTIN_KINDS, AugmentConfig, DataConfig, TrainConfig
from smartaug.core.augment import (
    SpaceError,
    augment_images,
    opencv_seeds,
    plan,
    reference_transforms,
    regenerate,
    rotation_angle,
)
from smartaug.lake import Lake
from smartaug.lake.readers import PIXEL_COLUMNS, PoolPixels
from smartaug.steps.pool import AUTO_MATERIALIZE_BYTES, build_pool, materializes
from tests.conftest import write_image_folder


def test_opencv_seeds_are_numpys_own():
    rng = np.random.default_rng(3)
    e = [0, 1, 2**32 - 1, *rng.integers(0, 2**32, 2000).tolist()]
    assert opencv_seeds(e) == [int(np.random.default_rng(x).integers(0, 2**16)) for x in e]


@pytest.mark.parametrize("channels", [1, 3])
def test_seed_kinds_are_albumentations_pixel_for_pixel(channels):
    """The fast OpenCV path of rotate / noise / hflip equals A.Rotate / A.GaussNoise /
    A.HorizontalFlip given the same draws."""
    import random

    from albumentations.augmentations.geometric import functional as fg

    x = np.random.default_rng(channels).integers(0, 256, size=(60, 28, 30, channels),
                                                 dtype=np.uint8)
    ids = [f"train/{i:06d}" for i in range(60)]
    cfg = AugmentConfig(policy="all", seed=11, max_angle=25.0, sigma=0.15)
    items, out, params = augment_images(x, ids, cfg, workers=1)
    ref = reference_transforms(cfg)
    for (row, _, s, kind), got, angle in zip(items, out, params["angle"], strict=True):
        img = x[row]
        if kind == "rotate":
            assert angle == rotation_angle(s, 25.0)
            matrix = fg.create_affine_transformation_matrix(
                {"x": 0, "y": 0}, {"x": 0, "y": 0}, {"x": 1, "y": 1}, angle,
                fg.center(img.shape[:2]))
            want = ref["rotate"].apply(img, matrix, 0, 0, 0, 0, shape=img.shape)
        elif kind == "noise":
            t = ref["noise"]
            t.set_random_state(np.random.default_rng(s >> 31), random.Random(0))
            want = t(image=img)["image"]
        else:
            want = ref["hflip"](image=img)["image"]
        assert np.array_equal(got, want.reshape(img.shape)), kind


def test_materializes_threshold():
    assert materializes("always", 10**9, (224, 224, 3))
    assert not materializes("never", 1, (28, 28, 1))
    n = AUTO_MATERIALIZE_BYTES // (28 * 28)
    assert materializes("auto", n, (28, 28, 1)) and not materializes("auto", n + 1, (28, 28, 1))
    assert not materializes("auto", 100_000, (32, 32, 3))  # 307 MB of pixels
    with pytest.raises(ValueError, match="materialize mode .sometimes.; valid: always, auto, never"):
        AugmentConfig(materialize="sometimes")


def _lakes(tmp_path, cfg_data):
    """Two lakes holding the same dataset and baseline, ready for a pool each."""
    from smartaug.steps.baseline import train_baseline
    from smartaug.steps.ingest import ingest

    a = Lake(tmp_path / "always")
    dataset_id = ingest(a, cfg_data, download=False)
    model_id = train_baseline(a, dataset_id, cfg=TrainConfig(epochs=1, device="cpu"), log=None)
    shutil.copytree(tmp_path / "always", tmp_path / "never")
    return a, Lake(tmp_path / "never"), dataset_id, model_id


@pytest.fixture(scope="module", params=["grey-fashion", "rgb-folder"])
def two_pools(request, tmp_path_factory):
    """The same every-kind pool, materialised in one lake and recipes only in the other."""
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "grey-fashion":
        from tests.conftest import FASHION_DIRS

        root = next((str(d) for d in FASHION_DIRS
                     if glob.glob(str(d / "train-images-idx3-ubyte*"))), None)
        if root is None:
            pytest.skip("Fashion-MNIST not installed")
        data = DataConfig(root=root, per_class_train=12, per_class_test=5, val_fraction=0.25)
    else:
        folder = write_image_folder(tmp / "folder", per_class=(8, 3), size=(24, 24), seed=4)
        data = DataConfig(dataset=f"imagefolder:{folder}", val_fraction=0.25)
    a, b, dataset_id, model_id = _lakes(tmp, data)
    cfg = AugmentConfig(policy="all", kinds=BUILTIN_KINDS, seed=9)
    pa_ = build_pool(a, dataset_id, replace(cfg, materialize="always"), workers=2)
    pb = build_pool(b, dataset_id, replace(cfg, materialize="never"), workers=2)
    assert pa_ == pb  # how a pool is stored is not what it holds
    return {"always": a, "never": b, "pool_id": pa_, "dataset_id": dataset_id,
            "model_id": model_id, "cfg": cfg}


def test_recipes_regenerate_the_materialised_pixels_kind_by_kind(two_pools):
    a, b, pool_id = two_pools["always"], two_pools["never"], two_pools["pool_id"]
    assert a.row("pools", pool_id)["materialized"] is True
    assert b.row("pools", pool_id)["materialized"] is False
    ta = a.read("augmentations", pool_id, columns=PIXEL_COLUMNS).sort_by("aug_id")
    tb = b.read("augmentations", pool_id, columns=PIXEL_COLUMNS).sort_by("aug_id")
    assert ta["image"].null_count == 0 and tb["image"].null_count == tb.num_rows
    for col in ("aug_id", "kind", "seed", "spec_hash", "height", "width", "channels"):
        assert ta[col].equals(tb[col]), col
    stored = PoolPixels(a, pool_id).images(ta)
    made = PoolPixels(b, pool_id, workers=1).images(tb)
    kinds = np.asarray(tb["kind"].to_pylist())
    assert set(kinds) == set(BUILTIN_KINDS)
    for kind in BUILTIN_KINDS:
        assert np.array_equal(stored[kinds == kind], made[kinds == kind]), kind
    # streamed through the worker processes, in batches, in order: the same bits
    pixels = PoolPixels(b, pool_id, workers=2)
    batches = list(b.iter_batches("augmentations", pool_id, columns=PIXEL_COLUMNS,
                                  batch_size=37))
    streamed = list(pixels.stream(iter(batches)))
    assert [x.num_rows for x, _ in streamed] == [x.num_rows for x in batches]
    order = {a_: i for i, a_ in enumerate(ta["aug_id"].to_pylist())}
    for batch, imgs in streamed:
        rows = [order[x] for x in batch.column("aug_id").to_pylist()]
        assert np.array_equal(imgs, stored[rows])
    # a mix of stored and missing pixels (a batch half-filtered) decodes one, makes the other
    half = ta.slice(0, 20)
    mixed = half.set_column(half.schema.get_field_index("image"), "image",
                            [half["image"].to_pylist()[:10] + [None] * 10])
    assert np.array_equal(PoolPixels(a, pool_id, workers=1).images(mixed), stored[:20])


def test_every_reader_sees_the_same_pool(two_pools, tmp_path):
    import smartaug
    from smartaug.steps import select as S
    from smartaug.steps.export import export
    from smartaug.steps.report import query
    from smartaug.steps.retrain import TrainingData
    from smartaug.steps.score import score_pool

    out = {}
    for mode in ("always", "never"):
        lake = two_pools[mode]
        run_id = score_pool(lake, two_pools["model_id"], two_pools["pool_id"], batch_size=50,
                            device="cpu")
        scores = lake.read("scores", run_id).sort_by("item_id")
        sid = S.band(lake, run_id, 0.1, 0.6)
        ds = smartaug.SelectionDataset(str(lake.root), sid)
        data = TrainingData(lake, two_pools["dataset_id"], two_pools["pool_id"])
        x, y, n = data.with_selection(lake, sid)
        dest = export(lake, sid, tmp_path / mode, fmt="parquet")
        exported = pq.read_table(dest / "items.parquet")
        gallery = query(lake, "report_gallery", scoring_run_id=run_id)
        out[mode] = {"run_id": run_id, "sid": sid,
                     "avh": scores["avh"].to_numpy(), "item": scores["item_id"].to_pylist(),
                     "ds": np.stack([ds[i][0].numpy() for i in range(len(ds))]),
                     "ids": ds.ids, "train": x, "labels": y, "n": n,
                     "export": exported,
                     "gallery": PoolPixels(lake, two_pools["pool_id"], workers=1).images(gallery)}
    a, b = out["always"], out["never"]
    assert a["run_id"] == b["run_id"] and a["sid"] == b["sid"] and a["item"] == b["item"]
    np.testing.assert_array_equal(a["avh"], b["avh"])
    assert a["ids"] == b["ids"] and np.array_equal(a["ds"], b["ds"])
    assert a["n"] == b["n"] > 0
    assert np.array_equal(a["train"], b["train"]) and np.array_equal(a["labels"], b["labels"])
    assert a["export"].num_rows == len(a["ids"]) and a["export"].equals(b["export"])
    assert len(a["gallery"]) > 0 and np.array_equal(a["gallery"], b["gallery"])


def test_a_recipe_row_costs_under_200_bytes(tmp_path, fashion_root):
    from smartaug.steps.ingest import ingest

    lake = Lake(tmp_path / "lake")
    dataset_id = ingest(lake, DataConfig(root=fashion_root, per_class_train=200,
                                         per_class_test=1), download=False)
    sizes = {}
    for mode in ("never", "always"):
        cfg = AugmentConfig(policy="all", kinds=BUILTIN_KINDS, seed=mode == "always",
                            materialize=mode)
        pool_id = build_pool(lake, dataset_id, cfg, workers=2)
        files = lake.files("augmentations", pool_id)
        sizes[mode] = sum(os.path.getsize(f) for f in files) / lake.row("pools", pool_id)[
            "n_items"]
    assert sizes["never"] < 200, sizes
    assert sizes["always"] > 28 * 28 / 4, sizes  # the pixels are there (zstd on 784 bytes)


def test_edited_kind_is_refused_by_name(two_pools, monkeypatch):
    import albumentations as A

    from smartaug.core import augment

    b, pool_id = two_pools["never"], two_pools["pool_id"]
    table = b.read("augmentations", pool_id, columns=PIXEL_COLUMNS)
    monkeypatch.setitem(augment.BUILTIN, "crop", (
        "an edited crop", lambda h, w: A.RandomResizedCrop(size=(h, w), scale=(0.5, 1.0), p=1.0)))
    with pytest.raises(SpaceError, match="kind 'crop'.*spec hash") as e:
        PoolPixels(b, pool_id, workers=1).images(table)
    assert "Build a new pool" in str(e.value)
    # the materialised pool's stored pixels are still read as they are
    a = two_pools["always"]
    assert len(PoolPixels(a, pool_id).images(a.read("augmentations", pool_id,
                                                      columns=PIXEL_COLUMNS))) == table.num_rows


def test_regenerate_does_not_depend_on_the_batch():
    x = np.random.default_rng(0).integers(0, 256, size=(20, 16, 16, 3), dtype=np.uint8)
    cfg = AugmentConfig(policy="all", kinds=BUILTIN_KINDS, seed=2)
    items = plan([f"s{i}" for i in range(20)], cfg)
    whole = regenerate(x, items, cfg)
    for i in (0, 5, 17, len(items) - 1):
        assert np.array_equal(regenerate(x, items[i:i + 1], cfg)[0], whole[i])


def test_cli_materialize(tmp_path, capsys):
    from types import SimpleNamespace

    from tests.conftest import smartaug

    def run(*args):
        code, out, err = smartaug(capsys, *args, "--storage", str(tmp_path / "lake"))
        return SimpleNamespace(returncode=code, stdout=out, stderr=" ".join(err.split()))

    folder = write_image_folder(tmp_path / "f", per_class=(4, 2), size=(16, 16), seed=1)
    r = run("ingest", "--dataset", f"imagefolder:{folder}")
    assert r.returncode == 0, r.stderr
    dataset_id = r.stdout.strip().splitlines()[-1]
    r = run("augment", "--dataset-id", dataset_id, "--materialize", "never", "--workers", "1")
    assert r.returncode == 0, r.stderr
    pools = Lake(tmp_path / "lake").sql("select materialized from pools").to_pylist()
    assert pools == [{"materialized": False}]
    pool_id = r.stdout.strip().splitlines()[-1]
    r = run("augment", "--dataset-id", dataset_id, "--materialize", "sometimes")
    assert r.returncode == 2 and "always" in r.stderr and "never" in r.stderr, r.stderr
    # the same pool asked for with its pixels: refused, never the recipes returned silently
    files = sorted(p for p in (tmp_path / "lake").rglob("*") if p.is_file())
    r = run("augment", "--dataset-id", dataset_id, "--materialize", "always", "--workers", "1")
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    assert f"pool {pool_id} already exists" in r.stderr and "as recipes only" in r.stderr
    assert "--materialize never (or auto)" in r.stderr
    assert sorted(p for p in (tmp_path / "lake").rglob("*") if p.is_file()) == files
    for mode in ("never", "auto"):  # as it is stored, or whichever
        r = run("augment", "--dataset-id", dataset_id, "--materialize", mode, "--workers", "1")
        assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == pool_id, r.stderr



def _in_daemon(queue):
    x = np.random.default_rng(0).integers(0, 256, size=(40, 16, 16, 1), dtype=np.uint8)
    _, out, _ = augment_images(x, [f"s{i}" for i in range(40)],
                               AugmentConfig(policy="all", kinds=BUILTIN_KINDS), workers=2,
                               chunk=64)
    queue.put(out)


def test_a_daemonic_process_augments_in_process():
    """A Dask worker is a daemonic process, which may not fork a pool: the work runs in it."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    p = ctx.Process(target=_in_daemon, args=(queue,), daemon=True)
    p.start()
    out = queue.get(timeout=120)
    p.join(timeout=60)
    assert p.exitcode == 0
    x = np.random.default_rng(0).integers(0, 256, size=(40, 16, 16, 1), dtype=np.uint8)
    _, want, _ = augment_images(x, [f"s{i}" for i in range(40)],
                                AugmentConfig(policy="all", kinds=BUILTIN_KINDS), workers=1)
    assert np.array_equal(out, want)
