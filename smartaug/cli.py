"""The ``smartaug`` command line: thin wrappers over the steps, each printing its id last.

Commands import their step inside the function body: those imports pull in torch, and
``smartaug --help``, ``sql`` and ``views`` start without it.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from smartaug.config import SCORE_COLUMNS
from smartaug.errors import UserError

app = typer.Typer(
    name="smartaug",
    help="AVH-guided augmentation selection: augment, score by Angular Visual Hardness, "
    "select bands with DuckDB, retrain, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"smartaug {version('smartaug')}")
        except PackageNotFoundError:  # run from a checkout that is not installed
            print("smartaug (not installed)")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_version, is_eager=True,
        help="Print smartaug's version and exit.")] = False) -> None:
    """AVH-guided augmentation selection: augment, score by Angular Visual Hardness, select
    bands with DuckDB, retrain, report."""
# markup off: every value shown (a class name, a path, a query's cell) is printed as it is,
# never read as rich markup
err = Console(stderr=True, soft_wrap=True, markup=False)
out = Console(markup=False)

DatasetOpt = Annotated[str, typer.Option(
    "--dataset", help="fashion-mnist | mnist | cifar10 | imagefolder:PATH")]
DataDirOpt = Annotated[str | None, typer.Option(
    "--data", help="Directory with the dataset's files (default: SMARTAUG_DATA, the Debian "
    "package's /usr/share/datasets/<name>, else a torchvision download).")]
PerClassTrainOpt = Annotated[int | None, typer.Option(
    "--per-class-train", min=1, help="Train images per class (default: all).")]
PerClassTestOpt = Annotated[int | None, typer.Option(
    "--per-class-test", min=1, help="Test images per class (default: all).")]
GrayOpt = Annotated[bool, typer.Option("--grayscale/--no-grayscale",
                                        help="Convert RGB images to 1 channel.")]
# the overrides of a preset or file (experiment, study): unset = the preset's value
DatasetOverride = Annotated[str | None, typer.Option(
    "--dataset", help="fashion-mnist | mnist | cifar10 | imagefolder:PATH")]
GrayOverride = Annotated[bool | None, typer.Option(
    "--grayscale/--no-grayscale", help="Convert RGB images to 1 channel.")]
SizeOpt = Annotated[int | None, typer.Option(
    "--image-size", min=8, max=1024, help="Resize to N x N pixels (bilinear, antialiased).")]
ValOpt = Annotated[float, typer.Option(
    "--val-fraction", help="Fraction of each train class held out for validation.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Root seed of subsets and training.")]
MATERIALIZE_HELP = ("How the pool is stored: always (every augmentation's pixels), never "
                    "(recipes only, < 200 bytes an augmentation; pixels regenerated bit for bit "
                    "when read), auto (pixels up to 256 MiB of them, else recipes).")
MaterializeOverride = Annotated[str | None, typer.Option("--materialize", help=MATERIALIZE_HELP)]
MODEL_HELP = ("lenet5 | lenet5-wide | resnet | torchvision:NAME (e.g. torchvision:resnet18) | "
              "timm:NAME | package.module:factory (your callable returning an nn.Module)")


# the options every run of the protocol takes (experiment, study), defined once; unset = the
# preset's (or file's) value. ``protocol_options`` adds them to a command.
PROTOCOL_OPTIONS: dict[str, object] = {
    "preset": Annotated[str | None, typer.Option(
        help="quick (minutes on 2 cores; the default) | paper (the paper's protocol) | gpu "
        "(ResNet on CIFAR-10, one GPU): the preset to start from")],
    "config": Annotated[str | None, typer.Option(
        "--config", help="An experiment or study file (TOML, YAML or JSON) describing the run "
        "in full (`smartaug config show quick` prints an experiment file to start from; "
        "docs/studies.md the study file). Options given here apply on top of it.")],
    "dataset": DatasetOverride,
    "data": DataDirOpt,
    "grayscale": GrayOverride,
    "image_size": SizeOpt,
    "per_class_train": PerClassTrainOpt,
    "per_class_test": PerClassTestOpt,
    "epochs": Annotated[int | None, typer.Option(
        min=1, help="Epochs of the baseline and of every training.")],
    "seeds": Annotated[int | None, typer.Option(
        min=1, help="Seeds of every method (experiment) or cell (study, >= 2: paired): "
        "training r uses seed + r.")],
    "model": Annotated[str | None, typer.Option(help=MODEL_HELP)],
    "device": Annotated[str | None, typer.Option(help="auto | cpu | cuda")],
    "materialize": MaterializeOverride,
    "quiet": Annotated[bool, typer.Option(
        "--quiet", "-q", help="Print only the result's location (no progress, no verdict).")],
}


class Protocol:
    """What ``PROTOCOL_OPTIONS`` gave a command: the preset or file, and the overrides."""

    def __init__(self, preset: str | None, config: str | None, quiet: bool | None = None,
                 **overrides):
        self.quiet = bool(quiet)
        self.log = None if self.quiet else err.print
        if config is not None and preset is not None:
            _fail("give --preset or --config, not both (a file starts from a preset with "
                  "preset = \"quick\")")
        self.preset = None if config is not None else preset or "quick"
        self.config, self.overrides = config, overrides

    def load(self, kind: str, **more):
        """The experiment's or study's config (``kind``), the overrides (and ``more``) on top."""
        from smartaug import config as C

        if self.config is not None:
            from smartaug import experiment_file

            base = _steps(getattr(experiment_file, f"load_{kind}"), self.config)
        else:
            base = _steps(C.preset if kind == "experiment" else C.study_preset, self.preset)
        apply = C.apply_overrides if kind == "experiment" else C.apply_study_overrides
        overrides = {("reps" if k == "seeds" and kind == "experiment" else k): v
                     for k, v in {**self.overrides, **more}.items()}
        try:
            cfg = apply(base, **overrides)
        except UserError as e:
            _fail(e)
        from smartaug.core.preflight import preflight

        _steps(preflight, cfg)  # every value the run needs, before the lake is touched
        return cfg

    def command(self, kind: str) -> str:
        """How the run was asked for: the command line, or its preset or file."""
        if sys.argv and sys.argv[0].endswith("smartaug"):
            return " ".join(["smartaug", *sys.argv[1:]])
        return (f"smartaug {kind} --config {self.config}" if self.config
                else f"smartaug {kind} --preset {self.preset}")


def protocol_options(fn):
    """Give command ``fn`` the ``PROTOCOL_OPTIONS`` first; it receives them as one
    ``protocol: Protocol`` argument."""
    import functools
    import inspect

    sig = inspect.signature(fn, eval_str=True)
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                annotation=kind) for name, kind in PROTOCOL_OPTIONS.items()]
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values()
           if p.name != "protocol"]

    @functools.wraps(fn)
    def command(**kwargs):
        shared_values = {name: kwargs.pop(name) for name in PROTOCOL_OPTIONS}
        return fn(protocol=Protocol(**shared_values), **kwargs)

    command.__signature__ = sig.replace(parameters=[*shared, *own])
    command.__annotations__ = {p.name: p.annotation for p in (*shared, *own)}
    return command


def _error_line(message: str) -> Text:
    """``error: <message>``, the message as plain text."""
    return Text("error:", style="bold red") + Text(" " + message)


def _fail(e: Exception | str) -> None:
    err.print(_error_line(str(e)), highlight=False)
    raise typer.Exit(code=2)


def _load(dataset, data, per_class_train, per_class_test, grayscale, image_size, val_fraction,
          seed):
    from smartaug.core.datasets import DatasetError, load_dataset

    try:
        return load_dataset(dataset, root=data, per_class_train=per_class_train,
                            per_class_test=per_class_test, grayscale=grayscale,
                            image_size=image_size, val_fraction=val_fraction, seed=seed)
    except DatasetError as e:
        _fail(e)


@app.command()
def describe(
    dataset: DatasetOpt = "fashion-mnist",
    data: DataDirOpt = None,
    per_class_train: PerClassTrainOpt = None,
    per_class_test: PerClassTestOpt = None,
    grayscale: GrayOpt = False,
    image_size: SizeOpt = None,
    val_fraction: ValOpt = 0.0,
    seed: SeedOpt = 0,
) -> None:
    """Load a dataset and print its classes and split sizes."""
    ds = _load(dataset, data, per_class_train, per_class_test, grayscale, image_size,
               val_fraction, seed)
    h, w, c = ds.image_shape
    table = Table(title=f"{ds.name}: {ds.num_classes} classes, images {h}x{w}x{c} uint8")
    table.add_column("class")
    for split in ("train", "val", "test"):
        table.add_column(split, justify="right")
    counts = {k: s.class_counts(ds.num_classes) for k, s in ds.splits().items()}
    for i, name in enumerate(ds.classes):
        table.add_row(name, *(str(counts[k][i]) for k in ("train", "val", "test")))
    table.add_row("total", *(str(len(s)) for s in ds.splits().values()), style="bold")
    out.print(table)


@app.command("kinds")
def list_kinds(
    space: Annotated[str | None, typer.Option(
        "--space", help="Also list the kinds this space file defines.")] = None,
) -> None:
    """List the built-in augmentation kinds (usable by name: --kinds rotate,crop,cutout) with
    their albumentations transform and parameters."""
    import json as json_

    from smartaug.config import AugmentConfig
    from smartaug.core.augment import BUILTIN, kind_specs, load_space

    names, defined = _steps(load_space, space) if space else ((), ())
    cfg = AugmentConfig(kinds=tuple(BUILTIN) + tuple(n for n in names if n not in BUILTIN),
                        space=defined)
    specs = kind_specs(cfg, 28, 28)
    table = Table(title="augmentation kinds (parameters as albumentations serialises them; "
                        "sizes for a 28x28 image)")
    for col in ("kind", "what", "transform and parameters"):
        table.add_column(col, overflow="fold")
    for name in cfg.kinds:
        spec = specs[name]
        t = dict(spec.get("transform", spec))
        cls = t.pop("__class_fullname__", "built-in")
        params = ", ".join(f"{k}={json_.dumps(v)}" for k, v in sorted(t.items()) if k != "builtin")
        what = BUILTIN[name][0] if name in BUILTIN else f"defined in {space}"
        table.add_row(name, what, f"{cls}({params})")
    out.print(table)


@app.command("models")
def list_models() -> None:
    """List the registered models with their feature size and parameter count."""
    import smartaug.models

    table = Table(title="models (images in [0, 1], [N, C, H, W])")
    for col in ("name", "input", "feature dim", "parameters"):
        table.add_column(col)
    shapes = {"lenet5": (1, 28), "lenet5-wide": (1, 28), "resnet": (3, 32)}
    for name in smartaug.models.MODELS:
        cin, size = shapes.get(name, (1, 28))
        m = smartaug.models.make_model(name, 10, cin, size)
        table.add_row(name, f"{cin}x{size}x{size}", str(m.head.in_features),
                      f"{sum(p.numel() for p in m.parameters()):,}")
    out.print(table)


@app.command()
def demo(
    dataset: DatasetOpt = "fashion-mnist",
    data: DataDirOpt = None,
    per_class_train: PerClassTrainOpt = 1000,
    per_class_test: PerClassTestOpt = None,
    grayscale: GrayOpt = False,
    image_size: SizeOpt = None,
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "lenet5",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 3,
    seed: SeedOpt = 0,
) -> None:
    """Train a baseline and show that AVH ranks its test errors (the pipeline's first half).

    Prints one line per epoch, then per-class-outcome hardness on the test split.
    """
    from smartaug.config import TrainConfig
    from smartaug.steps.demo import demo as run_demo

    ds = _load(dataset, data, per_class_train, per_class_test, grayscale, image_size, 0.0, seed)
    err.print(f"{ds.name}: train {len(ds.train)}, test {len(ds.test)}, "
              f"{ds.num_classes} classes, {ds.image_shape}")
    cfg = _steps(TrainConfig, epochs=epochs, seed=seed)
    result = _steps(run_demo, ds, model=model, cfg=cfg, log=err.print)
    table = Table(title=f"test hardness of the {model} baseline ({epochs} epochs, seed {seed})")
    for col in ("score", "correct (mean)", "wrong (mean)", "AUROC wrong vs correct"):
        table.add_column(col, justify="right")
    for k, r in result["scores"].items():
        table.add_row(k, _num(r["correct_mean"]), _num(r["wrong_mean"]), _num(r["auroc"], 3))
    out.print(table)
    out.print(f"test accuracy {result['accuracy']:.4f}, mean AVH {result['mean_avh']:.4f} "
              f"(AUROC > 0.5: a higher score marks the errors)")


def _num(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


StorageOpt = Annotated[str | None, typer.Option(
    "--storage", help="Lake root: a directory or an fsspec URL such as s3://bucket/lake "
    "(default: SMARTAUG_STORAGE, else ./storage).")]
TrustOpt = Annotated[list[str] | None, typer.Option(
    "--trust-model", help="A model of yours (package.module:factory) whose checkpoints this "
    "run may rebuild, importing its code; repeatable (also SMARTAUG_TRUST_MODELS). A model "
    "name read from the lake alone is never imported.")]


def _lake(storage, *, create: bool = False):
    """The lake at ``storage``; only the commands that make one (``create``: ingest,
    experiment, study) create it where there is none."""
    from smartaug.lake import Lake

    return _steps(Lake, storage, create=create)


def _steps(fn, *args, **kwargs):
    """Run a library step, turning the errors a user can fix (``smartaug.errors.UserError``, a
    full disk) into `error: ...` + exit code 2; anything else is a bug and keeps its traceback."""
    from smartaug.errors import is_user_error, message

    try:
        return fn(*args, **kwargs)
    except Exception as e:
        if not is_user_error(e):
            raise  # a bug: its traceback, not an `error:` line
        _fail(message(e))


class _Bar:
    """A rich progress bar on stderr; ``bar(n)`` advances it by n items."""

    def __init__(self, label: str, total: int | None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.p = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=err, transient=False)
        self.task = self.p.add_task(label, total=total)

    def __enter__(self):
        self.p.start()
        return self

    def __call__(self, n: int) -> None:
        self.p.advance(self.task, n)

    def __exit__(self, *exc):
        self.p.stop()


@app.command()
def ingest(
    dataset: DatasetOpt = "fashion-mnist",
    data: DataDirOpt = None,
    grayscale: GrayOpt = False,
    image_size: SizeOpt = None,
    per_class_train: PerClassTrainOpt = None,
    per_class_test: PerClassTestOpt = None,
    val_fraction: ValOpt = 0.0,
    seed: SeedOpt = 0,
    storage: StorageOpt = None,
) -> None:
    """Load a dataset into the samples table. Prints the dataset_id last."""
    from smartaug.config import DataConfig
    from smartaug.steps.ingest import ingest as _ingest

    cfg = DataConfig(dataset=dataset, root=data, per_class_train=per_class_train,
                     per_class_test=per_class_test, grayscale=grayscale, image_size=image_size,
                     val_fraction=val_fraction, seed=seed)
    lake = _lake(storage, create=True)
    dataset_id = _steps(_ingest, lake, cfg)
    meta = lake.row("datasets", dataset_id)
    err.print(f"{meta['name']}: train {meta['n_train']}, val {meta['n_val']}, test "
              f"{meta['n_test']}, images {meta['height']}x{meta['width']}x{meta['channels']}")
    print(dataset_id)


@app.command()
def baseline(
    dataset_id: Annotated[str, typer.Option("--dataset-id", help="From `smartaug ingest`.")],
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "lenet5",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per step.")] = 128,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    seed: SeedOpt = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    weights: Annotated[str | None, typer.Option(
        "--weights", help="Start from this local state dict (e.g. a pretrained backbone), "
        "read with weights_only=True.")] = None,
    storage: StorageOpt = None,
) -> None:
    """Train a baseline model on the dataset's train split (plain cross-entropy) and register
    it in the models table. Prints the model_id last."""
    from smartaug.config import TrainConfig
    from smartaug.steps.baseline import train_baseline

    cfg = _steps(TrainConfig, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                 device=device)
    lake = _lake(storage)
    model_id = _steps(train_baseline, lake, dataset_id, arch=model, cfg=cfg, log=err.print,
                      weights=weights)
    row = lake.row("models", model_id)
    err.print(f"{model}: test accuracy {row['test_acc']:.4f}, test AVH {row['test_avh']:.4f}, "
              f"checkpoint {lake.url(row['checkpoint'])}")
    print(model_id)


@app.command()
def augment(
    dataset_id: Annotated[str, typer.Option("--dataset-id", help="From `smartaug ingest`.")],
    policy: Annotated[str, typer.Option(
        help="one (one augmentation per image, kind drawn uniformly) | all (every kind) | "
        "k:N (N per image)")] = "one",
    kinds: Annotated[str | None, typer.Option(
        help="Comma-separated built-in kinds (smartaug kinds lists them; default "
        "rotate,noise,hflip), or the space file's kinds to use")] = None,
    space: Annotated[str | None, typer.Option(
        "--space", help="A space file (YAML or JSON): kinds: {NAME: builtin | "
        "A.to_dict(transform)}.")] = None,
    max_angle: Annotated[float, typer.Option(help="Rotation range +-degrees.")] = 20.0,
    sigma: Annotated[float, typer.Option(help="Noise std, units of a [0, 1] image.")] = 0.1,
    seed: SeedOpt = 0,
    materialize: Annotated[str, typer.Option("--materialize", help=MATERIALIZE_HELP)] = "auto",
    magnitude_bins: Annotated[int, typer.Option(
        "--magnitude-bins", help="A magnitude grid: each kind's range cut into N equal bins, "
        "every augmentation drawn at a magnitude inside one (0: each kind's own sampling).")
    ] = 0,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Processes (default: all cores).")] = None,
    storage: StorageOpt = None,
) -> None:
    """Augment the train split into a pool (augmentations table). Prints the pool_id last."""
    from smartaug.config import AUGMENT_KINDS, AugmentConfig, parse_policy
    from smartaug.core.augment import load_space
    from smartaug.steps.pool import build_pool

    lake = _lake(storage)
    names, defined = _steps(load_space, space) if space else (AUGMENT_KINDS, ())
    if kinds is not None:
        names = tuple(k.strip() for k in kinds.split(",") if k.strip())
    cfg = _steps(AugmentConfig, policy=policy, kinds=names, max_angle=max_angle, sigma=sigma,
                 seed=seed, space=tuple(d for d in defined if d[0] in names),
                 materialize=materialize, magnitude_bins=magnitude_bins)
    meta = _steps(lake.row, "datasets", dataset_id)
    with _Bar("augment", meta["n_train"] * parse_policy(policy, len(cfg.kinds))) as bar:
        pool_id = _steps(build_pool, lake, dataset_id, cfg, workers=workers, progress=bar)
    print(pool_id)


@app.command()
def score(
    model_id: Annotated[str, typer.Option("--model-id", help="From `smartaug baseline`.")],
    pool_id: Annotated[str | None, typer.Option(
        "--pool-id", help="Score this pool (from `smartaug augment`).")] = None,
    dataset_id: Annotated[str | None, typer.Option(
        "--dataset-id", help="Score original images instead: this dataset's --split.")] = None,
    split: Annotated[str, typer.Option(help="train | val | test (with --dataset-id)")] = "train",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per inference batch.")] = 512,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    trust_model: TrustOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Score a pool (or a split of the originals) by AVH and the other hardness scores.
    Prints the scoring_run_id last."""
    from smartaug.steps.score import score_pool, score_split

    if (pool_id is None) == (dataset_id is None):
        _fail(ValueError("give exactly one of --pool-id or --dataset-id"))
    lake = _lake(storage)
    if pool_id is not None:
        total = _steps(lake.row, "pools", pool_id)["n_items"]
        with _Bar("score", total) as bar:
            scoring_run_id = _steps(score_pool, lake, model_id, pool_id,
                                    batch_size=batch_size, device=device, progress=bar,
                                    trust=tuple(trust_model or ()))
    else:
        meta = _steps(lake.row, "datasets", dataset_id)
        with _Bar("score", meta.get(f"n_{split}")) as bar:
            scoring_run_id = _steps(score_split, lake, model_id, dataset_id, split,
                                    batch_size=batch_size, device=device, progress=bar,
                                    trust=tuple(trust_model or ()))
    print(scoring_run_id)


@app.command()
def atlas(
    scoring_run_id: Annotated[str, typer.Option(
        "--scoring-run-id", help="A pool's scoring run (from `smartaug score --pool-id`).")],
    bins: Annotated[int, typer.Option(
        help="Magnitude bins per kind (a grid pool's own bins win).")] = 5,
    min_items: Annotated[int, typer.Option(
        "--min-items", min=1, help="Refuse a kind x magnitude cell with fewer items.")] = 5,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (scoring the originals)")
                      ] = "auto",
    trust_model: TrustOpt = None,
    storage: StorageOpt = None,
) -> None:
    """What the baseline makes of each kind of augmentation at each magnitude, per class:
    the atlas table (flip rate, AVH, loss, margin, confidence drop) and a report (heatmap,
    the classes a kind treats differently, each cell's extremes). Prints the atlas_id last."""
    from smartaug.steps.atlas import baseline_health, build_atlas, write_atlas_report

    lake = _lake(storage)
    atlas_id = _steps(build_atlas, lake, scoring_run_id, bins=bins, min_items=min_items,
                      device=device, trust=tuple(trust_model or ()), log=err.print)
    where = _steps(write_atlas_report, lake, atlas_id)
    weak = _steps(baseline_health, lake, lake.row("scoring_runs", scoring_run_id)["model_id"]
                  )["weak"]
    if weak:
        err.print(f"warning: {weak}")
    err.print(f"report: {where}")
    print(atlas_id)


