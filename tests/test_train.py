"""Training loop (smartaug/core/train.py) and the CLI demo on real data."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from smartaug.cli import app
from smartaug.config import LossSpec, TrainConfig
from smartaug.core.train import build_model, evaluate, train


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


def test_demo_auroc_known_answers():
    import numpy as np

    from smartaug.steps.demo import auroc

    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0  # every error scores higher
    assert auroc(np.array([1.0]), np.array([2.0, 3.0])) == 0.0
    assert auroc(np.array([2.0, np.nan]), np.array([2.0])) == 0.5  # a tie counts a half, NaN out
    assert np.isnan(auroc(np.array([]), np.array([1.0])))


def test_demo_scores_the_errors(fashion_root):
    """The library side of `smartaug demo`: after a short training, AVH and loss mark the
    test errors (AUROC well above 0.5) and the accuracy is far above chance."""
    from smartaug.core.datasets import load_dataset
    from smartaug.steps.demo import DEMO_SCORES, demo

    ds = load_dataset("fashion-mnist", root=fashion_root, per_class_train=100,
                      per_class_test=20, seed=0)
    r = demo(ds, cfg=TrainConfig(epochs=2, device="cpu"), log=None)
    assert set(r["scores"]) == set(DEMO_SCORES) and 0.5 < r["accuracy"] <= 1.0
    assert r["scores"]["avh"]["auroc"] > 0.7 and r["scores"]["loss"]["auroc"] > 0.7
    assert r["scores"]["avh"]["wrong_mean"] > r["scores"]["avh"]["correct_mean"]


def test_cli_bad_dataset_path_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["describe", "--data", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "directory not found" in res.output


def test_sgd_is_deterministic_and_learns():
    x, y = toy()
    cfg = TrainConfig(epochs=6, batch_size=16, lr=0.05, optimizer="sgd", seed=1, device="cpu")
    nets = [build_model("lenet5", 2, 1, 16, seed=1) for _ in range(2)]
    hists = [train(net, x, y, cfg, log=None) for net in nets]
    assert hists[0][-1]["train_loss"] == hists[1][-1]["train_loss"]
    assert hists[0][-1]["train_loss"] < hists[0][0]["train_loss"]
    assert evaluate(nets[0], *toy(seed=2))["acc"] > 0.9


def test_large_batches_train_channels_last_with_the_same_result(monkeypatch):
    """Batches of 512+ take oneDNN's NHWC kernels on the CPU: the model ends channels_last and
    learns what the NCHW path learns, up to float rounding (the automatic rule: the suite's
    run with SMARTAUG_CHANNELS_LAST=1 would force both)."""
    monkeypatch.delenv("SMARTAUG_CHANNELS_LAST", raising=False)
    x, y = toy(n=1024)
    cfg = TrainConfig(epochs=3, batch_size=512, lr=3e-3, seed=0, device="cpu")
    nhwc = build_model("lenet5", 2, 1, 16, seed=0)
    train(nhwc, x, y, cfg, log=None)
    conv = [m for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # 6 -> 16
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    nchw = build_model("lenet5", 2, 1, 16, seed=0)
    train(nchw, x, y, TrainConfig(epochs=3, batch_size=511, lr=3e-3, seed=0, device="cpu"),
          log=None)
    conv = [m for m in nchw.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert conv.weight.is_contiguous()
    test = toy(seed=2)
    assert evaluate(nhwc, *test)["acc"] > 0.9 and evaluate(nchw, *test)["acc"] > 0.9


def test_the_layout_a_training_uses_can_be_forced(monkeypatch):
    """Channels-last on CUDA and for large CPU batches; SMARTAUG_CHANNELS_LAST forces either
    (the suite runs under both: tests/README.md)."""
    from smartaug.core.train import channels_last
    from smartaug.errors import InputError

    monkeypatch.delenv("SMARTAUG_CHANNELS_LAST", raising=False)
    assert [channels_last(False, 128), channels_last(False, 512), channels_last(True, 2)] == [
        False, True, True]
    monkeypatch.setenv("SMARTAUG_CHANNELS_LAST", "1")
    assert channels_last(False, 128)
    monkeypatch.setenv("SMARTAUG_CHANNELS_LAST", "0")
    assert not channels_last(True, 4096)
    monkeypatch.setenv("SMARTAUG_CHANNELS_LAST", "yes")
    with pytest.raises(InputError, match="must be 1 or 0"):
        channels_last(False, 128)
