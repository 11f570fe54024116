"""The Prefect server on PostgreSQL under load: a real PostgreSQL (Debian's package) on a free
loopback port, the server pointed at it with PREFECT_API_DATABASE_CONNECTION_URL, and the
experiment flow's grid on a 4-worker Dask cluster: it completes, the server never says
"database is locked", every task run is there once, and the results are the thread
runner's. And a database that cannot be reached is a clear error before any server starts."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from smartaug.flows.database import (
    DatabaseError,
    check_database,
    pg_bin,
    pg_program,
    start_postgres,
    stop_postgres,
)
from smartaug.lake import Lake
from tests.test_flows import ROOT, _free_port, _healthy, _python

BIN = Path(sys.executable).parent
# one PostgreSQL and one server for the module: its tests stay on one pytest-xdist worker
pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def postgres():
    try:
        pg_bin()
    except DatabaseError as e:
        pytest.skip(str(e))
    top = Path(tempfile.mkdtemp(prefix="smartaug-pg-"))
    top.chmod(0o755)  # the postgres user (when run as root) must reach its data directory
    port = _free_port()
    try:
        url = start_postgres(top / "data", port)
        yield url, top / "data"
    finally:
        stop_postgres(top / "data")
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server(postgres, tmp_path_factory, fashion_root):
    url, _ = postgres
    home = tmp_path_factory.mktemp("prefect-pg")
    port = _free_port()
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_API_DATABASE_CONNECTION_URL=url, PREFECT_RUNNER_POLL_FREQUENCY="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               SMARTAUG_DATA=fashion_root)
    log = home / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host",
                                   "127.0.0.1", "--port", str(port)], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while not _healthy(env["PREFECT_API_URL"]):
            assert server.poll() is None, "the Prefect server exited:\n" + log.read_text()[-3000:]
            assert time.time() < deadline, "the Prefect server did not start in 180 s"
            time.sleep(0.5)
        yield env, log
    finally:
        server.terminate()
        server.wait(timeout=60)


FLOW = """
import json
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from smartaug.flows.smart_augmentation import smart_augmentation, Overrides
state = smart_augmentation(preset='quick', overrides=Overrides(**{o}), return_state=True)
report = state.result()
with get_client(sync_client=True) as c:
    runs = c.read_task_runs(flow_run_filter=FlowRunFilter(
        id=FlowRunFilterId(any_=[state.state_details.flow_run_id])), limit=200)
print(json.dumps({{"report": report, "state": state.type.value,
                  "tasks": [[r.name.rsplit("-", 1)[0], r.state_type.value] for r in runs]}}))
