"""Step ``retrain``: every method's selection, then one cell of the grid (a method at a seed)
-> a runs row and its history. No tuning on test: the optional band search compares bands by
validation accuracy; only the chosen band is evaluated on test, and the report says so."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from smartaug.config import ExperimentConfig, MethodSpec, TrainConfig, hardness_band
from smartaug.core.stacked import stackable, train_stacked
from smartaug.core.train import build_model, train
from smartaug.errors import InputError
from smartaug.lake import Lake, content_id, decode_images
from smartaug.lake.readers import (
    PIXEL_COLUMNS,
    RECIPE_COLUMNS,
    PoolPixels,
    checkpoint_path,
    classes,
    read_split,
)
from smartaug.models import load_checkpoint
from smartaug.steps import select as S

__all__ = ["spread", "TrainingData", "band_search", "choose", "select_methods", "stack_refusal",
           "train_cell", "train_cells", "with_band"]

Log = Callable[[str], None] | None


class TrainingData:
    """The originals of every split and the pool's augmentations, kept once in memory: a
    materialised pool's pixels, or a recipe pool's recipes (a selection's pixels are then
    regenerated when first asked for, and the last one kept)."""

    def __init__(self, lake: Lake, dataset_id: str, pool_id: str):
        self.train = read_split(lake, dataset_id, "train")
        self.val = read_split(lake, dataset_id, "val")
        self.test = read_split(lake, dataset_id, "test")
        self.pixels = PoolPixels(lake, pool_id)
        columns = ["label", *PIXEL_COLUMNS] if self.pixels.materialized else \
            ["label", *RECIPE_COLUMNS]
        pool = lake.read("augmentations", pool_id, columns=columns)
        self.aug_images = np.array(decode_images(pool, "aug_id")) if self.pixels.materialized \
            else None
        self.recipes = None if self.pixels.materialized else pool
        self.aug_labels = pool["label"].to_numpy()
        self.aug_index = {a: i for i, a in enumerate(pool["aug_id"].to_pylist())}
        self._last: tuple[str, np.ndarray] | None = None

    def _images(self, selection_id: str, rows: np.ndarray) -> np.ndarray:
        if self.aug_images is not None:
            return self.aug_images[rows]
        if self._last is None or self._last[0] != selection_id:
            self._last = (selection_id, self.pixels.recipes(self.recipes.take(rows)))
        return self._last[1]

    def pool_images(self) -> np.ndarray:
        """Every augmentation of the pool, in the pool's order (a recipe pool's regenerated
        once and kept)."""
        if self.aug_images is not None:
            return self.aug_images
        if self._last is None or self._last[0] != "*":
            self._last = ("*", self.pixels.recipes(self.recipes))
        return self._last[1]

    def with_pool(self) -> tuple[np.ndarray, np.ndarray]:
        """The originals, then every augmentation of the pool: a curriculum's training set."""
        return (np.concatenate([self.train.images, self.pool_images()]),
                np.concatenate([self.train.labels, self.aug_labels]))

    def pool_scores(self, lake: Lake, scoring_run_id: str, score: str) -> np.ndarray:
        """``score`` of every pool item in the pool's order, as the scoring run gives it (NaN
        where it has none)."""
        t = lake.read("scores", scoring_run_id, columns=["item_id", score])
        out = np.full(len(self.aug_labels), np.nan)
        rows = np.fromiter((self.aug_index[a] for a in t["item_id"].to_pylist()), np.int64,
                           count=t.num_rows)
        out[rows] = t[score].to_numpy(zero_copy_only=False)
        return out

    def with_selection(self, lake: Lake, selection_id: str | None):
        """Originals + the selection's augmentations (in aug_id order): images, labels and
        the number of augmentations."""
        if selection_id is None:
            return self.train.images, self.train.labels, 0
        ids = sorted(S.read_selection(lake, selection_id)["aug_id"].to_pylist())
        rows = np.asarray([self.aug_index[a] for a in ids], dtype=np.int64)
        x = np.concatenate([self.train.images, self._images(selection_id, rows)])
        y = np.concatenate([self.train.labels, self.aug_labels[rows]])
        return x, y, len(rows)


@functools.lru_cache(maxsize=4)
def _training_data(root: str, dataset_id: str, pool_id: str) -> TrainingData:
    return TrainingData(Lake(root), dataset_id, pool_id)


def training_data(lake: Lake, dataset_id: str, pool_id: str) -> TrainingData:
    """``TrainingData`` read once per process for the cells of one grid."""
    return _training_data(lake.url(), dataset_id, pool_id)


