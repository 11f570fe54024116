"""Prefect flows against a real Prefect server (SQLite, 127.0.0.1, a free port)."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from smartaug.lake import Lake

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
TINY = {"per_class_train": 33, "per_class_test": 10, "epochs": 1, "reps": 2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/health", timeout=2)
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory, fashion_root):
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = dict(os.environ, PREFECT_HOME=str(home),
               PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_RUNNER_POLL_FREQUENCY="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_ENABLED="false", SMARTAUG_DATA=fashion_root,
               PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED="true",  # as make up sets them: the
               PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED="true")  # logs reach --watch
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not _healthy(env["PREFECT_API_URL"]):
            assert server.poll() is None, "the Prefect server exited"
            assert time.time() < deadline, "the Prefect server did not start in 120 s"
            time.sleep(0.5)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def _python(env, code: str, timeout=900, lines: int = 1):
    """Run ``code`` in a new interpreter: its last line of output (its last ``lines``, a list,
    when more than one)."""
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout.strip().splitlines()
    return out[-1] if lines == 1 else out[-lines:]


def _counts(lake: Lake) -> dict:
    return {t: lake.sql(f"select count(*) n from {t}").to_pylist()[0]["n"]
            for t in ("samples", "augmentations", "models", "scores", "selections", "runs",
                      "history", "experiments")}


def _quick(storage) -> str:
    """The code of a run of the smart-augmentation flow: the quick preset at TINY's size."""
    o = json.dumps({**TINY, "storage": str(storage)})
    return ("from smartaug.flows.smart_augmentation import smart_augmentation, Overrides\n"
            f"print(smart_augmentation(preset='quick', overrides=Overrides(**{o})))")


@pytest.fixture(scope="module")
def quick_run(prefect_env, tmp_path_factory) -> tuple[Path, Path]:
    """One run of the flow on a local lake, in threads (the default task runner): its
    storage and report. Tests that change the lake leave it as the run made it."""
    storage = tmp_path_factory.mktemp("quick") / "storage"
    return storage, Path(_python(prefect_env, _quick(storage)))


@pytest.mark.slow
def test_flow_completes_resumes_and_reruns_with_no_work(prefect_env, quick_run, tmp_path):
    storage, out = quick_run
    code = _quick(storage)
    report = json.loads((out / "report.json").read_text())
    assert set(report["methods"]) == {"M0", "M1", "M2"} and report["methods"]["M2"]["n"] == 2
    lake = Lake(storage)
    first = _counts(lake)
    scored_at = lake.sql("select scoring_run_id, created_at from scoring_runs").to_pylist()
    # a second identical run adds no rows; then deleting the lake invalidates Prefect's
    # cache: the next run recomputes, not fails (both runs in one process)
    twice = (f"{code}\nimport json, shutil\nfrom smartaug.lake import Lake\n"
             f"from tests.test_flows import _counts\nlake = Lake({str(storage)!r})\n"
             "print(json.dumps([_counts(lake), lake.sql('select scoring_run_id, created_at "
             "from scoring_runs').to_pylist()], default=str))\n"
             f"shutil.rmtree({str(storage)!r})\n{code}")
    counts, scored = json.loads(_python(prefect_env, twice, lines=2)[0])
    assert counts == first
    assert scored == json.loads(json.dumps(scored_at, default=str))
    assert _counts(Lake(storage)) == first
    assert scored_at
    # the CLI runs the same list of steps: the same ids and the same figures
    cli = subprocess.run([str(BIN / "smartaug"), "experiment", "--preset", "quick",
                          "--per-class-train", "33", "--per-class-test", "10", "--epochs", "1",
                          "--seeds", "2", "--storage", str(tmp_path / "cli")], env=prefect_env,
                         capture_output=True, text=True, timeout=900)
    assert cli.returncode == 0, cli.stderr[-3000:]
    q = "select run_id, method, rep, selection_id, test_acc, val_acc from runs order by run_id"
    assert Lake(tmp_path / "cli").sql(q) == Lake(storage).sql(q)
    cli_report = json.loads((Path(cli.stdout.strip().splitlines()[-1]) / "report.json"
                             ).read_text())
    assert cli_report["ids"] == report["ids"]
    assert cli_report["experiment_id"] == report["experiment_id"]
    figures = ("test_acc_mean", "test_acc_std", "ci95", "n", "test_avh_mean", "selection_id")
    assert {m: [v[f] for f in figures] for m, v in cli_report["methods"].items()} == \
        {m: [v[f] for f in figures] for m, v in report["methods"].items()}


