"""Step ``policy``: an atlas -> a recommended policy for on-the-fly training, written in
albumentations' own serialisation (``A.to_dict`` of ``Compose([OneOf([...])])``): each call
applies one kind, drawn by its weight, at a magnitude up to its cut.

The rule (``recommend``), per kind: its magnitude bins from the weakest end, kept while the
flip rate (pooled over the classes) is at most ``max_flip``, cut at the first that passes it
(a kind whose weakest bin passes it is left out; a kind without magnitude, a flip, is kept or
left out whole); its weight is 1 - the flip rate over the kept bins, the weights normalised to
sum to 1. Per class, the same rule on that class's rows (a cell with fewer than
``MIN_CLASS_ITEMS`` originals right takes the pooled decision); where any class's policy
differs from the pooled one, ``<file>.per_class.json`` beside it maps each label to its own
serialisation. ``smartaug.policy.load`` reads both.
"""

from __future__ import annotations

import json
from pathlib import Path

from smartaug.core.magnitude import scale_of
from smartaug.core.stats import wilson
from smartaug.errors import InputError
from smartaug.files import atomic_path
from smartaug.lake import Lake, git_sha
from smartaug.lake.readers import pool_config
from smartaug.lazy import lazy
from smartaug.steps.atlas import baseline_health, read_atlas

A = lazy("albumentations")  # imported when first used

__all__ = ["MIN_CLASS_ITEMS", "MIN_DECIDING", "PolicyError", "check_out", "per_class_path",
           "recommend", "said", "write_policy"]

MIN_CLASS_ITEMS = 10
MIN_DECIDING = 50  # a cut decided by fewer images is marked as such (``few``)


class PolicyError(InputError):
    """A policy cannot be made or read; the message says why."""


def per_class_path(path: str | Path) -> Path:
    """Where the per-class policies of the policy file ``path`` go."""
    path = Path(path)
    return path.with_name(path.stem + ".per_class" + (path.suffix or ".json"))


def check_out(out: str | Path, error=None) -> Path:
    """``out`` as a policy file to write: refused (``error``, default PolicyError) when it is a
    directory or its directory does not exist."""
    out, error = Path(out), error or PolicyError
    if out.exists() and out.is_dir():
        raise error(f"--out {out} is a directory; give a file name, e.g. {out}/policy.json")
    if not out.parent.exists():
        raise error(f"--out {out}: its directory {out.parent} does not exist")
    return out


def _pool(rows: list[dict]) -> dict[tuple[str, int], list[int]]:
    out: dict[tuple[str, int], list[int]] = {}
    for r in rows:
        c = out.setdefault((r["kind"], r["magnitude_bin"]), [0, 0])
        c[0] += r["n_flipped"]
        c[1] += r["n_orig_correct"]
    return out


def _cell(kind: str, b: int, f: int, n: int, max_flip: float) -> dict:
    """One magnitude bin as the rule judged it: its count, flips, rate and Wilson interval,
    and whether it is ``uncertain`` (the interval spans ``max_flip``) or decided by ``few``
    images (fewer than ``MIN_DECIDING``)."""
    ci = wilson(f, n)
    return {"kind": kind, "bin": b, "n": n, "flipped": f, "flip_rate": f / n if n else None,
            "ci95": list(ci) if ci else None,
            "uncertain": bool(ci and ci[0] <= max_flip <= ci[1]), "few": n < MIN_DECIDING}


def _cut(cells: dict[tuple[str, int], list[int]], fallback: dict | None, kinds, bins: int,
         scales: dict, max_flip: float) -> dict[str, dict]:
    """kind -> {limit (magnitude; None: no magnitude), flip_rate over the kept bins, kept
    bins, ``decided_by`` (the bin whose rate ended the range, or the strongest kept one:
    ``_cell``)}, for every kind; a kind left out has no bins. Bins holding no image are
    stepped over, never a reason to stop: a kind that fills only some bins (a fixed sigma)
    is judged on those."""
    out = {}
    for kind in kinds:
        scale = scales[kind]
        order = [0] if scale is None else (list(range(bins)) if scale.higher
                                           else list(range(bins - 1, -1, -1)))
        kept, flipped, right, decided = [], 0, 0, None
        for b in order:
            f, n = cells.get((kind, b), (0, 0))
            if n < MIN_CLASS_ITEMS and fallback is not None:  # too few here: the pooled rule
                if b in fallback.get(kind, {}).get("bins", []):
                    kept.append(b)
                    continue
                if n == 0 and b not in fallback.get(kind, {}).get("cut_at", [b]):
                    continue  # empty and not where the pooled rule stopped
                break
            if n == 0:
                continue  # no image at this magnitude: nothing to judge it by
            decided = _cell(kind, b, f, n, max_flip)
            if f / n > max_flip:
                break
            kept.append(b)
            flipped, right = flipped + f, right + n
        limit = None
        if scale is not None and kept:
            edge = max(kept) + 1 if scale.higher else min(kept)
            limit = scale.lo + (scale.hi - scale.lo) * edge / bins
        rate = flipped / right if right else (fallback or {}).get(kind, {}).get("flip_rate", 0)
        cut_at = [decided["bin"]] if decided and decided["bin"] not in kept else []
        out[kind] = {"limit": limit, "flip_rate": rate, "bins": sorted(kept),
                     "decided_by": decided, "cut_at": cut_at,
                     "empty": decided is None and not kept}
    return out


