"""Step ``ingest``: a dataset (files) -> the datasets and samples tables (read back with
``smartaug.lake.readers.read_split``)."""

from __future__ import annotations

import json

from smartaug.config import DataConfig
from smartaug.core.datasets import fingerprint, load_dataset
from smartaug.lake import Lake, content_id, image_columns

__all__ = ["ingest"]


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
