"""Step ``study report``: a study's runs -> ``<root>/reports/<study_id>/``: study.json,
study.md, a self-contained study.html and the plots.

Per (pool, budget, selector, loss): test accuracy mean, std and 95 % t interval over the paired
seeds; the paired difference to ``random`` at the same pool, budget and loss, its 95 % t
interval and the paired t-test's p, Holm-corrected over every comparison of the study; the
seeds won, tied and lost. ``SCORE@val``: per score, the window position with the best mean
validation accuracy (test accuracy is never used to choose). The verdict claims only what
the corrected tests show.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np
from scipy import stats

from pipeline.core.stats import method_stats, paired
from pipeline.lake import Lake, LakeError, git_sha
from pipeline.lake.readers import classes as dataset_classes
from pipeline.steps.report import figure_png, write_report_files
from pipeline.steps.sql import query

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the non-interactive backend

__all__ = ["holm", "leaderboard", "study_verdict", "write_study_report"]

ALPHA = 0.05


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None = no test: left out of the
    family, and None in the result)."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def _diff_ci(a: dict[int, float], b: dict[int, float]) -> list[float] | None:
    reps = sorted(set(a) & set(b))
    d = np.asarray([a[r] - b[r] for r in reps])
    if len(d) < 2:
        return None
    sd = d.std(ddof=1)
    if sd == 0:
        return [float(d.mean())] * 2
    return [float(x) for x in stats.t.interval(0.95, len(d) - 1, loc=d.mean(),
                                               scale=sd / math.sqrt(len(d)))]


def _row(pool, budget, selector, loss, cells, by_run, random_accs, **extra) -> dict:
    test = {c["rep"]: by_run[c["run_id"]]["test_acc"] for c in cells}
    val = [by_run[c["run_id"]]["val_acc"] for c in cells]
    s = method_stats(list(test.values()))
    row = {"pool": pool, "budget": budget, "selector": selector, "loss": loss,
           "n_items": cells[0]["n_items"], "n_seeds": len(test),
           "test_acc_mean": s["test_acc_mean"], "test_acc_std": s["test_acc_std"],
           "ci95": [max(0.0, s["ci95"][0]), min(1.0, s["ci95"][1])],  # accuracies
           "val_acc_mean": float(np.mean(val)) if all(v is not None for v in val) else None,
           "diff_vs_random": None, "diff_ci95": None, "p_value": None, "p_holm": None,
           "wins": None, "ties": None, "losses": None, "significant": False,
           "kind": cells[0]["kind"], "score": cells[0]["score"],
           "position": cells[0]["position"], "chosen_on": None,
           "selection_ids": sorted({c["selection_id"] for c in cells if c["selection_id"]}),
           "run_ids": [c["run_id"] for c in sorted(cells, key=lambda c: c["rep"])], **extra}
    if random_accs is not None:
        p = paired(test, random_accs)
        d = {r: test[r] - random_accs[r] for r in sorted(set(test) & set(random_accs))}
        row.update(diff_vs_random=p["mean_diff"], diff_ci95=_diff_ci(test, random_accs),
                   p_value=p["p_value"], wins=sum(v > 0 for v in d.values()),
                   ties=sum(v == 0 for v in d.values()), losses=sum(v < 0 for v in d.values()))
        if selector == "random":
            row.update(p_value=None)
    return row


def leaderboard(cfg: dict, cells: list[dict], by_run: dict[str, dict]) -> tuple[list, list]:
    """The leaderboard rows (one per pool, budget, selector, loss) and the positions chosen on
    validation."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for c in cells:
        groups[(c["pool"], c["budget"], c["selector"], c["loss"])].append(c)
    pools = [p["name"] for p in cfg["pools"]]
    rows, chosen = [], []
    for pool in pools:
        for loss in cfg["losses"]:
            for budget in cfg["budgets"]:
                rnd = groups[(pool, budget, "random", loss)]
                rnd_accs = {c["rep"]: by_run[c["run_id"]]["test_acc"] for c in rnd}
                rows.append(_row(pool, budget, "random", loss, rnd, by_run, rnd_accs))
                for s in cfg["scores"]:
                    options = {}
                    for p in cfg["positions"]:
                        g = groups[(pool, budget, f"{s}@{p}", loss)]
                        rows.append(_row(pool, budget, f"{s}@{p}", loss, g, by_run, rnd_accs))
                        options[p] = rows[-1]["val_acc_mean"]
                    if len(cfg["positions"]) > 1 and all(v is not None
                                                         for v in options.values()):
                        best = max(cfg["positions"], key=lambda p: (options[p], -cfg[
                            "positions"].index(p)))
                        g = groups[(pool, budget, f"{s}@{best}", loss)]
                        rows.append(_row(pool, budget, f"{s}@val", loss, g, by_run, rnd_accs,
                                         chosen_on="validation"))
                        rows[-1]["kind"] = "window, position chosen on validation"
                        chosen.append({"pool": pool, "budget": budget, "loss": loss,
                                       "score": s, "position": best,
                                       "val_acc_by_position": options})
                for s in cfg["coverage"]:
                    g = groups[(pool, budget, f"coverage-{s}", loss)]
                    rows.append(_row(pool, budget, f"coverage-{s}", loss, g, by_run, rnd_accs))
            for ref, budget in (("none", 0.0), ("all", 1.0)):
                g = groups[(None if ref == "none" else pool, budget, ref, loss)]
                if g:
                    rows.append(_row(pool, budget, ref, loss, g, by_run, None))
    family = [i for i, r in enumerate(rows) if r["p_value"] is not None]
    adjusted = holm([rows[i]["p_value"] for i in family])
    for i, p in zip(family, adjusted, strict=True):
        rows[i]["p_holm"] = p
        rows[i]["significant"] = p < ALPHA
    for r in rows:
        if r["selector"] == "random":
            r["p_holm"] = 1.0  # the baseline of every comparison: no difference by definition
    return rows, chosen


