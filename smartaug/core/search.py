"""Measure what helps: a race of short trainings over ops x magnitude ranges.

A candidate is one op at a magnitude range from its weakest end (``Candidate``): each
built-in kind with a magnitude (``smartaug.core.magnitude.SCALES``) at half its range and at
all of it, a flip as it is, a space file's kind as it defines itself. The identity (the
originals again) is the control every candidate is paired with.

``race`` (successive halving, ``eta`` = 3): rung 0 trains every candidate on a small,
class-stratified share of the train split; each later rung keeps the best third (at least
``KEEP``) and trains it on twice the share. Every training is the protocol's (its epochs,
one fresh augmentation of each original each epoch, as an on-the-fly arm trains), at a batch
size that gives at least ``MIN_STEPS`` steps an epoch; at each rung and seed a candidate and
the identity share their model's initial weights, batch order and images, and a candidate's
score is its mean validation accuracy gain over the identity (the test split is never read).
Trainings of one seed and rung train as one model (``smartaug.core.stacked``) where the model
stacks.

Cost, in full trainings (``cost``): a training on a share f of the originals costs f (the
protocol's epochs on all the originals plus one augmentation each is 1). ``plan`` sizes the
share of rung 0 to the budget; a budget too small for the candidates is refused with the
smallest that fits.

``veto`` judges each candidate at the strongest end of its range on the train images a
reference model classifies confidently (probability of the true class >= ``CONFIDENT``): a
candidate that changes more than ``veto_flip`` of a class's predictions destroys that class's
label (the atlas's flip rate, cell by cell); vetoed for every class it leaves the race,
vetoed for some it is left out of their policies. The atlas vetoes; it never ranks.

``policy_of``: TrivialAugment's shape over the last rung's candidates that beat the identity
(one op per image, drawn uniformly; its magnitude uniform within the op's range; one range
per kind; the identity alone where none helps), per class where vetoes differ.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from smartaug.config import TrainConfig
from smartaug.core.augment import _fit
from smartaug.core.magnitude import Scale, scale_of
from smartaug.core.online import Online
from smartaug.core.stacked import stackable, train_stacked
from smartaug.core.train import as_batch, evaluate, resolve_device, train
from smartaug.errors import InputError
from smartaug.lazy import lazy
from smartaug.policy import Policy, from_dict

A = lazy("albumentations")  # imported when first used

__all__ = ["CONFIDENT", "KEEP", "MIN_STEPS", "RANGES", "Candidate", "SearchError",
           "candidates", "cost", "full_gains", "plan", "policy_of", "race", "veto"]

RANGES = (0.5, 1.0)  # a kind's candidate ranges: these shares of its range, from its weakest end
ETA = 3  # each rung keeps a third
KEEP = 3  # ... and at least this many, the last rung's size
GROWTH = 2  # each rung trains on twice the share of the one before
SEEDS = (1, 2, 2)  # paired seeds at rungs 0, 1, 2 (and 2 after)
MIN_PER_CLASS = 4  # rung 0's smallest share: this many originals of the smallest class
MIN_STEPS = 10  # optimizer steps an epoch, at least (the batch shrinks for a small share)
CONFIDENT = 0.8  # a reference's probability of the true class that counts as confident
VETO_IMAGES = 100  # confident images a class, at most, a candidate is judged on
VETO_MIN = 5  # a class with fewer confident images takes the pooled decision


class SearchError(InputError):
    """A search that cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class Candidate:
    """One op: ``kind`` at magnitudes from its weakest end up to ``share`` of its range
    (``lo``..``hi`` in the kind's own units; None for a kind without magnitude), or a space
    file's kind (``spec``: its serialisation) as it defines itself."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    share: float | None = None
    spec: str | None = None
    max_angle: float = 20.0

    @property
    def name(self) -> str:
        if self.lo is None:
            return self.kind
        return f"{self.kind}[{self.lo:.3g}, {self.hi:.3g}]"

    def scale(self) -> Scale | None:
        return None if self.spec is not None else scale_of(self.kind, self.max_angle)

    def limit(self) -> float | None:
        """The strongest magnitude of the range."""
        s = self.scale()
        if s is None or self.lo is None:
            return None
        return self.hi if s.higher else self.lo

    def transform(self, h: int, w: int):
        """The op at a magnitude uniform in its range (albumentations, p = 1)."""
        if self.spec is not None:
            t = A.from_dict(json.loads(self.spec))
            t.p = 1.0
            return t
        if self.kind == "identity":
            return A.NoOp(p=1.0)
        if self.kind == "hflip":
            return A.HorizontalFlip(p=1.0)
        if self.kind == "vflip":
            return A.VerticalFlip(p=1.0)
        return self.scale().upto(self.limit(), h, w)

    def strongest(self, h: int, w: int):
        """The op at the strongest end of its range (what a veto judges)."""
        s = self.scale()
        if s is None or self.lo is None:
            return self.transform(h, w)
        return _Signed(s, self.limit(), h, w)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "lo": self.lo, "hi": self.hi}


class _Signed:
    """A scale's transform at exactly ``m``, the sign drawn per image."""

    def __init__(self, scale: Scale, m: float, h: int, w: int):
        self.ts = [scale.at(m, 1, h, w), scale.at(m, -1, h, w)]

    def set_random_seed(self, seed: int) -> None:
        for i, t in enumerate(self.ts):
            t.set_random_seed(seed + i)
        self._rng = np.random.default_rng(seed)

    def __call__(self, image):
        return self.ts[int(self._rng.integers(2))](image=image)


