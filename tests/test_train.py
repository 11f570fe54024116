"""Training loop (pipeline/train.py) and the CLI demo on real data."""

import numpy as np
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.losses import LossSpec
from pipeline.train import TrainConfig, build_model, evaluate, train


def toy(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.zeros((n, 16, 16, 1), dtype=np.uint8)
    x[y == 1, :8] = 200  # class 1 = bright top half
    x += rng.integers(0, 40, x.shape, dtype=np.uint8)
    return x, y.astype(np.int64)


def test_training_is_deterministic_on_cpu_and_learns():
    x, y = toy()
    cfg = TrainConfig(epochs=4, batch_size=16, seed=3, device="cpu",
                      loss=LossSpec("additive"))
    nets = []
    for _ in range(2):
        net = build_model("lenet5", 2, 1, 16, seed=3)
        hist = train(net, x, y, cfg, eval_sets={"test": toy(seed=1)}, log=None)
        nets.append(net)
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert len(hist) == 4 and {"train_acc", "test_acc", "test_avh", "weight_norm_mean"} <= set(hist[0])
    assert evaluate(nets[0], *toy(seed=2))["acc"] > 0.9


def test_label_out_of_range_is_refused():
    x, y = toy()
    y[5] = 7
    net = build_model("lenet5", 2, 1, 16, seed=0)
    try:
        train(net, x, y, TrainConfig(epochs=1, device="cpu"), log=None)
    except ValueError as e:
        assert "0..1" in str(e)
    else:
        raise AssertionError("no error")


def test_demo_end_to_end_on_fashion_mnist(fashion_root):
    res = CliRunner().invoke(app, ["demo", "--data", fashion_root, "--per-class-train", "100",
                                   "--per-class-test", "20", "--epochs", "1"])
    assert res.exit_code == 0, res.output
    assert "test accuracy" in res.output and "avh" in res.output


def test_cli_bad_dataset_path_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["describe", "--data", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "directory not found" in res.output