def study_verdict(rows: list[dict], n_seeds: int) -> str:
    """One paragraph that claims only what the Holm-corrected paired tests show."""
    tested = [r for r in rows if r["p_value"] is not None]
    m = len(tested)
    wins = [r for r in tested if r["significant"] and r["diff_vs_random"] > 0]
    losses = [r for r in tested if r["significant"] and r["diff_vs_random"] < 0]

    def show(r):
        lo, hi = r["diff_ci95"]
        return (f"{r['selector']} ({r['loss']}) on the {r['pool']} pool at budget "
                f"{r['budget']:g}: {100 * r['diff_vs_random']:+.2f} points "
                f"[{100 * lo:+.2f}, {100 * hi:+.2f}], Holm p = {r['p_holm']:.3g}")

    parts = [f"Over {n_seeds} paired seeds and {m} comparisons with random at the same "
             f"budget (Holm-corrected, alpha {ALPHA}):"]
    if wins:
        wins.sort(key=lambda r: -r["diff_vs_random"])
        parts.append(f"{len(wins)} selector(s) beat random: " + "; ".join(map(show, wins[:6]))
                     + ("; ..." if len(wins) > 6 else "") + ".")
    else:
        parts.append("no hardness-based selector beat random anywhere.")
    if losses:
        losses.sort(key=lambda r: r["diff_vs_random"])
        parts.append(f"{len(losses)} lost to random, the largest: "
                     + "; ".join(map(show, losses[:3])) + ".")
    else:
        parts.append("None lost to random either.")
    chosen = [r for r in tested if r["chosen_on"]]
    if chosen:
        won = sum(r["significant"] and r["diff_vs_random"] > 0 for r in chosen)
        parts.append(f"With the window position chosen on validation (the honest version of "
                     f"a band), {won} of {len(chosen)} pool/budget/score cells beat random.")
    parts.append("Every other difference is within seed-to-seed noise at this number of "
                 "seeds.")
    return " ".join(parts)


