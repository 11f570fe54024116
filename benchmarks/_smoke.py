"""Run several benchmarks' ``main()`` one after another in this one process (the test suite's
smoke runs: each would otherwise import torch and the pipeline again), each with its own
command line; write ``{name: {"code": exit code, "out": stdout, "err": stderr}}`` as JSON.

    python benchmarks/_smoke.py OUT.json NAME=JSON-ARGS [NAME=JSON-ARGS ...]
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
import traceback
from pathlib import Path


def main() -> None:
    out_path, specs = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch

    threads = torch.get_num_threads()
    results = {}
    for spec in specs:
        name, args = spec.split("=", 1)
        out, err, code = io.StringIO(), io.StringIO(), 0
        sys.argv = [f"benchmarks/bench_{name}.py", *json.loads(args)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                importlib.import_module(f"bench_{name}").main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except Exception:  # reported, and the next benchmark runs
                traceback.print_exc()
                code = 1
        torch.set_num_threads(threads)  # as the next one would find it in a process of its own
        results[name] = {"code": code, "out": out.getvalue(), "err": err.getvalue()}
    Path(out_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