def said(cell: dict) -> str:
    """A bin's judgement in words: its rate, Wilson interval and count, and its doubts."""
    lo, hi = cell["ci95"]
    return (f"bin {cell['bin']}: flip rate {cell['flip_rate']:.3f} [{lo:.3f}, {hi:.3f}] on "
            f"{cell['n']} images" + ("; uncertain: the interval spans the cut" if
                                      cell["uncertain"] else "")
            + (f"; decided by fewer than {MIN_DECIDING} images" if cell["few"] else ""))


def _transform(kind: str, limit: float | None, scale, weight: float, h: int, w: int):
    if kind == "hflip":
        return A.HorizontalFlip(p=weight)
    if kind == "vflip":
        return A.VerticalFlip(p=weight)
    t = scale.upto(limit, h, w)
    t.p = weight
    return t


def _serialise(kept: dict[str, dict], scales: dict, h: int, w: int) -> tuple[dict, dict]:
    """(A.to_dict of the Compose, kind -> {weight, limit, flip_rate})."""
    raw = {k: max(1.0 - v["flip_rate"], 1e-3) for k, v in kept.items()}
    total = sum(raw.values())
    weights = {k: v / total for k, v in raw.items()}
    ts = [_transform(k, kept[k]["limit"], scales[k], weights[k], h, w) for k in kept]
    compose = A.Compose([A.OneOf(ts, p=1.0)] if ts else [], p=1.0)
    summary = {k: {"weight": weights[k], "limit": kept[k]["limit"],
                   "flip_rate": kept[k]["flip_rate"], "bins": kept[k]["bins"]} for k in kept}
    return A.to_dict(compose), summary


def recommend(lake: Lake, atlas_id: str, max_flip: float = 0.2) -> dict:
    """The recommended policy of atlas ``atlas_id`` at ``max_flip``: ``policy`` (the pooled
    serialisation), ``kinds`` (its weights, limits, flip rates), ``per_class`` (label -> its
    serialisation, or None when every class gets the pooled policy), ``left_out`` (kinds and
    why) and what it came from."""
    if not isinstance(max_flip, int | float) or isinstance(max_flip, bool) \
            or not 0.0 <= max_flip <= 1.0:
        raise PolicyError(f"--max-flip must be in [0, 1] (a flip rate), got {max_flip!r}")
    rows = read_atlas(lake, atlas_id).to_pylist()
    run = lake.row("scoring_runs", rows[0]["scoring_run_id"])
    pool = lake.row("pools", run["pool_id"])
    cfg = pool_config(pool)
    meta = lake.row("datasets", pool["dataset_id"])
    h, w = meta["height"], meta["width"]
    kinds = sorted({r["kind"] for r in rows})
    bins = cfg.magnitude_bins or rows[0]["bins"]
    scales = {k: None if k in dict(cfg.space) else scale_of(k, cfg.max_angle) for k in kinds}
    left_out = {k: "a space file's kind: no transform up to a magnitude" for k in kinds
                if k in dict(cfg.space) or (scales[k] is None and k not in ("hflip", "vflip"))}
    usable = [k for k in kinds if k not in left_out]
    judged = _cut(_pool(rows), None, usable, bins, scales, max_flip)
    pooled = {k: v for k, v in judged.items() if v["bins"]}
    for k, v in judged.items():
        if not v["bins"]:
            left_out[k] = "no image at any magnitude" if v["empty"] else (
                f"its weakest magnitudes flip more than {max_flip:g}: " + said(v["decided_by"]))
    policy, summary = _serialise(pooled, scales, h, w)
    for k, v in summary.items():
        v["decided_by"] = pooled[k]["decided_by"]
    per_class: dict[str, dict] = {}
    differs = False
    for label in sorted({r["label"] for r in rows}):
        mine = {k: v for k, v in _cut(_pool([r for r in rows if r["label"] == label]), judged,
                                      usable, bins, scales, max_flip).items() if v["bins"]}
        same = {k: v["bins"] for k, v in mine.items()} == {k: v["bins"] for k, v in
                                                           pooled.items()}
        differs |= not same
        per_class[str(label)] = _serialise(mine, scales, h, w)[0]
    return {"atlas_id": atlas_id, "max_flip": max_flip, "policy": policy, "kinds": summary,
            "per_class": per_class if differs else None, "left_out": left_out,
            "baseline": baseline_health(lake, run["model_id"]),
            "image_size": [h, w], "classes": len(json.loads(meta["classes"])),
            "git_sha": git_sha(),
            "rule": __doc__.split("The rule (``recommend``), ")[1].split("``smartaug.policy")[0]
            .replace("\n", " ").strip()}


def write_policy(lake: Lake, atlas_id: str, out: str | Path, max_flip: float = 0.2) -> dict:
    """Write the recommended policy to ``out`` (albumentations' serialisation, with what it
    came from under the key ``smartaug``, which ``A.from_dict`` ignores) and, where classes
    differ, the per-class policies beside it; returns ``recommend``'s dict with ``path``."""
    rec = recommend(lake, atlas_id, max_flip)
    out = check_out(out)
    provenance = {k: rec[k] for k in ("atlas_id", "max_flip", "kinds", "left_out",
                                      "image_size", "classes", "git_sha", "rule", "baseline")}
    side = per_class_path(out)
    files = [(out, {**rec["policy"], "smartaug": {**provenance,
                                                   "per_class": side.name if rec["per_class"]
                                                   else None}})]
    if rec["per_class"]:
        files.append((side, {"smartaug": provenance, "per_class": rec["per_class"]}))
    for path, data in files:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    if not rec["per_class"] and side.exists():
        side.unlink()  # a stale one from an earlier policy of the same name
    return {**rec, "path": out}