@pytest.mark.slow
def test_run_killed_after_scoring_resumes_without_rescoring(prefect_env, tmp_path):
    storage = tmp_path / "storage"
    o = json.dumps({**TINY, "epochs": 2, "storage": str(storage)})
    code = ("from smartaug.flows.smart_augmentation import smart_augmentation, Overrides\n"
            f"print(smart_augmentation(preset='quick', overrides=Overrides(**{o})))")
    proc = subprocess.Popen([sys.executable, "-c", code], env=prefect_env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not list((storage / "runs").glob("run_id=*")):  # retraining has begun
        assert proc.poll() is None, "the flow ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    lake = Lake(storage)
    scored = lake.sql("select scoring_run_id, created_at from scoring_runs order by 1").to_pylist()
    assert lake.sql("select count(*) n from experiments").to_pylist()[0]["n"] == 0
    out = Path(_python(prefect_env, code))
    assert (out / "report.json").is_file()
    assert lake.sql("select scoring_run_id, created_at from scoring_runs order by 1"
                    ).to_pylist() == scored  # not re-scored
    assert lake.sql("select count(*) n from runs").to_pylist()[0]["n"] == 6


@pytest.mark.slow
def test_deployment_run_through_a_served_deployment(prefect_env, tmp_path):
    # two workers on any machine: the grid's two groups train side by side
    serve = subprocess.Popen([sys.executable, "-m", "smartaug.flows.serve"],
                             env={**prefect_env, "SMARTAUG_WORKERS": "2"}, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        storage = tmp_path / "storage"
        code = (
            "import time\n"
            "from prefect.deployments import run_deployment\n"
            "from prefect.client.orchestration import get_client\n"
            "for _ in range(120):\n"
            "    try:\n"
            "        with get_client(sync_client=True) as c:\n"
            "            c.read_deployment_by_name('smart-augmentation/smart-augmentation')\n"
            "        break\n"
            "    except Exception:\n"
            "        time.sleep(1)\n"
            f"run = run_deployment('smart-augmentation/smart-augmentation', parameters="
            f"{{'preset': 'quick', 'overrides': {dict(TINY, storage=str(storage))!r}}}, "
            "timeout=900)\n"
            "from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId\n"
            "from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId\n"
            "time.sleep(3)\n"
            "with get_client(sync_client=True) as c:\n"
            "    logs = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId("
            "any_=[run.id])), limit=200)\n"
            "    tasks = c.read_task_runs(flow_run_filter=FlowRunFilter("
            "id=FlowRunFilterId(any_=[run.id])))\n"
            "epochs = sum(l.message.startswith(('epoch ', 'baseline lenet5: epoch '))"
            " for l in logs)\n"
            "cells = [t for t in tasks if t.name.startswith('cells-')]\n"
            "apart = len(cells) == 2 and max(t.start_time for t in cells) < "
            "min(t.end_time for t in cells)\n"
            "print(run.state.type.value, epochs, apart)")
        state, epochs, apart = _python(prefect_env, code).split()
        # the training steps' lines (one per epoch: the baseline, then the 6 cells in two
        # stacked groups, M0's seeds and M1's and M2's, each group in a worker process that
        # passes its lines back) are run logs; the two groups trained at the same time
        assert state == "COMPLETED" and int(epochs) == 3 and apart == "True"
        lake = Lake(storage)
        assert lake.sql("select count(*) n from runs").to_pylist()[0]["n"] == 6
        ls = subprocess.run([str(BIN / "prefect"), "deployment", "ls"], env=prefect_env,
                            capture_output=True, text=True, timeout=120)
        assert "smart-augmentation" in ls.stdout and "reselect" in ls.stdout
        assert "study/study" in " ".join(ls.stdout.split()) or "study" in ls.stdout
        nightly = subprocess.run([str(BIN / "prefect"), "deployment", "inspect",
                                  "reselect/nightly"], env=prefect_env, capture_output=True,
                                 text=True, timeout=120)
        assert "0 3 * * *" in nightly.stdout
        # a reselect run writes drift and a child model; the nightly round can run a
        # schedule: its fine-tuning is paced, the rest as before (both in one process)
        out = _python(prefect_env, "import json\nfrom smartaug.flows.reselect import reselect\n"
                      f"print(json.dumps(reselect(storage={str(storage)!r}, retrain=True), "
                      "default=str))\n"
                      f"print(json.dumps(reselect(storage={str(storage)!r}, retrain=True, "
                      "schedule='easy-to-hard:linear:0.5'), default=str))", lines=2)
        result, paced = (json.loads(o) for o in out)
        assert result["drift"] is not None and result["child_model_id"]
        assert lake.row("drift", result["selection_id"])["round"] == 1
        assert lake.row("models", result["child_model_id"])["parent_model_id"] is not None
        child = json.loads(lake.row("models", paced["child_model_id"])["config"])
        assert child["schedule"] == "easy-to-hard:linear:0.5" and paced["round"] == 2
        assert child["items_seen"] == child["train"]["epochs"] * len(
            lake.read("selections", child["selection_id"]))
        # what no retry can fix fails at once, and says why in --watch and the state message
        bad = json.dumps({"dataset": "imagefolder:/no/such/images",
                          "storage": str(tmp_path / "bad")})
        watch = subprocess.run([str(BIN / "prefect"), "deployment", "run",
                                "smart-augmentation/smart-augmentation", "-p",
                                f"overrides={bad}", "--watch"], env=prefect_env,
                               capture_output=True, text=True, timeout=600)
        shown = " ".join((watch.stdout + watch.stderr).split())
        assert watch.returncode != 0 and "Failed" in shown
        assert "error: imagefolder: directory not found: /no/such/images" in shown, shown[-3000:]
        run_id = re.search(r"UUID: ([0-9a-f-]{36})", shown).group(1)
        code = (
            "import json\nfrom uuid import UUID\n"
            "from prefect.client.orchestration import get_client\n"
            "from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId\n"
            "with get_client(sync_client=True) as c:\n"
            f"    run = c.read_flow_run(UUID('{run_id}'))\n"
            "    tasks = c.read_task_runs(flow_run_filter=FlowRunFilter("
            "id=FlowRunFilterId(any_=[run.id])))\n"
            "    print(json.dumps({'message': run.state.message, 'tasks': "
            "[(t.name, t.run_count, t.state.type.value) for t in tasks]}))")
        failed = json.loads(_python(prefect_env, code))
        assert "/no/such/images" in failed["message"]
        assert [(n.split("-")[0], c) for n, c, _ in failed["tasks"]] == [("ingest", 1)]
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_bad_overrides_are_refused():
    from pydantic import ValidationError

    from smartaug.flows.smart_augmentation import Overrides, experiment_config

    with pytest.raises(ValidationError):
        Overrides(epochs=0)
    with pytest.raises(ValidationError):
        Overrides(model="vgg")
    with pytest.raises(ValidationError):
        Overrides(learning_rate=1)
    cfg = experiment_config("quick", Overrides(epochs=2, reps=4))
    assert cfg.retrain.epochs == 2 and cfg.reps == 4
    # a whole typed config (an experiment file's), validated by Prefect like any parameter
    from prefect.utilities.callables import parameter_schema

    from smartaug.config import ExperimentConfig, preset
    from smartaug.flows.smart_augmentation import smart_augmentation

    schema = parameter_schema(smart_augmentation).model_dump()
    assert "ExperimentConfig" in schema["definitions"]  # the UI's form
    paper = preset("paper")
    params = smart_augmentation.validate_parameters({"config": paper.to_dict(),
                                                     "overrides": {"reps": 2}})
    assert params["config"] == paper
    assert experiment_config("quick", params["overrides"], params["config"]) == \
        replace(paper, reps=2)
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError, match="reps must be >= 1"):
        smart_augmentation.validate_parameters({"config": {"reps": 0}})
    assert isinstance(paper, ExperimentConfig)


def test_every_place_that_names_the_overrides_names_the_same_ones():
    """smartaug.config.OVERRIDES is the list; the deployments' typed overrides and the CLI's
    experiment and study options are held to it (the CLI says --seeds for reps)."""
    import inspect

    from smartaug import cli
    from smartaug.config import OVERRIDES
    from smartaug.flows.smart_augmentation import Overrides

    assert set(Overrides.model_fields) == {*OVERRIDES, "storage"}
    cli_name = {"reps": "seeds"}
    for command in (cli.experiment, cli.study):
        params = set(inspect.signature(command).parameters)
        assert {cli_name.get(o, o) for o in OVERRIDES} <= params, command.__name__
        assert params - {cli_name.get(o, o) for o in OVERRIDES} <= {  # how a study trains
            "preset", "config", "storage", "workers", "stack", "plan", "pilot", "quiet"
        }, command.__name__


@pytest.mark.slow
def test_dask_cluster_gives_the_same_selection_as_the_thread_runner(prefect_env, tmp_path,
                                                                  s3_endpoint, dask_cluster,
                                                                  quick_run):
    """The scale-out set-up: Dask worker processes sharing a lake on an object store (a real
    S3 API) score in shards and retrain; the same selections as one process on local disk."""
    selections = {}
    for runner in ("threads", dask_cluster):
        if runner == "threads":  # the module's run: one process, one shard, local disk
            storage, report_dir = quick_run
            storage, out = str(storage), Lake(storage).url("reports", report_dir.name)
        else:  # 3 scoring shards over the cluster's workers
            storage = "s3://lakes/dask-test"
            env = dict(prefect_env, SMARTAUG_TASK_RUNNER=runner, **s3_endpoint,
                       SMARTAUG_CACHE=str(tmp_path / "cache"), SMARTAUG_SCORE_SHARDS="3")
            out = _python(env, _quick(storage))
        lake = Lake(storage)
        assert out == lake.url("reports", out.rsplit("/", 1)[-1])
        report = json.loads(lake.fs.cat_file(f"{out}/report.json"))
        selections[runner] = {
            name: sorted(lake.read("selections", sid)["aug_id"].to_pylist()) if sid else None
            for name, sid in report["ids"]["selections"].items()}
        assert lake.sql("select count(*) n from runs").to_pylist()[0]["n"] == 6
        assert lake.sql("select count(*) n from scores s join scoring_runs r using "
                        "(scoring_run_id) where r.pool_id is not null").to_pylist()[0]["n"] == 300
    assert selections["threads"] == selections[dask_cluster]
    assert len(selections["threads"]["M2"]) == 60


@pytest.mark.slow
def test_study_flow_on_a_dask_cluster_gives_the_clis_figures(prefect_env, tmp_path,
                                                             fashion_root, dask_cluster):
    """The study/study flow's cells spread over a 2-worker Dask cluster: the same cells,
    selections and accuracies as `smartaug study --config` with its worker processes; both
    train the cells of one size two at a time as one model (the file's ``stack = 2``)."""
    from smartaug.config import DataConfig, PoolSpec, StudyConfig, TrainConfig

    cfg = StudyConfig(
        data=DataConfig(root=fashion_root, per_class_train=30, per_class_test=10,
                        val_fraction=0.2),
        baseline=TrainConfig(epochs=1, device="cpu"), retrain=TrainConfig(epochs=1,
                                                                           device="cpu"),
        pools=(PoolSpec("seed"),), budgets=(0.25, 0.5), scores=("avh",),
        positions=("easiest", "hardest"), coverage=("margin",), references=("none",),
        seeds=2, choose_seeds=1, stack=2)
    (tmp_path / "study.json").write_text(json.dumps(cfg.to_dict()))
    storage = tmp_path / "flow"
    code = ("import json\nfrom smartaug.flows.study import study, Overrides\n"
            "from smartaug.experiment_file import load_study\n"
            f"cfg = load_study({str(tmp_path / 'study.json')!r})\n"
            f"print(study(config=cfg, overrides=Overrides(storage={str(storage)!r})))")
    # one torch thread everywhere, as the cluster's workers train (Dask's nannies start them
    # with OMP_NUM_THREADS=1), in the flow's own process too (its baseline): the same sums,
    # bit for bit; at other thread counts the figures agree to float rounding only, and a
    # baseline's scores that differ in the last bits can move an item across a window's edge
    thread = {"OMP_NUM_THREADS": "1"}
    out = Path(_python(dict(prefect_env, SMARTAUG_TASK_RUNNER=dask_cluster, **thread), code))
    flow = json.loads((out / "study.json").read_text())
    cli = subprocess.run([str(BIN / "smartaug"), "study", "--config",
                          str(tmp_path / "study.json"), "--storage", str(tmp_path / "cli")],
                         env=dict(prefect_env, **thread), capture_output=True, text=True,
                         timeout=900)
    assert cli.returncode == 0, cli.stderr[-3000:]
    local = json.loads((Path(cli.stdout.strip().splitlines()[-1]) / "study.json").read_text())
    # 2 budgets x (random + 2 windows + coverage) x 2 seeds + none x 2 seeds, and the 2
    # budgets x 2 positions trainings (one seed) that choose avh@val
    assert flow["study_id"] == local["study_id"] and flow["n_cells"] == local["n_cells"] == 22
    keys = ("pool", "budget", "selector", "loss", "n_items", "selection_ids", "run_ids",
            "test_acc_mean", "test_acc_std", "diff_vs_random", "p_holm")
    assert [[r[k] for k in keys] for r in flow["leaderboard"]] == \
        [[r[k] for k in keys] for r in local["leaderboard"]]
    assert flow["command"].startswith("prefect deployment run study/study -p config=")


def test_task_runner_choice():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from smartaug.flows.runners import task_runner
    from smartaug.steps.runners import default_workers

    threads = task_runner("threads")
    # a thread a core: the steps run one after another, the trainings side by side
    # (PrefectRunner's `apart`), each thread waiting on its worker process
    assert isinstance(threads, ThreadPoolTaskRunner)
    assert threads._max_workers == default_workers("cpu")
    local = task_runner("dask:3")  # a local cluster of 3 one-thread worker processes
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs["n_workers"] == 3
    assert local.cluster_kwargs["threads_per_worker"] == 1 and local.cluster_kwargs["processes"]
    assert task_runner("dask").cluster_kwargs["n_workers"] == 2
    remote = task_runner("dask://10.0.0.5:8786")  # an existing scheduler, no local cluster
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    with pytest.raises(ValueError, match="valid: threads, dask"):
        task_runner("ray")


def test_the_nightly_deployment_takes_a_schedule(monkeypatch):
    """SMARTAUG_RESELECT_SCHEDULE puts a schedule into reselect/nightly's parameters (made
    here, not served); without it the rounds are as they were."""
    from smartaug.flows.serve import deployments

    def nightly():
        return next(d for d in deployments() if d.name == "nightly")

    assert nightly().parameters == {"retrain": True}
    monkeypatch.setenv("SMARTAUG_RESELECT_SCHEDULE", "hard-to-easy:exponential:0.25")
    assert nightly().parameters == {"retrain": True, "schedule": "hard-to-easy:exponential:0.25"}


def test_the_reselect_flow_has_the_commands_defaults():
    """``prefect deployment run reselect/...`` and ``smartaug reselect`` do the same round
    when given nothing: the flow's parameters default as the command's options do."""
    import inspect

    from smartaug.cli import reselect as command
    from smartaug.flows.reselect import reselect

    flow = inspect.signature(reselect.fn).parameters
    cli = inspect.signature(command).parameters
    names = ("experiment_id", "model_id", "retrain", "schedule", "trust_model", "storage")
    assert all(n in flow and n in cli for n in names)
    assert {n: flow[n].default for n in names} == {n: cli[n].default for n in names}
    assert flow["retrain"].default is False
