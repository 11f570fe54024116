"""Step ``recommend``: a dataset in the lake -> a policy measured to help, by a race of short
trainings (``smartaug.core.search``), and its check against full trainings.

``write_recommendation`` trains a reference model (with ``reference``'s augmentation, the
protocol's epochs, on the whole train split) whose confident images judge the vetoes, races
the candidates left, and writes TrivialAugment's shape over the winners in albumentations'
serialisation (``smartaug.policy.load`` reads it; per-class policies beside it where vetoes
differ by class). Under the key ``smartaug``: ``cost_trainings`` (the reference and every
training of the race, in full trainings), ``vetoed``, ``ranking`` (per candidate and rung
reached), the rungs, the reference's accuracy, seconds and device, and what it came from.

``check_recommendation`` trains each of the race's candidates (and the identity) at full
training over paired seeds and reports Spearman's rho between rung 0's scores (and the
race's final order) and those gains on the test split, which nothing here chooses with.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from smartaug.config import AugmentConfig, TrainConfig, preset
from smartaug.core.augment import BUILTIN, load_space
from smartaug.core.search import (
    CONFIDENT,
    Candidate,
    SearchError,
    Trainer,
    candidates,
    device_name,
    full_gains,
    plan,
    policy_of,
    race,
    veto,
)
from smartaug.core.stats import WEAK_ACCURACY, rank_agreement, weak_baseline
from smartaug.core.train import build_model, evaluate, train
from smartaug.files import atomic_path
from smartaug.lake import Lake, content_id, git_sha
from smartaug.lake.readers import classes, read_split
from smartaug.policy import PolicyFileError
from smartaug.steps.policy import check_out, per_class_path

__all__ = ["DEFAULT_BUDGET", "check_recommendation", "recommendation_id",
           "write_recommendation"]

DEFAULT_BUDGET = 4.0
REFERENCES = ("trivialaugment-wide", "randaugment", "none")
WEAK = WEAK_ACCURACY  # a reference below this validation accuracy is called weak


def _kinds(kinds: str | list[str] | None, space: str | None) -> tuple[tuple[str, ...], tuple]:
    if kinds is not None and space is not None:
        raise SearchError("give --kinds or --space, not both")
    if space is not None:
        return load_space(space)
    if kinds is None:
        return tuple(BUILTIN), ()
    names = tuple(k.strip() for k in (kinds.split(",") if isinstance(kinds, str) else kinds)
                  if k.strip())
    if not names:
        raise SearchError("--kinds is empty; name at least one kind (smartaug kinds lists them)")
    AugmentConfig(kinds=names)  # unknown kinds refused, by name
    return names, ()


def recommendation_id(dataset_id: str, **spec) -> str:
    """The content id of a recommendation: the dataset and everything the search reads."""
    return content_id("recommend", {"dataset_id": dataset_id, **spec})


def write_recommendation(lake: Lake, dataset_id: str, out: str | Path, *,
                         model: str = "lenet5", kinds=None, space: str | None = None,
                         budget: float = DEFAULT_BUDGET, stack: int = 8, seed: int = 0,
                         protocol: TrainConfig | None = None,
                         reference: str = "trivialaugment-wide", max_flip: float = 0.75,
                         device: str = "auto", log=print) -> dict:
    """Race ``kinds`` (default: every built-in kind; or a space file's) on dataset
    ``dataset_id`` with ``model`` trained by ``protocol`` (default: the quick preset's),
    within ``budget`` full trainings, and write the policy to ``out``; returns its
    ``smartaug`` provenance with ``path``."""
    t_start = time.perf_counter()
    out = check_out(out, SearchError)
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not budget > 0:
        raise SearchError(f"--budget must be a positive number of full trainings, got "
                          f"{budget!r}")
    if isinstance(stack, bool) or not isinstance(stack, int) or stack < 1:
        raise SearchError(f"--stack must be an integer >= 1, got {stack!r}")
    if reference not in REFERENCES:
        raise SearchError(f"unknown --reference {reference!r}; valid: {', '.join(REFERENCES)}")
    if not 0.0 <= max_flip <= 1.0:
        raise SearchError(f"--max-flip must be in [0, 1] (a flip rate), got {max_flip!r}")
    names, space_kinds = _kinds(kinds, space)
    protocol = replace(protocol or preset("quick").retrain, device=device)
    meta = lake.row("datasets", dataset_id)
    tr, va = read_split(lake, dataset_id, "train"), read_split(lake, dataset_id, "val")
    labels = list(range(len(classes(lake, dataset_id))))
    if not len(va):
        raise SearchError(f"dataset {dataset_id} has no validation split: the race scores on "
                          f"held-out images and never on the test split. Ingest it with "
                          f"--val-fraction (e.g. 0.1)")
    counts = np.bincount(tr.labels, minlength=len(labels))
    if counts.min() < 2 * 4:
        raise SearchError(f"class {int(counts.argmin())} has {int(counts.min())} train images; "
                          f"the race needs at least 8 a class (4 for its smallest rung, and as "
                          f"many held out)")
    if reference != "none" and meta["channels"] not in (1, 3):
        reference = "none"
    h, w = meta["height"], meta["width"]
    cands = candidates(names, space_kinds)

    def make(s: int):
        return build_model(model, len(labels), meta["channels"], h, seed=s)

    trainer = Trainer(make, protocol, stack=stack, log=log)
    if log and trainer.alone:
        log(f"{model} trains alone, one training at a time: {trainer.alone}")
    elif log:
        log(f"trainings stacked {trainer.stack} at a time ({model})")
    # the reference: the protocol's training on the whole train split, with augmentation
    ref_cost = 1.0 if reference != "none" else 0.5
    plan(len(cands), budget, int(counts.min()), spent=ref_cost)  # refused now, not after work
    t0 = time.perf_counter()
    ref = make(seed)
    rcfg = replace(protocol, seed=seed, augment="online" if reference != "none" else "static",
                   policy=reference if reference != "none" else None)
    if log:
        log(f"reference: {model} with {reference} on {len(tr)} train images")
    train(ref, tr.images, tr.labels, rcfg, log=None)
    ref_seconds = time.perf_counter() - t0
    ref_acc = evaluate(ref, va.images, va.labels)["acc"]
    chance = 1.0 / len(labels)
    why = weak_baseline(ref_acc, len(labels))
    weak = why is not None
    if log:
        log(f"reference: {100 * ref_acc:.1f} % validation accuracy (chance {100 * chance:.0f} "
            f"%)" + ("; weak: its vetoes judge few confident images" if weak else ""))
        if weak:
            log(f"warning: {why.replace('the baseline', 'the reference', 1)}")
    vetoes, seen = veto(ref, cands, tr.images, tr.labels, max_flip=max_flip, seed=seed)
    if log and seen["unsure"]:
        log(f"reference: classes {seen['unsure']} have fewer than 5 images it gets right with "
            f"probability >= {CONFIDENT:g}; their vetoes judge its surest right ones (the "
            f"upper half)")
    gone = {(v["kind"], v["lo"], v["hi"]) for v in vetoes if v["label"] is None}
    racing = [c for c in cands if (c.kind, c.lo, c.hi) not in gone]
    if log:
        for v in vetoes:
            where = "every class" if v["label"] is None else f"class {v['label']}"
            log(f"vetoed: {Candidate(v['kind'], v['lo'], v['hi']).name} for {where} (flips "
                f"{100 * v['flip_rate']:.0f} % of {v['n']} confident images)")
    if not racing:
        raise SearchError(f"every candidate was vetoed: each changes more than {max_flip:g} of "
                          f"the confident predictions of a reference with {100 * ref_acc:.1f} % "
                          f"validation accuracy. Raise --max-flip, or give other --kinds")
    rungs = plan(len(racing), budget, int(counts.min()), spent=ref_cost)
    ranking = race(trainer, racing, rungs, train=(tr.images, tr.labels),
                   val=(va.images, va.labels), seed=seed, log=log)
    race_cost = sum(r["seeds"] * (r["candidates"] + 1) * r["share"] for r in rungs)
    pooled, per_class, kept = policy_of(ranking, racing, vetoes, labels, h, w)
    seconds = time.perf_counter() - t_start
    side = per_class_path(out)
    provenance = {
        "method": "recommend", "dataset_id": dataset_id, "model": model,
        "classes": len(labels),
        "kinds": list(names), "space": space, "budget": float(budget), "stack": trainer.stack,
        "trained": "alone: " + trainer.alone if trainer.alone else f"stacked {trainer.stack}",
        "seed": seed, "protocol": protocol.to_dict(),
        "cost_trainings": float(ref_cost + race_cost),
        "cost": {"reference": ref_cost, "race": float(race_cost),
                 "trainings": trainer.trainings + 1},
        "seconds": seconds, "reference_seconds": ref_seconds,
        "device": device_name(protocol.device),
        "reference": {"policy": reference, "val_acc": ref_acc, "chance": chance, "weak": weak,
                      "weak_why": why,
                      "confident_at": CONFIDENT, "confident_images": seen["confident"],
                      "unsure_classes": seen["unsure"]},
        "max_flip": max_flip,
        "vetoed": [{k: v[k] for k in ("kind", "lo", "hi", "label", "flip_rate", "n")}
                   for v in vetoes],
        "rungs": rungs, "ranking": ranking, "kept": kept,
        "candidates": [c.to_dict() for c in cands],
        "per_class": side.name if per_class else None,
        "image_size": [h, w], "git_sha": git_sha(),
        "rule": "one op per image, drawn uniformly among the last rung's candidates that beat "
                "the identity (the best range of each kind), its magnitude uniform within the "
                "range; the identity alone where none did; a class leaves out the ops vetoed "
                "for it",
    }
    files = [(out, {**pooled, "smartaug": provenance})]
    if per_class:
        files.append((side, {"smartaug": {k: provenance[k] for k in ("method", "dataset_id")},
                             "per_class": per_class}))
    for path, data in files:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2))
    if not per_class and side.exists():
        side.unlink()  # a stale one from an earlier policy of the same name
    return {**provenance, "path": out}


def check_recommendation(lake: Lake, path: str | Path, *, seeds: int = 5, stack: int = 8,
                         log=print) -> dict:
    """Train every candidate the race of policy file ``path`` ranked at rung 0 (and the
    identity) at full training over ``seeds`` paired seeds; Spearman's rho between rung 0's
    scores and the gains on the test split (and on the validation split), and between the
    race's final order (rung reached, then score) and them. Written beside the policy as
    ``<name>.check.json``."""
    path = Path(path)
    try:
        prov = json.loads(path.read_text())["smartaug"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PolicyFileError(f"{path}: not a policy file written by smartaug recommend "
                              f"({type(e).__name__}: {e})") from None
    if prov.get("method") != "recommend":
        raise PolicyFileError(f"{path} was not written by smartaug recommend (its provenance "
                              f"has no race to check)")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise SearchError(f"--seeds must be >= 2 (paired seeds), got {seeds!r}")
    dataset_id = prov["dataset_id"]
    meta = lake.row("datasets", dataset_id)
    tr = read_split(lake, dataset_id, "train")
    va, te = read_split(lake, dataset_id, "val"), read_split(lake, dataset_id, "test")
    n_classes = len(classes(lake, dataset_id))
    _, space_kinds = _kinds(None, prov["space"]) if prov.get("space") else ((), ())
    by_key = {(c.kind, c.lo, c.hi): c for c in candidates(prov["kinds"], space_kinds)}
    rung0 = [r for r in prov["ranking"] if r["rung"] == 0]
    cands = [by_key[(r["kind"], r["lo"], r["hi"])] for r in rung0]
    protocol = TrainConfig(**{k: v for k, v in prov["protocol"].items()
                              if k in ("epochs", "batch_size", "lr", "optimizer", "weight_decay",
                                       "device")})

    def make(s: int):
        return build_model(prov["model"], n_classes, meta["channels"], meta["height"], seed=s)

    trainer = Trainer(make, protocol, stack=stack, log=log)
    t0 = time.perf_counter()
    gains = full_gains(trainer, cands, train=(tr.images, tr.labels),
                       evals={"test": (te.images, te.labels), "val": (va.images, va.labels)},
                       seeds=seeds, seed=prov["seed"], log=log)
    reached = {}
    for r in prov["ranking"]:
        key = (r["kind"], r["lo"], r["hi"])
        if key not in reached or r["rung"] >= reached[key][0]:
            reached[key] = (r["rung"], r["score"])
    rows = []
    for r, c in zip(rung0, cands, strict=True):
        g = gains[c.name]
        rows.append({"kind": c.kind, "lo": c.lo, "hi": c.hi, "name": c.name,
                     "rung0_score": r["score"], "rung": reached[(c.kind, c.lo, c.hi)][0],
                     "final_score": reached[(c.kind, c.lo, c.hi)][1],
                     "gain_test": float(np.mean(g["test"])),
                     "gain_test_sd": float(np.std(g["test"], ddof=1)),
                     "gain_val": float(np.mean(g["val"])), "gains_test": g["test"]})
    if len(rows) < 3:
        raise SearchError(f"only {len(rows)} candidate(s) raced: a rank correlation needs 3")
    order = [r["rung"] + 0.5 + 0.49 * np.tanh(r["final_score"] * 10) for r in rows]
    out = {"policy": str(path), "dataset_id": dataset_id, "seeds": seeds,
           "n_candidates": len(rows), "trainings": (len(rows) + 1) * seeds,
           "seconds": time.perf_counter() - t0, "device": device_name(protocol.device),
           "git_sha": git_sha(), "candidates": rows}
    for name, pred, key in (("rung0", [r["rung0_score"] for r in rows], "gain_test"),
                            ("rung0_val", [r["rung0_score"] for r in rows], "gain_val"),
                            ("final", order, "gain_test")):
        rho, lo, hi, _ = rank_agreement(pred, [r[key] for r in rows])
        out[f"spearman_{name}"] = {"rho": rho, "ci95": [lo, hi]}
    rho = out["spearman_rung0"]["rho"]
    out["spearman"] = None if np.isnan(rho) else rho  # None: the gains (or scores) all equal
    for name in ("rung0", "rung0_val", "final"):
        s = out[f"spearman_{name}"]
        if np.isnan(s["rho"]):
            out[f"spearman_{name}"] = {"rho": None, "ci95": [None, None]}
    out["formula"] = ("gain = mean over paired seeds of (accuracy of the candidate's full "
                      "training - the identity's), the protocol's epochs on all the originals "
                      "plus one fresh draw an image; rung0: rung 0's scores against the test "
                      "gains; rung0_val: against the validation gains; final: the race's "
                      "order (the rung reached, then the score there); intervals: a "
                      "percentile bootstrap over the candidates")
    with atomic_path(path.with_name(path.stem + ".check.json")) as tmp:
        tmp.write_text(json.dumps(out, indent=2))
    out["path"] = str(path.with_name(path.stem + ".check.json"))
    return out
