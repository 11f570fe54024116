"""Step ``baseline``: a dataset's train split -> a trained model in the models table (and its
checkpoint under ``<root>/checkpoints/``). ``register_model`` also registers the curriculum's
fine-tuned child models."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import torch
from torch import nn

from smartaug.config import TrainConfig
from smartaug.core.train import build_model, evaluate, train
from smartaug.errors import InputError
from smartaug.lake import Lake, atomic_path, content_id
from smartaug.lake.readers import classes, read_split
from smartaug.models import save_checkpoint
from smartaug.models.external import load_weights

__all__ = ["register_model", "train_baseline"]

Log = Callable[[str], None] | None


def register_model(lake: Lake, model_id: str, net: nn.Module, *, arch: str, dataset_id: str,
                   cfg: TrainConfig, history: list[dict], seconds: float,
                   evals: dict[str, tuple], parent_model_id: str | None = None,
                   extra: dict | None = None) -> str:
    """Save ``net``'s checkpoint (with its train config and ids) and write its models row.

    evals: ``train``, ``test`` and optionally ``val`` -> (images, labels), the accuracies
    recorded with it. ``extra``: more provenance for the config (e.g. the selection_id).
    """
    dev = next(net.parameters()).device
    acc = {k: evaluate(net, x, y, device=dev) for k, (x, y) in evals.items() if len(y)}
    ids = {"model_id": model_id, "dataset_id": dataset_id, "parent_model_id": parent_model_id}
    names = classes(lake, dataset_id)  # recorded: scoring checks the items have these classes
    net.to(memory_format=torch.contiguous_format)
    rel = f"checkpoints/{model_id}.pt"
    with atomic_path(lake.local_path(rel)) as tmp:
        sha = save_checkpoint(net.cpu(), tmp, extra={**ids, "train": cfg.to_dict(),
                                                     "classes": names, **(extra or {})})
    lake.upload(lake.local_path(rel), rel)
    config = {"arch": arch, "train": cfg.to_dict(), "classes": names, **(extra or {}),
              "history": history}
    lake.write("models", model_id, {
        **{k: [v] for k, v in ids.items()}, "arch": [arch],
        "config": [json.dumps(config, default=str)], "checkpoint": [rel],
        "sha256": [sha], "train_acc": [acc["train"]["acc"]],
        "val_acc": [acc["val"]["acc"] if "val" in acc else None],
        "test_acc": [acc["test"]["acc"]], "test_avh": [acc["test"]["avh"]],
        "seconds": [seconds]})
    return model_id


def train_baseline(lake: Lake, dataset_id: str, *, arch: str = "lenet5",
                   cfg: TrainConfig | None = None, log: Log = print,
                   weights: str | None = None) -> str:
    """Train ``arch`` on the train split of ``dataset_id`` with ``cfg`` and register it;
    returns model_id.

    The id hashes the dataset id, the architecture and the training config: a second call
    finds the model and trains nothing.
    """
    cfg = cfg or TrainConfig()
    ids = {"dataset_id": dataset_id, "arch": arch, "train": cfg.to_dict(),
           "parent_model_id": None}
    if weights is not None:  # the starting weights' content, not their path
        ids["weights_sha256"] = _file_sha256(weights)
    model_id = content_id("model", ids)
    if lake.has("models", model_id):
        return model_id
    meta = lake.row("datasets", dataset_id)
    splits = {s: read_split(lake, dataset_id, s) for s in ("train", "val", "test")}
    evals = {s: (splits[s].images, splits[s].labels) for s in splits}
    t0 = time.perf_counter()
    net = build_model(arch, len(classes(lake, dataset_id)), meta["channels"], meta["height"],
                      seed=cfg.seed)
    if weights is not None:
        load_weights(net, weights)
    said = None if log is None else (lambda line: log(f"baseline {arch}: {line}"))
    history = train(net, *evals["train"], cfg, log=said,  # test once, at the end, with a val
                    eval_sets={s: evals[s] for s in ("val", "test") if len(splits[s])},
                    eval_last=frozenset({"test"}) if len(splits["val"]) else False)
    return register_model(lake, model_id, net, arch=arch, dataset_id=dataset_id, cfg=cfg,
                          history=history, seconds=time.perf_counter() - t0, evals=evals,
                          extra={"weights_sha256": ids["weights_sha256"]} if weights else None)


def _file_sha256(path: str) -> str:
    import hashlib

    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as e:
        raise InputError(f"cannot read the weights file {path}: {e.strerror or e}") from e
