"""The CLI chain on an image dataset (imagefolder, grayscale 28x28): ids on the last line,
exact band sizes, and the same commands twice add no rows."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smartaug.lake import SCHEMAS, Lake
from tests.conftest import write_image_folder

BIN = Path(sys.executable).parent


def run(storage, *args, ok=True):
    res = subprocess.run([str(BIN / "smartaug"), *args, "--storage", str(storage)],
                         capture_output=True, text=True, timeout=600)
    if ok:
        assert res.returncode == 0, res.stderr
    return res


def chain(capsys, storage, images):
    """The README's chain, through the CLI's entry point in this process."""
    from tests.conftest import smartaug

    def last(*args):
        code, out, err = smartaug(capsys, *args, "--storage", str(storage))
        assert code == 0, err
        return out.strip().splitlines()[-1]

    d = last("ingest", "--dataset", f"imagefolder:{images}", "--grayscale", "--image-size", "28",
             "--val-fraction", "0.25")
    m = last("baseline", "--dataset-id", d, "--epochs", "2", "--device", "cpu")
    p = last("augment", "--dataset-id", d, "--policy", "all", "--workers", "2")
    s = last("score", "--model-id", m, "--pool-id", p, "--batch-size", "16")
    b = last("select", "--scoring-run-id", s, "--band", "0.25", "0.75")
    r = last("select", "--scoring-run-id", s, "--random-matched", b)
    return d, m, p, s, b, r


@pytest.mark.slow
def test_chain_on_unseen_imagefolder_twice(tmp_path, capsys):
    images = write_image_folder(tmp_path / "imgs", classes=("a", "b", "c", "d"), per_class=(20, 5))
    storage = tmp_path / "storage"
    ids = chain(capsys, storage, images)
    lake = Lake(storage)
    counts = {t: lake.sql(f"select count(*) n from {t}").to_pylist()[0]["n"] for t in SCHEMAS}
    assert counts["samples"] == 4 * 20 + 4 * 5
    assert counts["augmentations"] == 4 * 15 * 3  # train minus validation, 3 kinds each
    assert counts["scores"] == 180
    assert lake.count("selections", ids[4]) == 90  # half of 180 distinct scores
    assert lake.count("selections", ids[5]) == 90
    img = lake.sql("select height, width, channels from augmentations limit 1").to_pylist()[0]
    assert img == {"height": 28, "width": 28, "channels": 1}
    assert chain(capsys, storage, images) == ids
    again = {t: lake.sql(f"select count(*) n from {t}").to_pylist()[0]["n"] for t in SCHEMAS}
    assert again == counts
    # the ad-hoc query command, as a shell runs it
    out = run(storage, "sql", "select kind, count(*) as n from augmentations group by kind "
              "order by kind", "--csv").stdout
    assert out.replace('"', "").splitlines() == ["kind,n", "hflip,60", "noise,60", "rotate,60"]


def test_cli_errors_are_clear_and_exit_2(tmp_path, capsys):
    """The installed `smartaug` script once (its exit code and streams as a shell sees them),
    then the same entry point in this process."""
    from tests.conftest import smartaug

    storage = Lake(tmp_path / "storage").root  # a lake, empty: the steps' own errors
    res = run(storage, "select", "--scoring-run-id", "nope", "--band", "0.1", "0.2", ok=False)
    assert res.returncode == 2 and res.stdout == "" and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") and "no scoring run 'nope'" in res.stderr
    for args, words in [
            (["ingest", "--dataset", f"imagefolder:{tmp_path / 'missing'}"], "directory not found"),
            (["sql", "select * from no_such_table"], "no_such_table"),
            (["augment", "--dataset-id", "nope"], "run the step that produces it")]:
        code, out, err = smartaug(capsys, *args, "--storage", str(storage))
        assert code == 2 and words in " ".join(err.split()) and "Traceback" not in err, err
    code, _, err = smartaug(capsys, "sql", "select 1", "--storage", "nosuchproto://bucket/lake")
    assert code == 2 and "fsspec backend" in err and "Traceback" not in err


def test_views_point_the_duckdb_cli_at_any_root(tmp_path):
    """`smartaug views` gives the DuckDB CLI the views of a lake outside the repository."""
    lake = Lake(tmp_path / "elsewhere")
    lake.write("drift", "s1", {"selection_id": ["s1", "s1"], "round": [1, 2],
                               "jaccard": [0.5, 0.25], **{k: [None, None] for k in (
                                   "previous_selection_id", "experiment_id", "model_id",
                                   "scoring_run_id", "moved_in", "moved_out", "ks_avh",
                                   "ks_pvalue", "created_at", "git_sha")}})
    views = run(lake.root, "views").stdout
    assert str(lake.root / "drift") in views and "'storage/" not in views
    (tmp_path / "views.sql").write_text(views)
    res = subprocess.run([str(BIN / "duckdb"), "-init", str(tmp_path / "views.sql"), "-csv",
                          "-c", "select count(*), sum(jaccard) from drift"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "2,0.75"


@pytest.mark.slow
def test_a_wheel_install_runs_sql_and_views_from_any_directory(tmp_path):
    """What the package reads (SQL, report templates) ships inside it: a non-editable install
    answers `smartaug sql` and `smartaug views` outside the repository."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(root)], check=True, timeout=600,
                   capture_output=True)
    wheel = next((tmp_path / "dist").glob("smartaug-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(tmp_path / "site"), str(wheel)], check=True, timeout=600,
                   capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"),
               SMARTAUG_STORAGE=str(tmp_path / "lake"))

    def cli(*args):
        res = subprocess.run([sys.executable, "-m", "smartaug.cli", *args], cwd=elsewhere,
                             env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        return res.stdout

    from smartaug.lake import Lake

    Lake(tmp_path / "lake")  # made here: reading never makes a lake
    where = subprocess.run([sys.executable, "-c", "import smartaug; print(smartaug.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(tmp_path / "site"))
    assert "42" in cli("sql", "select 42 as answer")
    assert "0" in cli("sql", "select count(*) n from runs", "--csv")
    assert f"'{tmp_path / 'lake'}/drift/" in cli("views")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "smartaug/steps/sql/band.sql" in names
    # one top-level package: nothing named models, flows or pipeline lands in site-packages
    assert {n.split("/")[0] for n in names
            if not n.split("/")[0].endswith(".dist-info")} == {"smartaug"}
    assert "smartaug/steps/templates/report.html.j2" in names


def test_version_short_help_and_help_that_wraps_at_the_terminal(capsys):
    """`--version` and `-h` answer as every tool's do; the help's sentences are the
    terminal's to wrap, never broken where the source broke its lines."""
    from importlib.metadata import version

    from tests.conftest import smartaug

    code, out, _ = smartaug(capsys, "--version")
    assert code == 0 and out.strip() == f"smartaug {version('smartaug')}"
    code, short, _ = smartaug(capsys, "-h")
    code2, long, _ = smartaug(capsys, "--help")
    assert code == code2 == 0 and short == long and "Commands" in short
    code, out, _ = smartaug(capsys, "sql", "-h")
    assert code == 0 and "Run an ad-hoc DuckDB query" in out
    from smartaug.cli import app

    helps = [c.help for c in app.registered_commands]
    assert all(h and "\n" not in h.split("\n\n")[0] for h in helps)  # one line a paragraph


def test_import_smartaug_is_the_api_and_a_users_own_models_package_still_works(tmp_path):
    """`import smartaug` gives the public API; a project of the user's with its own `models`
    (or `pipeline`, `flows`) package beside it imports smartaug's, not theirs."""
    for name in ("models", "pipeline", "flows"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the user\'s own')\n")
    code = ("import smartaug\n"
            "assert set(smartaug.__all__) == {'Lake', 'SelectionDataset', 'avh', "
            "'hardness_scores', 'load_policy', 'make_model', 'policy_from_dict'}\n"
            "m = smartaug.make_model('lenet5', 10, 1, 28)\n"
            "import torch\n"
            "f = m.features(torch.zeros(2, 1, 28, 28))\n"
            "print(tuple(smartaug.avh(f, m.head.weight, torch.tensor([0, 1])).shape))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "(2,)"
