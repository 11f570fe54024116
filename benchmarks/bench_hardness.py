"""LeNet-5 forward + every hardness score vs the bare forward pass (batch 512, in memory).

ratio = bare forward time / (forward + scores) time; target >= 0.9 (scores cost <= 10 %).
Alternates the two, several repeats, reports medians. Prints one JSON object as the last line.

    python benchmarks/bench_hardness.py [--batch 512] [--repeats 15] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json

import torch
from _timing import alternate

from smartaug.core.hardness import hardness_scores
from smartaug.models import make_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--batches", type=int, default=20, help="batches per timed repeat")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = make_model("lenet5", 10, 1, 28).to(dev).eval()
    xs = torch.rand(args.batches, args.batch, 1, 28, 28, device=dev)  # (K, B, C, H, W)
    ys = torch.randint(0, 10, (args.batches, args.batch), device=dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    @torch.inference_mode()
    def bare():
        for x in xs:
            model(x)
        sync()

    @torch.inference_mode()
    def scored():
        for x, y in zip(xs, ys, strict=True):
            f = model.features(x)
            logits = model.head(f)
            hardness_scores(logits, f, model.head.weight, y)
        sync()

    mb, ms = alternate(bare, scored, args.repeats)
    n = args.batch * args.batches
    print(json.dumps({
        "name": "hardness",
        "ratio": round(mb / ms, 4),
        "target": 0.9,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "batch": args.batch,
        "images_per_repeat": n,
        "bare_forward_s": round(mb, 5),
        "forward_plus_scores_s": round(ms, 5),
        "bare_images_per_s": round(n / mb),
        "scored_images_per_s": round(n / ms),
        "repeats": args.repeats,
    }))


if __name__ == "__main__":
    main()
