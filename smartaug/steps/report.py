"""Step ``report``: an experiment's tables -> ``<root>/reports/<experiment_id>/``: report.json,
report.md, a self-contained report.html (jinja2 ``templates/``) and one PNG per plot. Per
method: test accuracy mean, std and 95 % t interval over seeds; paired differences against M0
and M1 with the paired t-test's p (``smartaug.core.stats``). The verdict claims nothing the
numbers do not show, and plot titles say what is plotted, not what to conclude."""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import jinja2
import matplotlib
import numpy as np

from smartaug.core.stats import method_stats, paired
from smartaug.lake import Lake, atomic_path, git_sha
from smartaug.lake.readers import PoolPixels
from smartaug.lake.readers import classes as dataset_classes
from smartaug.steps.sql import query

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the non-interactive backend

__all__ = ["accuracy_cells", "at_chance", "figure_png", "verdict", "write_report",
           "write_report_files"]

_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("smartaug.steps", "templates"),
                                autoescape=jinja2.select_autoescape(["html.j2"]),
                                keep_trailing_newline=True)


# ------------------------------------------------------------------ plots, one per figure


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _curves(runs: list[dict], history: list[dict], method: str) -> list[list[dict]]:
    """Each run's history of ``method``, by epoch."""
    by_run: dict[str, list] = {}
    for h in history:
        by_run.setdefault(h["run_id"], []).append(h)
    curves = [sorted(by_run.get(r["run_id"], []), key=lambda h: h["epoch"])
              for r in runs if r["method"] == method]
    return [c for c in curves if c]


def _mean_curve(curves: list[list[dict]], key: str) -> np.ndarray:
    k = min(len(c) for c in curves)
    return np.mean([[h[key] for h in c[:k]] for c in curves], axis=0)


def curve_split(history: list[dict]) -> str:
    """The split the per-epoch curves show: validation when every epoch evaluated it (the
    test split is evaluated once, at the end, and reported), else test."""
    return "val" if history and all(h.get("val_acc") is not None for h in history) else "test"


_SPLIT_NAMES = {"val": "validation", "test": "test"}


def plot_accuracy(runs: list[dict], history: list[dict], colors: dict) -> bytes:
    """Accuracy per epoch on the curves' split (``curve_split``): each run faint, each
    method's mean bold."""
    split = curve_split(history)
    fig, ax = plt.subplots(figsize=(7, 4))
    for m, color in colors.items():
        curves = _curves(runs, history, m)
        for c in curves:
            ax.plot([h["epoch"] for h in c], [h[f"{split}_acc"] for h in c], color=color,
                    alpha=0.25, lw=1)
        if curves:
            mean = _mean_curve(curves, f"{split}_acc")
            ax.plot(range(1, len(mean) + 1), mean, color=color, lw=2.5, label=m)
    name = _SPLIT_NAMES[split]
    ax.set(xlabel="epoch", ylabel=f"{name} accuracy",
           title=f"{name.capitalize()} accuracy per epoch (faint: runs, bold: mean)")
    ax.legend()
    return figure_png(fig)


def plot_avh_hist(original: np.ndarray, kinds: np.ndarray, avh: np.ndarray) -> bytes:
    """Densities of the baseline's AVH on the original train images and on each kind."""
    fig, ax = plt.subplots(figsize=(7, 4))
    both = np.concatenate([original, avh])
    bins = np.linspace(np.quantile(both, 0.002), np.quantile(both, 0.998), 60)
    ax.hist(original, bins=bins, histtype="step", lw=2, color="black", density=True,
            label=f"originals (mean {original.mean():.4f})")
    for k in sorted(set(kinds)):
        ax.hist(avh[kinds == k], bins=bins, histtype="step", lw=1.5, density=True,
                label=f"{k} (mean {avh[kinds == k].mean():.4f})")
    ax.set(xlabel="AVH (baseline model; higher = harder)", ylabel="density",
           title="AVH of the original train images vs the augmentations")
    ax.legend()
    return figure_png(fig)


