"""Recipe pools vs materialised pools: bytes per augmentation on disk with and without pixels,
and scoring throughput from recipes (pixels regenerated from the originals) vs from stored
pixels, on the same real pool (Fashion-MNIST's train split, the seed's one-per-image pool,
LeNet-5, batch 512).

ratio = materialised scoring time / recipe scoring time (recipe throughput relative to
materialised; target >= 0.8 on 2 cores). Bytes are also given for the K=4 wide pool (ten
kinds, longer parameter records). Alternating, several repeats, medians; JSON last.

    python benchmarks/bench_pool.py [--per-class 6000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from _timing import alternate


def lakes(root: Path, per_class: int):
    """Two lakes with the same dataset and a LeNet-5 (one epoch), ready for the same pool
    stored two ways."""
    from smartaug.config import DataConfig, TrainConfig
    from smartaug.core.datasets import DatasetError
    from smartaug.lake import Lake
    from smartaug.steps.baseline import train_baseline
    from smartaug.steps.ingest import ingest

    a = Lake(root / "materialized")
    try:
        dataset_id = ingest(a, DataConfig("fashion-mnist", per_class_train=per_class,
                                          per_class_test=10), download=False)
    except DatasetError as e:
        raise SystemExit(f"bench_pool needs Fashion-MNIST: {e}") from e
    model_id = train_baseline(a, dataset_id, cfg=TrainConfig(epochs=1, device="cpu"), log=None)
    shutil.copytree(root / "materialized", root / "recipes")
    return a, Lake(root / "recipes"), dataset_id, model_id


def bytes_per_item(lake, pool_id: str) -> float:
    files = lake.files("augmentations", pool_id)
    return sum(os.path.getsize(f) for f in files) / lake.row("pools", pool_id)["n_items"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=6000, help="train images per class")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from smartaug.config import AugmentConfig, seed_pool, wide_pool
    from smartaug.steps.pool import build_pool
    from smartaug.steps.score import score_pool

    tmp = Path(tempfile.mkdtemp(prefix="bench-pool-"))
    try:
        mat, rec, dataset_id, model_id = lakes(tmp, args.per_class)
        sizes = {}
        for name, cfg in (("seed", seed_pool()),
                          ("wide_k4", replace(wide_pool(), policy="k:4"))):
            for lake, mode in ((mat, "always"), (rec, "never")):
                pool_id = build_pool(lake, dataset_id, replace(cfg, materialize=mode))
                sizes[f"{name}_{'pixels' if mode == 'always' else 'recipes'}"] = round(
                    bytes_per_item(lake, pool_id), 1)
        pool_id = build_pool(rec, dataset_id, replace(seed_pool(), materialize="never"))
        n = rec.row("pools", pool_id)["n_items"]

        def scorer(lake):
            def run():
                for table in ("scores", "scoring_runs"):
                    shutil.rmtree(lake.root / table, ignore_errors=True)
                score_pool(lake, model_id, pool_id, batch_size=512, device="cpu")
            return run

        t_mat, t_rec = alternate(scorer(mat), scorer(rec), args.repeats)
        same = mat.read("scores", mat.sql("select scoring_run_id from scoring_runs").to_pylist()
                        [0]["scoring_run_id"]).sort_by("item_id")["avh"].equals(
            rec.read("scores", rec.sql("select scoring_run_id from scoring_runs").to_pylist()
                     [0]["scoring_run_id"]).sort_by("item_id")["avh"])
        result = {
            "name": "pool", "ratio": round(t_mat / t_rec, 4), "target": 0.8,
            "items": n, "image": "28x28x1", "pool": AugmentConfig().policy + " of " +
            ",".join(AugmentConfig().kinds), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "materialized_s": round(t_mat, 3), "recipes_s": round(t_rec, 3),
            "materialized_items_per_s": round(n / t_mat), "recipes_items_per_s": round(n / t_rec),
            "same_scores": bool(same),
            "bytes_per_aug": sizes, "recipe_bytes_target": 200, "repeats": args.repeats}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
