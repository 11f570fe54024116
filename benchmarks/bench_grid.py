"""Cells per hour of a study's grid vs a bare sequential loop of the same trainings.

The study's cells (originals + each selection, LeNet-5, Adam, batch 128, the study's epochs,
test accuracy after the last epoch) run through ``ProcessRunner`` (one single-threaded worker
process per core, each cell read from and written to the lake: runs and history rows) in two
ways: ``stacked`` (the study's ``stack``: up to K cells of one size trained as one model,
``smartaug.core.stacked``) and ``process`` (each cell alone, one per worker). The bare loop
trains the same cells one after another in this process, on the same images already in
memory, with torch's default threads, and writes nothing. All are warmed up first: the
workers are started once, as a study starts them once for all its cells.

ratio = bare seconds / stacked seconds (target >= 3.0 on 2 cores); process_ratio = bare
seconds / process seconds (target >= 1.5). Alternating, medians; JSON on the last line.

    python benchmarks/bench_grid.py [--per-class 500] [--seeds 4] [--cells 16] [--stack 4]
                                    [--epochs 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import replace

import torch
import torch.nn.functional as F
from _timing import alternate_all

from smartaug.config import DataConfig, StudyConfig, TrainConfig
from smartaug.core.train import build_model, evaluate
from smartaug.lake import Lake
from smartaug.steps import study as steps
from smartaug.steps.retrain import training_data
from smartaug.steps.runners import ProcessRunner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=500, help="train images per class")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--cells", type=int, default=16)
    ap.add_argument("--stack", type=int, default=4, help="cells trained as one model")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None, help="default: one per core")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="bench-grid-")
    try:
        data = DataConfig("fashion-mnist", per_class_train=args.per_class + args.per_class // 10,
                          per_class_test=100, val_fraction=1 / 11)
        cfg = StudyConfig(data=data, baseline=TrainConfig(epochs=1, device="cpu"),
                          retrain=TrainConfig(epochs=args.epochs, device="cpu"),
                          pools=StudyConfig().pools[:1], budgets=(0.2, 0.5),
                          scores=("avh",), positions=("easiest", "hardest"), coverage=(),
                          references=(), seeds=args.seeds, stack=args.stack)
        lake = Lake(root)
        dataset_id = steps.ingest(lake, cfg)
        model_id = steps.baseline(lake, cfg, dataset_id, log=None)
        pool_id = steps.pool(lake, cfg, dataset_id, "seed")
        run_id = steps.score(lake, cfg, model_id, pool_id)
        cells = steps.select(lake, cfg, "seed", run_id)[: args.cells]
        calls = [(cfg, dataset_id, pool_id, model_id, c) for c in cells]
        replicates = [{"dataset_id": dataset_id, "baseline_model_id": model_id}]
        cells = [replace(c, pool_id=pool_id) for c in cells]
        groups = steps.grid_groups(cells, args.stack)
        workers = args.workers or steps.default_workers(cfg)
        d = training_data(lake, dataset_id, pool_id)
        sets = [d.with_selection(lake, c.selection_id)[:2] for c in cells]

        runner = ProcessRunner(lake, workers, log=None)  # started once, as a study's

        def process():
            for table in ("runs", "history"):  # every repeat trains every cell again
                shutil.rmtree(os.path.join(root, table), ignore_errors=True)
            runner.map(steps.cell, calls)

        def stacked():
            for table in ("runs", "history"):
                shutil.rmtree(os.path.join(root, table), ignore_errors=True)
            steps.train_grid(runner, cfg, replicates, cells, args.stack)

        def bare():
            for c, (x, y) in zip(cells, sets, strict=True):
                seed = cfg.seed + c.rep
                model = build_model("lenet5", 10, 1, 28, seed=seed)
                opt = torch.optim.Adam(model.parameters(), lr=1e-3)
                xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
                gen = torch.Generator().manual_seed(seed)
                model.train()
                for _ in range(args.epochs):
                    perm = torch.randperm(len(yt), generator=gen)
                    for i in range(0, len(yt), 128):
                        idx = perm[i : i + 128]
                        xb = xt[idx].permute(0, 3, 1, 2).float().div_(255.0)
                        loss = F.cross_entropy(model(xb), yt[idx])
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                evaluate(model, d.test.images, d.test.labels)
                evaluate(model, d.val.images, d.val.labels)

        try:
            mb, mp_, ms = alternate_all([bare, process, stacked], args.repeats)
        finally:
            runner.close()
        n = len(cells)
        print(json.dumps({
            "name": "grid", "ratio": round(mb / ms, 4), "target": 3.0,
            "process_ratio": round(mb / mp_, 4), "process_target": 1.5, "cells": n,
            "stack": args.stack, "groups": [len(g) for g in groups],
            "workers": workers, "cpus": os.cpu_count(), "epochs": args.epochs,
            "images_per_cell": [len(y) for _, y in sets],
            "bare_torch_threads": torch.get_num_threads(), "bare_s": round(mb, 3),
            "process_s": round(mp_, 3), "stacked_s": round(ms, 3),
            "bare_cells_per_hour": round(3600 * n / mb),
            "process_cells_per_hour": round(3600 * n / mp_),
            "stacked_cells_per_hour": round(3600 * n / ms), "repeats": args.repeats}))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