def plot_band(pool: list[dict], kept: list[dict], class_names: list[str]) -> bytes:
    """The pool and what the band kept of it, by kind and by class."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, names in ((axes[0], "kind", None), (axes[1], "label", class_names)):
        cats = sorted({r[key] for r in pool})
        xs = np.arange(len(cats))
        ax.bar(xs, [sum(r["n"] for r in pool if r[key] == c) for c in cats], color="lightgray",
               label="pool")
        ax.bar(xs, [sum(r["n"] for r in kept if r[key] == c) for c in cats], color="tab:blue",
               label="kept by the band")
        ax.set_xticks(xs, [names[c] if names else c for c in cats], rotation=45, ha="right")
        ax.set_title(f"band composition by {'kind' if key == 'kind' else 'class'}")
        ax.legend()
    return figure_png(fig)


def plot_gallery(g, imgs) -> bytes:
    """The 8 easiest and 8 hardest augmentations (``report_gallery.sql``'s rows, ``imgs``
    their pixels)."""
    fig, axes = plt.subplots(2, 8, figsize=(12, 3.6))
    for i, ax in enumerate(axes.flat[: g.num_rows]):
        im = imgs[i]
        ax.imshow(im[..., 0] if im.shape[2] == 1 else im, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{g['kind'][i].as_py()}\nAVH {g['avh'][i].as_py():.3f}", fontsize=8)
        ax.axis("off")
    fig.suptitle("Easiest (top) and hardest (bottom) augmentations by AVH")
    return figure_png(fig)


def plot_dynamics(runs: list[dict], history: list[dict], colors: dict) -> bytes:
    """Method means per epoch of the AVH and of the feature norm on the curves' split
    (``curve_split``)."""
    split = curve_split(history)
    name = _SPLIT_NAMES[split]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, ax, label in ((f"{split}_avh", axes[0], f"mean {name} AVH"),
                           ("feature_norm_mean", axes[1], f"mean {name} feature norm")):
        for m, color in colors.items():
            curves = _curves(runs, history, m)
            if curves:
                mean = _mean_curve(curves, key)
                ax.plot(range(1, len(mean) + 1), mean, color=color, lw=2, label=m)
        ax.set(xlabel="epoch", ylabel=label)
        ax.legend()
    fig.suptitle(f"{name.capitalize()} AVH and feature norm per epoch (method means)")
    return figure_png(fig)


def _plots(lake: Lake, exp: dict, runs: list[dict], history: list[dict],
           kept: list[dict] | None, class_names: list[str]) -> dict[str, bytes]:
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(sorted({r["method"] for r in runs}))}
    original = query(lake, "report_original_avh", model_id=exp["baseline_model_id"])
    aug = query(lake, "report_pool_avh", scoring_run_id=exp["scoring_run_id"])
    out = {"accuracy": plot_accuracy(runs, history, colors),
           "avh_hist": plot_avh_hist(original["avh"].to_numpy(),
                                     aug["kind"].to_numpy(zero_copy_only=False),
                                     aug["avh"].to_numpy())}
    if kept is not None:
        out["band"] = plot_band(query(lake, "report_pool_mix", pool_id=exp["pool_id"]).to_pylist(),
                                kept, class_names)
    gallery = query(lake, "report_gallery", scoring_run_id=exp["scoring_run_id"])
    if gallery.num_rows:
        pixels = PoolPixels(lake, exp["pool_id"], workers=1)  # stored, or from the recipes
        out["gallery"] = plot_gallery(gallery, pixels.images(gallery))
    out["dynamics"] = plot_dynamics(runs, history, colors)
    return out


# ------------------------------------------------------------------ figures and words


def verdict(methods: dict, comparisons: list[dict]) -> str:
    """One sentence per baseline (M0, M1) on whether M2 beats it, with the paired p-value;
    a win is claimed only when the difference is positive and p < 0.05."""
    if "M2" not in methods:
        return "No M2 in this experiment."
    lines = []
    for base in ("M0", "M1"):
        c = next((c for c in comparisons if c["a"] == "M2" and c["b"] == base), None)
        if c is None or c["mean_diff"] is None:
            continue
        sig = c["p_value"] is not None and c["p_value"] < 0.05
        if c["mean_diff"] > 0:
            word = "beats" if sig else "is ahead of, but not significantly (p >= 0.05),"
        else:
            word = "is significantly worse than" if sig else "does not beat"
        p = "n/a" if c["p_value"] is None else f"{c['p_value']:.3g}"
        lines.append(f"M2 {word} {base}: {100 * c['mean_diff']:+.2f} points "
                     f"(paired over {c['n_pairs']} seeds, p = {p}).")
    return " ".join(lines)


def _mean(rs: list[dict], key: str) -> float | None:
    return float(np.mean([r[key] for r in rs])) if rs else None


def _collect(lake: Lake, experiment_id: str, command: str | None):
    """The report's content (report.json) and what the plots need: the experiment row, its
    runs and their history, the band selection's (kind, label) counts and the class names."""
    exp = lake.row("experiments", experiment_id)
    cfg = json.loads(exp["config"])
    runs = query(lake, "report_runs", experiment_id=experiment_id).to_pylist()
    history = query(lake, "report_history", run_ids=[r["run_id"] for r in runs]).to_pylist()
    base = lake.row("models", exp["baseline_model_id"])
    selections = json.loads(exp["selections"])
    names = dataset_classes(lake, exp["dataset_id"])
    search = json.loads(exp["band_search"] or "{}")
    order = [m["name"] for m in cfg["methods"]]

    methods = {}
    for name in order:
        rs = [r for r in runs if r["method"] == name]
        methods[name] = {
            **method_stats([r["test_acc"] for r in rs]),
            "test_avh_mean": _mean(rs, "test_avh"), "train_acc_mean": _mean(rs, "train_acc"),
            "seconds_mean": _mean(rs, "seconds"), "n_train": rs[0]["n_train"] if rs else None,
            "loss": rs[0]["loss"] if rs else None, "selection_id": selections.get(name),
            "runs": [{k: r[k] for k in ("run_id", "rep", "seed", "test_acc", "test_avh",
                                        "train_acc", "val_acc", "seconds")} for r in rs]}
    acc = {m: {r["rep"]: r["test_acc"] for r in runs if r["method"] == m} for m in order}
    pairs: list[tuple[str, str]] = []
    for b in ("M0", "M1"):
        pairs += [(a, b) for a in order if b in acc and a != b and (b, a) not in pairs]
    comparisons = [{"a": a, "b": b, **paired(acc[a], acc[b])} for a, b in pairs]

    band_method = next((m for m in cfg["methods"] if m["selection"] == "band"), None)
    band_sel = selections.get(band_method["name"]) if band_method else None
    selection, mix = {}, None
    if band_sel:
        mix = query(lake, "report_selection_mix", selection_id=band_sel).to_pylist()
        by_kind, by_class = {}, {}
        for r in mix:
            by_kind[r["kind"]] = by_kind.get(r["kind"], 0) + r["n"]
            by_class[r["label"]] = by_class.get(r["label"], 0) + r["n"]
        selection = {
            "method": band_method["name"], "score": band_method["score"],
            "band": list(search.get("chosen") or band_method["band"]),
            "size": sum(by_kind.values()), "by_kind": dict(sorted(by_kind.items())),
            "by_class": {names[k]: v for k, v in sorted(by_class.items())},
            "selection_id": band_sel,
            "how_chosen": ("searched on the validation split: " + json.dumps(search["grid"])
                           if search else "fixed by the config (not tuned on any split)")}
    report = {
        "experiment_id": experiment_id, "config": cfg,
        "command": command or f"smartaug experiment --preset {cfg['preset']}",
        "git_sha": git_sha(), "created_at": str(exp["created_at"]),
        "ids": {"dataset_id": exp["dataset_id"], "baseline_model_id": exp["baseline_model_id"],
                "pool_id": exp["pool_id"], "scoring_run_id": exp["scoring_run_id"],
                "selections": selections},
        "baseline": {k: base[k] for k in ("model_id", "test_acc", "test_avh", "val_acc")},
        "methods": methods, "comparisons": comparisons, "selection": selection,
        "hardness_by_kind": query(lake, "report_hardness_by_kind",
                                  model_id=exp["baseline_model_id"],
                                  pool_id=exp["pool_id"]).to_pylist(),
        "band_search": search,
        "drift": query(lake, "report_drift", experiment_id=experiment_id).to_pylist(),
        "verdict": " ".join(x for x in (
            at_chance([base["test_acc"], *(m["test_acc_mean"] for m in methods.values())],
                      len(names)), verdict(methods, comparisons)) if x)}
    return report, (exp, runs, history, mix, names)


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def accuracy_cells(mean, std, ci, n) -> tuple[str, str]:
    """(mean ± std, its interval) as a table shows them, in %; an interval of zero width is
    said in words, never printed as [a, a]: every seed gave the same accuracy."""
    if n and n > 1 and std == 0:
        return f"{_pct(mean)} on every seed", "none: no spread"
    lo, hi = ci if ci else (None, None)
    return f"{_pct(mean)} ± {_pct(std)}", f"[{_pct(lo)}, {_pct(hi)}]"


