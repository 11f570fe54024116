"""The whole experiment as stages: ingest -> baseline -> augment -> score -> select -> retrain
(methods x reps) -> report. Each stage reads its inputs from the lake, writes its table and
returns ids, so an orchestrator (``flows/``) can wrap each in a task; ``run_experiment`` runs
them in order. Every stage finds its output when it already exists (content-hashed ids), so a
crashed experiment resumes at its first unfinished stage.

No tuning on test: the optional band search trains on the train split and compares bands by
validation accuracy; only the chosen band is evaluated on test, and the report says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from models import load_checkpoint
from pipeline import select as S
from pipeline.augment import build_pool
from pipeline.config import ExperimentConfig, MethodSpec, hardness_band
from pipeline.data import ingest, read_split
from pipeline.lake import Lake, content_id, decode_images, provenance
from pipeline.score import checkpoint_path, score_pool, score_split
from pipeline.train import TrainConfig, build_model, train, train_baseline

__all__ = ["experiment_id", "run_experiment", "stage_ingest", "stage_baseline", "stage_augment",
           "stage_score", "stage_select", "stage_retrain"]

Log = Callable[[str], None]


def experiment_id(cfg: ExperimentConfig) -> str:
    return content_id("experiment", cfg.to_dict())


# ------------------------------------------------------------------ stages


def stage_ingest(lake: Lake, cfg: ExperimentConfig) -> str:
    return ingest(lake, cfg.data)


def stage_baseline(lake: Lake, cfg: ExperimentConfig, dataset_id: str, log: Log | None = print
                   ) -> str:
    return train_baseline(lake, dataset_id, arch=cfg.model, cfg=replace(cfg.baseline, seed=cfg.seed),
                          log=log)


def stage_augment(lake: Lake, cfg: ExperimentConfig, dataset_id: str) -> str:
    return build_pool(lake, dataset_id, cfg.augment)


def stage_score(lake: Lake, cfg: ExperimentConfig, model_id: str, pool_id: str,
                dataset_id: str) -> str:
    """Scores the pool; the original train and test images too (for the report)."""
    for split in ("train", "test"):
        score_split(lake, model_id, dataset_id, split, device=cfg.retrain.device)
    return score_pool(lake, model_id, pool_id, device=cfg.retrain.device)


def _select_one(lake: Lake, cfg: ExperimentConfig, m: MethodSpec, scoring_run_id: str,
                done: dict[str, str | None]) -> str | None:
    if m.selection == "none":
        return None
    if m.selection == "all":
        return S.all_items(lake, scoring_run_id)
    if m.selection == "band":
        return S.band(lake, scoring_run_id, m.band[0], m.band[1], score=m.score,
                      per_class=m.per_class)
    return S.random(lake, scoring_run_id, matched_to=done[m.matched_to], seed=cfg.seed)


def stage_select(lake: Lake, cfg: ExperimentConfig, scoring_run_id: str) -> dict[str, str | None]:
    """One selection per method (a matched random subset after the method it matches)."""
    done: dict[str, str | None] = {}
    pending = list(cfg.methods)
    while pending:
        m = next(m for m in pending if m.matched_to is None or m.matched_to in done)
        done[m.name] = _select_one(lake, cfg, m, scoring_run_id, done)
        pending.remove(m)
    return {m.name: done[m.name] for m in cfg.methods}


class TrainingData:
    """The originals of the train split and the pool's images, kept once in memory."""

    def __init__(self, lake: Lake, dataset_id: str, pool_id: str):
        self.train = read_split(lake, dataset_id, "train")
        self.val = read_split(lake, dataset_id, "val")
        self.test = read_split(lake, dataset_id, "test")
        pool = lake.read("augmentations", pool_id, columns=["aug_id", "label", "image", "height",
                                                             "width", "channels"])
        self.aug_images = np.array(decode_images(pool, "aug_id"))
        self.aug_labels = pool["label"].to_numpy()
        self.aug_index = {a: i for i, a in enumerate(pool["aug_id"].to_pylist())}

    def with_selection(self, lake: Lake, selection_id: str | None):
        """Originals + the selection's augmentations (in aug_id order)."""
        if selection_id is None:
            return self.train.images, self.train.labels, 0
        ids = sorted(S.read_selection(lake, selection_id)["aug_id"].to_pylist())
        rows = np.asarray([self.aug_index[a] for a in ids], dtype=np.int64)
        x = np.concatenate([self.train.images, self.aug_images[rows]])
        y = np.concatenate([self.train.labels, self.aug_labels[rows]])
        return x, y, len(rows)


