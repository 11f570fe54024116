"""Datasets (smartaug/data.py): real Fashion-MNIST, ImageFolder trees, bad input."""

import numpy as np
import pytest
import torch

from smartaug.core.datasets import DatasetError, load_dataset
from smartaug.core.train import as_batch
from tests.conftest import write_image_folder


def test_fashion_mnist_full(fashion_root):
    d = load_dataset("fashion-mnist", root=fashion_root, download=False)
    assert len(d.train) == 60000 and len(d.test) == 10000 and len(d.val) == 0
    assert d.num_classes == 10 and d.classes[0] == "T-shirt/top"
    assert d.train.images.dtype == np.uint8 and d.train.images.shape == (60000, 28, 28, 1)
    assert d.train.labels.dtype == np.int64
    assert np.bincount(d.test.labels).tolist() == [1000] * 10


def test_fashion_mnist_balanced_subset_is_seeded(fashion_root):
    kw = dict(root=fashion_root, per_class_train=1000, per_class_test=100, download=False)
    a = load_dataset("fashion-mnist", seed=7, **kw)
    b = load_dataset("fashion-mnist", seed=7, **kw)
    c = load_dataset("fashion-mnist", seed=8, **kw)
    assert len(a.train) == 10000 and len(a.test) == 1000
    assert a.train.class_counts(10).tolist() == [1000] * 10
    assert a.test.class_counts(10).tolist() == [100] * 10
    assert a.train.sample_ids == b.train.sample_ids and a.test.sample_ids == b.test.sample_ids
    assert np.array_equal(a.train.images, b.train.images)
    assert a.train.sample_ids != c.train.sample_ids
    # ids point at the source images
    full = load_dataset("fashion-mnist", root=fashion_root, download=False)
    assert np.array_equal(full.train.images[a.train.index], a.train.images)


def test_validation_split_is_stratified_and_disjoint(fashion_root):
    d = load_dataset("fashion-mnist", root=fashion_root, per_class_train=100, per_class_test=10,
                     val_fraction=0.2, seed=1, download=False)
    assert d.train.class_counts(10).tolist() == [80] * 10
    assert d.val.class_counts(10).tolist() == [20] * 10
    assert not set(d.train.sample_ids) & set(d.val.sample_ids)


def test_resize_and_to_float(fashion_root):
    d = load_dataset("fashion-mnist", root=fashion_root, per_class_train=2, per_class_test=1,
                     image_size=32, download=False)
    assert d.train.images.shape == (20, 32, 32, 1)
    x = as_batch(torch.from_numpy(d.train.images), channels_last=False)
    assert x.shape == (20, 1, 32, 32) and float(x.max()) <= 1.0 and float(x.min()) >= 0.0


def test_per_class_larger_than_class_is_refused(fashion_root):
    with pytest.raises(DatasetError, match="only 1000 images in the test split"):
        load_dataset("fashion-mnist", root=fashion_root, per_class_test=1001, download=False)