def at_chance(accuracies, classes: int) -> str | None:
    """One line when every accuracy is at chance (at most 1.5 x 1 / classes), else None: the
    comparisons between them measure nothing and are not worth a number."""
    accs = [a for a in accuracies if a is not None and a == a]
    if classes < 2 or not accs or max(accs) > 1.5 / classes:
        return None
    return (f"Every training is at chance level (at most {100 * max(accs):.1f} % accurate, "
            f"chance {100 / classes:.1f} %): the comparisons below measure nothing. Train "
            f"longer (--epochs) or on more images (--per-class-train) first.")


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _tables(r: dict) -> dict[str, list[list[str]]]:
    """The report's tables as rows of strings (the header first), for both templates."""
    methods = [["method", "loss", "train images", "test acc % (mean ± std)", "95 % CI", "seeds",
                "test AVH", "train acc %", "seconds"]]
    methods += [[name, m["loss"] or "-", str(m["n_train"]),
                 *accuracy_cells(m["test_acc_mean"], m["test_acc_std"], m["ci95"], m["n"]),
                 str(m["n"]),
                 _num(m["test_avh_mean"], ".4f"), _pct(m["train_acc_mean"]),
                 _num(m["seconds_mean"], ".1f")] for name, m in r["methods"].items()]
    comparisons = [["a", "b", "mean diff (points)", "p (paired t)", "pairs"]]
    comparisons += [[c["a"], c["b"], _num(c["mean_diff"] and 100 * c["mean_diff"], "+.2f"),
                     _num(c["p_value"], ".3g"), str(c["n_pairs"])] for c in r["comparisons"]]
    hardness = [["kind", "n", "mean AVH", "accuracy"]]
    hardness += [[h["kind"], str(h["n"]), f"{h['mean_avh']:.4f}", f"{h['accuracy']:.4f}"]
                 for h in r["hardness_by_kind"]]
    drift = [["round", "model", "test acc %", "jaccard", "moved in", "moved out", "KS (AVH)"]]
    drift += [[str(d["round"]), d["model_id"], _pct(d["test_acc"]), f"{d['jaccard']:.3f}",
               str(d["moved_in"]), str(d["moved_out"]), f"{d['ks_avh']:.3f}"]
              for d in r["drift"]]
    return {"methods": methods, "comparisons": comparisons, "hardness": hardness,
            "drift": drift}


