"""The GPU path measured: scoring and training of seed 004's ResNet on 32x32 RGB images on one
device, each against a bare loop on the same device and batch, and the ``gpu`` preset's wall
time end to end.

- score: ``score_pool`` (Parquet -> decode -> pinned memory -> bf16 autocast, channels_last
  -> AVH and the other scores -> Parquet) vs bare ``model(x)`` over the same batches already
  on the device (bf16 autocast, channels_last, inference mode). Target ratio >= 0.85. Also
  from a recipe pool (the preset's K=4 wide pool, pixels regenerated on the CPU cores).
- train: ``smartaug.core.train.train`` (the dataset resident on the device as uint8, bf16
  autocast, channels_last, SGD) vs a bare AMP loop doing the same. Target ratio >= 0.9.
- grid: ``--stack`` K cells of the preset's study (its seeds; the preset's ResNet, SGD,
  batch) trained as one model (``smartaug.core.stacked``, torch.func's vmap) vs the bare
  loop training them one after another: cells per hour on one card.
- preset: ``smartaug experiment --preset gpu`` on CIFAR-10 (``--cifar DIR``) or a generated
  ImageFolder of the same shape (50 000 train images, 32x32 RGB, 10 classes): its wall time.

ratio = bare time / pipeline time. Alternating, several repeats, medians; JSON last.

    python benchmarks/bench_gpu.py --device cuda [--items 50000] [--repeats 3] [--no-preset]
    python benchmarks/bench_gpu.py --device cpu --items 1024 --train-items 1024 --no-preset

``--device cuda`` on a machine without a GPU is an error (exit 2), never a CPU run.
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

import numpy as np
import torch
import torch.nn.functional as F
from _timing import alternate

SHAPE = (32, 32, 3)


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n 32x32 RGB images with class-dependent colour and texture, and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    base = (labels[:, None, None, None] * 23 + np.arange(3) * 40) % 256
    noise = rng.integers(0, 64, (n, *SHAPE))
    return (base + noise).astype(np.uint8), labels.astype(np.int64)


def make_lake(root: Path, n: int, device: str):
    """A lake with an n-image 32x32 RGB train split, a ResNet baseline entry (initialised, not
    trained: throughput does not depend on the weights), and two pools of it: the seed's
    one-per-image pool stored with pixels and the preset's K=4 wide pool as recipes."""
    from dataclasses import replace

    from smartaug.config import AugmentConfig, TrainConfig, preset
    from smartaug.core.train import build_model
    from smartaug.lake import Lake, image_columns
    from smartaug.steps.baseline import register_model
    from smartaug.steps.pool import build_pool

    lake = Lake(root)
    images, labels = synthetic(n)
    dataset_id = "benchgpu00000001"
    with lake.writer("samples", dataset_id) as w:
        w.write({"dataset_id": [dataset_id] * n, "split": ["train"] * n,
                 "sample_id": [f"train/{i:06d}" for i in range(n)], "label": labels,
                 **image_columns(images)})
    lake.write("datasets", dataset_id, {
        "dataset_id": [dataset_id], "name": ["bench-gpu"], "config": ["{}"],
        "classes": [json.dumps([f"class{c}" for c in range(10)])], "n_train": [n],
        "n_val": [0], "n_test": [0], "height": [32], "width": [32], "channels": [3],
        "fingerprint": ["bench"]})
    net = build_model("resnet", 10, 3, 32, seed=0)
    few = (images[:64], labels[:64])
    model_id = register_model(lake, "benchgpumodel001", net, arch="resnet",
                              dataset_id=dataset_id, cfg=TrainConfig(device=device),
                              history=[], seconds=0.0, evals={"train": few, "test": few})
    materialised = build_pool(lake, dataset_id, replace(AugmentConfig(), materialize="always"))
    recipes = build_pool(lake, dataset_id, replace(preset("gpu").augment, materialize="never"))
    return lake, model_id, materialised, recipes, images, labels


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_score(lake, model_id, pool_id, images, device, batch, repeats) -> dict:
    from smartaug.steps.score import load_model, score_pool

    n = lake.row("pools", pool_id)["n_items"]
    model, _ = load_model(lake, model_id, device)
    cuda = device.type == "cuda"
    if cuda:
        model.to(memory_format=torch.channels_last)
    x_all = torch.from_numpy(images[np.arange(n) % len(images)]).to(device)
    batches = [x.permute(0, 3, 1, 2).float().div_(255.0).contiguous(
        memory_format=torch.channels_last if cuda else torch.contiguous_format)
        for x in x_all.split(batch)]

    @torch.inference_mode()
    def bare():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            for x in batches:
                model(x)
        sync(device)

    def pipeline():
        for table in ("scores", "scoring_runs"):
            shutil.rmtree(lake.root / table, ignore_errors=True)
        score_pool(lake, model_id, pool_id, batch_size=batch, device=str(device))
        sync(device)

    tb, tp = alternate(bare, pipeline, repeats)
    return {"ratio": round(tb / tp, 4), "items": n, "bare_s": round(tb, 3),
            "pipeline_s": round(tp, 3), "bare_items_per_s": round(n / tb),
            "pipeline_items_per_s": round(n / tp)}


