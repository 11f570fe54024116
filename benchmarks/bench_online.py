"""An epoch with on-the-fly augmentation against an epoch over a static pool of the same size.

Both train LeNet-5 (batch 128, Adam 1e-3, CPU) on the same originals plus one augmentation of
each: the static run on a pool made beforehand (the seed's kinds, rotation / noise / flip),
the online run (``TrainConfig(augment="online", policy="space:rotate,noise,hflip")``) on fresh
draws of the same kinds every epoch, the next epoch's made in a thread while the current one
trains. Same number of images and gradient steps per epoch.

ratio = static seconds / online seconds (target >= 0.8). Alternating, medians; the anchors
(torchvision's TrivialAugmentWide, RandAugment, AutoAugment) are timed the same way and
reported beside it. JSON on the last line.

    python benchmarks/bench_online.py [--images 10000] [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import torch
from _timing import alternate, arguments, fashion_or_generated

from smartaug.config import AugmentConfig, TrainConfig
from smartaug.core.augment import augment_images
from smartaug.core.train import build_model, train


def main() -> None:
    args = arguments(__doc__, images=10_000, epochs=2, repeats=3, anchors=True)
    x, y, _ = fashion_or_generated(args.images)
    _, pool, _ = augment_images(x, [f"train/{i}" for i in range(len(x))],
                                AugmentConfig(policy="one"))
    x_static, y_static = np.concatenate([x, pool]), np.concatenate([y, y])
    base = TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, device="cpu", seed=0)

    def run(images, labels, cfg):
        def go():
            train(build_model("lenet5", 10, 1, 28, seed=0), images, labels, cfg, log=None)
        return go

    static = run(x_static, y_static, base)
    online = run(x, y, TrainConfig(**{**base.__dict__, "augment": "online",
                                      "policy": "space:rotate,noise,hflip"}))
    static_s, online_s = alternate(static, online, args.repeats)
    out = {"name": "online", "ratio": round(static_s / online_s, 3), "target": 0.8,
           "images_per_epoch": len(x_static), "epochs": args.epochs,
           "static_s": round(static_s, 3), "online_s": round(online_s, 3),
           "policy": "space:rotate,noise,hflip", "torch_threads": torch.get_num_threads()}
    if args.anchors:
        for anchor in ("trivialaugment-wide", "randaugment", "autoaugment-cifar10"):
            fn = run(x, y, TrainConfig(**{**base.__dict__, "augment": "online",
                                          "policy": anchor}))
            times = []
            for _ in range(max(1, args.repeats // 2)):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            out[f"ratio_{anchor}"] = round(static_s / statistics.median(times), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