"""


@pytest.mark.slow
def test_grid_on_a_dask_cluster_against_postgres(pg_server, postgres, tmp_path):
    env, log = pg_server
    out = {}
    for runner in ("threads", "dask:2"):
        # the pool stored with pixels on one, as recipes on the other: the same results
        o = json.dumps({"per_class_train": 40, "per_class_test": 10, "epochs": 1, "reps": 4,
                        "materialize": "always" if runner == "threads" else "never",
                        "storage": str(tmp_path / runner.replace(":", "-"))})
        # one torch thread in both, as in each Dask worker: the arithmetic is the same, so
        # any difference would be the orchestration's
        res = _python(dict(env, SMARTAUG_TASK_RUNNER=runner, OMP_NUM_THREADS="1",
                           SMARTAUG_SCORE_SHARDS="1" if runner == "threads" else "4"),
                      FLOW.format(o=o), timeout=1500)
        out[runner] = json.loads(res)
    threads, dask = out["threads"], out["dask:2"]
    assert threads["state"] == dask["state"] == "COMPLETED"
    text = log.read_text()
    assert "database is locked" not in text.lower()
    # every task run once, all completed: 12 training cells (3 methods x 4 seeds) in two
    # stacked groups (M0's 4 seeds; M1's and M2's 8, one size), the scoring in 4 shards on
    # the cluster, every other step once
    for r in (threads, dask):
        assert {s for _, s in r["tasks"]} == {"COMPLETED"}, r["tasks"]
    n_threads, n_dask = Counter(n for n, _ in threads["tasks"]), Counter(n for n, _ in dask["tasks"])
    assert n_threads["cells"] == 2 and n_threads["score"] == 1
    assert n_dask == n_threads - Counter(["score"]) + Counter({"score-shard": 4,
                                                               "commit-shards": 1})
    assert {v for k, v in n_dask.items() if k not in ("cells", "score-shard")} == {1}
    # the same results as the thread runner, and no duplicate rows in either lake
    q = "select run_id, method, rep, selection_id, test_acc, val_acc from runs order by run_id"
    a, b = Lake(tmp_path / "threads"), Lake(tmp_path / "dask-2")
    assert a.sql(q) == b.sql(q) and a.sql(q).num_rows == 12
    for lake in (a, b):
        assert lake.sql("select count(*) - count(distinct run_id) n from runs"
                        ).to_pylist()[0]["n"] == 0
    ra = json.loads((Path(threads["report"]) / "report.json").read_text())
    rb = json.loads((Path(dask["report"]) / "report.json").read_text())
    assert ra["experiment_id"] == rb["experiment_id"]
    assert a.sql("select materialized from pools").to_pylist() == [{"materialized": True}]
    assert b.sql("select materialized from pools").to_pylist() == [{"materialized": False}]
    assert {m: v["test_acc_mean"] for m, v in ra["methods"].items()} == \
        {m: v["test_acc_mean"] for m, v in rb["methods"].items()}
    # the data really is in PostgreSQL
    url, data = postgres
    assert "flow_run" in subprocess.run(
        [pg_program("psql"), "-h", "127.0.0.1", "-p", url.rsplit(":", 1)[1].split("/")[0],
         "-U", "prefect", "-d", "prefect", "-tAc", "select tablename from pg_tables"],
        capture_output=True, text=True, timeout=60).stdout.split()


def test_an_unreachable_database_is_a_clear_error_before_any_server_starts(tmp_path):
    port = _free_port()  # nothing listens there
    url = f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
    with pytest.raises(DatabaseError, match=f"cannot reach PostgreSQL at 127.0.0.1:{port}"):
        check_database(url)
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "home"),
               PREFECT_API_URL=f"http://127.0.0.1:{_free_port()}/api",
               PREFECT_API_DATABASE_CONNECTION_URL=url)
    res = subprocess.run(["make", "--no-print-directory", "up", f"PREFECT_HOME={tmp_path}/home",
                          f"PREFECT_PORT={_free_port()}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert f"cannot reach PostgreSQL at 127.0.0.1:{port}" in res.stderr
    assert "make serve-pg" in res.stderr
    assert not (tmp_path / "home" / "server.pid").exists()  # no server was started
    with pytest.raises(DatabaseError, match="needs sqlite\\+aiosqlite or postgresql\\+asyncpg"):
        check_database("mysql://u@127.0.0.1/db")


def test_wrong_database_name_and_a_running_cluster(postgres):
    url, data = postgres
    assert check_database(url).startswith("PostgreSQL ")
    with pytest.raises(DatabaseError, match="has no database 'missing'.*createdb"):
        check_database(url.rsplit("/", 1)[0] + "/missing")
    assert start_postgres(data, int(url.rsplit(":", 1)[1].split("/")[0])) == url  # reused


@pytest.mark.slow
def test_a_served_flow_killed_mid_run_resumes_against_postgres(pg_server, tmp_path):
    """The served deployments (`python -m smartaug.flows.serve`) against the PostgreSQL
    server, killed with SIGKILL (the serve process and the flow run it started) once the
    retraining has begun; served again, the deployment's next run completes with the ids of
    the first, each cell once, and `smartaug verify` finds the lake clean."""
    import signal

    env, _ = pg_server
    storage = tmp_path / "storage"
    overrides = {"per_class_train": 33, "per_class_test": 10, "epochs": 2, "reps": 2,
                 "storage": str(storage)}
    run = ("import sys, time\n"
           "from prefect.deployments import run_deployment\n"
           "from prefect.client.orchestration import get_client\n"
           "for _ in range(180):\n"
           "    try:\n"
           "        with get_client(sync_client=True) as c:\n"
           "            c.read_deployment_by_name('smart-augmentation/smart-augmentation')\n"
           "        break\n"
           "    except Exception:\n"
           "        time.sleep(1)\n"
           "r = run_deployment('smart-augmentation/smart-augmentation', parameters="
           f"{{'preset': 'quick', 'overrides': {overrides!r}}}, "
           "timeout=int(sys.argv[1]))\n"
           "print(r.state.type.value)")

    def serve():
        return subprocess.Popen([sys.executable, "-m", "smartaug.flows.serve"], env=env,
                                cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, start_new_session=True)

    first = serve()
    try:
        subprocess.run([sys.executable, "-c", run, "0"], env=env, cwd=ROOT, check=True,
                       capture_output=True, timeout=300)
        deadline = time.time() + 600
        while not list((storage / "runs").glob("run_id=*")):  # retraining has begun
            assert first.poll() is None, "the served deployments ended"
            assert time.time() < deadline, "no cell was trained in 600 s"
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGKILL)  # the serve process and its flow run
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    lake = Lake(storage)
    at_kill = set(lake.partitions("runs"))
    assert not lake.partitions("experiments")
    again = serve()
    try:
        state = subprocess.run([sys.executable, "-c", run, "900"], env=env, cwd=ROOT,
                               capture_output=True, text=True, timeout=1200)
        assert state.stdout.strip().splitlines()[-1:] == ["COMPLETED"], state.stderr[-3000:]
    finally:
        os.killpg(again.pid, signal.SIGTERM)
        again.wait(timeout=60)
    runs = lake.sql("select run_id from runs").column("run_id").to_pylist()
    assert len(runs) == len(set(runs)) == 6 and at_kill <= set(runs)
    exp = lake.sql("select experiment_id, config from experiments").to_pylist()
    assert len(exp) == 1
    from smartaug.config import config_from_dict
    from smartaug.steps.experiment import experiment_id

    assert exp[0]["experiment_id"] == experiment_id(config_from_dict(json.loads(exp[0]["config"])))
    check = subprocess.run([str(BIN / "smartaug"), "verify", "--storage", str(storage)],
                           env=env, capture_output=True, text=True, timeout=600)
    assert check.returncode == 0, check.stderr[-2000:]
