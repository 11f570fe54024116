"""Scoring throughput Parquet -> Parquet (smartaug.score.score_pool) vs a bare ``model(x)`` over
the same images already in memory as float tensors (LeNet-5, batch 512).

ratio = bare time / pipeline time (target >= 0.85). Then the peak RSS of a separate process
scoring a 1M-image pool (target < 2 GiB). Alternating, several repeats, medians; JSON last.

    python benchmarks/bench_score.py [--items 100000] [--repeats 5] [--rss-items 1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _timing import alternate


def make_lake(root: Path, n: int, seed: int = 0):
    """A lake with an n-item pool (Fashion-MNIST images repeated, else random) and a LeNet-5."""
    from smartaug.lake import Lake, image_columns
    from smartaug.models import make_model, save_checkpoint

    try:
        from smartaug.core.datasets import load_dataset

        base = load_dataset("fashion-mnist", download=False).train
        imgs, labels = base.images, base.labels
    except Exception:  # noqa: BLE001 - no Fashion-MNIST here
        rng = np.random.default_rng(seed)
        imgs = rng.integers(0, 256, (60_000, 28, 28, 1), dtype=np.uint8)
        labels = rng.integers(0, 10, 60_000)
    lake = Lake(root)
    pool_id, model_id = "benchpool0000001", "benchmodel000001"
    with lake.writer("augmentations", pool_id) as w:
        for lo in range(0, n, 50_000):
            m = min(50_000, n - lo)
            idx = np.arange(lo, lo + m) % len(imgs)
            w.write({"pool_id": [pool_id] * m,
                     "aug_id": [f"{pool_id}:train/{i:07d}:0" for i in range(lo, lo + m)],
                     "sample_id": [f"train/{i:07d}" for i in range(lo, lo + m)],
                     "label": labels[idx], "k": np.zeros(m, np.int32), "kind": ["hflip"] * m,
                     "angle": np.full(m, np.nan), "sigma": np.full(m, np.nan),
                     "flipped": np.ones(m, bool), "seed": np.zeros(m, np.int64),
                     "spec_hash": ["bench"] * m, "params": ['{"flipped": true}'] * m,
                     **image_columns(imgs[idx])})
    names = json.dumps([f"class{c}" for c in range(10)])
    with lake.writer("samples", "bench"):  # the pool holds the pixels: no originals needed
        pass
    lake.write("datasets", "bench", {
        "dataset_id": ["bench"], "name": ["bench"], "config": ["{}"], "classes": [names],
        "n_train": [0], "n_val": [0], "n_test": [0], "height": [28], "width": [28],
        "channels": [1], "fingerprint": ["bench"], "created_at": [None], "git_sha": ["bench"]})
    lake.write("pools", pool_id, {"pool_id": [pool_id], "dataset_id": ["bench"],
                                  "config": ["{}"], "n_items": [n], "materialized": [True],
                                  "seconds": [0.0],
                                  "created_at": [None], "git_sha": ["bench"]})
    torch.manual_seed(seed)
    model = make_model("lenet5", 10, 1, 28).eval()
    path = root / "checkpoints" / f"{model_id}.pt"
    sha = save_checkpoint(model, path)
    lake.write("models", model_id, {
        "model_id": [model_id], "arch": ["lenet5"], "dataset_id": ["bench"], "config": ["{}"],
        "parent_model_id": [None], "checkpoint": [str(path)], "sha256": [sha],
        "train_acc": [None], "val_acc": [None], "test_acc": [None], "test_avh": [None],
        "seconds": [0.0], "created_at": [None], "git_sha": ["bench"]})
    return lake, pool_id, model_id, imgs, model


def rss_child(root: str) -> None:
    """Score the pool under ``root`` and exit (run in its own process for its peak RSS)."""
    from smartaug.lake import Lake
    from smartaug.steps.score import score_pool

    t0 = time.perf_counter()
    score_pool(Lake(root), "benchmodel000001", "benchpool0000001", batch_size=512,
               device="cpu")
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rss-items", type=int, default=1_000_000, help="0 = skip")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        return rss_child(args.rss_child)

    from smartaug.steps.score import score_pool

    batch = 512
    tmp = Path(tempfile.mkdtemp(prefix="bench-score-"))
    try:
        lake, pool_id, model_id, imgs, model = make_lake(tmp / "lake", args.items)
        idx = np.arange(args.items) % len(imgs)
        x_all = torch.from_numpy(imgs[idx]).permute(0, 3, 1, 2).float().div(255)
        batches = list(x_all.split(batch))  # in memory, ready to go

        @torch.inference_mode()
        def bare():
            for x in batches:
                model(x)

        def pipeline():
            for table in ("scores", "scoring_runs"):
                shutil.rmtree(lake.root / table, ignore_errors=True)
                (lake.root / table).mkdir()
            score_pool(lake, model_id, pool_id, batch_size=batch, device="cpu")

        mb, mp_ = alternate(bare, pipeline, args.repeats)
        result = {"name": "score", "ratio": round(mb / mp_, 4), "target": 0.85,
                  "items": args.items, "batch": batch, "device": "cpu",
                  "torch_threads": torch.get_num_threads(),
                  "bare_s": round(mb, 4), "pipeline_s": round(mp_, 4),
                  "bare_items_per_s": round(args.items / mb),
                  "pipeline_items_per_s": round(args.items / mp_), "repeats": args.repeats}
        batches.clear()
        del x_all
        if args.rss_items:
            big = tmp / "big"
            make_lake(big, args.rss_items)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            out = subprocess.run([sys.executable, __file__, "--rss-child", str(big)],
                                 capture_output=True, text=True, check=True)
            peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            result.update({"rss_items": args.rss_items,
                           "rss_peak_mib": round(max(peak_kib, before) / 1024, 1),
                           "rss_target_mib": 2048,
                           "rss_scoring_s": round(json.loads(out.stdout.splitlines()[-1])
                                                  ["seconds"], 2)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
