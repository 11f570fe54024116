"""Pool generation on all cores (smartaug.augment.augment_images) vs a bare single-process
albumentations loop over the same images (same transforms, kinds drawn per image), on two
spaces: the default (the seed's rotate, noise, hflip) and 10 built-in kinds.

ratio = bare time / pipeline time (target >= 1.6 on 2 cores), the lower of the two spaces.
Alternating, several repeats, medians; JSON on the last line.

    python benchmarks/bench_augment.py [--images 20000] [--repeats 5] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from _timing import alternate


def load_images(n: int) -> np.ndarray:
    try:
        from smartaug.core.datasets import load_dataset

        x = load_dataset("fashion-mnist", download=False).train.images
        reps = -(-n // len(x))
        return np.concatenate([x] * reps)[:n]
    except Exception:  # noqa: BLE001 - no Fashion-MNIST here: same-shaped random images
        return np.random.default_rng(0).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()

    import albumentations as A
    import cv2

    from smartaug.config import AugmentConfig
    from smartaug.core.augment import BUILTIN, augment_images

    cv2.setNumThreads(1)
    images = load_images(args.images)
    ids = [f"train/{i:06d}" for i in range(len(images))]
    h, w = images.shape[1:3]
    seed_tf = {
        "rotate": A.Rotate(limit=(-20, 20), border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
        "noise": A.GaussNoise(std_range=(0.1, 0.1), mean_range=(0, 0), p=1.0),
        "hflip": A.HorizontalFlip(p=1.0),
    }
    spaces = {"default": ("rotate", "noise", "hflip"),
              "builtin10": ("rotate", "noise", "hflip", "vflip", "rotate180", "crop", "cutout",
                            "blur", "brightness-contrast", "perspective")}
    results = {}
    for space, kinds in spaces.items():
        cfg = AugmentConfig(seed=0, kinds=kinds)
        bare_tf = {k: A.Compose([seed_tf[k] if k in seed_tf else BUILTIN[k][1](h, w)], seed=0)
                   for k in kinds}

        def bare(bare_tf=bare_tf, kinds=kinds):
            rng = np.random.default_rng(0)
            out = np.empty_like(images)
            for i, img in enumerate(images):
                k = kinds[rng.integers(len(kinds))]
                out[i] = bare_tf[k](image=img)["image"].reshape(img.shape)
            return out

        def pipeline(cfg=cfg):
            return augment_images(images, ids, cfg, workers=args.workers)[1]

        mb, mp_ = alternate(bare, pipeline, args.repeats)
        results[space] = {"ratio": round(mb / mp_, 4), "kinds": len(kinds),
                          "bare_s": round(mb, 4), "pipeline_s": round(mp_, 4),
                          "bare_images_per_s": round(len(images) / mb),
                          "pipeline_images_per_s": round(len(images) / mp_)}
    print(json.dumps({"name": "augment", "ratio": min(r["ratio"] for r in results.values()),
                      "target": 1.6, "images": len(images), "workers": args.workers,
                      "cores": os.cpu_count(), **results, "repeats": args.repeats}))

if __name__ == "__main__":
    main()
