"""Selections out of the lake, for your own training loop: ``SelectionDataset`` (a PyTorch
``Dataset`` of the originals plus a selection's augmentations) and ``export`` (the same items
as an ImageFolder of PNGs or one Parquet file, with a ``manifest.json`` of their lineage).

Only the selected augmentations are read (the pool streams by in batches; the rest is never
held in memory); the items are kept as one uint8 array, so a ``DataLoader`` with worker
processes shares it and each item costs an index and a conversion to float.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from smartaug.errors import InputError
from smartaug.lake import Lake, LakeError, atomic_path, encode_images
from smartaug.lake.provenance import git_sha
from smartaug.lake.readers import PIXEL_COLUMNS, PoolPixels, classes, read_split
from smartaug.steps.select import read_selection
from smartaug.steps.sql import sql_text

__all__ = ["SelectionDataset", "export", "selection_items"]

FORMATS = ("imagefolder", "parquet")


def _lineage(lake: Lake, selection_id: str) -> dict:
    rows = read_selection(lake, selection_id)
    if rows.num_rows == 0:
        raise LakeError(f"selection {selection_id} is empty: nothing to export")
    first = rows.slice(0, 1).to_pylist()[0]
    run = lake.row("scoring_runs", first["scoring_run_id"])
    if run["pool_id"] is None:
        raise LakeError(f"selection {selection_id} selects original images (scoring run "
                        f"{run['scoring_run_id']} scored a split, not a pool)")
    model = lake.row("models", run["model_id"])
    pool = lake.row("pools", run["pool_id"])
    return {"rows": rows, "selection": first, "run": run, "model": model, "pool": pool}


def selection_items(lake: Lake, selection_id: str, *, originals: bool = True) -> dict:
    """The items of a selection: ``images`` uint8 [N, H, W, C], ``labels`` [N], ``ids`` (the
    originals' sample_ids, then the augmentations' aug_ids in aug_id order), ``kinds`` ('original'
    or the augmentation's kind), ``scores``, ``params`` (JSON) and the lineage."""
    info = _lineage(lake, selection_id)
    rows = info["rows"]
    wanted = pa.array(sorted(rows["aug_id"].to_pylist()))
    score_of = dict(zip(rows["aug_id"].to_pylist(), rows["score"].to_pylist(), strict=True))
    parts = []
    pool_id = info["pool"]["pool_id"]
    for batch in lake.iter_batches("augmentations", pool_id,
                                   columns=[*PIXEL_COLUMNS, "label", "params"]):
        keep = pc.is_in(batch.column("aug_id"), value_set=wanted)
        if pc.any(keep).as_py():
            parts.append(batch.filter(keep))
    table = pa.Table.from_batches(parts) if parts else None
    if table is None or table.num_rows != len(wanted):
        raise LakeError(f"selection {selection_id}: {len(wanted)} augmentations selected, "
                        f"{0 if table is None else table.num_rows} found in pool "
                        f"{info['pool']['pool_id']}")
    table = table.sort_by("aug_id")
    aug_images = np.asarray(PoolPixels(lake, pool_id, workers=1).images(table))
    aug_ids = table["aug_id"].to_pylist()
    out = {"ids": aug_ids, "images": aug_images, "labels": table["label"].to_numpy(),
           "kinds": table["kind"].to_pylist(), "params": table["params"].to_pylist(),
           "scores": [score_of[a] for a in aug_ids]}
    if originals:
        split = read_split(lake, info["pool"]["dataset_id"], "train")
        n = len(split.labels)
        out = {"ids": list(split.sample_ids) + aug_ids,
               "images": np.concatenate([split.images, aug_images]),
               "labels": np.concatenate([split.labels, out["labels"]]),
               "kinds": ["original"] * n + out["kinds"], "params": [None] * n + out["params"],
               "scores": [None] * n + out["scores"]}
    out["lineage"] = info
    out["classes"] = classes(lake, info["pool"]["dataset_id"])
    return out


class SelectionDataset(Dataset):
    """(image float tensor [C, H, W] in [0, 1], label) for the originals (``originals``) plus
    the selection's augmentations, read from the lake at ``storage`` (a path or an fsspec
    URL). ``transform``: applied to the image tensor. ``ids``, ``kinds`` and ``classes``
    describe the items in order."""

    def __init__(self, storage, selection_id: str, *, originals: bool = True, transform=None):
        items = selection_items(Lake(storage), selection_id, originals=originals)
        self.images = np.require(items["images"], requirements=["C", "W"])  # torch needs W
        self.labels = torch.from_numpy(np.array(items["labels"], dtype=np.int64))
        self.ids, self.kinds, self.classes = items["ids"], items["kinds"], items["classes"]
        self.selection_id, self.transform = selection_id, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1).float().div_(255.0)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


