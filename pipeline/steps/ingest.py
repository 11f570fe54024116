"""Step ``ingest``: a dataset (files) -> the datasets and samples tables; and its splits back."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc

from pipeline.config import DataConfig
from pipeline.core.datasets import Split, fingerprint, load_dataset
from pipeline.lake import Lake, content_id, decode_images, image_columns

__all__ = ["classes", "ingest", "read_split"]


def ingest(lake: Lake, cfg: DataConfig, *, download: bool = True) -> str:
    """Load ``cfg``'s dataset into the samples table (all splits); returns dataset_id.

    The id hashes the config (minus where the files were found) and the content, so the same
    data ingested twice writes nothing; changed files give a new id.
    """
    ds = load_dataset(cfg, download=download)
    fp = fingerprint(ds)
    conf = {k: v for k, v in cfg.to_dict().items() if k != "root"}
    dataset_id = content_id("dataset", {"config": conf, "fingerprint": fp})
    if lake.has("datasets", dataset_id):
        return dataset_id
    if not lake.has("samples", dataset_id):
        with lake.writer("samples", dataset_id) as w:
            for name, s in ds.splits().items():
                if len(s):
                    w.write({"dataset_id": [dataset_id] * len(s), "split": [name] * len(s),
                             "sample_id": s.sample_ids, "label": s.labels,
                             **image_columns(s.images)})
    h, w_, c = ds.image_shape
    lake.write("datasets", dataset_id, {
        "dataset_id": [dataset_id], "name": [ds.name], "config": [json.dumps(cfg.to_dict())],
        "classes": [json.dumps(list(ds.classes))], "n_train": [len(ds.train)],
        "n_val": [len(ds.val)], "n_test": [len(ds.test)], "height": [h], "width": [w_],
        "channels": [c], "fingerprint": [fp]})
    return dataset_id


def classes(lake: Lake, dataset_id: str) -> list[str]:
    """The class names of an ingested dataset, in label order."""
    return json.loads(lake.row("datasets", dataset_id)["classes"])


def read_split(lake: Lake, dataset_id: str, split: str) -> Split:
    """One split of an ingested dataset back from the samples table."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; valid: train, val, test")
    meta = lake.row("datasets", dataset_id)
    t = lake.read("samples", dataset_id)
    t = t.filter(pc.equal(t["split"], split))
    if t.num_rows == 0:
        images = np.empty((0, meta["height"], meta["width"], meta["channels"]), np.uint8)
    else:
        images = np.array(decode_images(t, "sample_id"))  # writable, owns its memory
    ids = t["sample_id"].to_pylist()
    source = ids[0].split("/")[0] if ids else ("test" if split == "test" else "train")
    index = np.asarray([int(i.split("/")[1]) for i in ids], dtype=np.int64)
    return Split(images, t["label"].to_numpy().astype(np.int64), index, source)
