"""Every benchmark runs (each on a tiny size; their figures come from `make bench`): it exits 0
and prints, last, one JSON object with its name, a positive ratio against the bare baseline it
measured in the same run, and its target. bench_flow needs a Prefect server: tests/test_flows.py
runs the flow it times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TINY = {
    "augment": ["--images", "400", "--repeats", "1"],
    "dataset": ["--items", "2000", "--repeats", "1"],
    "e2e": ["--per-class", "22", "--per-class-test", "5", "--epochs", "1", "--seeds", "2",
            "--repeats", "1"],
    "gpu": ["--device", "cpu", "--items", "8", "--train-items", "8", "--batch", "4",
            "--stack", "2", "--epochs", "1", "--repeats", "1", "--no-preset"],
    "grid": ["--per-class", "20", "--seeds", "2", "--cells", "4", "--stack", "2", "--epochs", "1",
             "--repeats", "1"],
    "hardness": ["--batch", "64", "--batches", "2", "--repeats", "2"],
    "online": ["--images", "300", "--epochs", "1", "--repeats", "1"],
    "pool": ["--per-class", "50", "--repeats", "1"],
    "recommend": ["--images", "300", "--ops", "3", "--stack", "2", "--epochs", "1"],
    "rescore": ["--images", "300", "--epochs", "2", "--repeats", "1"],
    "scale": ["--sizes", "2000", "--k", "2"],
    "score": ["--items", "2000", "--repeats", "1", "--rss-items", "0"],
    "select": ["--rows", "20000", "--repeats", "1"],
    "train": ["--images", "500", "--epochs", "1", "--repeats", "1"],
    "verify": ["--per-class", "20", "--repeats", "1"],
}


def test_every_benchmark_has_a_smoke_run():
    names = {p.stem.removeprefix("bench_") for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert names - {"flow"} == set(TINY)


# the smoke runs that start no processes of their own run in one process (benchmarks/_smoke.py):
# each would otherwise import torch and the pipeline again; the rest run as a user runs them
SHARED = ("augment", "dataset", "hardness", "online", "recommend", "rescore", "select", "train",
          "verify")


@pytest.fixture(scope="module")
def shared_runs(fashion_root, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("smoke") / "runs.json"
    res = subprocess.run([sys.executable, "benchmarks/_smoke.py", str(out),
                          *(f"{n}={json.dumps(TINY[n])}" for n in SHARED)],
                         cwd=ROOT, capture_output=True, text=True, timeout=1200,
                         env={**os.environ, "SMARTAUG_DATA": fashion_root})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_benchmark_smoke(name, fashion_root, request):
    if name in SHARED:
        run = request.getfixturevalue("shared_runs")[name]
        res = subprocess.CompletedProcess([name], run["code"], run["out"], run["err"])
    else:
        res = subprocess.run([sys.executable, f"benchmarks/bench_{name}.py", *TINY[name]],
                             cwd=ROOT, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "SMARTAUG_DATA": fashion_root})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if name == "scale":  # peak RSS and time per item per stage, no single ratio
        assert set(out["stages"]) == {"augment", "score", "select"}
        assert all(0 < s["2000"]["rss_mib"] <= s["peak_rss_mib"] < 2048
                   for s in out["stages"].values())
        return
    if name == "gpu":  # its parts, each against its bare loop on the same device
        assert out["device"] == "cpu" and out["score_recipes"]["items"] == 8 * 4
        assert all(out[part]["ratio"] > 0 for part in ("score", "score_recipes", "train",
                                                        "grid"))
        assert out["grid"]["stack"] == 2 and out["grid"]["stacked_cells_per_hour"] > 0
        return
    if name == "grid":  # both runners against the bare loop
        assert out["process_ratio"] > 0 and out["groups"] == [2, 2], out
    assert out["name"] == name and out["ratio"] > 0 and out["target"] > 0, out
    if name == "verify":
        assert set(out["steps"]) == {"score", "select", "export"}