def _cell_id(cfg: ExperimentConfig, *, experiment_id: str, method: MethodSpec,
             selection_id: str | None, rep: int, purpose: str, curriculum=None,
             stacked: bool = False) -> tuple[str, TrainConfig]:
    """A cell's run_id and its training config (the method's loss, seed ``cfg.seed + rep``).
    ``stacked``: trained with other seeds as one model (``train_cells``), a run of its own."""
    m = method
    tcfg = replace(cfg.retrain, loss=m.loss, seed=cfg.seed + rep)
    if tcfg.augment == "online" and selection_id is not None:
        raise InputError(f"method {m.name} has a selection, but the retraining is online "
                         f"(policy {tcfg.policy}): an online training draws its augmentations "
                         f"every epoch from the originals; give it no selection (method none) "
                         f"or retrain with augment = 'static'")
    run_id = content_id("run", {"experiment_id": experiment_id, "method": m.to_dict(),
                                "rep": rep, "selection_id": selection_id, "purpose": purpose,
                                "train": tcfg.to_dict(), "init": cfg.init,
                                **({"curriculum": curriculum.identity()} if curriculum else {}),
                                **({"trainer": "stacked"} if stacked else {})})
    return run_id, tcfg


def _fresh_model(lake: Lake, cfg: ExperimentConfig, baseline_model_id: str, seed: int):
    """The model a cell starts from: a fresh copy of the registered baseline (``init =
    baseline``) or ``cfg.model`` drawn from ``seed`` at the baseline dataset's shapes."""
    if cfg.init == "baseline":
        return load_checkpoint(checkpoint_path(lake, baseline_model_id),
                               arch=lake.row("models", baseline_model_id)["arch"],
                               trust=cfg.model)
    return build_model(cfg.model, *_shapes(lake, baseline_model_id), seed=seed)


_SHAPES: dict[tuple[str, str], tuple[int, int, int]] = {}


def _shapes(lake: Lake, baseline_model_id: str) -> tuple[int, int, int]:
    """(classes, channels, height) of the baseline's dataset, read once a process for a grid
    of cells (ids are content hashes: a model id always names the same dataset)."""
    key = (lake.url(), baseline_model_id)
    if key not in _SHAPES:
        meta = lake.row("datasets", lake.row("models", baseline_model_id)["dataset_id"])
        _SHAPES[key] = (len(classes(lake, meta["dataset_id"])), meta["channels"],
                        meta["height"])
    return _SHAPES[key]


def curves_on(data) -> bool | frozenset[str]:
    """What a method's training evaluates when (``train``'s ``eval_last``): with a validation
    split, the validation split every epoch (the report's curves) and the test split once, at
    the end (what is reported; a tenth of the evaluations); without one, the test split every
    epoch."""
    return frozenset({"test"}) if len(data.val) else False


def _eval_sets(data: TrainingData) -> dict[str, tuple]:
    evals = {"test": (data.test.images, data.test.labels)}
    if len(data.val):
        evals = {"val": (data.val.images, data.val.labels), **evals}
    return evals


def _curve_split(hist: list[dict]) -> str:
    return "val" if hist and all("val_feature_norm" in h for h in hist) else "test"


def _record(lake: Lake, run_id: str, *, experiment_id: str, method: MethodSpec, rep: int,
            tcfg: TrainConfig, init: str, selection_id: str | None, hist: list[dict],
            seconds: float, n_train: int, n_aug: int, purpose: str) -> None:
    """A trained cell's history rows, then its runs row (the row says it is done)."""
    m = method
    last = hist[-1] if hist else {}
    counts = {k: sum(h[k] for h in hist) for k in ("samples", "augmented", "steps")}
    lake.write("history", run_id, {
        "run_id": [run_id] * len(hist), "epoch": [h["epoch"] for h in hist],
        "train_loss": [h["train_loss"] for h in hist], "train_acc": [h["train_acc"] for h in hist],
        **{k: [h.get(k) for h in hist] for k in ("val_acc", "val_avh", "test_acc", "test_avh")},
        # the curves' split: validation when it was evaluated every epoch, else test
        "feature_norm_mean": [h.get(f"{_curve_split(hist)}_feature_norm") for h in hist],
        "weight_norm_mean": [h["weight_norm_mean"] for h in hist],
        "seconds": [h["seconds"] for h in hist],
        **{k: [h[k] for h in hist] for k in ("samples", "augmented", "steps")}})
    lake.write("runs", run_id, {
        "run_id": [run_id], "experiment_id": [experiment_id], "method": [m.name], "rep": [rep],
        "seed": [tcfg.seed], "selection_id": [selection_id], "n_train": [n_train],
        "n_augmented": [n_aug], "loss": [m.loss.label()], "lam": [m.loss.lam],
        "epochs": [tcfg.epochs], "init": [init],
        **{k: [last.get(k)] for k in ("train_acc", "val_acc", "test_acc", "test_avh")},
        "seconds": [seconds], "purpose": [purpose], "items_seen": [counts["augmented"]],
        "backward_passes": [counts["samples"]], "gradient_steps": [counts["steps"]],
        "n_distinct": [last.get("distinct", 0)]})


