"""Memory stays flat as a recipe pool grows: augment, score and select a pool of 28x28 images
stored as recipes, at 100 000 and at 1 000 000 augmentations (Fashion-MNIST's train images,
5 000 and 50 000 of them, K=20 augmentations each of the seed's kinds; LeNet-5 trained one
epoch), each stage in a process of its own.

Per stage and size: peak RSS of the stage's process (target < 2 GiB) and of its largest
worker process, seconds, and microseconds per item; then each stage's time per item at 1M
over its time per item at 100k (target <= 1.5: cost grows linearly). JSON last.

    python benchmarks/bench_scale.py [--sizes 100000 1000000] [--k 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("augment", "score", "select")


def stage(root: str, name: str, k: int) -> None:
    """Run one stage on the lake at ``root`` (ids in ``root``/ids.json); print its figures."""
    from smartaug.lake import Lake

    # each stage imports what it needs before the clock starts (scoring: torch, ~0.5 GiB of
    # resident libraries on its own)
    if name == "augment":
        from smartaug.config import AugmentConfig
        from smartaug.steps.pool import build_pool
    elif name == "score":
        from smartaug.steps.score import score_pool
    else:
        from smartaug.steps import select as S
    lake = Lake(root)
    ids_file = Path(root) / "ids.json"
    ids = json.loads(ids_file.read_text())
    t0 = time.perf_counter()
    if name == "augment":
        ids["pool_id"] = build_pool(lake, ids["dataset_id"], AugmentConfig(
            policy=f"k:{k}", seed=0, materialize="never"))
        n = lake.row("pools", ids["pool_id"])["n_items"]
    elif name == "score":
        ids["scoring_run_id"] = score_pool(lake, ids["model_id"], ids["pool_id"],
                                           batch_size=512, device="cpu")
        n = lake.row("scoring_runs", ids["scoring_run_id"])["n_items"]
    else:
        ids["selection_id"] = S.band(lake, ids["scoring_run_id"], 0.02, 0.22)
        ids["random_id"] = S.random_subset(lake, ids["scoring_run_id"],
                                           matched_to=ids["selection_id"])
        n = lake.row("scoring_runs", ids["scoring_run_id"])["n_items"]
    seconds = time.perf_counter() - t0
    ids_file.write_text(json.dumps(ids))
    augment = sys.modules.get("smartaug.core.augment")
    workers = [hwm_mib(p.pid) for pool in (augment._POOLS.values() if augment else ())
               for p in pool._pool]
    print(json.dumps({"items": n, "seconds": seconds, "rss_mib": hwm_mib("self"),
                      "worker_rss_mib": max(workers, default=0.0)}))


def hwm_mib(pid) -> float:
    """Peak resident set size of a process since it started its program (VmHWM; getrusage's
    ru_maxrss would also count the parent's pages at the fork before exec)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prepare(root: Path, per_class: int) -> None:
    from smartaug.config import DataConfig, TrainConfig
    from smartaug.lake import Lake
    from smartaug.steps.baseline import train_baseline
    from smartaug.steps.ingest import ingest

    lake = Lake(root)
    dataset_id = ingest(lake, DataConfig("fashion-mnist", per_class_train=per_class,
                                         per_class_test=100), download=False)
    model_id = train_baseline(lake, dataset_id, cfg=TrainConfig(epochs=1, device="cpu"),
                              log=None)
    (root / "ids.json").write_text(json.dumps({"dataset_id": dataset_id, "model_id": model_id}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--k", type=int, default=20, help="augmentations per image")
    ap.add_argument("--stage", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        return stage(args.stage[0], args.stage[1], int(args.stage[2]))

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    out: dict = {"name": "scale", "image": "28x28x1", "k": args.k, "rss_target_mib": 2048,
                 "time_per_item_target": 1.5, "stages": {}}
    try:
        for size in args.sizes:
            per_class = size // args.k // 10
            root = tmp / f"lake-{size}"
            prepare(root, per_class)
            for name in STAGES:
                res = subprocess.run([sys.executable, __file__, "--stage", str(root), name,
                                      str(args.k)], capture_output=True, text=True)
                if res.returncode != 0:
                    raise SystemExit(f"stage {name} at {size} failed:\n{res.stderr[-3000:]}")
                r = json.loads(res.stdout.strip().splitlines()[-1])
                out["stages"].setdefault(name, {})[str(r["items"])] = {
                    "seconds": round(r["seconds"], 2),
                    "us_per_item": round(1e6 * r["seconds"] / r["items"], 2),
                    "rss_mib": round(r["rss_mib"], 1),
                    "worker_rss_mib": round(r["worker_rss_mib"], 1)}
            shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, by_size in out["stages"].items():
        sizes = sorted(by_size, key=int)
        if len(sizes) >= 2:
            lo, hi = by_size[sizes[0]], by_size[sizes[-1]]
            out["stages"][name]["time_per_item_ratio"] = round(
                hi["us_per_item"] / lo["us_per_item"], 3)
        out["stages"][name]["peak_rss_mib"] = max(
            max(v["rss_mib"], v["worker_rss_mib"]) for k, v in by_size.items()
            if isinstance(v, dict))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
