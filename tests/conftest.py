import os
import socket
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread a worker (and in every process it starts): two workers on two cores
    # with two threads each would spin against each other
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # and a study's cells in its own process unless a test asks for worker processes: the
    # cores are already busy with the suite's workers, and each spawned worker would import
    # torch again
    os.environ.setdefault("SMARTAUG_WORKERS", "1")

import numpy as np
import pytest

FASHION_DIRS = [Path(p) for p in (os.environ.get("SMARTAUG_DATA"),) if p] + [
    Path("/usr/share/datasets/fashion-mnist")
]


@pytest.fixture(scope="session")
def fashion_root() -> str:
    """Directory with the real Fashion-MNIST IDX files (Debian's dataset-fashion-mnist)."""
    for d in FASHION_DIRS:
        if (d / "train-images-idx3-ubyte.gz").is_file() or (d / "train-images-idx3-ubyte").is_file():
            return str(d)
    pytest.skip("Fashion-MNIST not installed: apt-get install -y dataset-fashion-mnist "
                "(make test does this as root) or set SMARTAUG_DATA")


def smartaug(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI's entry point (``smartaug.cli.main``) in this process: (exit code, stdout,
    stderr)."""
    from smartaug import cli

    capsys.readouterr()
    try:
        cli.main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def write_image_folder(root: Path, *, classes=("cat", "dog", "eel"), per_class=(6, 3),
                       size=(32, 32), ext=".jpg", mode="RGB", seed=0) -> Path:
    """A tiny real ImageFolder tree of JPEG/PNG files with class-dependent colours."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class, strict=True):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.full((*size, 3), 60 * ci + 30, dtype=np.uint8)
                noise = rng.integers(0, 20, size=(*size, 3), dtype=np.uint8)
                Image.fromarray(base + noise).convert(mode).save(d / f"{i:03d}{ext}")
    return root


def tiny_config(root: str, *, per_class_train: int, per_class_test: int, epochs: int = 1,
                val_fraction: float = 1 / 6, **kwargs):
    """An experiment on a few real Fashion-MNIST images per class, trained for ``epochs`` on
    the CPU (batches of 64) for the baseline and every method; ``kwargs`` set the rest."""
    from smartaug.config import DataConfig, ExperimentConfig, TrainConfig

    train = TrainConfig(epochs=epochs, batch_size=64, device="cpu")
    return ExperimentConfig(preset="test", data=DataConfig(
        root=root, per_class_train=per_class_train, per_class_test=per_class_test,
        val_fraction=val_fraction), baseline=train, retrain=train, **kwargs)


def tiny_study_data(per_class_train: int, per_class_test: int, epochs: int = 2) -> str:
    """The [data], [baseline] and [retrain] tables of a study file on the tiny image folder
    ``images`` beside it (``write_image_folder``), batches of 16."""
    return f"""
[data]
dataset = "imagefolder:images"
grayscale = true
image_size = 28
per_class_train = {per_class_train}
per_class_test = {per_class_test}
val_fraction = 0.25

[baseline]
epochs = {epochs}
batch_size = 16

[retrain]
epochs = {epochs}
batch_size = 16
"""


@pytest.fixture(scope="session")
def small_lake(tmp_path_factory, fashion_root):
    """A lake with real Fashion-MNIST (50 train / 20 test per class, 20 % validation), a
    1-epoch LeNet-5 baseline, a one-per-image pool and its scoring run."""
    from smartaug.config import AugmentConfig, DataConfig, TrainConfig
    from smartaug.lake import Lake
    from smartaug.steps.baseline import train_baseline
    from smartaug.steps.ingest import ingest
    from smartaug.steps.pool import build_pool
    from smartaug.steps.score import score_pool

    lake = Lake(tmp_path_factory.mktemp("lake"))
    dataset_id = ingest(lake, DataConfig(root=fashion_root, per_class_train=50,
                                         per_class_test=20, val_fraction=0.2), download=False)
    model_id = train_baseline(lake, dataset_id, cfg=TrainConfig(epochs=1, device="cpu"), log=None)
    pool_id = build_pool(lake, dataset_id, AugmentConfig(seed=1), workers=2)
    run_id = score_pool(lake, model_id, pool_id, batch_size=64, device="cpu")
    return {"lake": lake, "dataset_id": dataset_id, "model_id": model_id, "pool_id": pool_id,
            "run_id": run_id}


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto's server) on a free loopback port with a bucket ``lakes``; s3fs in
    this process is pointed at it, and the returned variables point a subprocess at it (what
    a user sets for MinIO or another S3-compatible store)."""
    import fsspec

    pytest.importorskip("s3fs")
    server = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    srv.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    mp.setitem(fsspec.config.conf, "s3", {"endpoint_url": env["FSSPEC_S3_ENDPOINT_URL"]})
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir("lakes")
    yield env
    mp.undo()
    srv.stop()


@pytest.fixture(scope="session")
def dask_cluster(s3_endpoint, tmp_path_factory):
    """A 2-worker Dask cluster (processes, one thread each, as ``SMARTAUG_TASK_RUNNER=dask:2``
    starts one), started once for the session; the ``SMARTAUG_TASK_RUNNER`` spec of its
    scheduler (``dask://HOST:PORT``). Its workers are started after the S3 endpoint's
    variables are set, so they reach the same object store."""
    distributed = pytest.importorskip("distributed")
    mp = pytest.MonkeyPatch()  # the workers' cache of remote checkpoints: this session's
    mp.setenv("SMARTAUG_CACHE", str(tmp_path_factory.mktemp("dask-cache")))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    try:
        yield "dask://" + cluster.scheduler_address.removeprefix("tcp://")
    finally:
        cluster.close()
        mp.undo()


# the longest modules first, in this order (make test keeps a module on one worker and its
# order: --dist loadfile --no-loadscope-reorder): started last, one of them would leave the
# other worker idle at the end of the run; the rest in file order
LONGEST_FIRST = ("test_flows.py", "test_study.py", "test_readme.py", "test_experiment.py",
                 "test_postgres.py", "test_benchmarks.py", "test_gpu.py", "test_atlas.py",
                 "test_lake_url.py", "test_hypotheses.py", "test_stacked.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept
