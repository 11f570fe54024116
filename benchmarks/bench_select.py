"""Band selection through DuckDB (smartaug/sql/band.sql) vs numpy over N synthetic score rows.

Both read the run's Parquet file, take the 0.02 / 0.22 quantiles of avh and keep the item ids
in the band. ratio = numpy time / DuckDB time (target: DuckDB <= 1.5x numpy, i.e. ratio >=
0.667, and DuckDB under 1 s). Alternating, several repeats, medians; JSON on the last line.

    python benchmarks/bench_select.py [--rows 10000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from smartaug.lake import Lake, query_arrow
from smartaug.steps.sql import sql_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n = args.rows
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(Path(tmp) / "lake")  # its engine is sandboxed to the lake, as in the pipeline
        path = str(lake.root / "scores.parquet")
        cols = {"item_id": pa.array([f"p:train/{i // 3:06d}:{i % 3}" for i in range(n)]),
                "label": rng.integers(0, 10, n)}
        for c in ("avh", "avc_true", "confidence", "margin", "loss", "entropy", "el2n",
                  "feature_norm"):
            cols[c] = rng.random(n)
        pq.write_table(pa.table(cols), path, compression="zstd", row_group_size=16_384)
        del cols
        query = sql_text("band.sql")
        params = {"files": [path], "score": "avh", "lo": 0.02, "hi": 0.22, "per_class": False}

        def with_duckdb():  # as smartaug.steps.select runs it
            con = lake.engine()
            out = query_arrow(con, query, params)
            con.close()
            return out.num_rows

        def with_numpy():
            t = pq.read_table(path, columns=["item_id", "label", "avh"])
            a = t["avh"].to_numpy()
            lo, hi = np.quantile(a, [0.02, 0.22])
            keep = (a >= lo) & (a < hi)
            sel = t.filter(pa.array(keep))
            return sel.num_rows

        assert with_duckdb() == with_numpy()
        t_db, t_np = [], []
        for _ in range(args.repeats):
            for fn, acc in ((with_duckdb, t_db), (with_numpy, t_np)):
                t0 = time.perf_counter()
                selected = fn()
                acc.append(time.perf_counter() - t0)
    db, npy = statistics.median(t_db), statistics.median(t_np)
    print(json.dumps({"name": "select", "ratio": round(npy / db, 4), "target": round(1 / 1.5, 4),
                      "rows": n, "selected": selected, "duckdb_s": round(db, 4),
                      "numpy_s": round(npy, 4), "duckdb_over_numpy": round(db / npy, 3),
                      "duckdb_under_1s": db < 1.0, "repeats": args.repeats}))


if __name__ == "__main__":
    main()