@app.command("atlas-check")
def atlas_check(
    atlas_id: Annotated[str, typer.Option("--atlas-id", help="From `smartaug atlas`.")],
    study_id: Annotated[str, typer.Option(
        "--study-id", help="A study whose arms train one kind (space:KIND) or one magnitude "
        "bin (bin:KIND@B/N), with the 'none' reference.")],
    storage: StorageOpt = None,
) -> None:
    """How well the atlas predicts what each kind gains when trained on: Spearman's rank
    correlation of predicted benefit and measured gain, with a bootstrap interval. Writes
    prediction.json beside the study's report; prints the correlation last."""
    import json

    from smartaug.lake import atomic_path, check_name
    from smartaug.steps.atlas import check_prediction

    _steps(check_name, atlas_id, "atlas id")
    _steps(check_name, study_id, "study id")
    lake = _lake(storage)
    where = lake.local_path(f"reports/{study_id}")
    report = where / "study.json"
    if not report.is_file():
        _fail(f"no report of study {study_id} at {where}; run the study first")
    out = _steps(check_prediction, lake, atlas_id, json.loads(report.read_text()))
    with atomic_path(where / "prediction.json") as tmp:
        tmp.write_text(json.dumps(out, indent=2))
    for a in sorted(out["arms"], key=lambda a: -a["predicted"]):
        err.print(f"{a['arm']}: predicted {a['predicted']:.3f}, gain {100 * a['gain']:+.2f} "
                  f"points")
    err.print(f"{where / 'prediction.json'}")
    print(f"spearman {out['spearman']:.3f} [{out['ci95'][0]:.3f}, {out['ci95'][1]:.3f}] over "
          f"{out['n_arms']} arms")