def _run(lake: Lake, cfg: ExperimentConfig, exp_id: str, data: TrainingData, m: MethodSpec,
         selection_id: str | None, rep: int, baseline_model_id: str, purpose: str,
         log: Log | None) -> str:
    seed = cfg.seed + rep
    tcfg: TrainConfig = replace(cfg.retrain, loss=m.loss, seed=seed)
    run_id = content_id("run", {"experiment_id": exp_id, "method": m.to_dict(), "rep": rep,
                                "selection_id": selection_id, "purpose": purpose,
                                "train": tcfg.to_dict(), "init": cfg.init})
    if lake.has("runs", run_id):
        return run_id
    x, y, n_aug = data.with_selection(lake, selection_id)
    if cfg.init == "baseline":  # fine-tune a fresh copy of the registered baseline
        model = load_checkpoint(checkpoint_path(lake, baseline_model_id))
    else:
        meta = lake.row("datasets", lake.row("models", baseline_model_id)["dataset_id"])
        model = build_model(cfg.model, len(json.loads(meta["classes"])), meta["channels"],
                            meta["height"], seed=seed)
    evals = {"test": (data.test.images, data.test.labels)}
    if len(data.val):
        evals = {"val": (data.val.images, data.val.labels), **evals}
    if log:
        log(f"{purpose} {m.name} rep {rep} (seed {seed}): {len(y)} images "
            f"({n_aug} augmentations), loss {m.loss.label()}")
    t0 = time.perf_counter()
    hist = train(model, x, y, tcfg, eval_sets=evals, log=log)
    seconds = time.perf_counter() - t0
    last = hist[-1] if hist else {}
    lake.write("history", run_id, {
        "run_id": [run_id] * len(hist), "epoch": [h["epoch"] for h in hist],
        "train_loss": [h["train_loss"] for h in hist], "train_acc": [h["train_acc"] for h in hist],
        "val_acc": [h.get("val_acc") for h in hist], "val_avh": [h.get("val_avh") for h in hist],
        "test_acc": [h.get("test_acc") for h in hist],
        "test_avh": [h.get("test_avh") for h in hist],
        "feature_norm_mean": [h.get("test_feature_norm") for h in hist],
        "weight_norm_mean": [h["weight_norm_mean"] for h in hist],
        "seconds": [h["seconds"] for h in hist]})
    lake.write("runs", run_id, {
        "run_id": [run_id], "experiment_id": [exp_id], "method": [m.name], "rep": [rep],
        "seed": [seed], "selection_id": [selection_id], "n_train": [len(y)],
        "n_augmented": [n_aug], "loss": [m.loss.label()], "lam": [m.loss.lam],
        "epochs": [tcfg.epochs], "init": [cfg.init], "train_acc": [last.get("train_acc")],
        "val_acc": [last.get("val_acc")], "test_acc": [last.get("test_acc")],
        "test_avh": [last.get("test_avh")], "seconds": [seconds], "purpose": [purpose],
        **{k: [v] for k, v in provenance().items()}})
    return run_id


def band_search(lake: Lake, cfg: ExperimentConfig, exp_id: str, data: TrainingData,
                scoring_run_id: str, baseline_model_id: str, log: Log | None = print) -> dict:
    """Train the first band method once per grid band; pick the best validation accuracy."""
    m = next(m for m in cfg.methods if m.selection == "band")
    results = []
    for lo, hi in cfg.band_grid:
        trial = replace(m, band=(lo, hi))
        try:
            sel = S.band(lake, scoring_run_id, lo, hi, score=m.score, per_class=m.per_class)
        except S.SelectionError as e:
            results.append({"band": [lo, hi], "val_acc": None, "error": str(e)})
            continue
        run_id = _run(lake, cfg, exp_id, data, trial, sel, 0, baseline_model_id, "band-search",
                      log)
        results.append({"band": [lo, hi], "val_acc": lake.row("runs", run_id)["val_acc"],
                        "run_id": run_id})
    scored = [r for r in results if r["val_acc"] is not None]
    if not scored:
        raise S.SelectionError("every band of the search grid selected nothing")
    best = max(scored, key=lambda r: r["val_acc"])
    return {"method": m.name, "metric": "validation accuracy after training on the train split",
            "grid": results, "chosen": best["band"]}