# ------------------------------------------------------------------ plots


def plot_budget(rows: list[dict], cfg: dict, which) -> bytes:
    """Test accuracy against budget per pool: one line per selector (``which``), its 95 %
    interval as a band; the references as horizontal lines."""
    pools = [p["name"] for p in cfg["pools"]]
    fig, axes = plt.subplots(1, len(pools), figsize=(6.5 * len(pools), 4.5), squeeze=False)
    for ax, pool in zip(axes[0], pools, strict=True):
        by_sel: dict[tuple, list] = defaultdict(list)
        for r in rows:
            if r["pool"] == pool and r["kind"] != "reference" and which(r):
                by_sel[(r["selector"], r["loss"])].append(r)
        for (sel, loss), rs in by_sel.items():
            rs.sort(key=lambda r: r["budget"])
            x = [r["budget"] for r in rs]
            y = np.array([100 * r["test_acc_mean"] for r in rs])
            lo = np.array([100 * r["ci95"][0] for r in rs])
            hi = np.array([100 * r["ci95"][1] for r in rs])
            style = "-" if loss == "ce" else "--"
            line, = ax.plot(x, y, style, marker="o", label=f"{sel} ({loss})",
                            lw=2.5 if sel == "random" else 1.3,
                            color="black" if sel == "random" else None)
            ax.fill_between(x, lo, hi, alpha=0.12, color=line.get_color())
        for r in rows:
            if r["pool"] == pool and r["kind"] == "reference":
                ax.axhline(100 * r["test_acc_mean"], ls=":", color="grey")
                ax.text(min(cfg["budgets"]),
                        100 * r["test_acc_mean"], f" {r['selector']} ({r['loss']})",
                        va="bottom", fontsize=8, color="grey")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(cfg["budgets"], [f"{b:g}" for b in cfg["budgets"]])
        ax.set_xlabel("budget (fraction of the pool)")
        ax.set_ylabel("test accuracy % (mean, 95 % CI)")
        ax.set_title(f"{pool} pool")
        ax.legend(fontsize=7, loc="best")
    return figure_png(fig)


# ------------------------------------------------------------------ collect and write


def _kept(lake: Lake, rows: list[dict], class_names: list[str]) -> list[dict]:
    """What each selector kept, by kind and class (its first seed's selection)."""
    first = {r["selection_ids"][0]: r for r in rows if r["selection_ids"]}
    if not first:
        return []
    counts = query(lake, "study_kept", ids=list(first)).to_pylist()
    out: dict[str, dict] = {}
    for c in counts:
        r = first[c["selection_id"]]
        k = out.setdefault(c["selection_id"], {
            "pool": r["pool"], "budget": r["budget"], "selector": r["selector"],
            "selection_id": c["selection_id"], "n": 0, "by_kind": {}, "by_class": {}})
        k["n"] += c["n"]
        k["by_kind"][c["kind"]] = k["by_kind"].get(c["kind"], 0) + c["n"]
        name = class_names[c["label"]] if 0 <= c["label"] < len(class_names) else str(c["label"])
        k["by_class"][name] = k["by_class"].get(name, 0) + c["n"]
    for k in out.values():
        k["by_kind"] = {a: v / k["n"] for a, v in sorted(k["by_kind"].items())}
        k["by_class"] = {a: k["by_class"].get(a, 0) / k["n"] for a in class_names}
    order = {r["selection_ids"][0]: i for i, r in enumerate(rows) if r["selection_ids"]}
    return sorted(out.values(), key=lambda k: order[k["selection_id"]])


