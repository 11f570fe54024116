"""Prefect overhead on the quick preset: the smart-augmentation flow against a real Prefect
server (started here on a free loopback port with a temporary PREFECT_HOME, unless
PREFECT_API_URL already answers), in a fresh lake.

overhead = (flow wall time - sum of the stage (task) run times) / flow wall time (target <=
5 %); ratio = sum of stage times / flow wall time (target >= 0.95). JSON on the last line.

    python benchmarks/bench_flow.py [--epochs N] [--reps N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def healthy(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/health", timeout=2)
        return True
    except OSError:
        return False


CHILD = """
import asyncio, json, sys, time
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from smartaug.flows.smart_augmentation import Overrides, smart_augmentation

overrides = Overrides(**json.loads(sys.argv[1]))
t0 = time.perf_counter()
state = smart_augmentation(preset="quick", overrides=overrides, return_state=True)
wall = time.perf_counter() - t0
flow_run_id = state.state_details.flow_run_id

async def task_times():
    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return {r.name: r.total_run_time.total_seconds() for r in runs}

print(json.dumps({"wall": wall, "state": state.type.value, "tasks": asyncio.run(task_times())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    ap.add_argument("--reps", type=int, default=None, help="override the preset's reps")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-flow-"))
    env = dict(os.environ)
    server = None
    try:
        if not (env.get("PREFECT_API_URL") and healthy(env["PREFECT_API_URL"])):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            env.update(PREFECT_HOME=str(tmp / "prefect"),
                       PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
                       PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
            server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server",
                                       "start", "--host", "127.0.0.1", "--port", str(port)],
                                      env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT)
            while not healthy(env["PREFECT_API_URL"]):
                time.sleep(0.5)
        overrides = {"storage": str(tmp / "storage")}
        overrides.update({k: v for k, v in (("epochs", args.epochs), ("reps", args.reps)) if v})
        res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(overrides)], env=env,
                             cwd=ROOT, capture_output=True, text=True, check=True)
        out = json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    stages = sum(out["tasks"].values())
    wall = out["wall"]
    print(json.dumps({"name": "flow", "ratio": round(stages / wall, 4), "target": 0.95,
                      "overhead": round((wall - stages) / wall, 4), "overhead_target": 0.05,
                      "flow_wall_s": round(wall, 2), "stages_s": round(stages, 2),
                      "state": out["state"],
                      "tasks_s": {k: round(v, 2) for k, v in sorted(out["tasks"].items())},
                      "preset": "quick", "overrides": {k: v for k, v in overrides.items()
                                                       if k != "storage"}}))


if __name__ == "__main__":
    main()