def train_cell(lake: Lake, cfg: ExperimentConfig, *, experiment_id: str, data: TrainingData,
               method: MethodSpec, selection_id: str | None, rep: int, baseline_model_id: str,
               purpose: str = "method", log: Log = print,
               eval_last: bool | frozenset[str] = False,
               curriculum=None) -> str:
    """Train ``method`` at seed ``cfg.seed + rep`` on originals + its selection and record
    the run and its history; returns run_id (found, not retrained, when it exists).
    ``experiment_id``: the experiment (or study protocol) the run belongs to; ``data``: the
    originals and the pool (``training_data``); ``baseline_model_id``: the model fine-tuned
    (``cfg.init = "baseline"``) or whose dataset gives the shapes; ``purpose``: method,
    band-search or study; ``eval_last``: evaluate after the last epoch only;
    ``curriculum`` (``smartaug.steps.curriculum.CellCurriculum``): train on the originals and
    the whole pool, each epoch's rows chosen by it (``selection_id`` is then None).

    The run records ``items_seen`` (augmentations through a backward pass, over the whole
    training), ``n_distinct`` (distinct augmentations among them), ``backward_passes`` (all
    items through one) and ``gradient_steps``."""
    m = method
    run_id, tcfg = _cell_id(cfg, experiment_id=experiment_id, method=m,
                            selection_id=selection_id, rep=rep, purpose=purpose,
                            curriculum=curriculum)
    if lake.has("runs", run_id):
        return run_id
    if curriculum is not None:
        x, y = data.with_pool()
        n_aug = curriculum.n
    else:
        x, y, n_aug = data.with_selection(lake, selection_id)
    if tcfg.augment == "online" and tcfg.policy != "none":  # fresh ones, every epoch
        n_aug = tcfg.augmentations or len(y)
    model = _fresh_model(lake, cfg, baseline_model_id, tcfg.seed)
    if log:
        log(f"{purpose} {m.name} rep {rep} (seed {tcfg.seed}): {len(y)} images "
            f"({n_aug} augmentations), loss {m.loss.label()}")
    t0 = time.perf_counter()
    hist = train(model, x, y, tcfg, eval_sets=_eval_sets(data), log=log, eval_last=eval_last,
                 n_originals=len(data.train),
                 curriculum=curriculum.build(run_id, tcfg.seed) if curriculum else None)
    seconds = time.perf_counter() - t0
    if curriculum is not None:  # its re-scorings, now that the training has succeeded
        curriculum.commit(str(next(model.parameters()).device))
    n_train = len(data.train) + n_aug if curriculum is not None else len(y) + (
        n_aug if tcfg.augment == "online" else 0)
    _record(lake, run_id, experiment_id=experiment_id, method=m, rep=rep, tcfg=tcfg,
            init=cfg.init, selection_id=selection_id, hist=hist, seconds=seconds,
            n_train=n_train, n_aug=n_aug, purpose=purpose)
    return run_id