IDENTITY = Candidate("identity")


def candidates(kinds: Sequence[str], space: Sequence[tuple[str, str]] = (),
               max_angle: float = 20.0) -> list[Candidate]:
    """The candidates of ``kinds``: each at every share of ``RANGES`` where it has a
    magnitude; a flip, a kind without a scale and a space file's kind (``space``: (name,
    serialisation)) once."""
    custom = dict(space)
    out = []
    for kind in kinds:
        if kind in custom:
            out.append(Candidate(kind, spec=custom[kind]))
            continue
        s = scale_of(kind, max_angle)
        if s is None:
            out.append(Candidate(kind, max_angle=max_angle))
            continue
        for share in RANGES:
            edge = s.lo + (s.hi - s.lo) * share if s.higher else s.hi - (s.hi - s.lo) * share
            lo, hi = (s.lo, edge) if s.higher else (edge, s.hi)
            out.append(Candidate(kind, round(lo, 6), round(hi, 6), share, max_angle=max_angle))
    return out


def _one_op(ops: Sequence, h: int, w: int) -> dict:
    """albumentations' serialisation of one op per image, drawn uniformly among ``ops``."""
    ts = [c.transform(h, w) for c in ops]
    return A.to_dict(A.Compose([A.OneOf(ts, p=1.0)] if ts else [], p=1.0))


def op_policy(c: Candidate, h: int, w: int) -> Policy:
    """The policy that applies candidate ``c`` to every image."""
    return from_dict(_one_op([c], h, w), name=c.name)


# ---------------------------------------------------------------------------------------------
# cost and the rung plan


def _sizes(n: int) -> list[int]:
    sizes = [n]
    while sizes[-1] > KEEP:
        sizes.append(max(KEEP, math.ceil(sizes[-1] / ETA)))
    return sizes


def _seeds(r: int) -> int:
    return SEEDS[min(r, len(SEEDS) - 1)]


def cost(n_candidates: int, share0: float) -> float:
    """Full trainings a race of ``n_candidates`` costs at rung 0's share ``share0`` (every
    training paired with an identity one)."""
    return sum(_seeds(r) * (c + 1) * min(1.0, share0 * GROWTH ** r)
               for r, c in enumerate(_sizes(n_candidates)))