def test_imagefolder_jpeg_grayscale_28(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    d = load_dataset(f"imagefolder:{root}", grayscale=True, image_size=28)
    assert d.classes == ("cat", "dog", "eel")
    assert d.train.images.shape == (18, 28, 28, 1) and d.test.images.shape == (9, 28, 28, 1)
    assert d.train.class_counts(3).tolist() == [6, 6, 6]
    # class colour survives decoding: class means increase with the class index
    means = [d.train.images[d.train.labels == c].mean() for c in range(3)]
    assert means[0] < means[1] < means[2]
    rgb = load_dataset(f"imagefolder:{root}")
    assert rgb.train.images.shape == (18, 32, 32, 3)


def test_imagefolder_png_grayscale_stays_one_channel(tmp_path):
    root = write_image_folder(tmp_path / "g", ext=".png", mode="L")
    assert load_dataset(f"imagefolder:{root}").train.images.shape == (18, 32, 32, 1)


def test_imagefolder_bad_inputs(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    root = write_image_folder(tmp_path / "a")
    (root / "train" / "fox").mkdir()
    with pytest.raises(DatasetError, match=r"fox has no images"):
        load_dataset(f"imagefolder:{root}")

    root = write_image_folder(tmp_path / "b")
    bad = root / "train" / "dog" / "002.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"cannot read image .*dog/002\.jpg"):
        load_dataset(f"imagefolder:{root}")

    root = write_image_folder(tmp_path / "c", classes=("only",))
    with pytest.raises(DatasetError, match="at least 2"):
        load_dataset(f"imagefolder:{root}")

    root = write_image_folder(tmp_path / "d")
    write_image_folder(tmp_path / "d2", size=(20, 20))
    (tmp_path / "d2" / "train" / "cat" / "000.jpg").rename(root / "train" / "cat" / "999.jpg")
    with pytest.raises(DatasetError, match="differ in size"):
        load_dataset(f"imagefolder:{root}")
    assert load_dataset(f"imagefolder:{root}", image_size=16).train.images.shape[1:3] == (16, 16)

    root = write_image_folder(tmp_path / "e")
    with pytest.raises(DatasetError, match="only 3 images in the test split"):
        load_dataset(f"imagefolder:{root}", per_class_test=4)


def test_missing_or_wrong_paths_say_how_to_fix(tmp_path):
    with pytest.raises(DatasetError, match="directory not found.*apt-get install"):
        load_dataset("fashion-mnist", root=tmp_path / "missing", download=False)
    with pytest.raises(DatasetError, match="no IDX files.*SMARTAUG_DATA"):
        load_dataset("fashion-mnist", root=tmp_path, download=False)
    with pytest.raises(DatasetError, match="valid: fashion-mnist"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("fashion-mnist", root=tmp_path, val_fraction=1.0)


def test_idx_files_read_as_torchvision_reads_them_and_bad_ones_are_named(fashion_root, tmp_path):
    """The IDX reader (numpy; torchvision is imported only to download) gives torchvision's
    arrays and class names; a truncated or foreign file is a DatasetError naming it."""
    import shutil
    from pathlib import Path

    from torchvision.datasets import FashionMNIST

    from smartaug.core.datasets import _IDX_FILES, _load_idx, _stage_idx

    ours = _load_idx("fashion-mnist", fashion_root, download=False)
    staged = _stage_idx(Path(fashion_root), "FashionMNIST")
    tr, te = (FashionMNIST(str(staged), train=t) for t in (True, False))
    theirs = (tr.data.numpy()[..., None], tr.targets.numpy(), te.data.numpy()[..., None],
              te.targets.numpy())
    for a, b in zip(ours[:4], theirs, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    assert ours[4] == tuple(tr.classes) and ours[0].flags.writeable
    for broken, why in ((lambda b: b[:-5], "truncated"), (lambda b: b"\x00\x00\x09" + b[3:],
                                                          "not an IDX file")):
        d = tmp_path / why.replace(" ", "-")
        d.mkdir()
        for n in _IDX_FILES:  # the staged plain files, one of them broken
            shutil.copyfile(staged / "FashionMNIST" / "raw" / n, d / n)
        (d / _IDX_FILES[1]).write_bytes(broken((d / _IDX_FILES[1]).read_bytes()))
        with pytest.raises(DatasetError, match=f"train-labels-idx1-ubyte.*{why}"):
            load_dataset("fashion-mnist", root=str(d), download=False)


@pytest.mark.parametrize("shape,size", [((1, 36, 36, 3), 28), ((5, 20, 20, 1), 28),
                                        ((2, 64, 48, 3), 32), ((3, 17, 23, 3), 40)])
def test_resize_and_grayscale_are_torchvisions_bit_for_bit(shape, size):
    from torchvision.transforms.v2 import functional as TF

    from smartaug.core.datasets import _resize, _to_grayscale

    images = np.random.default_rng(size).integers(0, 256, shape, dtype=np.uint8)
    t = torch.from_numpy(images.copy()).permute(0, 3, 1, 2)
    ref = TF.resize(t, [size, size], antialias=True).permute(0, 2, 3, 1).contiguous().numpy()
    assert np.array_equal(_resize(images, size), ref) and _resize(images, size).shape == ref.shape
    if shape[-1] == 3:
        grey = TF.rgb_to_grayscale(t, num_output_channels=1).permute(0, 2, 3, 1).contiguous()
        assert np.array_equal(_to_grayscale(images), grey.numpy())