def _collect(lake: Lake, sid: str, command: str | None) -> dict:
    row = lake.row("studies", sid)
    cfg = json.loads(row["config"])
    cells = json.loads(row["cells"])
    runs = query(lake, "study_runs", ids=[c["run_id"] for c in cells]).to_pylist()
    by_run = {r["run_id"]: r for r in runs}
    missing = [c["run_id"] for c in cells if c["run_id"] not in by_run]
    if missing:
        raise LakeError(f"study {sid}: {len(missing)} cells have no runs row (e.g. "
                         f"{missing[0]}); rerun the study to train them")
    rows, chosen = leaderboard(cfg, cells, by_run)
    names = dataset_classes(lake, row["dataset_id"])
    baseline = lake.row("models", row["baseline_model_id"])
    return {
        "study_id": sid, "command": command, "git_sha": git_sha(), "config": cfg,
        "dataset_id": row["dataset_id"], "baseline_model_id": row["baseline_model_id"],
        "baseline": {"test_acc": baseline["test_acc"], "val_acc": baseline["val_acc"]},
        "pools": json.loads(row["pools"]), "n_cells": len(cells),
        "n_trainings": len({c["run_id"] for c in cells}),
        "seconds": row["seconds"],
        "protocol": (f"every cell trains {cfg['model']} ({cfg['init']}) for "
                     f"{cfg['retrain']['epochs']} epochs (batch {cfg['retrain']['batch_size']}, "
                     f"{cfg['retrain']['optimizer']} lr {cfg['retrain']['lr']:g}) on the "
                     f"train split's originals plus the cell's augmentations, at seeds "
                     f"{cfg['seed']}..{cfg['seed'] + cfg['seeds'] - 1} (model init and batch "
                     f"order; random and coverage draw afresh per seed); accuracy after the "
                     f"last epoch"),
        "how_chosen": ("SCORE@val rows: per pool, budget, loss and score, the window position "
                       "with the highest mean validation accuracy over the seeds (the "
                       "validation split is held out of the train split; test accuracy is "
                       "never used to choose). Fixed positions are shown for reference; Holm's "
                       "correction counts every comparison, chosen or not."),
        "leaderboard": rows, "chosen_positions": chosen, "kept": _kept(lake, rows, names),
        "classes": names, "verdict": study_verdict(rows, cfg["seeds"]),
    }


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def _tables(r: dict) -> dict[str, list[list[str]]]:
    """Markdown/HTML tables: one leaderboard per pool and budget (references after)."""
    head = ["selector", "loss", "n", "test acc % (mean ± std)", "95 % CI", "Δ vs random (pp)",
            "Δ 95 % CI", "p", "p (Holm)", "W/T/L"]
    out: dict[str, list[list[str]]] = {}
    for row in r["leaderboard"]:
        key = (f"{row['pool']} pool, budget {row['budget']:g}" if row["kind"] != "reference"
               else f"{row['pool']} pool, references")
        t = out.setdefault(key, [head])
        d = row["diff_vs_random"]
        t.append([
            row["selector"] + (" *" if row["significant"] else ""), row["loss"],
            str(row["n_items"]),
            f"{_pct(row['test_acc_mean'])} ± {_pct(row['test_acc_std'])}",
            f"[{_pct(row['ci95'][0])}, {_pct(row['ci95'][1])}]",
            "" if d is None else f"{100 * d:+.2f}",
            "" if not row["diff_ci95"] else
            f"[{100 * row['diff_ci95'][0]:+.2f}, {100 * row['diff_ci95'][1]:+.2f}]",
            "" if row["p_value"] is None else f"{row['p_value']:.3g}",
            "" if row["p_holm"] is None or row["selector"] == "random"
            else f"{row['p_holm']:.3g}",
            "" if row["wins"] is None or row["selector"] == "random"
            else f"{row['wins']}/{row['ties']}/{row['losses']}"])
    for t in out.values():
        t[1:] = sorted(t[1:], key=lambda x: -float(x[3].split(" ")[0]))
    return out


