"""Training throughput of smartaug.train.train vs a bare loop: same model (LeNet-5), batch
(128), optimizer (Adam 1e-3), the same uint8 tensors in memory, plain cross-entropy.

ratio = bare time / pipeline time (target >= 0.9). Alternating, several repeats, medians;
JSON on the last line.

    python benchmarks/bench_train.py [--images 10000] [--epochs 2] [--repeats 5]
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from _timing import alternate, arguments, fashion_or_generated

from smartaug.config import TrainConfig
from smartaug.core.train import build_model, train


def main() -> None:
    args = arguments(__doc__, images=10_000, epochs=2, batch=128, repeats=5)
    x, y, _ = fashion_or_generated(args.images)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=1e-3, device="cpu", seed=0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()

    def pipeline():
        model = build_model("lenet5", 10, 1, 28, seed=0)
        train(model, x, y, cfg, log=None)

    def bare():
        model = build_model("lenet5", 10, 1, 28, seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(args.epochs):
            perm = torch.randperm(len(yt), generator=gen)
            for i in range(0, len(yt), args.batch):
                idx = perm[i : i + args.batch]
                xb = xt[idx].permute(0, 3, 1, 2).float().div_(255.0)
                loss = F.cross_entropy(model(xb), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    mb, mp_ = alternate(bare, pipeline, args.repeats)
    n = len(yt) * args.epochs
    print(json.dumps({"name": "train", "ratio": round(mb / mp_, 4), "target": 0.9,
                      "images_per_epoch": len(yt), "epochs": args.epochs, "batch": args.batch,
                      "torch_threads": torch.get_num_threads(), "bare_s": round(mb, 3),
                      "pipeline_s": round(mp_, 3), "bare_images_per_s": round(n / mb),
                      "pipeline_images_per_s": round(n / mp_), "repeats": args.repeats}))


if __name__ == "__main__":
    main()
