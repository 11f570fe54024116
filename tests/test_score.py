"""Scoring (smartaug/score.py): agreement with an independent computation, idempotence,
bad input, and a run killed with SIGKILL halfway."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from smartaug.lake import Lake, LakeError, encode_images
from smartaug.models import load_checkpoint
from smartaug.steps.score import ScoringError, score_pool, score_split

VENV_BIN = Path(sys.executable).parent


def independent_avh(checkpoint: str, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    model = load_checkpoint(checkpoint)
    with torch.no_grad():
        x = torch.from_numpy(images.copy()).permute(0, 3, 1, 2).float() / 255
        f = model.features(x).double().numpy()
    w = model.head.weight.detach().double().numpy()
    cos = (f @ w.T) / (np.linalg.norm(f, axis=1, keepdims=True) * np.linalg.norm(w, axis=1))
    ang = np.arccos(np.clip(cos, -1, 1))
    return ang[np.arange(len(labels)), labels] / ang.sum(1)


def test_stored_avh_matches_independent_computation(small_lake):
    lake, run = small_lake["lake"], small_lake["run_id"]
    ckpt = lake.local_path(lake.row("models", small_lake["model_id"])["checkpoint"])
    aug = lake.read("augmentations", small_lake["pool_id"])
    h, w, c = aug["height"][0].as_py(), aug["width"][0].as_py(), aug["channels"][0].as_py()
    images = np.stack([np.frombuffer(b, np.uint8).reshape(h, w, c)
                       for b in aug["image"].to_pylist()])
    ref = dict(zip(aug["aug_id"].to_pylist(),
                   independent_avh(ckpt, images, aug["label"].to_numpy()), strict=True))
    scores = lake.read("scores", run)
    assert scores.num_rows == aug.num_rows == len(set(scores["item_id"].to_pylist()))
    got = dict(zip(scores["item_id"].to_pylist(), scores["avh"].to_pylist(), strict=True))
    assert max(abs(got[k] - ref[k]) for k in ref) < 1e-5
    meta = lake.row("scoring_runs", run)
    assert meta["n_items"] == aug.num_rows and meta["pool_id"] == small_lake["pool_id"]


def test_same_run_twice_writes_nothing(small_lake):
    lake = small_lake["lake"]
    before = lake.sql("select count(*) n from scores").to_pylist()
    again = score_pool(lake, small_lake["model_id"], small_lake["pool_id"], batch_size=7,
                       device="cpu")
    assert again == small_lake["run_id"]
    assert lake.sql("select count(*) n from scores").to_pylist() == before


def test_originals_are_scored_in_runs_of_their_own(small_lake):
    lake = small_lake["lake"]
    run = score_split(lake, small_lake["model_id"], small_lake["dataset_id"], "test",
                      device="cpu")
    t = lake.read("scores", run)
    assert t.num_rows == 200 and t["pool_id"].null_count == 200
    assert all(i.startswith("test/") for i in t["item_id"].to_pylist())
    acc = float(pc.mean(t["correct"].cast("int64")).as_py())
    assert acc == pytest.approx(lake.row("models", small_lake["model_id"])["test_acc"])


def _fake_pool(lake, base_pool, pool_id, mutate, row_group_size=16_384):
    t = lake.read("augmentations", base_pool)
    t = mutate(t.set_column(0, "pool_id", [[pool_id] * t.num_rows]))
    with lake.writer("augmentations", pool_id, row_group_size=row_group_size) as w:
        w.write(t)
    dataset_id = lake.row("pools", base_pool)["dataset_id"]
    lake.write("pools", pool_id, {"pool_id": [pool_id], "dataset_id": [dataset_id],
                                  "config": ["{}"],
                                  "n_items": [t.num_rows], "materialized": [True],
                                  "seconds": [0.0],
                                  "created_at": [None], "git_sha": ["test"]})
    return pool_id


def test_corrupt_image_is_named_and_nothing_is_written(small_lake):
    lake = small_lake["lake"]

    def corrupt(t):
        imgs = t["image"].to_pylist()
        imgs[3] = imgs[3][:-5]
        return t.set_column(t.schema.get_field_index("image"), "image", [imgs])

    pid = _fake_pool(lake, small_lake["pool_id"], "corruptpool00001", corrupt)
    bad_id = lake.read("augmentations", pid)["aug_id"][3].as_py()
    with pytest.raises(LakeError, match=f"corrupt image in row {bad_id}"):
        score_pool(lake, small_lake["model_id"], pid, device="cpu")
    assert lake.sql("select count(*) n from scoring_runs where pool_id = $p",
                    {"p": pid}).to_pylist() == [{"n": 0}]
    assert list((lake.root / ".tmp").iterdir()) == []


def test_label_out_of_range(small_lake):
    lake = small_lake["lake"]

    def relabel(t):
        labels = t["label"].to_pylist()
        labels[5] = 12
        return t.set_column(t.schema.get_field_index("label"), "label", [labels])

    pid = _fake_pool(lake, small_lake["pool_id"], "badlabelpool0001", relabel)
    with pytest.raises(ScoringError, match="label 12, out of range for a 10-class model"):
        score_pool(lake, small_lake["model_id"], pid, device="cpu")


def test_model_input_shape_must_match_the_pool(small_lake):
    lake = small_lake["lake"]

    def rgb32(t):
        n = t.num_rows
        imgs = np.zeros((n, 32, 32, 3), np.uint8)
        t = t.set_column(t.schema.get_field_index("image"), "image", encode_images(imgs))
        for col, v in (("height", 32), ("width", 32), ("channels", 3)):
            t = t.set_column(t.schema.get_field_index(col), col, [[v] * n])
        return t

    pid = _fake_pool(lake, small_lake["pool_id"], "rgb32pool0000001", rgb32)
    with pytest.raises(ScoringError, match=r"takes 1x28x28 \(CxHxW\) images, the items are 3x32x32"):
        score_pool(lake, small_lake["model_id"], pid, device="cpu")


def _count_run(storage: Path, run: str | None = None) -> int:
    """Rows of the scores table as the standard DuckDB CLI sees them (cwd = parent of the
    lake root, which is named storage/, as in the repository)."""
    views = Path(__file__).parent.parent / "storage" / "views.sql"
    out = subprocess.run([str(VENV_BIN / "duckdb"), "-init", str(views), "-csv", "-noheader",
                          "-c", "select count(*) from scores"], cwd=storage.parent,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sigkill_halfway_then_rerun_completes(tmp_path, fashion_root):
    storage = tmp_path / "storage"
    env = dict(os.environ, SMARTAUG_STORAGE=str(storage), SMARTAUG_DATA=fashion_root)

    def cli(*args):
        res = subprocess.run([str(VENV_BIN / "smartaug"), *args], env=env, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip().splitlines()[-1]

    from smartaug.config import AugmentConfig, DataConfig, TrainConfig
    from smartaug.steps.baseline import train_baseline
    from smartaug.steps.ingest import ingest
    from smartaug.steps.pool import build_pool

    lake = Lake(storage)  # the steps before, in this process: only scoring is killed
    d = ingest(lake, DataConfig(root=fashion_root, per_class_train=100, per_class_test=10))
    m = train_baseline(lake, d, cfg=TrainConfig(epochs=1, device="cpu"), log=None)
    p = build_pool(lake, d, AugmentConfig(policy="k:40"), workers=2)  # 40 000 items
    proc = subprocess.Popen([str(VENV_BIN / "smartaug"), "score", "--model-id", m, "--pool-id",
                             p, "--batch-size", "16"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    seen = []
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until rows are on disk in the temporary partition
        parts = list((storage / ".tmp").glob("scores-*/part-*.parquet"))
        if parts and parts[0].stat().st_size > 100_000:
            break
        assert proc.poll() is None, "scoring finished before it could be killed"
        time.sleep(0.01)
    seen.append(_count_run(storage))  # the DuckDB CLI works during the run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    seen.append(_count_run(storage))
    assert seen == [0, 0]  # no partial file was ever visible
    run = cli("score", "--model-id", m, "--pool-id", p)
    assert _count_run(storage) == 40_000
    lake = Lake(storage)
    assert lake.sql("select count(distinct item_id) n, count(*) c from scores where "
                    "scoring_run_id = $r", {"r": run}).to_pylist() == [{"n": 40_000, "c": 40_000}]
    assert not any((storage / ".tmp").iterdir())  # the dead run's leftovers were cleaned up
    assert json.loads(lake.row("pools", p)["config"])["policy"] == "k:40"


def test_sharded_scoring_equals_one_pass(small_lake):
    from smartaug.steps.score import commit_pool_shards, score_pool_shard

    lake = small_lake["lake"]
    a = _fake_pool(lake, small_lake["pool_id"], "shardpoolA000001", lambda t: t)
    b = _fake_pool(lake, small_lake["pool_id"], "shardpoolB000001", lambda t: t,
                   row_group_size=100)  # 5 row groups: shards of 2, 2 and 1
    ra = score_pool(lake, small_lake["model_id"], a, device="cpu")
    with pytest.raises(ScoringError, match="shards not scored yet"):
        commit_pool_shards(lake, small_lake["model_id"], b, 3, device="cpu")
    for k in (2, 0, 1):  # any order, any worker
        rb = score_pool_shard(lake, small_lake["model_id"], b, k, 3, batch_size=32, device="cpu")
    assert not lake.has("scores", rb)  # nothing visible before the commit
    assert commit_pool_shards(lake, small_lake["model_id"], b, 3, device="cpu") == rb
    sa = lake.read("scores", ra).sort_by("item_id")
    sb = lake.read("scores", rb).sort_by("item_id")
    assert sa["item_id"].to_pylist() == sb["item_id"].to_pylist()
    # batch 32 against the default: other kernel blockings (AVX-512 among them) move the
    # last float32 bits of a feature, so the scores agree to 1e-6 relative, not bit for bit
    np.testing.assert_allclose(sb["avh"].to_numpy(), sa["avh"].to_numpy(), rtol=1e-6,
                               atol=1e-9)
    assert lake.row("scoring_runs", rb)["n_items"] == sb.num_rows
    assert not (lake.root / ".tmp" / f"shards-{rb}").exists()
    assert len(lake.files("scores", rb)) == 3