def plan(n_candidates: int, budget: float, smallest_class: int, *, spent: float = 0.0
         ) -> list[dict]:
    """The rungs of a race within ``budget`` full trainings, ``spent`` of them already (the
    reference): ``candidates``, ``seeds`` and ``share`` (of the train split's originals) of
    each; rung 0's share as large as the budget allows, at most 1. Refused when the budget
    cannot give rung 0 ``MIN_PER_CLASS`` originals of the smallest class (the message names
    the smallest budget that fits)."""
    if n_candidates < 1:
        raise SearchError("no candidate to race")
    floor = min(1.0, MIN_PER_CLASS / max(smallest_class, 1))
    need = spent + cost(n_candidates, floor)
    if need > budget + 1e-9:
        raise SearchError(
            f"a budget of {budget:g} full trainings is too small for {n_candidates} candidates: "
            f"the smallest that fits is {math.ceil(need * 100) / 100:g} (the reference costs "
            f"{spent:g}; rung 0 needs {MIN_PER_CLASS} originals of the smallest class, which "
            f"has {smallest_class}). Raise --budget, or race fewer kinds (--kinds)")
    budget = budget - spent
    lo, hi = floor, 1.0
    if cost(n_candidates, hi) <= budget:
        lo = hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(n_candidates, mid) <= budget else (lo, mid)
    return [{"rung": r, "candidates": c, "seeds": _seeds(r),
             "share": min(1.0, lo * GROWTH ** r)} for r, c in enumerate(_sizes(n_candidates))]


# ---------------------------------------------------------------------------------------------
# trainings


