"""The lake (smartaug/lake/, storage/views.sql): schemas, atomic partitions, ids, views."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from smartaug.files import HOST
from smartaug.lake import SCHEMAS, Lake, LakeError, content_id, decode_images, encode_images, views_sql
from tests.conftest import tiny_config


def test_views_sql_has_one_view_per_table():
    text = (Path(__file__).parent.parent / "storage" / "views.sql").read_text()
    views = re.findall(r"CREATE OR REPLACE VIEW (\w+) AS", text)
    assert sorted(views) == sorted(SCHEMAS)
    # the shipped file is the one the schemas generate, and it names every table's README entry
    assert text == views_sql("storage")
    readme = (Path(__file__).parent.parent / "storage" / "README.md").read_text()
    for table, schema in SCHEMAS.items():
        row = next((r for r in readme.splitlines() if r.startswith(f"| {table} |")), "")
        assert all(c in row for c in schema.names), f"storage/README.md: {table} row"


def test_empty_lake_is_queryable(tmp_path):
    lake = Lake(tmp_path)
    for table in SCHEMAS:
        assert lake.sql(f"select count(*) as n from {table}").to_pylist() == [{"n": 0}]
    cols = lake.sql("select * from scores limit 0").column_names
    assert cols == SCHEMAS["scores"].names


def test_write_is_atomic_and_idempotent(tmp_path):
    lake = Lake(tmp_path)
    row = {"scoring_run_id": ["r1"], "model_id": ["m"], "pool_id": [None], "item_id": ["a"],
           "label": [1], "pred": [1], "correct": [True],
           **{c: [0.5] for c in ("avh", "avc_true", "confidence", "margin", "loss", "entropy",
                                 "el2n", "feature_norm")}}
    assert lake.write("scores", "r1", row) is True
    assert lake.write("scores", "r1", row) is False  # found, nothing written
    assert lake.sql("select count(*) n from scores").to_pylist() == [{"n": 1}]
    # a failing write leaves nothing behind, not even in .tmp
    bad = dict(row, label=["not an int"])
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        lake.write("scores", "r2", bad)
    assert not lake.has("scores", "r2")
    assert list((tmp_path / ".tmp").iterdir()) == []
    # an unfinished writer is invisible to readers
    with lake.writer("scores", "r3") as w:
        w.write(dict(row, scoring_run_id=["r3"]))
        assert lake.sql("select count(*) n from scores").to_pylist() == [{"n": 1}]
    assert w.committed
    assert lake.sql("select count(*) n from scores").to_pylist() == [{"n": 2}]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporary_partitions_of_dead_processes_are_removed(tmp_path):
    lake = Lake(tmp_path)
    stale = tmp_path / ".tmp" / f"scores-abc-{HOST}-{_dead_pid()}-deadbeef"
    stale.mkdir(parents=True)
    (stale / "part-00000.parquet").write_bytes(b"partial")
    Lake(tmp_path)
    assert not stale.exists()
    assert lake.sql("select count(*) n from scores").to_pylist() == [{"n": 0}]


def test_cleanup_takes_only_this_hosts_staging_and_never_follows_a_link(tmp_path):
    """Another host's staging (its pid means nothing here), a name smartaug did not make and
    a link are left alone; a symlinked .tmp is refused before anything is removed."""
    Lake(tmp_path / "L")
    dead = _dead_pid()
    other_host = "0" * 8 if HOST != "0" * 8 else "1" * 8
    keep = [tmp_path / "L" / ".tmp" / f"scores-abc-{other_host}-{dead}-deadbeef",
            tmp_path / "L" / ".tmp" / f"photos-{dead}-01"]
    outside = tmp_path / "V" / f"photos-{HOST}-{dead}-0123abcd"
    outside.mkdir(parents=True)
    (outside / "a.jpg").write_bytes(b"mine")
    for d in keep:
        d.mkdir(parents=True)
    link = tmp_path / "L" / ".tmp" / f"runs-x-{HOST}-{dead}-abcdef01"
    link.symlink_to(outside)
    Lake(tmp_path / "L")
    assert all(d.is_dir() for d in keep) and link.is_symlink()
    assert (outside / "a.jpg").read_bytes() == b"mine"
    # the probe: .tmp itself a link to a directory elsewhere
    shutil.rmtree(tmp_path / "L" / ".tmp")
    (tmp_path / "L" / ".tmp").symlink_to(tmp_path / "V")
    with pytest.raises(LakeError, match=r"\.tmp is a symbolic link .*Remove the link"):
        Lake(tmp_path / "L")
    assert (outside / "a.jpg").read_bytes() == b"mine"


def test_the_symlinked_tmp_probe_through_the_cli_leaves_the_outside_intact(tmp_path):
    """`smartaug sql` on a lake whose .tmp was replaced by a link to another directory holding
    a name that looks like staging of a dead process: an `error:` line, and nothing removed."""
    import subprocess as sp

    v = tmp_path / "V" / "photos-2023-01"
    v.mkdir(parents=True)
    lake = tmp_path / "L"
    cli = [sys.executable, "-m", "smartaug.cli"]
    assert sp.run([*cli, "sql", "select 1", "--storage", str(lake)], capture_output=True
                  ).returncode == 2  # no lake yet: reading commands never make one
    Lake(lake)
    shutil.rmtree(lake / ".tmp", ignore_errors=True)
    (lake / ".tmp").symlink_to(tmp_path / "V")
    r = sp.run([*cli, "sql", "select 1", "--storage", str(lake)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "symbolic link" in r.stderr
    assert "Traceback" not in r.stderr and v.is_dir()


def test_content_id_is_stable_and_order_free():
    # pinned: an id computed today names the same partition on any machine, in any release
    assert content_id("x", {"a": 1, "b": [1, 2]}) == "823d3ee4e9ceb6e6"
    assert content_id("x", {}) == "70de19b125c6d57a"
    assert content_id("x", {"a": 1, "b": [1, 2]}) == content_id("x", {"b": [1, 2], "a": 1})
    assert content_id("x", {"a": 1}) != content_id("y", {"a": 1})
    assert re.fullmatch(r"[0-9a-f]{16}", content_id("x", {}))


def test_image_round_trip_and_corrupt_image_named():
    x = np.random.default_rng(0).integers(0, 256, (5, 4, 3, 2), dtype=np.uint8)
    t = pa.table({"id": list("abcde"), "image": encode_images(x),
                  "height": [4] * 5, "width": [3] * 5, "channels": [2] * 5})
    assert np.array_equal(decode_images(t, "id"), x)
    bad = t.set_column(1, "image", pa.array([r.tobytes() for r in x[:2]] + [b"xx"] +
                                            [r.tobytes() for r in x[3:]], pa.binary()))
    with pytest.raises(LakeError, match="corrupt image in row c"):
        decode_images(bad, "id")


def test_missing_partition_says_what_to_run(tmp_path):
    lake = Lake(tmp_path)
    with pytest.raises(LakeError, match=r"no pool_id 'nope' in .*pools; run the step that "
                       r"produces it first \(`smartaug augment`, or check --storage\)"):
        lake.files("pools", "nope")
    with pytest.raises(LakeError, match=r"scoring_run_id 'x' .*`smartaug score`"):
        lake.files("scores", "x")


@pytest.mark.slow
def test_a_copied_lake_stands_alone(tmp_path, fashion_root):
    """Copy a lake elsewhere and delete the original: the copy selects, resumes an experiment
    (its own checkpoint, no retraining) and reads its selections. Checkpoints are recorded
    relative to the root, so the copy never reads the original's files."""
    import shutil

    from smartaug.lake.readers import checkpoint_path
    from smartaug.steps import experiment as steps
    from smartaug.steps.select import band, read_selection

    cfg = tiny_config(fashion_root, per_class_train=40, per_class_test=10, val_fraction=0.0,
                      reps=1)
    original = Lake(tmp_path / "original")
    runner = steps.LocalRunner(original, log=None)
    d = runner.call(steps.ingest, cfg)
    m = runner.call(steps.baseline, cfg, d)
    p = runner.call(steps.pool, cfg, d)
    r = runner.call(steps.score, cfg, m, p)  # the experiment stops here
    assert original.row("models", m)["checkpoint"] == f"checkpoints/{m}.pt"
    trained_at = original.row("models", m)["created_at"]
    shutil.copytree(original.root, tmp_path / "copy")
    shutil.rmtree(original.root)
    copy = Lake(tmp_path / "copy")
    assert checkpoint_path(copy, m) == copy.root / "checkpoints" / f"{m}.pt"
    b = band(copy, r, 0.1, 0.4)
    assert read_selection(copy, b).num_rows == round(0.3 * copy.count("scores", r))
    exp_id = steps.run_experiment(cfg, copy, log=None)
    assert copy.row("models", m)["created_at"] == trained_at  # resumed: not retrained
    runs = copy.sql("select count(*) n from runs where experiment_id = $e", {"e": exp_id})
    assert runs.to_pylist() == [{"n": 3}]
    selections = json.loads(copy.row("experiments", exp_id)["selections"])
    assert all(read_selection(copy, s).num_rows > 0 for s in selections.values() if s)
    assert not original.root.exists()
    # a tampered checkpoint inside the copy is the one read, and refused
    (copy.root / "checkpoints" / f"{m}.pt").write_bytes(b"tampered")
    import torch

    from smartaug.steps.score import load_model

    with pytest.raises(ValueError, match="copy/checkpoints/.* is not a readable"):
        load_model(copy, m, torch.device("cpu"))


def test_queries_see_every_commit_and_a_lake_made_again(tmp_path):
    """``lake.sql`` runs on one DuckDB instance a lake and process, its views made once: each
    query globs the partitions again, so it sees what was committed after the first one, and
    a lake deleted and made again at the same place reads as the new one."""
    import shutil

    row = {"scoring_run_id": ["r1"], "model_id": ["m"], "pool_id": [None], "item_id": ["a"],
           "label": [1], "pred": [1], "correct": [True],
           **{c: [0.5] for c in ("avh", "avc_true", "confidence", "margin", "loss", "entropy",
                                 "el2n", "feature_norm")}}
    count = "select count(*) n from scores"
    for _ in range(2):
        lake = Lake(tmp_path / "lake")
        assert lake.sql(count).to_pylist() == [{"n": 0}]
        for k in ("r1", "r2"):
            lake.write("scores", k, dict(row, scoring_run_id=[k]))
            assert lake.sql(count).to_pylist() == [{"n": int(k[1])}]
        shutil.rmtree(tmp_path / "lake")