@app.command()
def policy(
    atlas_id: Annotated[str, typer.Option("--atlas-id", help="From `smartaug atlas`.")],
    out: Annotated[str, typer.Option("--out", "-o", help="The policy file to write (JSON).")],
    max_flip: Annotated[float, typer.Option(
        "--max-flip", help="Cut each kind's magnitudes where its flip rate passes this.")
    ] = 0.2,
    storage: StorageOpt = None,
) -> None:
    """A recommended policy for on-the-fly training from an atlas: per kind a magnitude
    range and a weight, in albumentations' own serialisation (A.from_dict loads it; per-class
    policies beside it where classes differ). Prints the file's path last."""
    from smartaug.steps.policy import per_class_path, said, write_policy

    lake = _lake(storage)
    rec = _steps(write_policy, lake, atlas_id, out, max_flip)
    if rec["baseline"]["weak"]:
        err.print(f"warning: {rec['baseline']['weak']}")
    for kind, k in rec["kinds"].items():
        limit = "" if k["limit"] is None else f", magnitude up to {k['limit']:.3g}"
        decided = f"; {said(k['decided_by'])}" if k.get("decided_by") else ""
        err.print(f"{kind}: weight {k['weight']:.3f}{limit} (flip rate {k['flip_rate']:.3f} "
                  f"over the kept bins{decided})")
    for kind, why in rec["left_out"].items():
        err.print(f"{kind}: left out ({why})")
    if rec["per_class"]:
        err.print(f"per-class policies: {per_class_path(rec['path'])}")
    print(rec["path"])