def stage_choose(lake: Lake, cfg: ExperimentConfig, exp_id: str, dataset_id: str,
                 pool_id: str, scoring_run_id: str, baseline_model_id: str,
                 log: Log | None = print) -> tuple[ExperimentConfig, dict, dict]:
    """The band search on validation (when the config has a grid), then one selection per
    method. Returns the effective config (the chosen band in place), selections, search."""
    search = {}
    if cfg.band_grid:
        data = TrainingData(lake, dataset_id, pool_id)
        search = band_search(lake, cfg, exp_id, data, scoring_run_id, baseline_model_id, log)
        cfg = with_band(cfg, tuple(search["chosen"]))
    return cfg, stage_select(lake, cfg, scoring_run_id), search


def with_band(cfg: ExperimentConfig, band: tuple[float, float] | None) -> ExperimentConfig:
    """``cfg`` with every band method's band replaced (None = unchanged). ``band`` is in the
    score of the first band method (the one searched); a method banding a score of the other
    direction (confidence against AVH) gets the mirrored band, the same hardness range."""
    if band is None:
        return cfg
    searched = next(m.score for m in cfg.methods if m.selection == "band")
    hard = hardness_band(tuple(band), searched)  # mirroring is its own inverse
    return replace(cfg, methods=tuple(replace(m, band=hardness_band(hard, m.score))
                                      if m.selection == "band" else m for m in cfg.methods))


def stage_run(lake: Lake, cfg: ExperimentConfig, exp_id: str, dataset_id: str, pool_id: str,
              baseline_model_id: str, method: str, rep: int, selection_id: str | None,
              log: Log | None = print, data: TrainingData | None = None) -> str:
    """One training run of one method (one cell of the retraining grid); returns run_id."""
    m = next(x for x in cfg.methods if x.name == method)
    data = data or TrainingData(lake, dataset_id, pool_id)
    return _run(lake, cfg, exp_id, data, m, selection_id, rep, baseline_model_id, "method", log)


def stage_retrain(lake: Lake, cfg: ExperimentConfig, exp_id: str, dataset_id: str,
                  pool_id: str, scoring_run_id: str, baseline_model_id: str,
                  log: Log | None = print) -> tuple[ExperimentConfig, dict, dict]:
    """Band search (optional), selections, then every method x rep in this process. Returns
    the effective config, the selections and the search record."""
    cfg, selections, search = stage_choose(lake, cfg, exp_id, dataset_id, pool_id,
                                           scoring_run_id, baseline_model_id, log)
    data = TrainingData(lake, dataset_id, pool_id)
    for rep in range(cfg.reps):
        for m in cfg.methods:
            stage_run(lake, cfg, exp_id, dataset_id, pool_id, baseline_model_id, m.name, rep,
                      selections[m.name], log, data)
    return cfg, selections, search


def run_experiment(cfg: ExperimentConfig, lake: Lake, *, log: Log | None = print) -> str:
    """Run every stage (each resumes from the lake) and record the experiment; returns its id."""
    exp_id = experiment_id(cfg)
    dataset_id = stage_ingest(lake, cfg)
    model_id = stage_baseline(lake, cfg, dataset_id, log)
    pool_id = stage_augment(lake, cfg, dataset_id)
    run_id = stage_score(lake, cfg, model_id, pool_id, dataset_id)
    effective, selections, search = stage_retrain(lake, cfg, exp_id, dataset_id, pool_id, run_id,
                                                  model_id, log)
    record_experiment(lake, cfg, exp_id, dataset_id, model_id, pool_id, run_id, selections,
                      search)
    return exp_id


def record_experiment(lake: Lake, cfg: ExperimentConfig, exp_id: str, dataset_id: str,
                      model_id: str, pool_id: str, scoring_run_id: str,
                      selections: dict, search: dict) -> None:
    lake.write("experiments", exp_id, {
        "experiment_id": [exp_id], "preset": [cfg.preset],
        "config": [json.dumps(cfg.to_dict(), default=str)], "dataset_id": [dataset_id],
        "baseline_model_id": [model_id], "pool_id": [pool_id],
        "scoring_run_id": [scoring_run_id], "selections": [json.dumps(selections)],
        "band_search": [json.dumps(search)], **{k: [v] for k, v in provenance().items()}})