def spread(members: list, stack: int) -> list[list]:
    """``members`` (of one training-set size) in groups of at most ``stack``, as even as the
    count allows (7 at 4: 4 and 3, never 4 and 3 and 0)."""
    k = -(-len(members) // max(1, stack))  # groups needed; members spread evenly over them
    return [members[j::k] for j in range(k)]


def stack_refusal(lake: Lake, cfg: ExperimentConfig, baseline_model_id: str) -> str | None:
    """Why the cells of ``cfg``'s protocol cannot be trained as one model (``train_cells``),
    or None when they can."""
    model = _fresh_model(lake, cfg, baseline_model_id, cfg.seed)
    why = stackable(model, cfg.retrain)
    return f"model {cfg.model}: {why}" if why else None


def train_cells(lake: Lake, cfg: ExperimentConfig, *, experiment_id: str, data: TrainingData,
                cells: list[tuple[MethodSpec, str | None, int]], baseline_model_id: str,
                purpose: str = "study", log: Log = print,
                eval_last: bool | frozenset[str] = False) -> list[str]:
    """Train ``cells`` ((method, selection_id, rep) of equal training-set sizes) as one model
    (``smartaug.core.stacked``), each with its own seed, batch order, selection and loss, and
    record each one's run and history as ``train_cell`` does; returns their run_ids in order
    (a cell already in the lake is found and left out of the stack)."""
    ids = [_cell_id(cfg, experiment_id=experiment_id, method=m, selection_id=sel, rep=rep,
                    purpose=purpose, stacked=True) for m, sel, rep in cells]
    todo = [i for i, (run_id, _) in enumerate(ids) if not lake.has("runs", run_id)]
    if not todo:
        return [run_id for run_id, _ in ids]
    sets = [data.with_selection(lake, cells[i][1]) for i in todo]
    models = [_fresh_model(lake, cfg, baseline_model_id, ids[i][1].seed) for i in todo]
    if log:
        log(f"{purpose}: {len(todo)} training{'s' if len(todo) != 1 else ''} as one model ("
            + ", ".join(f"{cells[i][0].name} rep {cells[i][2]}" for i in todo)
            + f"): {len(sets[0][1])} images each")
    t0 = time.perf_counter()
    hists = train_stacked(models, [(x, y) for x, y, _ in sets], [ids[i][1] for i in todo],
                          eval_sets=_eval_sets(data), log=log, eval_last=eval_last,
                          n_originals=len(data.train))
    seconds = (time.perf_counter() - t0) / len(todo)
    for i, (_, y, n_aug), hist in zip(todo, sets, hists, strict=True):
        m, sel, rep = cells[i]
        run_id, tcfg = ids[i]
        _record(lake, run_id, experiment_id=experiment_id, method=m, rep=rep, tcfg=tcfg,
                init=cfg.init, selection_id=sel, hist=hist, seconds=seconds, n_train=len(y),
                n_aug=n_aug, purpose=purpose)
    return [run_id for run_id, _ in ids]


def _select(lake: Lake, cfg: ExperimentConfig, m: MethodSpec, scoring_run_id: str,
            done: dict[str, str | None]) -> str | None:
    if m.selection == "none":
        return None
    if m.selection == "all":
        return S.all_items(lake, scoring_run_id)
    if m.selection == "band":
        return S.band(lake, scoring_run_id, m.band[0], m.band[1], score=m.score,
                      per_class=m.per_class)
    return S.random_subset(lake, scoring_run_id, matched_to=done[m.matched_to], seed=cfg.seed)


def select_methods(lake: Lake, cfg: ExperimentConfig, scoring_run_id: str
                   ) -> dict[str, str | None]:
    """One selection per method (a matched random subset after the method it matches)."""
    done: dict[str, str | None] = {}
    pending = list(cfg.methods)
    while pending:
        m = next(m for m in pending if m.matched_to is None or m.matched_to in done)
        done[m.name] = _select(lake, cfg, m, scoring_run_id, done)
        pending.remove(m)
    return {m.name: done[m.name] for m in cfg.methods}


def band_search(lake: Lake, cfg: ExperimentConfig, experiment_id: str, data: TrainingData,
                scoring_run_id: str, baseline_model_id: str, log: Log = print) -> dict:
    """Train the first band method once per grid band; pick the best validation accuracy."""
    m = next(m for m in cfg.methods if m.selection == "band")
    results = []
    for lo, hi in cfg.band_grid:
        try:
            sel = S.band(lake, scoring_run_id, lo, hi, score=m.score, per_class=m.per_class)
        except S.SelectionError as e:
            results.append({"band": [lo, hi], "val_acc": None, "error": str(e)})
            continue
        run_id = train_cell(lake, cfg, experiment_id=experiment_id, data=data,
                            method=replace(m, band=(lo, hi)), selection_id=sel, rep=0,
                            baseline_model_id=baseline_model_id, purpose="band-search", log=log)
        results.append({"band": [lo, hi], "val_acc": lake.row("runs", run_id)["val_acc"],
                        "run_id": run_id})
    scored = [r for r in results if r["val_acc"] is not None]
    if not scored:
        raise S.SelectionError("every band of the search grid selected nothing")
    best = max(scored, key=lambda r: r["val_acc"])
    return {"method": m.name, "metric": "validation accuracy after training on the train split",
            "grid": results, "chosen": best["band"]}


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


def choose(lake: Lake, cfg: ExperimentConfig, experiment_id: str, dataset_id: str,
           pool_id: str, scoring_run_id: str, baseline_model_id: str, log: Log = print) -> dict:
    """The band search on validation (when the config has a grid), then one selection per
    method: ``{"selections": {method: selection_id}, "search": {...}, "band": chosen}``."""
    search = {}
    if cfg.band_grid:
        data = training_data(lake, dataset_id, pool_id)
        search = band_search(lake, cfg, experiment_id, data, scoring_run_id, baseline_model_id,
                             log)
        cfg = with_band(cfg, tuple(search["chosen"]))
    return {"selections": select_methods(lake, cfg, scoring_run_id), "search": search,
            "band": search.get("chosen")}