@app.command()
def recommend(
    dataset_id: Annotated[str, typer.Option("--dataset-id", help="From `smartaug ingest`.")],
    out: Annotated[str, typer.Option("--out", "-o", help="The policy file to write (JSON).")],
    model: Annotated[str, typer.Option("--model", help=MODEL_HELP)] = "lenet5",
    kinds: Annotated[str | None, typer.Option(
        "--kinds", help="Kinds to race, comma-separated (default: every built-in kind; "
        "`smartaug kinds` lists them).")] = None,
    space: Annotated[str | None, typer.Option(
        "--space", help="Instead: a space file's kinds (YAML or JSON).")] = None,
    budget: Annotated[float, typer.Option(
        "--budget", help="The most the search may cost, in full trainings (the reference "
        "and every short training, counted by the images they train on).")] = 4.0,
    stack: Annotated[int, typer.Option(
        "--stack", min=1, help="Short trainings trained as one model at a time (1: each "
        "alone).")] = 8,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", min=1, help="Epochs of a full training (default: the quick preset's, "
        "5); every training of the search has as many.")] = None,
    seed: SeedOpt = 0,
    reference: Annotated[str, typer.Option(
        "--reference", help="The augmentation the veto's reference model trains with: "
        "trivialaugment-wide | randaugment | none.")] = "trivialaugment-wide",
    max_flip: Annotated[float, typer.Option(
        "--max-flip", help="Veto an op x magnitude x class that changes more than this share "
        "of the reference's confident predictions.")] = 0.75,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    storage: StorageOpt = None,
) -> None:
    """A policy measured to help: ops x magnitude ranges raced by short trainings of your
    model on your data (successive halving, paired seeds, the atlas only vetoing), written
    as TrivialAugment's shape (one op an image, magnitude uniform in its range) in
    albumentations' serialisation. Prints its cost and the file's path last."""
    from dataclasses import replace

    from smartaug.config import preset
    from smartaug.core.search import Candidate
    from smartaug.steps.recommend import write_recommendation

    protocol = preset("quick").retrain
    if epochs is not None:
        protocol = replace(protocol, epochs=epochs)
    lake = _lake(storage)
    rec = _steps(write_recommendation, lake, dataset_id, out, model=model, kinds=kinds,
                 space=space, budget=budget, stack=stack, seed=seed, reference=reference,
                 max_flip=max_flip, device=device, protocol=protocol, log=err.print)
    for k in rec["kept"]:
        err.print(f"kept: {Candidate(k['kind'], k['lo'], k['hi']).name} "
                  f"({100 * k['score']:+.2f} points over the identity at the last rung)")
    if not rec["kept"]:
        err.print("kept: none beat the identity at the last rung; the policy is the identity")
    if rec["per_class"]:
        err.print(f"per-class policies: {rec['path'].with_name(rec['per_class'])}")
    err.print(f"cost: {rec['cost_trainings']:.2f} full trainings (reference "
              f"{rec['cost']['reference']:g}, race {rec['cost']['race']:.2f}; "
              f"{rec['cost']['trainings']} trainings), {rec['seconds']:.0f} s on "
              f"{rec['device']}")
    print(rec["path"])