def _summary_tables(r: dict) -> dict[str, list[list[str]]]:
    """Per pool and loss: a selector per row, a budget per column, each cell the test
    accuracy % (mean ± std; for SCORE@val, after the position chosen) and the difference to
    random in points; fixed window positions other than the seed's (``offset``, of the first
    score) are left to the full tables."""
    cfg = r["config"]
    out: dict[str, list[list[str]]] = {}
    shown = ["random", *(f"{s}@val" for s in cfg["scores"]),
             *(f"{s}@offset" for s in cfg["scores"][:1]),
             *(f"coverage-{s}" for s in cfg["coverage"])]
    for pool in [p["name"] for p in cfg["pools"]]:
        for loss in cfg["losses"]:
            rows = {(x["selector"], x["budget"]): x for x in r["leaderboard"]
                    if x["pool"] == pool and x["loss"] == loss}
            t = [["selector", *(f"budget {b:g}" for b in cfg["budgets"])]]
            for sel in shown:
                cells = []
                for b in cfg["budgets"]:
                    x = rows.get((sel, b))
                    if x is None:
                        cells.append("")
                        continue
                    cell = f"{_pct(x['test_acc_mean'])} ± {_pct(x['test_acc_std'])}"
                    if x["chosen_on"]:
                        cell = f"{x['position']}: {cell}"
                    if sel != "random" and x["diff_vs_random"] is not None:
                        cell += (f" ({100 * x['diff_vs_random']:+.2f}"
                                 + (", *" if x["significant"] else "") + ")")
                    cells.append(cell)
                if any(cells):
                    t.append([sel, *cells])
            for ref in ("none", "all"):
                x = next((x for x in r["leaderboard"] if x["pool"] == pool
                          and x["loss"] == loss and x["selector"] == ref), None)
                if x is not None:
                    t.append([f"{ref} ({x['n_items']} augmentations)",
                              f"{_pct(x['test_acc_mean'])} ± {_pct(x['test_acc_std'])}",
                              *[""] * (len(cfg["budgets"]) - 1)])
            out[f"{pool} pool" + (f", loss {loss}" if len(cfg["losses"]) > 1 else "")] = t
    return out


def _kept_tables(r: dict) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for k in r["kept"]:
        key = f"{k['pool']} pool, budget {k['budget']:g}"
        kinds = sorted({a for x in r["kept"] if x["pool"] == k["pool"] for a in x["by_kind"]})
        t = out.setdefault(key, [["selector", *kinds, "top class", "bottom class"]])
        by_class = sorted(k["by_class"].items(), key=lambda kv: -kv[1])
        t.append([k["selector"], *(f"{100 * k['by_kind'].get(a, 0):.0f}" for a in kinds),
                  f"{by_class[0][0]} {100 * by_class[0][1]:.0f}",
                  f"{by_class[-1][0]} {100 * by_class[-1][1]:.0f}"])
    return out


def _chosen_table(r: dict) -> list[list[str]]:
    """The positions chosen on validation (no rows: a single position, nothing chosen)."""
    if not r["chosen_positions"]:
        return []
    return [["pool", "budget", "loss", "score", "chosen", "val acc % by position"],
            *([c["pool"], f"{c['budget']:g}", c["loss"], c["score"], c["position"],
               ", ".join(f"{p} {_pct(v)}" for p, v in c["val_acc_by_position"].items())]
              for c in r["chosen_positions"])]


def write_study_report(lake: Lake, sid: str, *, command: str | None = None) -> Path:
    """Write study.json, study.md, study.html and the plots; returns the directory (on a
    remote lake, the local copy of what was uploaded)."""
    r = _collect(lake, sid, command)
    cfg = r["config"]
    plots = {"accuracy_vs_budget": plot_budget(
        r["leaderboard"], cfg, lambda x: x["selector"] == "random" or x["chosen_on"]
        or x["kind"] == "coverage")}
    if cfg["scores"] and len(cfg["positions"]) > 1:
        first = cfg["scores"][0]
        plots[f"{first}_positions"] = plot_budget(
            r["leaderboard"], cfg, lambda x: x["selector"] == "random"
            or (x["score"] == first and x["kind"] == "window"))
    return write_report_files(lake, sid, "study", r, plots, tables=_tables(r),
                              summary=_summary_tables(r), kept=_kept_tables(r),
                              chosen=_chosen_table(r))