def bare_training(images, labels, device, batch, epochs, seed: int) -> None:
    """The bare AMP loop: the preset's ResNet and SGD, the uint8 images on the device."""
    from smartaug.core.train import build_model

    cuda = device.type == "cuda"
    model = build_model("resnet", 10, 3, 32, seed=seed).to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    x_all = torch.from_numpy(images).to(device)
    y_all = torch.from_numpy(labels).to(device)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y_all), generator=gen).to(device)
        for i in range(0, len(y_all), batch):
            idx = perm[i : i + batch]
            x = x_all[idx].permute(0, 3, 1, 2).float().div_(255.0)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(model(x).float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    sync(device)


def bench_grid(images, labels, device, batch, epochs, repeats, stack) -> dict:
    """``stack`` cells of the preset's study (its seeds) trained as one model
    (``smartaug.core.stacked.train_stacked``: torch.func's vmap over the ResNet) vs the bare
    loop training them one after another on the same device."""
    from smartaug.config import TrainConfig
    from smartaug.core.stacked import train_stacked
    from smartaug.core.train import build_model

    cfgs = [TrainConfig(epochs=epochs, batch_size=batch, lr=0.05, optimizer="sgd",
                        weight_decay=5e-4, device=str(device), seed=s) for s in range(stack)]

    def stacked():
        models = [build_model("resnet", 10, 3, 32, seed=c.seed) for c in cfgs]
        train_stacked(models, [(images, labels)] * stack, cfgs)
        sync(device)

    def bare():
        for c in cfgs:
            bare_training(images, labels, device, batch, epochs, seed=c.seed)

    tb, ts = alternate(bare, stacked, repeats)
    return {"ratio": round(tb / ts, 4), "stack": stack, "images_per_cell": len(labels),
            "epochs": epochs, "bare_s": round(tb, 3), "stacked_s": round(ts, 3),
            "bare_cells_per_hour": round(3600 * stack / tb),
            "stacked_cells_per_hour": round(3600 * stack / ts)}


def bench_train(images, labels, device, batch, epochs, repeats) -> dict:
    from smartaug.config import TrainConfig
    from smartaug.core.train import build_model, train

    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=0.05, optimizer="sgd",
                      weight_decay=5e-4, device=str(device), seed=0)

    def pipeline():
        model = build_model("resnet", 10, 3, 32, seed=0)
        train(model, images, labels, cfg, log=None)
        sync(device)

    def bare():
        bare_training(images, labels, device, batch, epochs, seed=0)

    tb, tp = alternate(bare, pipeline, repeats)
    n = len(labels) * epochs
    return {"ratio": round(tb / tp, 4), "images_per_epoch": len(labels), "epochs": epochs,
            "bare_s": round(tb, 3), "pipeline_s": round(tp, 3),
            "bare_images_per_s": round(n / tb), "pipeline_images_per_s": round(n / tp)}


def write_folder(root: Path, n: int) -> Path:
    """A CIFAR-10-shaped ImageFolder: n train images (n/10 per class), 10 000 test, PNG."""
    from PIL import Image

    for split, count, seed in (("train", n, 1), ("test", 10_000, 2)):
        images, labels = synthetic(count, seed)
        for c in range(10):
            (root / split / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i, (img, y) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(img).save(root / split / f"class{y}" / f"{i:06d}.png",
                                      compress_level=1)
    return root


def bench_preset(tmp: Path, device: str, cifar: str | None, n: int) -> dict:
    """Wall time of ``smartaug experiment --preset gpu`` in a fresh lake."""
    args = ["--data", cifar] if cifar else [
        "--dataset", f"imagefolder:{write_folder(tmp / 'folder', n)}"]
    smartaug = str(Path(sys.executable).parent / "smartaug")
    t0 = time.perf_counter()
    res = subprocess.run([smartaug, "experiment", "--preset", "gpu", *args, "--device", device,
                          "--storage", str(tmp / "preset-lake")], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"the gpu preset failed:\n{res.stderr[-3000:]}")
    return {"wall_s": round(wall, 1), "data": "cifar10" if cifar else
            f"generated ImageFolder, {n} train images 32x32 RGB",
            "report": res.stdout.strip().splitlines()[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    ap.add_argument("--items", type=int, default=50_000, help="train images (pools: x1, x4)")
    ap.add_argument("--train-items", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stack", type=int, default=5,
                    help="cells trained as one model in the grid part (the preset's 5 seeds)")
    ap.add_argument("--no-preset", action="store_true", help="skip the preset's wall time")
    ap.add_argument("--cifar", help="CIFAR-10's directory for the preset run (else generated)")
    args = ap.parse_args()

    from smartaug.core.train import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    try:
        lake, model_id, mat, rec, images, labels = make_lake(tmp / "lake", args.items,
                                                             str(device))
        result = {"name": "gpu", "device": str(device), "device_name": name,
                  "torch": torch.__version__, "model": "resnet", "batch": args.batch,
                  "repeats": args.repeats}
        result["score"] = {**bench_score(lake, model_id, mat, images, device, args.batch,
                                         args.repeats), "target": 0.85, "pool": "pixels"}
        result["score_recipes"] = {**bench_score(lake, model_id, rec, images, device,
                                                 args.batch, args.repeats),
                                   "pool": "recipes, K=4 wide"}
        tr_images, tr_labels = synthetic(args.train_items, 3)
        result["train"] = {**bench_train(tr_images, tr_labels, device, args.batch, args.epochs,
                                         args.repeats), "target": 0.9}
        result["grid"] = bench_grid(tr_images, tr_labels, device, args.batch, args.epochs,
                                    args.repeats, args.stack)
        if not args.no_preset:
            result["preset"] = bench_preset(tmp, str(device), args.cifar, args.train_items)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