def export(lake: Lake, selection_id: str, to: str | os.PathLike, *,
           fmt: str = "imagefolder", originals: bool = True) -> Path:
    """Write the selection's items (and, with ``originals``, the train originals) to ``to``:
    ``imagefolder`` (``train/<class>/<item>.png``, and the dataset's validation and test
    originals in ``val/`` and ``test/``: a folder ``smartaug ingest`` and torchvision's
    ImageFolder read whole) or ``parquet`` (``items.parquet``), with a ``manifest.json``.
    Written into a temporary directory renamed into place; a non-empty ``to`` is refused."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    to = Path(to).absolute()
    if lake.local:
        root, real = Path(lake.root).resolve(), to.resolve()
        if real == root or root in real.parents:
            raise InputError(f"{to} lies inside the lake {root}: export outside it (the lake "
                             f"holds only what smartaug writes, and its views read every "
                             f"partition under it)")
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise InputError(f"{to} is not an empty directory: export into a new or empty one")
    items = selection_items(lake, selection_id, originals=originals)
    info = items.pop("lineage")
    held_out = {}
    if fmt == "imagefolder":  # a folder you can train and test on: the held-out splits too
        dataset_id = info["pool"]["dataset_id"]
        held_out = {name: read_split(lake, dataset_id, name) for name in ("val", "test")}
    with atomic_path(to, directory=True) as tmp:  # an empty `to` is replaced when complete
        paths = _write_items(tmp, items, fmt)
        splits = {name: _write_split(tmp, name, split, items["classes"])
                  for name, split in held_out.items() if len(split.labels)}
        sel = info["selection"]
        manifest = {
            "selection_id": selection_id, "method": sel["method"],
            "score_column": sel["score_column"], "band": [sel["band_lo"], sel["band_hi"]],
            "per_class": sel["per_class"], "params": json.loads(sel["params"]),
            "sql_file": sel["sql_file"],
            "sql": _sql_text(sel["sql_file"]),
            "scoring_run_id": info["run"]["scoring_run_id"], "pool_id": info["pool"]["pool_id"],
            "pool_config": json.loads(info["pool"]["config"]),
            "dataset_id": info["pool"]["dataset_id"], "model_id": info["model"]["model_id"],
            "model_arch": info["model"]["arch"], "checkpoint_sha256": info["model"]["sha256"],
            "model_config": {k: v for k, v in json.loads(info["model"]["config"]).items()
                             if k != "history"},
            "classes": items["classes"], "originals": originals, "format": fmt,
            "splits": {"train": len(items["ids"]), **splits},
            "git_sha": git_sha(), "n_items": len(items["ids"]),
            "items": [{"id": i, "label": int(y), "kind": k, "score": s,
                       "params": None if p is None else json.loads(p), "path": path}
                      for i, y, k, s, p, path in zip(items["ids"], items["labels"],
                                                     items["kinds"], items["scores"],
                                                     items["params"], paths, strict=True)],
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    return to


def _sql_text(name: str | None) -> str | None:
    return sql_text(name) if name else None


def _write_items(tmp: Path, items: dict, fmt: str) -> list[str]:
    if fmt == "parquet":
        n, h, w, c = items["images"].shape
        pq.write_table(pa.table({
            "id": items["ids"], "label": items["labels"], "kind": items["kinds"],
            "score": pa.array(items["scores"], pa.float64()), "params": items["params"],
            "image": encode_images(items["images"]), "height": np.full(n, h, np.int32),
            "width": np.full(n, w, np.int32), "channels": np.full(n, c, np.int32)}),
            tmp / "items.parquet", compression="zstd")
        return [f"items.parquet#{i}" for i in range(n)]
    from PIL import Image

    paths = []
    for i, (item, y, img) in enumerate(zip(items["ids"], items["labels"], items["images"],
                                           strict=True)):
        cls = _folder(items["classes"][int(y)])
        rel = f"train/{cls}/{i:07d}-{_safe(item)}.png"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0] if img.shape[2] == 1 else img).save(tmp / rel)
        paths.append(rel)
    return paths


def _write_split(tmp: Path, name: str, split, names: list[str]) -> int:
    """An ingested split's originals as ``<name>/<class>/<sample_id>.png``; their count."""
    from PIL import Image

    for i, (sid, y, img) in enumerate(zip(split.sample_ids, split.labels, split.images,
                                          strict=True)):
        rel = tmp / name / _folder(names[int(y)]) / f"{i:07d}-{_safe(sid)}.png"
        rel.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0] if img.shape[2] == 1 else img).save(rel)
    return len(split.labels)


def _folder(name: str) -> str:
    """A class name as a folder name: as is, but for path separators (ImageFolder reads the
    folder names back as the classes)."""
    name = str(name).replace("/", "_").replace("\0", "_")
    return name if name not in ("", ".", "..") else f"_{name}"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))[:80]
