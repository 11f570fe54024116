"""The main job end to end: `smartaug experiment --preset quick` against a bare script doing
the same work, each a whole process, paired (alternating, fresh storage each time).

The bare script (written below, plain torch, numpy and OpenCV, sequential as a user would
write it) does what the quick preset does: load Fashion-MNIST (1100 train images a class, a
tenth of them held out for validation, the full test set), train a LeNet-5 baseline (5 epochs,
Adam 1e-3, batches of 128), make one augmentation per image (rotation, noise or mirror, drawn
uniformly), score every augmentation by AVH, take the 2-22 % band, and train M0 (originals +
every augmentation), M1 (+ a random subset of the band's size and class mix) and M2 (+ the
band, CE + AVH^2) over 3 seeds, each evaluated on the validation split and the full test set.
It writes nothing but its accuracies. The pipeline also writes the lake (every table, with
manifests), the checkpoints and the report, and scores the original train and test images
for the report.

ratio = bare seconds / pipeline seconds (median of the pairs; target >= 1.5). JSON last.

    python benchmarks/bench_e2e.py [--per-class 1100] [--per-class-test 0] [--epochs 5]
                                   [--seeds 3] [--repeats 2] [--stack 8]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import arguments

BARE = r'''
import gzip, json, sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

root, per_class, per_test, epochs, seeds = sys.argv[1], *map(int, sys.argv[2:6])


def idx(name):
    p = Path(root) / name
    raw = gzip.open(str(p) + ".gz").read() if not p.exists() else p.read_bytes()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def take(x, y, n, rng):
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n] for c in range(10)])
    return x[keep], y[keep]


rng = np.random.default_rng(0)
x, y = idx("train-images-idx3-ubyte"), idx("train-labels-idx1-ubyte").astype(np.int64)
x, y = take(x, y, per_class, rng)
xt, yt = idx("t10k-images-idx3-ubyte"), idx("t10k-labels-idx1-ubyte").astype(np.int64)
if per_test:
    xt, yt = take(xt, yt, per_test, rng)
val = np.concatenate([np.flatnonzero(y == c)[: per_class // 11] for c in range(10)])
train = np.setdiff1d(np.arange(len(y)), val)
xv, yv, x, y = x[val], y[val], x[train], y[train]


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(400, 120, bias=False), nn.BatchNorm1d(120), nn.ReLU(),
            nn.Linear(120, 84, bias=False), nn.BatchNorm1d(84), nn.ReLU())
        self.head = nn.Linear(84, 10)

    def features(self, x):
        return self.fc(self.conv((x - 0.2860) / 0.3530))

    def forward(self, x):
        return self.head(self.features(x))


def tensor(images):
    return torch.from_numpy(images).float().div_(255).unsqueeze(1)


def avh(f, w, labels):
    cos = F.normalize(f, dim=1) @ F.normalize(w, dim=1).T
    ang = torch.arccos(cos.clamp(-1, 1))
    return ang.gather(1, labels[:, None])[:, 0] / ang.sum(1)


def fit(images, labels, seed, avh_loss=False):
    torch.manual_seed(seed)
    model = LeNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs, ys = tensor(images), torch.from_numpy(labels)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(ys)).split(128):
            f = model.features(xs[idx])
            loss = F.cross_entropy(model.head(f), ys[idx])
            if avh_loss:
                loss = loss + avh(f, model.head.weight, ys[idx]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


@torch.no_grad()
def accuracy(model, images, labels):
    model.eval()
    pred = torch.cat([model(b).argmax(1) for b in tensor(images).split(1024)])
    return float((pred == torch.from_numpy(labels)).float().mean())


baseline = fit(x, y, 0)
# one augmentation per image: rotation (+-20 degrees), Gaussian noise (sigma 0.1) or a mirror
kinds = rng.integers(0, 3, len(x))
aug = np.empty_like(x)
for i, (img, k) in enumerate(zip(x, kinds)):
    if k == 0:
        m = cv2.getRotationMatrix2D((13.5, 13.5), rng.uniform(-20, 20), 1.0)
        aug[i] = cv2.warpAffine(img, m, (28, 28), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT_101)
    elif k == 1:
        aug[i] = np.clip(img + rng.normal(0, 25.5, img.shape), 0, 255).astype(np.uint8)
    else:
        aug[i] = img[:, ::-1]
baseline.eval()
with torch.no_grad():
    feats = torch.cat([baseline.features(b) for b in tensor(aug).split(1024)])
    scores = avh(feats, baseline.head.weight, torch.from_numpy(y)).numpy()
lo, hi = np.quantile(scores, [0.02, 0.22])
band = np.flatnonzero((scores >= lo) & (scores < hi))
counts = np.bincount(y[band], minlength=10)
matched = np.concatenate([rng.choice(np.flatnonzero(y == c), counts[c], replace=False)
                          for c in range(10)])
sets = {"M0": np.arange(len(x)), "M1": matched, "M2": band}
out = {}
for seed in range(seeds):
    for name, chosen in sets.items():
        model = fit(np.concatenate([x, aug[chosen]]), np.concatenate([y, y[chosen]]), seed,
                    avh_loss=name == "M2")
        out[f"{name}/{seed}"] = [accuracy(model, xv, yv), accuracy(model, xt, yt)]
print(json.dumps(out))
'''


def _data_root() -> str:
    for d in (os.environ.get("SMARTAUG_DATA"), "/usr/share/datasets/fashion-mnist"):
        if d and Path(d).is_dir():
            return d
    sys.exit("bench_e2e needs Fashion-MNIST: apt-get install -y dataset-fashion-mnist (or "
             "SMARTAUG_DATA=DIR)")


def main() -> None:
    args = arguments(__doc__, per_class=1100, per_class_test=0, epochs=5, seeds=3, repeats=2,
                     stack=8)
    root = _data_root()
    work = Path(tempfile.mkdtemp(prefix="smartaug-e2e-"))
    script = work / "bare.py"
    script.write_text(BARE)
    exe = Path(sys.executable).parent / "smartaug"
    size = ["--per-class-train", str(args.per_class), "--epochs", str(args.epochs),
            "--seeds", str(args.seeds)]
    if args.per_class_test:
        size += ["--per-class-test", str(args.per_class_test)]
    env = dict(os.environ, SMARTAUG_DATA=root)

    def bare() -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(script), root, str(args.per_class),
                        str(args.per_class_test), str(args.epochs), str(args.seeds)],
                       check=True, capture_output=True, env=env)
        return time.perf_counter() - t0

    def pipeline(stack: int) -> float:
        storage = work / "storage"
        shutil.rmtree(storage, ignore_errors=True)
        t0 = time.perf_counter()
        res = subprocess.run([str(exe), "experiment", "--preset", "quick", *size, "--stack",
                              str(stack), "--quiet", "--device", "cpu", "--storage",
                              str(storage)], capture_output=True, text=True, env=env)
        took = time.perf_counter() - t0
        if res.returncode != 0:
            sys.exit(f"smartaug experiment failed:\n{res.stderr[-3000:]}")
        return took

    times: dict[str, list[float]] = {"bare": [], "pipeline": [], "pipeline_alone": []}
    try:
        for r in range(args.repeats):  # paired, the order alternating
            order = ["bare", "pipeline"] if r % 2 == 0 else ["pipeline", "bare"]
            for name in order:
                times[name].append(bare() if name == "bare" else pipeline(args.stack))
        times["pipeline_alone"].append(pipeline(1))  # cells one at a time: what stacking saves
    finally:
        shutil.rmtree(work, ignore_errors=True)
    b, p = statistics.median(times["bare"]), statistics.median(times["pipeline"])
    print(json.dumps({"name": "e2e", "ratio": round(b / p, 4), "target": 1.5,
                      "bare_s": round(b, 2), "pipeline_s": round(p, 2),
                      "pipeline_unstacked_s": round(times["pipeline_alone"][0], 2),
                      "pairs": [[round(x, 2), round(y, 2)] for x, y in
                                zip(times["bare"], times["pipeline"], strict=True)],
                      "per_class_train": args.per_class, "epochs": args.epochs,
                      "seeds": args.seeds, "stack": args.stack, "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
