"""What checking partitions on read costs: each step that reads the lake (score a pool, select
a band, export a selection) timed with its reads checked against their manifests (sha256 of
every file, as a fresh process does) and with the check switched off, on real Fashion-MNIST
(``--per-class`` train images a class, one augmentation each, materialised).

ratio = 1 - (seconds spent in the checks) / (seconds of the checked step), the lowest of the
three steps (target >= 0.95: checking costs under 5 % of a step); the unchecked and checked
steps' medians are printed beside it (alternating; their difference is within the machine's
noise). JSON on the last line.

    python benchmarks/bench_verify.py [--per-class 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _timing import alternate

from smartaug.config import AugmentConfig, DataConfig, TrainConfig
from smartaug.lake import Lake, manifest
from smartaug.steps.baseline import train_baseline
from smartaug.steps.export import export
from smartaug.steps.ingest import ingest
from smartaug.steps.pool import build_pool
from smartaug.steps.score import score_pool
from smartaug.steps.select import band


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        lake = Lake(tmp / "lake")
        d = ingest(lake, DataConfig(per_class_train=args.per_class, per_class_test=20),
                   download=False)
        m = train_baseline(lake, d, cfg=TrainConfig(epochs=1, device="cpu"), log=None)
        p = build_pool(lake, d, AugmentConfig(materialize="always"))
        r = score_pool(lake, m, p, device="cpu")
        b = band(lake, r, 0.02, 0.22)
        checking = Lake.check_partition

        def fresh(table: str, key: str):
            def clear():
                shutil.rmtree(lake.partition_dir(table, key), ignore_errors=True)
            return clear

        out = tmp / "export"
        steps = {
            "score": (lambda: score_pool(lake, m, p, device="cpu"),
                      lambda: [fresh("scores", r)(), fresh("scoring_runs", r)()]),
            "select": (lambda: band(lake, r, 0.02, 0.22),
                       lambda: fresh("selections", b)()),
            "export": (lambda: export(lake, b, out, originals=True),
                       lambda: shutil.rmtree(out, ignore_errors=True)),
        }
        result = {"name": "verify", "per_class": args.per_class,
                  "pool_items": lake.count("augmentations", p), "steps": {}}
        spent: list[float] = []

        def timed_check(self, table, key, **options):
            t0 = time.perf_counter()
            try:
                return checking(self, table, key, **options)
            finally:
                spent.append(time.perf_counter() - t0)

        for name, (step, undo) in steps.items():
            shares: list[float] = []

            def checked(step=step, undo=undo, shares=shares):
                undo()
                manifest._SEEN.clear()  # as a fresh process: every file hashed
                spent.clear()
                Lake.check_partition = timed_check
                t0 = time.perf_counter()
                try:
                    step()
                finally:
                    Lake.check_partition = checking
                shares.append(sum(spent) / (time.perf_counter() - t0))

            def unchecked(step=step, undo=undo):
                undo()
                Lake.check_partition = lambda self, table, key, **options: 0
                try:
                    step()
                finally:
                    Lake.check_partition = checking

            bare, pipeline = alternate(unchecked, checked, args.repeats)
            share = statistics.median(shares)
            result["steps"][name] = {"unchecked_s": round(bare, 4), "checked_s": round(pipeline, 4),
                                     "check_share": round(share, 4), "ratio": round(1 - share, 4)}
        result["ratio"] = min(s["ratio"] for s in result["steps"].values())
        result["target"] = 0.95
        print(json.dumps(result))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
