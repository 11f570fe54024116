"""Selections out of the lake: SelectionDataset (exactly the selection's items, pixel-identical
to the pool, through a DataLoader with workers) and export (ImageFolder / Parquet + manifest,
atomic, refusing a non-empty directory), trained on in a plain PyTorch loop."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

import smartaug
from smartaug.errors import InputError
from smartaug.lake import decode_images
from smartaug.lake.readers import read_split
from smartaug.steps.export import export
from smartaug.steps.select import band


@pytest.fixture(scope="module")
def selection(small_lake):
    lake = small_lake["lake"]
    return lake, band(lake, small_lake["run_id"], 0.1, 0.4), small_lake


def test_selection_dataset_is_exactly_the_selection(selection):
    lake, sid, w = selection
    ds = smartaug.SelectionDataset(lake.root, sid)
    chosen = sorted(lake.read("selections", sid)["aug_id"].to_pylist())
    train = read_split(lake, w["dataset_id"], "train")
    assert len(ds) == len(train.labels) + len(chosen)
    assert ds.ids[len(train.labels):] == chosen and ds.kinds[0] == "original"
    pool = lake.read("augmentations", w["pool_id"])
    images = np.asarray(decode_images(pool, "aug_id"))
    row = {a: i for i, a in enumerate(pool["aug_id"].to_pylist())}
    for j in (0, len(train.labels), len(ds) - 1):
        x, y = ds[j]
        assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
        item = ds.ids[j]
        ref = train.images[j] if j < len(train.labels) else images[row[item]]
        assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(ref).permute(2, 0, 1))
    only = smartaug.SelectionDataset(str(lake.root), sid, originals=False,
                                     transform=lambda t: 1 - t)
    assert len(only) == len(chosen) and torch.allclose(only[0][0], 1 - ds[len(train.labels)][0])
    # a DataLoader with worker processes: each epoch every item once, and a plain PyTorch
    # loop learns from them
    loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=2,
                        generator=torch.Generator().manual_seed(0))
    want = np.bincount(np.asarray(ds.labels), minlength=len(ds.classes))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, len(ds.classes)))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(3):
        seen, total = np.zeros_like(want), 0.0
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += np.bincount(y.numpy(), minlength=len(ds.classes))
            total += float(loss) * len(y)
        assert np.array_equal(seen, want)
        losses.append(total / len(ds))
    with torch.no_grad():
        x, y = next(iter(DataLoader(ds, batch_size=len(ds))))
        acc = float((model(x).argmax(1) == y).float().mean())
    assert losses[-1] < 0.8 * losses[0] and acc > 0.6, (losses, acc)  # chance: 0.1


def test_export_imagefolder_and_parquet(selection, tmp_path):
    lake, sid, w = selection
    out = export(lake, sid, tmp_path / "folder")
    m = json.loads((out / "manifest.json").read_text())
    n_sel = lake.count("selections", sid)
    assert m["selection_id"] == sid and m["n_items"] == len(m["items"])
    assert m["checkpoint_sha256"] == lake.row("models", w["model_id"])["sha256"]
    assert m["sql_file"] == "band.sql" and "quantile_cont" in m["sql"]
    assert m["model_config"]["train"]["epochs"] == 1 and m["pool_config"]["policy"] == "one"
    augs = [i for i in m["items"] if i["kind"] != "original"]
    assert len(augs) == n_sel and all(i["score"] is not None and i["params"] for i in augs)
    import torchvision

    folder = torchvision.datasets.ImageFolder(str(out / "train"))
    assert len(folder) == m["n_items"]
    test = torchvision.datasets.ImageFolder(str(out / "test"))  # the held-out splits too
    meta = lake.row("datasets", m["dataset_id"])
    assert len(test) == m["splits"]["test"] == meta["n_test"] > 0
    assert m["splits"].get("val", 0) == meta["n_val"] and test.classes == folder.classes
    assert folder.classes == sorted(c.replace("/", "_") for c in m["classes"])  # T-shirt/top
    first = next(i for i in m["items"] if i["kind"] != "original")
    from PIL import Image

    ds = smartaug.SelectionDataset(lake.root, sid)
    j = ds.ids.index(first["id"])
    png = np.asarray(Image.open(out / first["path"]))
    assert np.array_equal(png, ds.images[j][..., 0])  # lossless
    out2 = export(lake, sid, tmp_path / "pq", fmt="parquet", originals=False)
    t = pq.read_table(out2 / "items.parquet")
    assert t.num_rows == n_sel and np.array_equal(np.asarray(decode_images(t, "id")),
                                                  ds.images[len(ds) - n_sel:])
    with pytest.raises(InputError, match="not an empty directory"):
        export(lake, sid, tmp_path / "folder")
    assert not list(tmp_path.glob(".*tmp-*"))


def test_an_interrupted_export_leaves_nothing(selection, tmp_path, monkeypatch):
    """A failure in the middle of writing (here the disk fills after 50 images) leaves neither
    the target nor a temporary directory; the same export then succeeds."""
    import errno

    from PIL import Image

    lake, sid, _ = selection
    save, written = Image.Image.save, []

    def save_until_full(self, fp, *args, **kwargs):
        if len(written) == 50:
            raise OSError(errno.ENOSPC, "No space left on device", str(fp))
        written.append(fp)
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_until_full)
    (tmp_path / "empty").mkdir()
    for target in ("new", "empty"):  # a new directory, and an empty one it would replace
        written.clear()
        with pytest.raises(OSError, match="No space left"):
            export(lake, sid, tmp_path / target)
        assert len(written) == 50  # it was interrupted mid-way, not refused up front
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
    assert not any((tmp_path / "empty").iterdir())
    monkeypatch.setattr(Image.Image, "save", save)
    out = export(lake, sid, tmp_path / "new")
    assert json.loads((out / "manifest.json").read_text())["n_items"] == \
        len(list((out / "train").rglob("*.png")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "new"]
