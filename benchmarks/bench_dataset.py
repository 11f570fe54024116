"""A DataLoader over ``smartaug.SelectionDataset`` vs what a user would do instead: export the
same items as PNGs and read them with torchvision's ``ImageFolder``. One epoch each, batches of
256, 2 worker processes, images as float tensors [C, H, W] in [0, 1].

ratio = ImageFolder epoch time / SelectionDataset epoch time (target >= 2). The lake: Fashion-
MNIST's train split (or generated images), a one-per-image pool, a band sized so that the
originals plus the selection make ``--items`` items. JSON on the last line.

    python benchmarks/bench_dataset.py [--items 100000] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _timing import arguments


def main() -> None:
    args = arguments(__doc__, items=100_000, workers=2, repeats=3)

    import torch
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision.transforms import v2

    import smartaug
    from smartaug.config import AugmentConfig, DataConfig, TrainConfig
    from smartaug.lake import Lake
    from smartaug.steps.baseline import train_baseline
    from smartaug.steps.export import export
    from smartaug.steps.ingest import ingest
    from smartaug.steps.pool import build_pool
    from smartaug.steps.score import score_pool
    from smartaug.steps.select import band

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(Path(tmp) / "lake")
        per_class = min(6000, -(-args.items // 15))  # originals 10 x per_class, pool as many
        try:
            d = ingest(lake, DataConfig(per_class_train=per_class, per_class_test=10),
                       download=False)
        except Exception:  # noqa: BLE001 - no Fashion-MNIST here: a generated image folder
            from tests.conftest import write_image_folder

            root = write_image_folder(Path(tmp) / "imgs", classes=tuple("abcdefghij"),
                                      per_class=(per_class, 2), size=(28, 28), ext=".png")
            d = ingest(lake, DataConfig(f"imagefolder:{root}", grayscale=True))
        n_orig = lake.row("datasets", d)["n_train"]
        m = train_baseline(lake, d, cfg=TrainConfig(epochs=1, device="cpu"), log=None)
        p = build_pool(lake, d, AugmentConfig(seed=0))
        r = score_pool(lake, m, p, device="cpu")
        want = min(1.0, max(0.0, (args.items - n_orig) / lake.count("scores", r)))
        sid = band(lake, r, 0.0, round(want, 6))
        ds = smartaug.SelectionDataset(lake.root, sid)
        out = export(lake, sid, Path(tmp) / "export")
        folder = torchvision.datasets.ImageFolder(
            str(out / "train"), transform=v2.Compose([v2.PILToTensor(),
                                                     v2.ToDtype(torch.float32, scale=True)]),
            loader=lambda f: __import__("PIL.Image").Image.open(f).convert("L"))

        def epoch(data) -> float:
            loader = DataLoader(data, batch_size=256, shuffle=True, num_workers=args.workers,
                                generator=torch.Generator().manual_seed(0),
                                persistent_workers=False)
            t0 = time.perf_counter()
            n = 0
            for images, labels in loader:
                n += len(labels)
                dtype = images.dtype
            assert n == len(data) and dtype == torch.float32
            return time.perf_counter() - t0

        t_sel, t_folder = [], []
        for _ in range(args.repeats):
            t_sel.append(epoch(ds))
            t_folder.append(epoch(folder))
    s, f = statistics.median(t_sel), statistics.median(t_folder)
    print(json.dumps({"name": "dataset", "ratio": round(f / s, 3), "target": 2.0,
                      "items": len(ds), "workers": args.workers, "cores": os.cpu_count(),
                      "selection_dataset_s": round(s, 3), "imagefolder_s": round(f, 3),
                      "selection_items_per_s": round(len(ds) / s),
                      "imagefolder_items_per_s": round(len(ds) / f),
                      "repeats": args.repeats}))


if __name__ == "__main__":
    main()