@app.command("recommend-check")
def recommend_check(
    policy_file: Annotated[str, typer.Option("--policy", help="From `smartaug recommend`.")],
    seeds: Annotated[int, typer.Option(
        "--seeds", min=2, help="Paired seeds of the full trainings.")] = 5,
    stack: Annotated[int, typer.Option("--stack", min=1, help="Trainings as one model.")] = 8,
    storage: StorageOpt = None,
) -> None:
    """Check a recommendation's race: train each candidate it raced (and the identity) fully
    over paired seeds, and report Spearman's rho between the race's scores and those gains
    (<policy>.check.json beside it). Prints rho last."""
    from smartaug.steps.recommend import check_recommendation

    lake = _lake(storage)
    out = _steps(check_recommendation, lake, policy_file, seeds=seeds, stack=stack,
                 log=err.print)
    for r in sorted(out["candidates"], key=lambda r: -r["gain_test"]):
        err.print(f"{r['name']}: rung 0 {100 * r['rung0_score']:+.2f}, reached rung "
                  f"{r['rung']}, full training {100 * r['gain_test']:+.2f} points")
    err.print(out["path"])
    s = out["spearman_rung0"]
    if s["rho"] is None:
        print(f"spearman undefined over {out['n_candidates']} candidates: every score or every "
              f"gain is the same")
    else:
        print(f"spearman {s['rho']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] over "
              f"{out['n_candidates']} candidates")


