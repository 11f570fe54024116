"""The lake root as an fsspec URL: ``file://`` is the local lake; any other protocol goes
through the object-store path (one object per partition, uploaded whole), exercised here on
fsspec's in-process ``memory://`` filesystem and on a real S3 API (moto's server on a free
loopback port, through s3fs)."""

import json
import uuid

import numpy as np
import pyarrow as pa
import pytest

from smartaug.config import standard_methods
from smartaug.lake import Lake, LakeError
from tests.conftest import tiny_config


def _scores(n: int, run: str = "r1", start: int = 0) -> dict:
    ids = [f"i{k:05d}" for k in range(start, start + n)]
    return {"scoring_run_id": [run] * n, "model_id": ["m"] * n, "pool_id": ["p"] * n,
            "item_id": ids, "label": np.arange(n) % 10, "pred": np.arange(n) % 10,
            "correct": [True] * n, "avh": np.linspace(0, 1, n), "avc_true": np.zeros(n),
            "confidence": np.ones(n), "margin": np.ones(n), "loss": np.zeros(n),
            "entropy": np.zeros(n), "el2n": np.zeros(n), "feature_norm": np.ones(n)}


@pytest.fixture(params=["memory", "s3"])
def remote(request, tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTAUG_CACHE", str(tmp_path / "cache"))
    if request.param == "s3":
        request.getfixturevalue("s3_endpoint")
    url = f"{request.param}://lakes/{uuid.uuid4().hex[:8]}"
    lake = Lake(url)
    yield lake
    lake.fs.rm(lake.path, recursive=True)


def test_file_url_is_the_local_lake(tmp_path):
    lake = Lake(f"file://{tmp_path}/lake")
    assert lake.local and lake.root == tmp_path / "lake"
    assert lake.write("scores", "r1", _scores(5))
    same = Lake(tmp_path / "lake")
    assert same.lake_id == lake.lake_id and same.count("scores", "r1") == 5
    assert lake.url("scores") == str(tmp_path / "lake" / "scores")


def test_remote_partition_is_one_object_written_whole(remote):
    fs, base = remote.fs, remote.path
    assert not remote.local and remote.root.startswith(("memory://", "s3://"))
    with remote.writer("scores", "r1", rows_per_file=10) as w:  # rolls over locally only
        w.write(_scores(25))
        w.write(_scores(25, start=25))
        assert not remote.has("scores", "r1")  # nothing visible before commit
        assert not fs.exists(f"{base}/scores/scoring_run_id=r1")
    assert w.committed
    assert fs.glob(f"{base}/scores/scoring_run_id=r1/*") == \
        [f"{base}/scores/scoring_run_id=r1/{n}" for n in ("_manifest.json", "part-00000.parquet")]
    remote.check_partition("scores", "r1", full=True)  # what verify does: sha256 over the wire
    assert remote.count("scores", "r1") == 50
    back = remote.read("scores", "r1")
    assert back["item_id"].to_pylist() == [f"i{k:05d}" for k in range(50)]
    assert remote.write("scores", "r1", _scores(3)) is False  # exists: nothing written
    # DuckDB reads the lake through the registered filesystem, views and all
    assert remote.sql("select count(*) n, sum(avh) s from scores").to_pylist() == \
        [{"n": 50, "s": pytest.approx(2 * float(np.linspace(0, 1, 25).sum()))}]
    assert list(remote.staging.iterdir()) == []  # staging cleaned after the upload
    # reopening finds the same lake
    again = Lake(remote.root)
    assert again.lake_id == remote.lake_id and again.count("scores", "r1") == 50


def test_remote_failed_write_leaves_nothing(remote):
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        with remote.writer("scores", "r2") as w:
            w.write(_scores(10, run="r2"))
            w.write({**_scores(1, run="r2"), "avh": ["not a float"]})
    assert not w.committed
    assert not remote.has("scores", "r2")
    assert not remote.fs.exists(f"{remote.path}/scores/scoring_run_id=r2")
    assert remote.sql("select count(*) n from scores").to_pylist() == [{"n": 0}]
    with pytest.raises(LakeError, match="run the step that produces it"):
        remote.files("scores", "r2")


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(LakeError, match="fsspec backend"):
        Lake("nosuchproto://bucket/lake")


@pytest.mark.slow
def test_experiment_on_a_remote_lake(remote, fashion_root, tmp_path):
    """The whole chain on an object-store lake: sharded scoring publishes one object equal to
    a local one-pass scoring, the report is uploaded, a rerun adds no rows, and a fresh
    machine (an empty cache) downloads the checkpoint it needs."""
    from smartaug.steps import experiment as steps
    from smartaug.steps.experiment import run_experiment
    from smartaug.steps.report import write_report
    from smartaug.steps.score import commit_pool_shards, load_model, score_pool, score_pool_shard

    cfg = tiny_config(fashion_root, per_class_train=30, per_class_test=10,
                      methods=standard_methods(), reps=1)
    dataset_id = steps.ingest(remote, cfg)
    model_id = steps.baseline(remote, cfg, dataset_id, log=None)
    pool_id = steps.pool(remote, cfg, dataset_id)
    for k in range(2):
        score_pool_shard(remote, model_id, pool_id, k, 2, batch_size=32, device="cpu")
    run_id = commit_pool_shards(remote, model_id, pool_id, 2, device="cpu")
    assert len(remote.files("scores", run_id)) == 1
    assert not remote.fs.exists(f"{remote.path}/.tmp/shards-{run_id}")

    # the same lake copied to local disk holds the same tables; scored there in one pass,
    # the scores equal the remote shards'
    local_dir = tmp_path / "copy"
    remote.fs.get(remote.path + "/", str(local_dir), recursive=True)
    local = Lake(local_dir)
    assert local.row("pools", pool_id) == remote.row("pools", pool_id)
    for table in ("scores", "scoring_runs"):
        local.remove(local.partition_dir(table, run_id))
    assert score_pool(local, model_id, pool_id, batch_size=50, device="cpu") == run_id
    q = "select item_id, avh, el2n from scores where scoring_run_id = $r order by item_id"
    assert local.sql(q, {"r": run_id}) == remote.sql(q, {"r": run_id})

    exp_id = run_experiment(cfg, remote, log=None)
    out = write_report(remote, exp_id, command="pytest")
    report_url = remote.url("reports", exp_id, "report.json")
    assert report_url.startswith(("memory://", "s3://"))
    assert remote.fs.cat_file(report_url).decode() == (out / "report.json").read_text()
    counts = {t: remote.sql(f"select count(*) n from {t}").to_pylist()[0]["n"]
              for t in ("runs", "history", "models", "scores", "selections")}
    assert counts["runs"] == 3
    assert run_experiment(cfg, remote, log=None) == exp_id
    assert counts == {t: remote.sql(f"select count(*) n from {t}").to_pylist()[0]["n"]
                      for t in counts}

    import shutil

    shutil.rmtree(remote.cache)  # another machine: nothing cached
    model, row = load_model(Lake(remote.root), model_id, __import__("torch").device("cpu"))
    assert row["checkpoint"] == f"checkpoints/{model_id}.pt"  # relative to the root
    assert (remote.cache / "checkpoints" / f"{model_id}.pt").is_file()
    # a selection of the remote lake as a PyTorch Dataset, the same items as from the copy
    import smartaug

    sid = json.loads(remote.row("experiments", exp_id)["selections"])["M2"]
    ds = smartaug.SelectionDataset(remote.root, sid)
    local.remove(local.location("selections"))  # the copy predates the selection: re-copy
    remote.fs.get(remote.path + "/selections/", str(local_dir / "selections"), recursive=True)
    again = smartaug.SelectionDataset(local_dir, sid)
    assert ds.ids == again.ids and (ds.images == again.images).all() and len(ds) > 0


def test_unreachable_object_store_is_a_clear_error(s3_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTAUG_CACHE", str(tmp_path / "cache"))
    with pytest.raises(LakeError, match=r"cannot open the lake s3://no-such-bucket-x/lake"):
        Lake("s3://no-such-bucket-x/lake")


@pytest.mark.slow
def test_a_study_killed_on_an_object_store_resumes_with_the_same_ids(s3_endpoint, fashion_root,
                                                                      tmp_path):
    """`smartaug study --workers 2` on an S3 lake (moto), killed (SIGKILL) once cells have
    been committed: the rerun finishes it with the study id and the cells of an unbroken run
    (one row each, no duplicate), and `smartaug verify` finds the lake clean."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    bin_ = Path(sys.executable).parent
    f = tmp_path / "study.toml"
    f.write_text(f"""preset = "quick"
budgets = [0.25]
scores = ["avh"]
positions = ["easiest", "hardest"]
coverage = []
seeds = 3
references = ["none"]
choose_seeds = 0
[data]
root = "{fashion_root}"
per_class_train = 20
per_class_test = 5
[retrain]
epochs = 4
[baseline]
epochs = 1
""")
    env = dict(os.environ, **s3_endpoint, SMARTAUG_CACHE=str(tmp_path / "cache"),
               OMP_NUM_THREADS="1")
    url = f"s3://lakes/{uuid.uuid4().hex[:8]}"
    cmd = [str(bin_ / "smartaug"), "study", "--config", str(f), "--workers", "2", "-q",
           "--storage", url]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    lake = None
    try:
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline:
            try:
                lake = lake or Lake(url, create=False)
                lake.fs.invalidate_cache()
                if len(lake.partitions("runs")) >= 2:
                    break
            except LakeError:
                pass
            time.sleep(0.2)
        assert proc.poll() is None, "the study ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lake.fs.invalidate_cache()
    at_kill = set(lake.partitions("runs"))
    assert at_kill and not lake.sql("select * from experiments").num_rows
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    sid = res.stdout.strip().splitlines()[-1].rstrip("/").rsplit("/", 1)[-1]
    lake.fs.invalidate_cache()
    runs = lake.sql("select run_id from runs").column("run_id").to_pylist()
    # the preset's two pools x (random, easiest, hardest), and the none reference: 7 rows of
    # 3 seeds, each once; the cells committed before the kill were kept, not trained again
    assert len(runs) == len(set(runs)) == 21 and at_kill <= set(runs)
    assert lake.partitions("studies") == [sid]
    check = subprocess.run([str(bin_ / "smartaug"), "verify", "--storage", url], env=env,
                           capture_output=True, text=True, timeout=600)
    assert check.returncode == 0, check.stderr[-2000:]
