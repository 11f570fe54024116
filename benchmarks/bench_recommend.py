"""One seed of a recommend race's rung: K ops and the identity trained as one model, against
the same K + 1 trainings one after another.

Every training is LeNet-5 (batch 128, Adam 1e-3, CPU) on the same originals plus one fresh
draw of its op for each of them every epoch (``smartaug.core.search.Trainer``, as
``smartaug recommend`` trains a rung). Sequential: each training alone through
``smartaug.core.train.train`` (itself 0.98 of a bare torch loop: bench_train.py), as a script
would loop over the ops; stacked: ``--stack`` at a time (``smartaug.core.stacked``), each with
its own op's draws, the next epoch's made in a thread.

ratio = sequential seconds / stacked seconds (target >= 1.5). Alternating, medians. JSON on
the last line.

    python benchmarks/bench_recommend.py [--images 2000] [--ops 7] [--stack 8] [--epochs 5]
"""

from __future__ import annotations

import json

import torch
from _timing import alternate, arguments, fashion_or_generated

from smartaug.config import TrainConfig
from smartaug.core.search import IDENTITY, Trainer, candidates
from smartaug.core.train import build_model

KINDS = ["rotate", "noise", "hflip", "crop", "cutout", "brightness-contrast", "jpeg", "blur"]


def main() -> None:
    args = arguments(__doc__, images=2000, ops=7, stack=8, epochs=5, repeats=1)
    x, y, source = fashion_or_generated(args.images)
    ops = [IDENTITY, *candidates(KINDS)[: args.ops]]
    protocol = TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, device="cpu")

    def make(seed: int):
        return build_model("lenet5", 10, 1, 28, seed=seed)

    evals = {"train": (x[:256], y[:256])}

    def run(stack: int):
        def go():
            Trainer(make, protocol, stack=stack).accuracies(ops, x, y, 0, evals)
        return go

    seq_s, stacked_s = alternate(run(1), run(args.stack), args.repeats)
    print(json.dumps({"name": "recommend", "ratio": round(seq_s / stacked_s, 3), "target": 1.5,
                      "trainings": len(ops), "stack": args.stack, "images": len(y),
                      "epochs": args.epochs, "data": source, "sequential_s": round(seq_s, 3),
                      "stacked_s": round(stacked_s, 3),
                      "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
