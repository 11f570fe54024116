"""Step ``reselect``: one re-selection round (a curriculum). A round takes the newest model
of an experiment's lineage (the baseline, then each round's model); with ``retrain`` it first
fine-tunes that model on the current selection with the band method's loss and registers the
result as the next model of the lineage (``parent_model_id``). That model re-scores the pool
(skipped when it already has), the same band spec re-selects, and the drift against the
previous selection is recorded: Jaccard overlap of the two item sets, items moved in and out,
and the two-sample Kolmogorov-Smirnov statistic between the pool's AVH under the two runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from scipy.stats import ks_2samp

from smartaug.config import (
    SCORE_DIRECTIONS,
    Arm,
    ExperimentConfig,
    MethodSpec,
    config_from_dict,
    parse_schedule,
)
from smartaug.core.curriculum import Schedule, pacing_sizes, rank
from smartaug.core.train import train
from smartaug.lake import Lake, LakeError, content_id
from smartaug.lake.readers import checkpoint_path
from smartaug.models import load_checkpoint
from smartaug.steps import select as S
from smartaug.steps.baseline import register_model
from smartaug.steps.report import write_report
from smartaug.steps.retrain import training_data
from smartaug.steps.score import Trust, score_pool
from smartaug.steps.sql import query

__all__ = ["lineage", "report", "reselect"]


def latest_experiment(lake: Lake) -> str:
    rows = query(lake, "latest_experiment").to_pylist()
    if not rows:
        raise LakeError(f"no experiment in {lake.url()}; run `smartaug experiment` first")
    return rows[0]["experiment_id"]


def lineage(lake: Lake, baseline_model_id: str) -> list[dict]:
    """The baseline and its descendants (parent_model_id chain), oldest first."""
    models = query(lake, "models_by_age").to_pylist()
    keep, ids = [], {baseline_model_id}
    for m in models:
        if m["model_id"] in ids or m["parent_model_id"] in ids:
            ids.add(m["model_id"])
            keep.append(m)
    return keep


def _avh(lake: Lake, scoring_run_id: str) -> np.ndarray:
    return query(lake, "run_avh", scoring_run_id=scoring_run_id)["avh"].to_numpy()


def _items(lake: Lake, selection_id: str) -> set[str]:
    return set(S.read_selection(lake, selection_id)["aug_id"].to_pylist())


def _schedule(lake: Lake, cfg: ExperimentConfig, method: MethodSpec, arm: Arm, data,
              parent_model_id: str, pool_id: str, n: int, *, trust: Trust):
    """The round's curriculum: ``arm``'s order and pacing over the pool as the parent model
    scores it (by the band method's score), ``n`` augmentations an epoch on average."""
    run = score_pool(lake, parent_model_id, pool_id, device=cfg.retrain.device, trust=trust)
    scores = data.pool_scores(lake, run, method.score)
    order = rank(scores, data.aug_labels, direction=SCORE_DIRECTIONS[method.score],
                 per_class=method.per_class, order=arm.order, seed=cfg.seed)
    sizes = pacing_sizes(arm.pacing, cfg.retrain.epochs, n, len(order), start=arm.start,
                         growth=arm.growth, step=arm.step)
    return Schedule(len(data.train), order, sizes)


def train_round(lake: Lake, cfg: ExperimentConfig, method: MethodSpec, parent_model_id: str,
                dataset_id: str, pool_id: str, selection_id: str,
                log: Callable[[str], None] | None = print, *, trust: Trust = (),
                schedule: Arm | None = None) -> str:
    """Fine-tune the parent on originals + the selection with the method's loss; register the
    result as a child model. Returns its model_id (found, not retrained, when it exists).
    ``schedule`` (a schedule arm, ``parse_schedule``): fine-tune instead on a curriculum over
    the whole pool as the parent scores it, showing as many augmentations over the round as
    the selection would (``smartaug.core.curriculum.pacing_sizes``)."""
    tcfg = replace(cfg.retrain, loss=method.loss, seed=cfg.seed)
    arm = schedule
    model_id = content_id("model", {"parent_model_id": parent_model_id,
                                    "selection_id": selection_id, "train": tcfg.to_dict(),
                                    **({"schedule": arm.to_dict()} if arm else {})})
    if lake.has("models", model_id):
        return model_id
    data = training_data(lake, dataset_id, pool_id)
    x, y, n_aug = data.with_selection(lake, selection_id)
    plan = None
    if arm is not None:
        plan = _schedule(lake, cfg, method, arm, data, parent_model_id, pool_id, n_aug,
                         trust=trust)
        x, y = data.with_pool()
    model = load_checkpoint(checkpoint_path(lake, parent_model_id),
                            arch=lake.row("models", parent_model_id)["arch"], trust=trust)
    t0 = time.perf_counter()
    if log:
        log(f"curriculum round: fine-tuning {parent_model_id} on {len(data.train)} originals "
            f"and {n_aug} augmentations an epoch"
            + (f" on the schedule {_spelt(arm)}" if arm else "")
            + f", loss {method.loss.label()}")
    history = train(model, x, y, tcfg, eval_sets={"test": (data.test.images, data.test.labels)},
                    log=log, curriculum=plan, n_originals=len(data.train))
    return register_model(
        lake, model_id, model, arch=cfg.model, dataset_id=dataset_id, cfg=tcfg,
        history=history, seconds=time.perf_counter() - t0, parent_model_id=parent_model_id,
        extra={"selection_id": selection_id,
               **({"schedule": _spelt(arm), "items_seen": sum(h["augmented"] for h in history)}
                  if arm else {})},
        evals={"train": (x, y), "val": (data.val.images, data.val.labels),
               "test": (data.test.images, data.test.labels)})


def _spelt(arm: Arm) -> str:
    """A schedule as ``parse_schedule`` reads it, in full: ORDER:PACING:START."""
    return f"{arm.order}:{arm.pacing}:{arm.start:g}"


def reselect(lake: Lake, experiment_id: str | None = None, model_id: str | None = None,
             retrain: bool = False, schedule: str | None = None, trust: Trust = (), *,
             log: Callable[[str], None] | None = print) -> dict:
    """One curriculum round for an experiment (default: the newest). Returns what it did:
    model_id, scoring_run_id, selection_id, previous_selection_id, drift (or None when the
    selection did not change) and child_model_id (when ``retrain``). The experiment's config
    is read from the lake, so its model is imported only when ``trust`` (or
    ``SMARTAUG_TRUST_MODELS``) names it (``smartaug.models.check_trusted``). ``schedule``: the
    round's fine-tuning runs that curriculum (``train_round``); the rest is as without. A step
    (its arguments positional, as a runner passes them): the CLI and the flow run it alike."""
    arm = None
    if schedule is not None:
        arm = parse_schedule(schedule)  # refused before anything is read or written
        if not retrain:
            raise S.SelectionError(f"schedule {schedule!r} paces a fine-tuning; a round "
                                   f"without --retrain trains nothing to pace")
    exp_id = experiment_id or latest_experiment(lake)
    exp = lake.row("experiments", exp_id)
    cfg = config_from_dict(json.loads(exp["config"]))
    method = next((m for m in cfg.methods if m.selection == "band"), None)
    if method is None:
        raise S.SelectionError(f"experiment {exp_id} has no band method to re-select")
    search = json.loads(exp["band_search"] or "{}")
    band = tuple(search.get("chosen") or method.band)
    chain = lineage(lake, exp["baseline_model_id"])
    model_id = model_id or chain[-1]["model_id"]
    if model_id not in {m["model_id"] for m in chain}:
        raise LakeError(f"model {model_id} is not in experiment {exp_id}'s lineage "
                        f"({', '.join(m['model_id'] for m in chain)})")
    rounds = query(lake, "last_round", experiment_id=exp_id).to_pylist()
    previous = rounds[0]["selection_id"] if rounds else json.loads(exp["selections"])[method.name]
    round_no = rounds[0]["round"] + 1 if rounds else 1

    child = None
    if retrain:  # the next round's model: fine-tuned on the current selection
        child = train_round(lake, cfg, method, model_id, exp["dataset_id"], exp["pool_id"],
                            previous, log, trust=tuple(trust), schedule=arm)
        model_id = child
    scoring_run_id = score_pool(lake, model_id, exp["pool_id"], device=cfg.retrain.device,
                                trust=tuple(trust))
    selection_id = S.band(lake, scoring_run_id, band[0], band[1], score=method.score,
                          per_class=method.per_class)
    out = {"experiment_id": exp_id, "model_id": model_id, "scoring_run_id": scoring_run_id,
           "selection_id": selection_id, "previous_selection_id": previous, "drift": None,
           "child_model_id": child, "round": round_no}
    if selection_id != previous and not lake.has("drift", selection_id):
        new, old = _items(lake, selection_id), _items(lake, previous)
        prev_run = S.read_selection(lake, previous)["scoring_run_id"][0].as_py()
        ks = ks_2samp(_avh(lake, scoring_run_id), _avh(lake, prev_run))
        drift = {"jaccard": len(new & old) / len(new | old), "moved_in": len(new - old),
                 "moved_out": len(old - new), "ks_avh": float(ks.statistic),
                 "ks_pvalue": float(ks.pvalue)}
        lake.write("drift", selection_id, {
            "selection_id": [selection_id], "previous_selection_id": [previous],
            "experiment_id": [exp_id], "model_id": [model_id], "scoring_run_id": [scoring_run_id],
            "round": [round_no], **{k: [v] for k, v in drift.items()}})
        out["drift"] = drift
        if log:
            log(f"round {round_no}: jaccard {drift['jaccard']:.3f}, moved in "
                f"{drift['moved_in']}, out {drift['moved_out']}, KS(AVH) {drift['ks_avh']:.3f}")
    elif log:
        log(f"model {model_id} gives the same selection as before: no drift to record")
    return out


# ------------------------------------------------------------------ as steps (the flow's tasks)


def report(lake: Lake, experiment_id: str, *, log: Callable[[str], None] | None = None) -> str:
    """Rewrite the experiment's report with its drift-over-rounds section; its location."""
    write_report(lake, experiment_id)
    return lake.url("reports", experiment_id)