@app.command("select")
def select_cmd(
    scoring_run_id: Annotated[str, typer.Option("--scoring-run-id", help="From `smartaug score`.")],
    band: Annotated[tuple[float, float] | None, typer.Option(
        "--band", help="Quantile band LO HI in [0, 1], e.g. 0.02 0.22 (lower AVH = easier).")]
        = None,
    window: Annotated[str | None, typer.Option(
        "--window", help="Instead: a window of exactly --size (or --fraction) items of the "
        "hardness ranking, at easiest | offset | median | hardest (the study's positions) or "
        "at a start quantile in [0, 1].")] = None,
    coverage: Annotated[bool, typer.Option(
        "--coverage", help="Instead: exactly --size (or --fraction) items drawn evenly across "
        "--bins equal-width score bins, the hardest --drop left out.")] = False,
    stratified: Annotated[bool, typer.Option(
        "--stratified", help="Instead: exactly --size (or --fraction) random items with the "
        "run's class mix.")] = False,
    random_matched: Annotated[str | None, typer.Option(
        "--random-matched", help="Instead: a random subset matched to this selection's size "
        "and class mix.")] = None,
    random_fraction: Annotated[float | None, typer.Option(
        "--random-fraction", help="Instead: a random fraction of all items.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Instead: every item.")] = False,
    size: Annotated[int | None, typer.Option(
        "--size", min=1, help="Items of a --window, --coverage or --stratified selection.")]
        = None,
    fraction: Annotated[float | None, typer.Option(
        "--fraction", help="Or their share of the run's items, in (0, 1] (the study's "
        "budget).")] = None,
    score_col: Annotated[str, typer.Option(
        "--score", help=f"Score column: {', '.join(SCORE_COLUMNS)}.")] = "avh",
    per_class: Annotated[bool, typer.Option(
        "--per-class", help="Within each class (a band), or with the run's class mix (a window "
        "or coverage).")] = False,
    drop: Annotated[float, typer.Option("--drop", help="Coverage: the hardest share left out.")]
        = 0.1,
    bins: Annotated[int, typer.Option("--bins", min=1, help="Coverage: score bins.")] = 50,
    seed: SeedOpt = 0,
    storage: StorageOpt = None,
) -> None:
    """Select items of a scoring run through DuckDB. Prints the selection_id last."""
    from smartaug.config import POSITIONS, Selector
    from smartaug.steps import select as S

    lake = _lake(storage)
    ways = {"--band LO HI": band is not None, "--window POSITION": window is not None,
            "--coverage": coverage, "--stratified": stratified,
            "--random-matched ID": random_matched is not None,
            "--random-fraction F": random_fraction is not None, "--all": all_}
    if sum(ways.values()) != 1:
        _fail(f"give exactly one of {', '.join(ways)}")
    sized = window is not None or coverage or stratified
    if not sized and (size is not None or fraction is not None):
        _fail("--size and --fraction go with --window, --coverage or --stratified")
    start = None
    if window is not None and window not in POSITIONS:
        try:
            start = float(window)
        except ValueError:
            _fail(f"--window {window!r}: give easiest, offset, median, hardest or a start "
                  f"quantile in [0, 1]")
    if band is not None:
        sid = _steps(S.band, lake, scoring_run_id, band[0], band[1], score=score_col,
                     per_class=per_class)
    elif random_matched is not None:
        sid = _steps(S.random_subset, lake, scoring_run_id, matched_to=random_matched, seed=seed)
    elif random_fraction is not None:
        sid = _steps(S.random_subset, lake, scoring_run_id, fraction=random_fraction, seed=seed)
    else:  # one of the study's selectors, by the study's own rule
        selector = Selector("all") if all_ else Selector("random") if stratified else \
            Selector("coverage", score_col) if coverage else \
            Selector("window", score_col, window if start is None else None)
        n = None
        if sized:
            n, _ = _steps(S.size_of, lake, scoring_run_id, size=size, fraction=fraction)
        sid = _steps(S.pick, lake, scoring_run_id, selector, n, seed=seed, per_class=per_class,
                     drop=drop, bins=bins, start=start)
    n = lake.count("selections", sid)
    err.print(f"selected {n} items")
    print(sid)


@app.command()
def views(
    storage: StorageOpt = None,
    output: Annotated[str | None, typer.Option(
        "--out", "-o", help="Write the SQL to this file instead of printing it.")] = None,
) -> None:
    """The DuckDB views of a lake (storage/views.sql pointed at its root), for the DuckDB CLI:
    `smartaug views --storage ROOT -o views.sql && duckdb -init views.sql`, or in one step
    `smartaug duckdb --storage ROOT`."""
    lake = _lake(storage)
    text = _views_text(lake)
    if output is None:
        print(text, end="")
        return
    from smartaug.lake import atomic_path

    def write():
        with atomic_path(output) as tmp:
            tmp.write_text(text)

    _steps(write)
    err.print(f"wrote {output}: duckdb -init {output}")


def _views_text(lake) -> str:
    note = "" if lake.local else (
        f"-- {lake.root}: the DuckDB CLI reads it through its httpfs extension, e.g.\n"
        "-- INSTALL httpfs; LOAD httpfs; CREATE SECRET (TYPE s3, PROVIDER credential_chain);\n")
    return note + lake.views_sql()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def duckdb(ctx: typer.Context, storage: StorageOpt = None) -> None:
    """Open the DuckDB CLI on a lake's tables (one view per table); arguments after the
    options go to duckdb, e.g. `smartaug duckdb --storage ROOT -c "select count(*) from pools"`.
    """
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    lake = _lake(storage)
    exe = shutil.which("duckdb") or shutil.which("duckdb", path=str(Path(sys.executable).parent))
    if exe is None:
        _fail("the DuckDB CLI (duckdb) is not on PATH: pip install duckdb-cli, or use "
              "smartaug sql \"...\"")
    with tempfile.TemporaryDirectory(prefix="smartaug-views-") as d:
        init = Path(d) / "views.sql"
        init.write_text(_views_text(lake))
        code = subprocess.call([exe, "-init", str(init), *ctx.args])
    raise typer.Exit(code)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A DuckDB query over the tables (views).")],
    storage: StorageOpt = None,
    limit: Annotated[int, typer.Option(min=0, help="Rows to print at most.")] = 100,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
) -> None:
    """Run an ad-hoc DuckDB query over the lake's tables and print the result."""
    import duckdb

    lake = _lake(storage)
    from smartaug.lake import LakeError

    try:
        result = lake.sql(query)
    except duckdb.PermissionException as e:
        _fail(f"{e}. Queries read the lake's own files ({lake.url()}) and write nothing: "
              f"for a result as a file, use --csv and redirect it")
    except duckdb.InterruptException:
        raise  # Ctrl-C: main() says `aborted`
    except (duckdb.Error, LakeError) as e:
        _fail(e)
    if csv:
        import pyarrow.csv as pacsv

        pacsv.write_csv(_csv_safe(result.slice(0, limit)), sys.stdout.buffer)
        return
    table = Table(show_lines=False)
    for name in result.column_names:
        table.add_column(name)
    for row in result.slice(0, limit).to_pylist():
        table.add_row(*(_cell(v) for v in row.values()))
    Console(width=max(out.width, 200), markup=False).print(table)
    if result.num_rows > limit:
        err.print(f"({result.num_rows} rows, {limit} shown; --limit N for more)")


