"""The ``gpu`` preset and the GPU benchmark: what the preset holds, a run of it on a generated
ImageFolder of CIFAR-10's shape (on the CPU here), and a GPU asked for where there is none
being a clear error before any work."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smartaug.config import preset, wide_pool
from smartaug.lake import Lake
from smartaug.steps.pool import materializes
from tests.conftest import write_image_folder

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def test_the_gpu_preset():
    cfg = preset("gpu")
    assert cfg.model == "resnet" and cfg.reps == 5
    assert cfg.data.dataset == "cifar10" and cfg.data.per_class_train is None
    assert cfg.data.val_fraction == 0.0  # the full 50 000-image train split
    assert cfg.augment.policy == "k:4" and cfg.augment.kinds == wide_pool().kinds
    assert cfg.baseline.device == cfg.retrain.device == "cuda"
    assert [m.name for m in cfg.methods] == ["M0", "M1", "M2"]
    # 200 000 augmentations of 32x32x3: beyond auto's threshold, so stored as recipes
    assert not materializes(cfg.augment.materialize, 50_000 * 4, (32, 32, 3))


@no_cuda
def test_a_gpu_asked_for_where_there_is_none(tmp_path, capsys):
    from tests.conftest import smartaug

    code, _, err = smartaug(capsys, "experiment", "--preset", "gpu", "--storage",
                            str(tmp_path / "lake"))
    err = " ".join(err.split())
    assert code == 2 and "PyTorch sees no CUDA GPU" in err and "--device cpu" in err
    lake = Lake(tmp_path / "lake")
    assert lake.sql("select count(*) n from samples").to_pylist()[0]["n"] == 0  # no work


@no_cuda
@pytest.mark.slow
def test_the_gpu_benchmark_refuses_a_missing_gpu():
    res = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--device", "cuda"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "no CUDA GPU" in res.stderr


@pytest.mark.slow
def test_the_gpu_preset_on_a_generated_imagefolder(tmp_path):
    """The preset as it stands (ResNet, the K=4 wide pool as recipes, the three methods) on
    32x32 RGB images in an ImageFolder, sized down to run on the CPU."""
    folder = write_image_folder(tmp_path / "imgs", classes=tuple(f"c{i}" for i in range(4)),
                                per_class=(3, 2), size=(32, 32), ext=".png")
    res = subprocess.run([str(BIN / "smartaug"), "experiment", "--preset", "gpu",
                          "--dataset", f"imagefolder:{folder}", "--device", "cpu",
                          "--epochs", "1", "--seeds", "1", "--materialize", "never",
                          "--storage", str(tmp_path / "lake")], capture_output=True,
                         text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((Path(res.stdout.strip().splitlines()[-1]) / "report.json").read_text())
    assert set(report["methods"]) == {"M0", "M1", "M2"}
    lake = Lake(tmp_path / "lake")
    pool = lake.sql("select n_items, materialized from pools").to_pylist()
    assert pool == [{"n_items": 4 * 3 * 4, "materialized": False}]
    assert lake.sql("select distinct arch from models").to_pylist() == [{"arch": "resnet"}]
