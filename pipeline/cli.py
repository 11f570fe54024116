"""The ``smartaug`` command line: thin wrappers over the library."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="smartaug",
    help="AVH-guided augmentation selection: augment, score by Angular Visual Hardness, "
    "select bands with DuckDB, retrain, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, soft_wrap=True)
out = Console()

DatasetOpt = Annotated[str, typer.Option(
    "--dataset", help="fashion-mnist | mnist | cifar10 | imagefolder:PATH")]
DataDirOpt = Annotated[str | None, typer.Option(
    "--data", help="Directory with the dataset's files (default: SMARTAUG_DATA, the Debian "
    "package's /usr/share/datasets/<name>, else a torchvision download).")]
PerClassTrainOpt = Annotated[int | None, typer.Option(
    "--per-class-train", help="Train images per class (default: all).")]
PerClassTestOpt = Annotated[int | None, typer.Option(
    "--per-class-test", help="Test images per class (default: all).")]
GrayOpt = Annotated[bool, typer.Option("--grayscale", help="Convert RGB images to 1 channel.")]
SizeOpt = Annotated[int | None, typer.Option(
    "--image-size", help="Resize to N x N pixels (bilinear, antialiased).")]
ValOpt = Annotated[float, typer.Option(
    "--val-fraction", help="Fraction of each train class held out for validation.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Root seed of subsets and training.")]


def _fail(e: Exception) -> None:
    err.print(f"[bold red]error:[/] {e}")
    raise typer.Exit(code=2)


def _load(dataset, data, per_class_train, per_class_test, grayscale, image_size, val_fraction,
          seed):
    from pipeline.data import DatasetError, load_dataset

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


@app.command("models")
def list_models() -> None:
    """List the registered models with their feature size and parameter count."""
    import models

    table = Table(title="models (images in [0, 1], [N, C, H, W])")
    for col in ("name", "input", "feature dim", "parameters"):
        table.add_column(col)
    shapes = {"lenet5": (1, 28), "lenet5-wide": (1, 28), "resnet": (3, 32)}
    for name in models.MODELS:
        cin, size = shapes.get(name, (1, 28))
        m = models.make_model(name, 10, cin, size)
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
    model: Annotated[str, typer.Option(help="lenet5 | lenet5-wide | resnet")] = "lenet5",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 3,
    seed: SeedOpt = 0,
) -> None:
    """Train a baseline and show that AVH ranks its test errors (the pipeline's first half).

    Prints one line per epoch, then per-class-outcome hardness on the test split.
    """
    import numpy as np
    import torch
    from scipy.stats import mannwhitneyu

    from pipeline.hardness import hardness_scores
    from pipeline.train import TrainConfig, _as_batch, build_model, resolve_device, train

    ds = _load(dataset, data, per_class_train, per_class_test, grayscale, image_size, 0.0, seed)
    err.print(f"{ds.name}: train {len(ds.train)}, test {len(ds.test)}, "
              f"{ds.num_classes} classes, {ds.image_shape}")
    cfg = TrainConfig(epochs=epochs, seed=seed)
    try:
        net = build_model(model, ds.num_classes, ds.in_channels, ds.image_size, seed=seed)
    except ValueError as e:
        _fail(e)
    train(net, ds.train.images, ds.train.labels, cfg,
          eval_sets={"test": (ds.test.images, ds.test.labels)}, log=err.print)

    device = resolve_device(cfg.device)
    scores: dict[str, list] = {}
    with torch.inference_mode():
        x_all = torch.as_tensor(ds.test.images)
        y_all = torch.as_tensor(ds.test.labels)
        for i in range(0, len(y_all), 1024):
            x = _as_batch(x_all[i : i + 1024].to(device), False)
            f = net.features(x)
            s = hardness_scores(net.head(f), f, net.head.weight, y_all[i : i + 1024].to(device))
            for k, v in s.items():
                scores.setdefault(k, []).append(v.cpu())
    s = {k: torch.cat(v).numpy() for k, v in scores.items()}
    ok = s["correct"]
    table = Table(title=f"test hardness of the {model} baseline ({epochs} epochs, seed {seed})")
    for col in ("score", "correct (mean)", "wrong (mean)", "AUROC wrong vs correct"):
        table.add_column(col, justify="right")
    for k in ("avh", "loss", "el2n", "entropy", "confidence", "margin", "feature_norm"):
        a, b = s[k][~ok], s[k][ok]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        auc = mannwhitneyu(a, b).statistic / (len(a) * len(b)) if len(a) and len(b) else float("nan")
        table.add_row(k, f"{b.mean():.4f}", f"{a.mean():.4f}" if len(a) else "-", f"{auc:.3f}")
    out.print(table)
    out.print(f"test accuracy {ok.mean():.4f}, mean AVH {np.nanmean(s['avh']):.4f} "
              f"(AUROC > 0.5: a higher score marks the errors)")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