def _subset(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A class-stratified share of the rows (at least 2 a class), from one permutation per
    ``seed``: a larger share holds a smaller one."""
    rng = np.random.default_rng([seed, 7])
    rows = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        rows.append(idx[: max(2, int(round(share * len(idx))))])
    return np.sort(np.concatenate(rows))


@dataclass
class Trainer:
    """Trains one model per op on the same originals: ``make_model(seed)`` gives a fresh
    model, ``protocol`` the training (its epochs, optimizer, learning rate, batch size),
    ``stack`` how many train as one model at most (1: each alone)."""

    make_model: Callable[[int], nn.Module]
    protocol: TrainConfig
    stack: int = 8
    log: Callable[[str], None] | None = None
    seconds: float = 0.0
    trainings: int = 0

    def __post_init__(self):
        probe = self.make_model(0)
        why = stackable(probe, replace(self.protocol, augment="static", policy=None,
                                       augmentations=None))
        self.alone = why if self.stack > 1 else None
        if self.stack <= 1 or why:
            self.stack = 1

    def accuracies(self, ops: Sequence[Candidate], x: np.ndarray, y: np.ndarray, seed: int,
                   evals: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[dict[str, float]]:
        """Accuracy on each of ``evals`` (name -> images, labels) of a training per op in
        ``ops`` at ``seed`` on (``x``, ``y``): each the originals plus one fresh draw of its
        op an image, every epoch."""
        h, w = x.shape[1:3]
        bs = max(2, min(self.protocol.batch_size, (2 * len(y)) // MIN_STEPS))
        cfg = replace(self.protocol, seed=seed, batch_size=bs, augment="static", policy=None,
                      augmentations=None)
        out: list[float] = []
        t0 = time.perf_counter()
        for i in range(0, len(ops), self.stack):
            group = ops[i : i + self.stack]
            sources = [Online("identity" if c.kind == "identity" else op_policy(c, h, w), x, y,
                              seed) for c in group]
            models = [self.make_model(seed) for _ in group]
            if len(group) == 1 or self.stack == 1:
                for m, src in zip(models, sources, strict=True):
                    train(m, x, y, cfg, log=None, online_source=src)
            else:
                train_stacked(models, [(x, y)] * len(group), [cfg] * len(group), online=sources)
            device = next(models[0].parameters()).device
            out += [{name: evaluate(m, *xy, device=device)["acc"] for name, xy in evals.items()}
                    for m in models]
        self.seconds += time.perf_counter() - t0
        self.trainings += len(ops)
        return out


def race(trainer: Trainer, cands: Sequence[Candidate], rungs: list[dict], *,
         train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], seed: int,
         log: Callable[[str], None] | None = None) -> list[dict]:
    """Successive halving over ``cands`` by ``rungs`` (``plan``): per rung and candidate
    ``{kind, lo, hi, rung, score, gains, share, seeds, held_out}`` (score: the mean paired
    gain in accuracy over the identity on the held-out images: the validation split and the
    train originals the rung's share left out)."""
    x_all, y_all = train
    alive = list(cands)
    ranking = []
    for spec in rungs:
        r = spec["rung"]
        alive = alive[: spec["candidates"]]
        gains: dict[Candidate, list[float]] = {c: [] for c in alive}
        for s in range(spec["seeds"]):
            run_seed = seed + 1000 * r + s
            rows = _subset(y_all, spec["share"], seed + s)
            out = np.ones(len(y_all), bool)
            out[rows] = False
            held = (np.concatenate([val[0], x_all[out]]), np.concatenate([val[1], y_all[out]]))
            accs = [a["held_out"] for a in trainer.accuracies(
                [IDENTITY, *alive], x_all[rows], y_all[rows], run_seed, {"held_out": held})]
            for c, a in zip(alive, accs[1:], strict=True):
                gains[c].append(a - accs[0])
        scored = sorted(alive, key=lambda c: (-float(np.mean(gains[c])), c.name))
        for c in scored:
            ranking.append({**c.to_dict(), "name": c.name, "rung": r,
                            "score": float(np.mean(gains[c])), "gains": gains[c],
                            "share": spec["share"], "seeds": spec["seeds"],
                            "held_out": len(held[1])})
        if log:
            log(f"rung {r}: {len(alive)} candidates on {spec['share']:.1%} of the originals, "
                f"{spec['seeds']} paired seed(s); best "
                + ", ".join(f"{c.name} {100 * np.mean(gains[c]):+.2f}" for c in scored[:3]))
        alive = scored
    return ranking


# ---------------------------------------------------------------------------------------------
# the veto


@torch.inference_mode()
def _probs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    device = next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, len(x), 1024):
        xb = as_batch(torch.as_tensor(x[i : i + 1024]).to(device), device.type == "cuda")
        out.append(torch.softmax(model.head(model.features(xb)).float(), 1).cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, 0))


def veto(reference: nn.Module, cands: Sequence[Candidate], x: np.ndarray, y: np.ndarray, *,
         max_flip: float, seed: int) -> tuple[list[dict], dict]:
    """(vetoes ``{kind, lo, hi, label, flip_rate, n}``, label None for every class; what the
    judgement saw). Each candidate at the strongest end of its range, on up to
    ``VETO_IMAGES`` images a class that ``reference`` classifies right with probability >=
    ``CONFIDENT`` (a class with fewer than ``VETO_MIN`` such: its right images at or above
    their median probability, the class named in ``unsure``)."""
    p = _probs(reference, x)
    prob = p[np.arange(len(y)), y] if len(y) else np.empty(0)
    right = p.argmax(1) == y if len(y) else np.zeros(0, bool)
    picked, unsure = [], []
    for c in np.unique(y):
        mine = right & (y == c)
        sure = mine & (prob >= CONFIDENT)
        if sure.sum() < VETO_MIN and mine.any():
            sure = mine & (prob >= np.median(prob[mine]))
            unsure.append(int(c))
        idx = np.flatnonzero(sure)
        picked.append(idx[np.argsort(-prob[idx], kind="stable")][:VETO_IMAGES])
    rows = np.sort(np.concatenate(picked)).astype(np.int64) if picked else np.empty(0, np.int64)
    h, w = x.shape[1:3]
    labels = y[rows]
    out = []
    cells = {}
    for i, c in enumerate(cands):
        t = c.strongest(h, w)
        t.set_random_seed(seed + i)
        aug = np.stack([_fit(t(image=x[r])["image"], x.shape[1:], c.kind)
                        for r in rows.tolist()]) \
            if len(rows) else x[:0]
        flipped = _probs(reference, aug).argmax(1) != labels if len(rows) else labels
        pooled = float(flipped.mean()) if len(rows) else 0.0
        per = {int(k): (float(flipped[labels == k].mean()), int((labels == k).sum()))
               for k in np.unique(labels)}
        cells[c.name] = {"pooled": pooled, "per_class": per}
        if len(rows) and pooled > max_flip:
            out.append({**c.to_dict(), "label": None, "flip_rate": pooled, "n": len(rows)})
            continue
        for k, (rate, n) in per.items():
            if n >= VETO_MIN and rate > max_flip:
                out.append({**c.to_dict(), "label": k, "flip_rate": rate, "n": n})
    return out, {"confident": int(len(rows)), "classes": int(len(np.unique(y))),
                 "unsure": unsure, "cells": cells}


