"""The comparison report of one experiment: statistics over seeds, plots, Markdown, a
self-contained HTML page and JSON, in ``<root>/reports/<experiment_id>/``.

Statistics: per method, test accuracy mean, sample std (ddof=1), a 95 % t confidence interval
over the replications; paired differences (same rep = same seed) against M0 and M1 with the
paired t-test's two-sided p-value (scipy.stats.ttest_rel). Nothing is claimed that these
numbers do not show: the summary line says whether M2's interval clears the baselines'.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from pipeline.lake import Lake, git_sha

__all__ = ["method_stats", "paired", "write_report"]


def method_stats(accs: list[float]) -> dict:
    """Mean, std (ddof=1), 95 % t interval and n of a list of accuracies."""
    from scipy import stats

    a = np.asarray(accs, dtype=float)
    n = len(a)
    mean = float(a.mean()) if n else float("nan")
    std = float(a.std(ddof=1)) if n > 1 else 0.0
    if n > 1:
        half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))
        ci = [mean - half, mean + half]
    else:
        ci = [mean, mean]
    return {"test_acc_mean": mean, "test_acc_std": std, "ci95": ci, "n": n}


def paired(a: dict[int, float], b: dict[int, float]) -> dict:
    """Paired difference a - b over the reps both have; p-value of the paired t-test."""
    from scipy import stats

    reps = sorted(set(a) & set(b))
    d = np.asarray([a[r] - b[r] for r in reps])
    p = None
    if len(reps) > 1 and np.ptp(d) > 1e-12:
        import warnings

        with warnings.catch_warnings():  # near-identical pairs: scipy warns, the p stands
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_rel([a[r] for r in reps], [b[r] for r in reps]).pvalue)
    # identical differences (or one pair): the t-test is undefined, p stays None
    return {"mean_diff": float(d.mean()) if len(d) else None, "p_value": p, "n_pairs": len(reps)}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plots(lake: Lake, exp: dict, runs: list[dict], history: list[dict], selection_id: str | None
           ) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    methods = sorted({r["method"] for r in runs})
    by_run = {}
    for h in history:
        by_run.setdefault(h["run_id"], []).append(h)
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}

    # 1. test accuracy per epoch: each run faint, the mean bold
    fig, ax = plt.subplots(figsize=(7, 4))
    for m in methods:
        curves = [sorted(by_run.get(r["run_id"], []), key=lambda h: h["epoch"])
                  for r in runs if r["method"] == m]
        curves = [c for c in curves if c]
        for c in curves:
            ax.plot([h["epoch"] for h in c], [h["test_acc"] for h in c], color=colors[m],
                    alpha=0.25, lw=1)
        if curves:
            k = min(len(c) for c in curves)
            mean = np.mean([[h["test_acc"] for h in c[:k]] for c in curves], axis=0)
            ax.plot(range(1, k + 1), mean, color=colors[m], lw=2.5, label=m)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title("Test accuracy per epoch (faint: runs, bold: mean)")
    ax.legend()
    out["accuracy"] = _png(fig)

    # 2. AVH of originals vs augmentations by kind
    orig = lake.sql("select s.avh from scores s join scoring_runs r using (scoring_run_id) "
                    "where r.model_id = $m and r.split = 'train' and s.avh is not null",
                    {"m": exp["baseline_model_id"]})["avh"].to_numpy()
    aug = lake.sql("select a.kind, s.avh from scores s join augmentations a "
                   "on a.aug_id = s.item_id where s.scoring_run_id = $r and s.avh is not null",
                   {"r": exp["scoring_run_id"]})
    kinds = aug["kind"].to_numpy(zero_copy_only=False)
    avh = aug["avh"].to_numpy()
    fig, ax = plt.subplots(figsize=(7, 4))
    both = np.concatenate([orig, avh])
    bins = np.linspace(np.quantile(both, 0.002), np.quantile(both, 0.998), 60)
    ax.hist(orig, bins=bins, histtype="step", lw=2, color="black",
            label=f"originals (mean {orig.mean():.4f})", density=True)
    for k in sorted(set(kinds)):
        ax.hist(avh[kinds == k], bins=bins, histtype="step", lw=1.5, density=True,
                label=f"{k} (mean {avh[kinds == k].mean():.4f})")
    ax.set_xlabel("AVH (baseline model; higher = harder)")
    ax.set_ylabel("density")
    ax.set_title("AVH of the original train images vs the augmentations")
    ax.legend()
    out["avh_hist"] = _png(fig)

    # 3. what the band kept, by kind and by class
    if selection_id:
        pool = lake.sql("select kind, label, count(*) as n from augmentations where pool_id = $p "
                        "group by all", {"p": exp["pool_id"]}).to_pylist()
        kept = lake.sql("select a.kind, a.label, count(*) as n from selections s join "
                        "augmentations a using (aug_id) where s.selection_id = $s group by all",
                        {"s": selection_id}).to_pylist()
        classes = json.loads(lake.row("datasets", exp["dataset_id"])["classes"])
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, key, names in ((axes[0], "kind", None), (axes[1], "label", classes)):
            cats = sorted({r[key] for r in pool})
            tot = [sum(r["n"] for r in pool if r[key] == c) for c in cats]
            kep = [sum(r["n"] for r in kept if r[key] == c) for c in cats]
            xs = np.arange(len(cats))
            ax.bar(xs, tot, color="lightgray", label="pool")
            ax.bar(xs, kep, color="tab:blue", label="kept by the band")
            ax.set_xticks(xs, [names[c] if names else c for c in cats], rotation=45, ha="right")
            ax.set_title(f"band composition by {'kind' if key == 'kind' else 'class'}")
            ax.legend()
        out["band"] = _png(fig)

    # 4. gallery: easiest and hardest augmentations
    from pipeline.lake import decode_images

    g = lake.sql("(select a.aug_id, a.kind, a.image, a.height, a.width, a.channels, s.avh "
                 " from scores s join augmentations a on a.aug_id = s.item_id "
                 " where s.scoring_run_id = $r and s.avh is not null order by s.avh limit 8) "
                 "union all "
                 "(select a.aug_id, a.kind, a.image, a.height, a.width, a.channels, s.avh "
                 " from scores s join augmentations a on a.aug_id = s.item_id "
                 " where s.scoring_run_id = $r and s.avh is not null "
                 " order by s.avh desc limit 8)", {"r": exp["scoring_run_id"]})
    if g.num_rows:
        imgs = decode_images(g, "aug_id")
        fig, axes = plt.subplots(2, 8, figsize=(12, 3.6))
        for i, ax in enumerate(axes.flat[: g.num_rows]):
            im = imgs[i]
            ax.imshow(im[..., 0] if im.shape[2] == 1 else im, cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{g['kind'][i].as_py()}\nAVH {g['avh'][i].as_py():.3f}", fontsize=8)
            ax.axis("off")
        fig.suptitle("Easiest (top) and hardest (bottom) augmentations by AVH")
        out["gallery"] = _png(fig)

    # 5. dynamics: test AVH and feature norm per epoch (method means)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, ax, label in (("test_avh", axes[0], "mean test AVH"),
                           ("feature_norm_mean", axes[1], "mean test feature norm")):
        for m in methods:
            curves = [sorted(by_run.get(r["run_id"], []), key=lambda h: h["epoch"])
                      for r in runs if r["method"] == m]
            curves = [c for c in curves if c]
            if curves:
                k = min(len(c) for c in curves)
                ax.plot(range(1, k + 1), np.mean([[h[key] for h in c[:k]] for c in curves], 0),
                        color=colors[m], lw=2, label=m)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("AVH plateaus early while the feature norm keeps growing")
    out["dynamics"] = _png(fig)
    return out


def _fmt_pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _verdict(methods: dict, comparisons: list[dict]) -> str:
    if "M2" not in methods:
        return "No M2 in this experiment."
    lines = []
    for base in ("M0", "M1"):
        c = next((c for c in comparisons if c["a"] == "M2" and c["b"] == base), None)
        if c is None or c["mean_diff"] is None:
            continue
        sig = c["p_value"] is not None and c["p_value"] < 0.05
        if c["mean_diff"] > 0 and sig:
            word = "beats"
        elif c["mean_diff"] > 0:
            word = "is ahead of, but not significantly (p >= 0.05),"
        elif sig:
            word = "is significantly worse than"
        else:
            word = "does not beat"
        p = "n/a" if c["p_value"] is None else f"{c['p_value']:.3g}"
        lines.append(f"M2 {word} {base}: {100 * c['mean_diff']:+.2f} points "
                     f"(paired over {c['n_pairs']} seeds, p = {p}).")
    return " ".join(lines)


def write_report(lake: Lake, experiment_id: str, *, command: str | None = None) -> Path:
    """Write report.md, report.html and report.json; returns the report directory (on a
    remote lake, the local copy of what was uploaded to ``lake.url("reports", experiment_id)``)."""
    exp = lake.row("experiments", experiment_id)
    cfg = json.loads(exp["config"])
    runs = lake.sql("select * from runs where experiment_id = $e and purpose = 'method' "
                    "order by method, rep", {"e": experiment_id}).to_pylist()
    run_ids = [r["run_id"] for r in runs]
    history = lake.sql("select * from history where run_id in (select unnest($ids)) "
                       "order by run_id, epoch", {"ids": run_ids}).to_pylist()
    base = lake.row("models", exp["baseline_model_id"])
    selections = json.loads(exp["selections"])
    search = json.loads(exp["band_search"] or "{}")
    order = [m["name"] for m in cfg["methods"]]

    methods = {}
    for name in order:
        rs = [r for r in runs if r["method"] == name]
        st = method_stats([r["test_acc"] for r in rs])
        st.update({
            "test_avh_mean": float(np.mean([r["test_avh"] for r in rs])) if rs else None,
            "train_acc_mean": float(np.mean([r["train_acc"] for r in rs])) if rs else None,
            "seconds_mean": float(np.mean([r["seconds"] for r in rs])) if rs else None,
            "n_train": rs[0]["n_train"] if rs else None, "loss": rs[0]["loss"] if rs else None,
            "selection_id": selections.get(name),
            "runs": [{k: r[k] for k in ("run_id", "rep", "seed", "test_acc", "test_avh",
                                        "train_acc", "val_acc", "seconds")} for r in rs]})
        methods[name] = st
    acc = {m: {r["rep"]: r["test_acc"] for r in runs if r["method"] == m} for m in order}
    pairs = []
    for b in ("M0", "M1"):
        for a in order:
            if b in acc and a != b and (b, a) not in pairs:
                pairs.append((a, b))
    comparisons = [{"a": a, "b": b, **paired(acc[a], acc[b])} for a, b in pairs]

    band_method = next((m for m in cfg["methods"] if m["selection"] == "band"), None)
    band_sel = selections.get(band_method["name"]) if band_method else None
    selection = {}
    if band_sel:
        rows = lake.sql("select a.kind, count(*) as n from selections s join augmentations a "
                        "using (aug_id) where s.selection_id = $s group by all order by all",
                        {"s": band_sel}).to_pylist()
        classes = json.loads(lake.row("datasets", exp["dataset_id"])["classes"])
        by_class = lake.sql("select label, count(*) as n from selections where selection_id = $s "
                            "group by all order by all", {"s": band_sel}).to_pylist()
        selection = {
            "method": band_method["name"], "score": band_method["score"],
            "band": list(search.get("chosen") or band_method["band"]),
            "size": sum(r["n"] for r in rows), "by_kind": {r["kind"]: r["n"] for r in rows},
            "by_class": {classes[r["label"]]: r["n"] for r in by_class},
            "selection_id": band_sel,
            "how_chosen": ("searched on the validation split: " + json.dumps(search["grid"])
                           if search else "fixed by the config (not tuned on any split)")}
    originals = lake.sql(
        "select coalesce(a.kind, 'original') as kind, count(*) as n, avg(s.avh) as mean_avh, "
        "avg(s.correct::int) as accuracy from scores s join scoring_runs r using (scoring_run_id) "
        "left join augmentations a on a.aug_id = s.item_id where r.model_id = $m and "
        "(r.split = 'train' or r.pool_id = $p) group by all order by mean_avh",
        {"m": exp["baseline_model_id"], "p": exp["pool_id"]}).to_pylist()

    drift = lake.sql("select d.round, d.selection_id, d.previous_selection_id, d.model_id, "
                     "d.jaccard, d.moved_in, d.moved_out, d.ks_avh, d.ks_pvalue, m.test_acc "
                     "from drift d left join models m using (model_id) "
                     "where d.experiment_id = $e order by d.round", {"e": experiment_id}
                     ).to_pylist()
    command = command or f"smartaug experiment --preset {cfg['preset']}"
    report = {
        "experiment_id": experiment_id, "config": cfg, "command": command,
        "git_sha": git_sha(), "created_at": str(exp["created_at"]),
        "ids": {"dataset_id": exp["dataset_id"], "baseline_model_id": exp["baseline_model_id"],
                "pool_id": exp["pool_id"], "scoring_run_id": exp["scoring_run_id"],
                "selections": selections},
        "baseline": {"model_id": base["model_id"], "test_acc": base["test_acc"],
                     "test_avh": base["test_avh"], "val_acc": base["val_acc"]},
        "methods": methods, "comparisons": comparisons, "selection": selection,
        "hardness_by_kind": originals, "band_search": search, "drift": drift,
        "verdict": _verdict(methods, comparisons)}

    plots = _plots(lake, exp, runs, history, band_sel)
    out = lake.local_path(f"reports/{experiment_id}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out.parent))
    tmp.chmod(0o755)
    (tmp / "plots").mkdir()
    for name, png in plots.items():
        (tmp / "plots" / f"{name}.png").write_bytes(png)
    (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str))
    md = _markdown(report, {k: f"plots/{k}.png" for k in plots})
    (tmp / "report.md").write_text(md)
    (tmp / "report.html").write_text(_html(report, plots))
    if out.exists():
        import shutil

        old = out.with_name(f".old-{experiment_id}-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    lake.upload(out, f"reports/{experiment_id}")
    return out


def _method_table(report: dict) -> list[list[str]]:
    rows = [["method", "loss", "train images", "test acc % (mean ± std)", "95 % CI", "n",
             "test AVH", "train acc %", "seconds"]]
    for name, m in report["methods"].items():
        rows.append([name, m["loss"] or "-", str(m["n_train"]),
                     f"{_fmt_pct(m['test_acc_mean'])} ± {_fmt_pct(m['test_acc_std'])}",
                     f"[{_fmt_pct(m['ci95'][0])}, {_fmt_pct(m['ci95'][1])}]", str(m["n"]),
                     "-" if m["test_avh_mean"] is None else f"{m['test_avh_mean']:.4f}",
                     _fmt_pct(m["train_acc_mean"]),
                     "-" if m["seconds_mean"] is None else f"{m['seconds_mean']:.1f}"])
    return rows


def _cmp_table(report: dict) -> list[list[str]]:
    rows = [["a", "b", "mean diff (points)", "p (paired t)", "pairs"]]
    for c in report["comparisons"]:
        rows.append([c["a"], c["b"], "-" if c["mean_diff"] is None else
                     f"{100 * c['mean_diff']:+.2f}",
                     "-" if c["p_value"] is None else f"{c['p_value']:.3g}", str(c["n_pairs"])])
    return rows


def _drift_table(report: dict) -> list[list[str]]:
    rows = [["round", "model", "test acc %", "jaccard", "moved in", "moved out", "KS (AVH)"]]
    for d in report["drift"]:
        rows.append([str(d["round"]), d["model_id"], _fmt_pct(d["test_acc"]),
                     f"{d['jaccard']:.3f}", str(d["moved_in"]), str(d["moved_out"]),
                     f"{d['ks_avh']:.3f}"])
    return rows


def _md_table(rows: list[list[str]]) -> str:
    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    return head + "".join("| " + " | ".join(r) + " |\n" for r in rows[1:])


def _markdown(r: dict, images: dict[str, str]) -> str:
    sel = r["selection"]
    parts = [
        f"# smartaug experiment {r['experiment_id']}\n",
        f"Reproduce: `{r['command']}` (git {r['git_sha']}).\n",
        f"**Verdict.** {r['verdict']}\n",
        f"Baseline ({r['config']['model']}): test accuracy {_fmt_pct(r['baseline']['test_acc'])} %,"
        f" test AVH {r['baseline']['test_avh']:.4f}.\n",
        "## Methods (test accuracy over seeds)\n", _md_table(_method_table(r)),
        "\n## Paired comparisons (same seeds)\n", _md_table(_cmp_table(r)),
    ]
    if sel:
        parts += [f"\n## Selection\n\nBand {sel['band']} of {sel['score']} "
                  f"({sel['size']} augmentations), {sel['how_chosen']}.\n\n"
                  f"By kind: {sel['by_kind']}\n\nBy class: {sel['by_class']}\n"]
    parts += ["\n## Hardness of originals and augmentations (baseline model)\n",
              _md_table([["kind", "n", "mean AVH", "accuracy"]] +
                        [[h["kind"], str(h["n"]), f"{h['mean_avh']:.4f}",
                          f"{h['accuracy']:.4f}"] for h in r["hardness_by_kind"]])]
    if r["drift"]:
        parts += ["\n## Drift over curriculum rounds\n", _md_table(_drift_table(r))]
    parts += [f"\n![{k}]({v})\n" for k, v in images.items()]
    parts += ["\n## Ids\n\n```json\n" + json.dumps(r["ids"], indent=2) + "\n```\n",
              "\n## Config\n\n```json\n" + json.dumps(r["config"], indent=2) + "\n```\n"]
    return "\n".join(parts)


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(r: dict, plots: dict[str, bytes]) -> str:
    imgs = "".join(f'<figure><img alt="{k}" src="data:image/png;base64,'
                   f'{base64.b64encode(v).decode()}"></figure>' for k, v in plots.items())
    sel = r["selection"]
    sel_html = (f"<h2>Selection</h2><p>Band {html.escape(str(sel['band']))} of "
                f"{html.escape(sel['score'])}: {sel['size']} augmentations, "
                f"{html.escape(sel['how_chosen'])}.</p><p>By kind: "
                f"{html.escape(json.dumps(sel['by_kind']))}</p>") if sel else ""
    drift_html = (f"<h2>Drift over curriculum rounds</h2>{_html_table(_drift_table(r))}"
                  if r["drift"] else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>smartaug experiment {r['experiment_id']}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th {{ background: #f0f0f0; }}
img {{ max-width: 100%; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; }}
.verdict {{ font-size: 1.15em; background: #eef5ff; padding: .8em; border-left: 4px solid #3a7; }}
</style></head><body>
<h1>smartaug experiment {r['experiment_id']}</h1>
<p>Reproduce: <code>{html.escape(r['command'])}</code> (git {html.escape(r['git_sha'])})</p>
<p class="verdict">{html.escape(r['verdict'])}</p>
<p>Baseline ({html.escape(r['config']['model'])}): test accuracy
{_fmt_pct(r['baseline']['test_acc'])} %, test AVH {r['baseline']['test_avh']:.4f}</p>
<h2>Methods (test accuracy over seeds)</h2>{_html_table(_method_table(r))}
<h2>Paired comparisons (same seeds)</h2>{_html_table(_cmp_table(r))}
{sel_html}
{drift_html}
<h2>Plots</h2>{imgs}
<h2>Ids</h2><pre>{html.escape(json.dumps(r['ids'], indent=2))}</pre>
<h2>Config</h2><pre>{html.escape(json.dumps(r['config'], indent=2))}</pre>
</body></html>
"""