@app.command()
@protocol_options
def experiment(
    protocol: Protocol,
    stack: Annotated[int | None, typer.Option(
        min=1, help="Train up to this many of the methods' trainings of one size (a method's "
        "seeds; M1 and M2 together) as one model (LeNet models on any device, others on "
        "CUDA; 1: each alone). Default 8. Same figures up to rounding, in less time.")] = None,
    storage: StorageOpt = None,
) -> None:
    """Run a whole experiment (ingest, baseline, augment, score, select, retrain every method
    over seeds, report). Prints the report directory last."""
    from smartaug.steps.experiment import run_experiment

    cfg = protocol.load("experiment", stack=stack)
    lake = _lake(storage, create=True)
    exp_id = _steps(run_experiment, cfg, lake, log=protocol.log,
                    command=protocol.command("experiment"))
    report = json.loads(lake.local_path(f"reports/{exp_id}/report.json").read_text())
    table = Table(title=f"experiment {exp_id} ({cfg.preset})")
    from smartaug.steps.report import accuracy_cells

    for col in ("method", "loss", "test acc % (mean ± std)", "95 % CI", "seeds"):
        table.add_column(col)
    for name, m in report["methods"].items():
        table.add_row(name, m["loss"], *accuracy_cells(m["test_acc_mean"], m["test_acc_std"],
                                                       m["ci95"], m["n"]), str(m["n"]))
    if not protocol.quiet:
        err.print(table)
        err.print(report["verdict"])
    print(lake.url("reports", exp_id))


@app.command()
@protocol_options
def study(
    protocol: Protocol,
    workers: Annotated[int | None, typer.Option(
        help="Cells trained at once, one single-threaded process each (default: "
        "SMARTAUG_WORKERS if set, else one per core on the CPU, 1 on a GPU).")] = None,
    stack: Annotated[int | None, typer.Option(
        min=1, help="Train up to this many cells of one size (a budget's seeds and "
        "selectors) together as one model (LeNet models on any device, others on CUDA; "
        "1: each alone, the default). Same figures up to rounding, more cells per hour.")
    ] = None,
    plan: Annotated[bool, typer.Option(
        "--plan", help="Print what the study will cost and can detect, and train nothing "
        "(no lake is written): its cells and trainings, the estimated time (one epoch timed "
        "here), and per declared hypothesis the smallest difference each look detects with "
        "80 % power from sd_prior or --pilot. The plan as JSON on the last line.")] = False,
    pilot: Annotated[str | None, typer.Option(
        help="With --plan: a pilot study's report (its directory or study.json) whose "
        "spread stands in for the hypotheses' sd_prior.")] = None,
    storage: StorageOpt = None,
) -> None:
    """Run a study: which augmentations to keep, at equal budget. Every pool x budget x
    selector x loss x seed is a training (a row of the runs table); a crashed study resumes,
    a finished one does nothing. Prints the report directory last (with --plan: the plan,
    as JSON)."""
    cfg = protocol.load("study", stack=stack)
    if workers is not None and workers < 1:
        _fail(f"--workers must be >= 1, got {workers}")
    if pilot is not None and not plan:
        _fail("--pilot goes with --plan (the spread a plan assumes)")
    if plan:
        from smartaug.steps.study_plan import describe, plan_study

        out = _steps(plan_study, cfg, pilot=pilot, workers=workers)
        for line in describe(out):
            err.print(line, highlight=False)
        print(json.dumps(out))
        return
    from smartaug.steps.study import run_study  # torch: after the grid is known to be sound

    lake = _lake(storage, create=True)
    sid, location = _steps(run_study, cfg, lake, workers=workers, log=protocol.log,
                           command=protocol.command("study"))
    if not protocol.quiet:
        report = json.loads(lake.local_path(f"reports/{sid}/study.json").read_text())
        err.print(report["verdict"])
    print(location)


@app.command("study-report")
def study_report(
    directory: Annotated[str, typer.Argument(
        help="A study's report directory (holding its study.json): a lake's "
        "reports/<study_id>/ or a committed copy.")],
) -> None:
    """Recompute a study's report from its study.json alone, with this version's
    statistics: the declared hypotheses (each against what it names), the exploratory
    family, the equal-data flags and the verdict, from every row's per-seed accuracies (no
    lake, no training; ids unchanged). Rewrites study.json, study.md (study.html where there
    is one) and the plots in place; prints the directory last."""
    from smartaug.steps.study_report import rewrite_study_report

    out = _steps(rewrite_study_report, directory)
    report = json.loads((out / "study.json").read_text())
    err.print(report["verdict"])
    print(out)