# ---------------------------------------------------------------------------------------------
# the policy


def policy_of(ranking: list[dict], cands: Sequence[Candidate], vetoes: list[dict],
              labels: Sequence[int], h: int, w: int) -> tuple[dict, dict | None, list[dict]]:
    """(the pooled policy's serialisation, label -> its own where classes differ (else None),
    the ops kept ``{kind, lo, hi, score}``): the last rung's candidates with a positive score,
    the best range of each kind, one drawn uniformly per image; a class leaves out what is
    vetoed for it; the identity alone where nothing is kept."""
    last = max(r["rung"] for r in ranking)
    by_name = {c.name: c for c in cands}
    kept, kinds = [], set()
    for r in sorted((r for r in ranking if r["rung"] == last), key=lambda r: -r["score"]):
        if r["score"] > 0 and r["kind"] not in kinds:
            kinds.add(r["kind"])
            kept.append(r)
    ops = [by_name[r["name"]] for r in kept]
    pooled = _one_op(ops, h, w) if ops else _one_op([IDENTITY], h, w)
    per_class = {}
    for label in labels:
        mine = [c for c in ops if not any(v["label"] == label and v["kind"] == c.kind
                                          and v["lo"] == c.lo and v["hi"] == c.hi
                                          for v in vetoes)]
        if len(mine) != len(ops):
            per_class[str(label)] = _one_op(mine, h, w) if mine else _one_op([IDENTITY], h, w)
    if per_class:
        per_class = {str(k): per_class.get(str(k), pooled) for k in labels}
    return pooled, per_class or None, [{k: r[k] for k in ("kind", "lo", "hi", "score")}
                                       for r in kept]


def full_gains(trainer: Trainer, cands: Sequence[Candidate], *, train, evals: dict,
               seeds: int, seed: int, log: Callable[[str], None] | None = None
               ) -> dict[str, dict[str, list[float]]]:
    """Each candidate's accuracy gain over the identity on each of ``evals`` at full
    training (all the originals, the protocol's epochs), per paired seed: candidate name ->
    eval name -> gains. The truth a race's ranking is checked against."""
    x, y = train
    out = {c.name: {name: [] for name in evals} for c in cands}
    for s in range(seeds):
        accs = trainer.accuracies([IDENTITY, *cands], x, y, seed + 5000 + s, evals)
        for c, a in zip(cands, accs[1:], strict=True):
            for name in evals:
                out[c.name][name].append(a[name] - accs[0][name])
        if log:
            log(f"full trainings, seed {s + 1}/{seeds}: {len(cands) + 1} trainings")
    return out


def device_name(device: str) -> str:
    """The device trainings ran on, named: the GPU's model, or the CPU's thread count."""
    d = resolve_device(device)
    if d.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(d)})"
    return f"cpu ({torch.get_num_threads()} threads)"