def write_report(lake: Lake, experiment_id: str, *, command: str | None = None) -> Path:
    """Write report.md, report.html and report.json; returns the report directory (on a
    remote lake, the local copy of what was uploaded to ``lake.url("reports", experiment_id)``)."""
    report, plot_inputs = _collect(lake, experiment_id, command)
    return write_report_files(lake, experiment_id, "report", report,
                              _plots(lake, *plot_inputs), tables=_tables(report))


def write_report_files(lake: Lake, key: str, name: str, data: dict, plots: dict[str, bytes],
                       **context) -> Path:
    """``reports/<key>/``: ``<name>.json`` (``data``), ``<name>.md`` and a self-contained
    ``<name>.html`` from the templates ``templates/<name>.{md,html}.j2`` (given ``r`` =
    ``data``, ``plots``, ``pct`` and ``context``), and ``plots/*.png``; written as one
    directory that appears whole. Returns it (on a remote lake, the local copy uploaded)."""
    out = lake.local_path(f"reports/{key}")
    render_report_files(out, name, data, plots, **context)
    lake.upload(out, f"reports/{key}")
    return out


def render_report_files(out: Path, name: str, data: dict, plots: dict[str, bytes], *,
                        html: bool = True, **context) -> Path:
    """``write_report_files`` into the directory ``out`` (replaced whole, atomically), with no
    lake: ``html`` = False leaves the self-contained page out (the committed copies in
    docs/ keep the json, md and plots)."""
    with atomic_path(out, directory=True) as tmp:
        tmp.chmod(0o755)
        (tmp / "plots").mkdir()
        for plot, png in plots.items():
            (tmp / "plots" / f"{plot}.png").write_bytes(png)
        (tmp / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))
        (tmp / f"{name}.md").write_text(_TEMPLATES.get_template(f"{name}.md.j2").render(
            r=data, plots=list(plots), pct=_pct, **context))
        if html:
            (tmp / f"{name}.html").write_text(_TEMPLATES.get_template(f"{name}.html.j2").render(
                r=data, pct=_pct,
                plots={k: base64.b64encode(v).decode() for k, v in plots.items()}, **context))
    return out