def _csv_safe(table):
    """Nested columns (lists, structs, maps) as JSON text, which CSV can hold."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            text = pa.array([None if v is None else json.dumps(v, default=str)
                             for v in table.column(i).to_pylist()], pa.string())
            table = table.set_column(i, field.name, text)
    return table


@app.command()
def reselect(
    experiment_id: Annotated[str | None, typer.Option(
        "--experiment-id", help="The experiment whose band to re-select (default: the newest).")]
        = None,
    model_id: Annotated[str | None, typer.Option(
        "--model-id", help="The model that re-scores the pool (default: the newest of the "
        "experiment's lineage).")] = None,
    retrain: Annotated[bool, typer.Option(
        "--retrain/--no-retrain", help="First fine-tune that model on the current selection "
        "and use the result (the next curriculum round).")] = False,
    schedule: Annotated[str | None, typer.Option(
        help="With --retrain: fine-tune on a curriculum over the whole pool as that model "
        "scores it, ORDER[:PACING[:START]] (easy-to-hard, hard-to-easy, random-order; linear, "
        "step, exponential; e.g. easy-to-hard:linear:0.2), as many augmentations in all as "
        "the selection would show.")] = None,
    trust_model: TrustOpt = None,
    storage: StorageOpt = None,
) -> None:
    """One curriculum round (what the reselect/nightly deployment runs): re-score the pool with
    the newest model, re-select the experiment's band, record the drift against the previous
    selection, add a drift-over-rounds section to the report. Prints the selection_id last."""
    from smartaug.steps import reselect as steps

    lake = _lake(storage)
    out = _steps(steps.reselect, lake, experiment_id, model_id, retrain, schedule,
                 tuple(trust_model or ()), log=err.print)
    _steps(steps.report, lake, out["experiment_id"])
    err.print(f"round {out['round']} of experiment {out['experiment_id']}: model "
              f"{out['model_id']}, scoring run {out['scoring_run_id']}, drift {out['drift']}")
    print(out["selection_id"])


@app.command()
def verify(
    adopt: Annotated[bool, typer.Option(
        "--adopt", help="First write a manifest of its files as they are for each partition "
        "that has none (a lake made before manifests existed, that you trust).")] = False,
    storage: StorageOpt = None,
) -> None:
    """Check every partition of the lake against the manifest its commit wrote (files, sizes,
    sha256), every recorded row count, and every checkpoint against its models row. Exit 2
    naming each bad partition; exit 0 when all hold."""
    from smartaug.steps.verify import verify as check

    lake = _lake(storage)
    result = _steps(check, lake, adopt=adopt)
    if result.adopted:
        err.print(f"adopted {result.adopted} partition(s) without a manifest, as they are")
    for problem in result.problems:
        err.print(_error_line(problem))
    if not result.ok:
        _fail(f"{len(result.problems)} problem(s) in {lake.url()} (partitions checked: "
              f"{result.partitions}, checkpoints: {result.checkpoints})")
    print(f"ok: {result.partitions} partitions and {result.checkpoints} checkpoint(s) of "
          f"{lake.url()} match what smartaug wrote")


@app.command("export")
def export_cmd(
    selection_id: Annotated[str, typer.Option("--selection-id", help="From `smartaug select`.")],
    to: Annotated[str, typer.Option("--out", "-o", help="A new or empty directory.")],
    fmt: Annotated[str, typer.Option("--format", help="imagefolder (PNGs) | parquet")] =
        "imagefolder",
    originals: Annotated[bool, typer.Option(
        "--originals/--no-originals", help="Include the train split's originals.")] = True,
    storage: StorageOpt = None,
) -> None:
    """Export a selection's items (and the originals) with a manifest.json of their lineage;
    written atomically. Prints the directory last."""
    from smartaug.steps.export import export

    lake = _lake(storage)
    out_dir = _steps(export, lake, selection_id, to, fmt=fmt, originals=originals)
    n = json.loads((out_dir / "manifest.json").read_text())["n_items"]
    err.print(f"exported {n} items ({fmt})")
    print(out_dir)


config_app = typer.Typer(help="Experiment and study files: smartaug experiment|study --config FILE.",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(name: Annotated[str, typer.Argument(help="quick | paper | gpu")] = "quick") -> None:
    """Print a preset as an experiment file (TOML), to start your own from:
    `smartaug config show quick > exp.toml`."""
    from smartaug.experiment_file import preset_text

    print(_steps(preset_text, name), end="")


@config_app.command("check")
def config_check(
    path: Annotated[str, typer.Argument(help="An experiment file or a study file.")],
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print JSON: the Prefect deployment's `config` parameter.")] = False,
) -> None:
    """Validate an experiment or study file (a study file names pools, budgets or seeds) and
    print the full config it describes (TOML, or JSON for `prefect deployment run
    smart-augmentation/smart-augmentation -p config=...` or `study/study -p config=...`)."""
    from smartaug.core.preflight import preflight
    from smartaug.experiment_file import dumps, load_file

    cfg = _steps(load_file, path)
    _steps(preflight, cfg)
    print(json.dumps(cfg.to_dict()) if as_json else dumps(cfg), end="\n" if as_json else "")


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    return "" if v is None else str(v)


def _unwrapped(doc: str | None) -> str | None:
    """A docstring as help text: each paragraph one line, so the terminal wraps it at its own
    width and never mid-sentence where the source broke its lines."""
    if not doc:
        return doc
    import inspect

    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


for _typer in (app, config_app):
    for _command in _typer.registered_commands:
        if _command.help is None and _command.callback is not None:
            _command.help = _unwrapped(_command.callback.__doc__)


# old option names, still read for one release (said once on standard error): command ->
# {old: new}; every command names an id --NAME-id and a file or folder it writes --out
RENAMED = {"policy": {"--atlas": "--atlas-id"}, "atlas-check": {"--atlas": "--atlas-id"},
           "export": {"--to": "--out"}, "views": {"--output": "--out"}}


def _renamed(argv: list[str]) -> list[str]:
    """``argv`` with a command's old option names replaced by their new ones."""
    command = next((a for a in argv if not a.startswith("-")), None)
    table = RENAMED.get(command, {})
    out = []
    for a in argv:
        name, eq, value = a.partition("=")
        if name in table:
            err.print(f"note: {name} is now {table[name]} ({command}); the old name goes in "
                      f"the next release", highlight=False)
            a = table[name] + eq + value
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> None:
    """The console entry point: the app, with usage errors (an unknown option, a value out of
    range) printed like every other failure: `error: ...`, exit code 2."""
    argv = _renamed(list(sys.argv[1:] if argv is None else argv))
    from smartaug.errors import is_user_error, message

    try:
        code = app(args=argv, prog_name="smartaug", standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except typer.TyperException as e:  # click's usage errors, as typer vendors them
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()
            sys.exit(0)
        ctx = getattr(e, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        err.print(_error_line(e.format_message() + hint), highlight=False)
        sys.exit(2)
    except Exception as e:  # a user error raised outside ``_steps`` is still one `error:` line
        if type(e).__name__ == "InterruptException" or "Query interrupted" in str(e):  # DuckDB
            err.print("aborted")
            sys.exit(130)
        if not is_user_error(e):
            raise  # a bug: its traceback
        err.print(_error_line(message(e)), highlight=False)
        sys.exit(2)
    if code == 130:  # Ctrl-C, as typer returns it without standalone mode
        err.print("aborted")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
