"""What re-scoring the pool every epoch costs a training (the self-paced arm, ``every = 1``).

The quick preset's retraining on Fashion-MNIST (LeNet-5, batch 128, Adam 1e-3, 5 epochs, CPU):
the originals (1000 train images a class) plus a 0.2 window of a one-per-image pool, the
window re-chosen every epoch from the pool's scores by the model being trained
(``smartaug.core.curriculum.SelfPaced``, ``smartaug.core.scoring.score_arrays``, in process).
The re-scoring time is measured inside the training (its plan time per epoch) and the
training time is the rest of each epoch.

ratio = re-scoring seconds / training seconds (target <= 0.2). Medians over repeats; JSON on
the last line. Beside it (``--infobatch``), InfoBatch against ``all`` on the same originals and
pool (prune 0.5, anneal 0.125, alternating): its share of the backward passes and its
wall-time ratio, as the study's pruning arm trains.

    python benchmarks/bench_rescore.py [--images 10000] [--epochs 5] [--repeats 3]
"""

from __future__ import annotations

import json
import statistics

import numpy as np
import torch
from _timing import alternate, arguments, fashion_or_generated

from smartaug.config import AugmentConfig, TrainConfig
from smartaug.core.augment import augment_images
from smartaug.core.curriculum import InfoBatch, SelfPaced
from smartaug.core.scoring import score_arrays
from smartaug.core.train import build_model, train


def main() -> None:
    args = arguments(__doc__, images=10_000, epochs=5, budget=0.2, repeats=3, infobatch=True)
    x, y, data = fashion_or_generated(args.images)
    _, pool, _ = augment_images(x, [f"train/{i}" for i in range(len(x))],
                                AugmentConfig(policy="one"))
    x_all, y_all = np.concatenate([x, pool]), np.concatenate([y, y])
    n = round(args.budget * len(pool))
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, device="cpu", seed=0)

    def once() -> tuple[float, float]:
        model = build_model("lenet5", 10, 1, 28, seed=0)
        first = score_arrays(model, pool, y)["avh"]  # stands in for the baseline's scores

        def rescore(m, epoch):
            return score_arrays(m, pool, y)["avh"]

        plan = SelfPaced(len(x), first, y, n, every=1, direction=1, lo=0.0, per_class=True,
                         rescore=rescore)
        hist = train(model, x_all, y_all, cfg, log=None, curriculum=plan,
                     n_originals=len(x))
        scoring = sum(h["plan_seconds"] for h in hist[1:])  # epochs 2..E re-score first
        training = sum(h["seconds"] - h["plan_seconds"] for h in hist[1:])
        return scoring, training

    once()  # warm-up
    runs = [once() for _ in range(args.repeats)]
    scoring = statistics.median(r[0] for r in runs)
    training = statistics.median(r[1] for r in runs)
    out = {"name": "rescore", "ratio": round(scoring / training, 3), "target": 0.2,
           "rescoring_s": round(scoring, 3), "training_s": round(training, 3),
           "pool_items": len(pool), "images_per_epoch": len(x) + n,
           "epochs_rescored": args.epochs - 1, "data": data,
           "torch_threads": torch.get_num_threads()}
    if args.infobatch:
        passes = {}

        def whole(prune):  # None: all, the plain training on every item
            def go():
                plan = None if prune is None else InfoBatch(
                    len(y_all), args.epochs, prune=prune, anneal=0.125, seed=0)
                hist = train(build_model("lenet5", 10, 1, 28, seed=0), x_all, y_all, cfg,
                             log=None, curriculum=plan, n_originals=len(x))
                passes[prune] = sum(h["samples"] for h in hist)
            return go

        all_s, pruned_s = alternate(whole(None), whole(0.5), args.repeats)
        out["infobatch"] = {"prune": 0.5, "anneal": 0.125,
                            "backward_share": round(passes[0.5] / passes[None], 3),
                            "wall_ratio": round(pruned_s / all_s, 3),
                            "all_s": round(all_s, 3), "infobatch_s": round(pruned_s, 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
