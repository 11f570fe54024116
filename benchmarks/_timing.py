"""The benchmarks' timing: warm up once, then alternate the contenders for several repeats
and take each one's median (the machines are noisy; alternation spreads the noise evenly)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def alternate(bare: Callable[[], object], pipeline: Callable[[], object],
              repeats: int) -> tuple[float, float]:
    """Median seconds of ``bare`` and of ``pipeline``, measured alternately."""
    return tuple(alternate_all([bare, pipeline], repeats))


def alternate_all(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each of ``fns``, each warmed up once, then measured in turn."""
    for fn in fns:  # warm-up
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, acc in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def arguments(doc: str, **defaults):
    """The script's command line: ``--NAME`` for each default (its type; a bool is a
    ``--NAME/--no-NAME`` switch), described by the docstring's first line."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, value in defaults.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            ap.add_argument(flag, type=type(value), default=value)
    return ap.parse_args()


def fashion_or_generated(images: int):
    """``images`` Fashion-MNIST train images (a tenth of them a class) and their labels, or
    generated ones where the dataset is not installed; and which it was."""
    import numpy as np

    try:
        from smartaug.core.datasets import load_dataset

        ds = load_dataset("fashion-mnist", per_class_train=images // 10, download=False)
        return ds.train.images, ds.train.labels, "fashion-mnist"
    except Exception:  # noqa: BLE001 - no Fashion-MNIST here
        rng = np.random.default_rng(0)
        return (rng.integers(0, 256, (images, 28, 28, 1), dtype=np.uint8),
                rng.integers(0, 10, images), "generated")
