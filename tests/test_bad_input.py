"""Bad input, as a table: every probe runs the ``smartaug`` command line (its real entry point,
``smartaug.cli.main``, in this process) and asserts exit code 2, an ``error:`` line with the
message's key words, no traceback, and a lake whose file list is unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smartaug import cli
from smartaug.config import AugmentConfig, DataConfig, TrainConfig
from smartaug.files import HOST
from smartaug.lake import TABLES, Lake, LakeError
from smartaug.lake.readers import read_split
from smartaug.steps.baseline import train_baseline
from smartaug.steps.ingest import ingest
from smartaug.steps.pool import build_pool
from smartaug.steps.score import score_pool, score_split
from smartaug.steps.select import band
from tests.conftest import smartaug, write_image_folder

BIN = Path(sys.executable).parent


def files(root: Path) -> list[str]:
    """Every file under a lake root, relative, sorted (staging included)."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())


def refused(capsys, root: Path, args: list[str], *words: str) -> str:
    """The probe: exit code 2, `error:` and ``words`` in stderr, no traceback, nothing written."""
    before = files(root)
    code, out, err = smartaug(capsys, *args)
    text = " ".join(err.split())  # rich wraps long lines
    assert code == 2, (code, out, err)
    assert "error:" in text and "Traceback" not in err, err
    for w in words:
        assert w.lower() in text.lower(), f"{w!r} not in: {text}"
    assert files(root) == before, "the lake changed"
    return text


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A lake with a 4-class grayscale dataset (validation held out), a 1-epoch baseline, a
    pool, its scoring run and a band; a 3-class dataset without validation and its pool."""
    tmp = tmp_path_factory.mktemp("bad-input")
    four = write_image_folder(tmp / "four", classes=("a", "b", "c", "d"), per_class=(20, 5),
                              size=(28, 28), ext=".png")
    three = write_image_folder(tmp / "three", classes=("x", "y", "z"), per_class=(8, 4),
                               size=(28, 28), ext=".png")
    root = tmp / "lake"
    lake = Lake(root)
    d = ingest(lake, DataConfig(f"imagefolder:{four}", grayscale=True, val_fraction=0.25))
    m = train_baseline(lake, d, cfg=TrainConfig(epochs=1, batch_size=16, device="cpu"), log=None)
    p = build_pool(lake, d, AugmentConfig(policy="all"), workers=1)
    r = score_pool(lake, m, p, batch_size=32, device="cpu")
    b = band(lake, r, 0.25, 0.75)
    r_val = score_split(lake, m, d, "val", batch_size=32, device="cpu")
    b_val = band(lake, r_val, 0.0, 0.5)
    d3 = ingest(lake, DataConfig(f"imagefolder:{three}", grayscale=True))
    p3 = build_pool(lake, d3, AugmentConfig(), workers=1)
    import torch

    from smartaug.models import make_model

    state = make_model("lenet5", 4, 1, 28).state_dict()
    key = next(k for k in state if k.endswith("weight"))
    state[key] = torch.zeros(2, 2)
    torch.save(state, tmp / "weights-bad-shape.pt")

    class Payload:
        def __reduce__(self):
            return (print, ("never",))

    torch.save({key: Payload()}, tmp / "weights-pickled.pt")
    (tmp / "exp-typo.toml").write_text("preset = 'quick'\n[data]\nper_class_trian = 10\n")
    (tmp / "exp-type.toml").write_text("[baseline]\nepochs = 'five'\n")
    (tmp / "study-bad.toml").write_text("preset = 'quick'\nbudgets = [0.1, 1.5]\n")
    (tmp / "space-not-albu.yaml").write_text("kinds: {grid: {num_steps: 5}}\n")
    (tmp / "space-refused.yaml").write_text(
        "kinds:\n  grid: {__version__: 2.0.8, transform: {__class_fullname__: GridDistortion,"
        " num_steps: -5, p: 1.0}}\n")
    files = {  # the user's files, each wrong in one way
        "space-crop.yaml": "kinds:\n  crop: {__version__: 2.0.8, transform: {__class_fullname__: "
                           "RandomCrop, height: 64, width: 64, p: 1.0}}\n",
        "deep.json": "[" * 100_000 + "]" * 100_000,
        "deep.yaml": "[" * 100_000 + "]" * 100_000,
        "laughs.yaml": "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n"
                       + "".join(f"{c}: &{c} [*{p_}, *{p_}, *{p_}, *{p_}, *{p_}, *{p_}, *{p_}, "
                                 f"*{p_}, *{p_}]\n" for p_, c in zip("abcdefgh", "bcdefghi", strict=True)),
        "twice.yaml": "preset: quick\nseed: 1\nseed: 2\n",
        "twice.json": '{"preset": "quick", "seed": 1, "seed": 2}',
        "negative.toml": "preset = 'quick'\n[data]\nper_class_train = -5\n",
        "val.toml": "preset = 'quick'\n[data]\nval_fraction = 2.0\n",
        "size.toml": "preset = 'quick'\n[data]\nimage_size = 2\n",
        "band.toml": "preset = 'quick'\n[[methods]]\nname = 'b'\nselection = 'band'\n"
                     "band = [0.5, 0.2]\n",
        "nope.toml": "preset = 'quick'\n[data]\ndataset = 'imagefolder:nope'\n",
        "policy.toml": "preset = 'quick'\n[augment]\npolicy = 'k:99999999999'\n",
    }
    for name, text in files.items():
        (tmp / name).write_text(text)
    return {"tmp": tmp, "root": root, "lake": lake, "d": d, "m": m, "p": p, "r": r, "b": b,
            "d3": d3, "p3": p3, "four": four, "b_val": b_val}


def _images(tmp: Path, name: str, mutate) -> Path:
    """A valid 2-class image folder, then ``mutate(root)`` breaks it."""
    root = write_image_folder(tmp / name, classes=("a", "b"), per_class=(4, 2), size=(28, 28),
                              ext=".png")
    mutate(root)
    return root


def _truncate(root):
    f = root / "train" / "a" / "001.png"
    f.write_bytes(f.read_bytes()[:40])


def _zero_byte(root):
    (root / "train" / "b" / "002.png").write_bytes(b"")


def _text_as_png(root):
    (root / "train" / "a" / "notes.png").write_text("not an image, a renamed text file\n")


def _empty_class(root):
    shutil.rmtree(root / "test" / "b")
    (root / "test" / "b").mkdir()


def _one_class(root):
    shutil.rmtree(root / "train" / "b")
    shutil.rmtree(root / "test" / "b")


def _float_image(root):
    Image.fromarray(np.zeros((28, 28), np.float32)).save(root / "train" / "a" / "float.tif")


def _huge_png(root):
    """A PNG whose header says 15000 x 15000 (PIL refuses to decode it: a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", 15000, 15000, 8, 0, 0, 0, 0)
    (root / "train" / "a" / "huge.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


DATASET_PROBES = {
    "decompression bomb": (_huge_png, ["huge.png", "too large to decode", "resize it first"]),
    "truncated image": (_truncate, ["cannot read image", "001.png"]),
    "zero-byte image": (_zero_byte, ["cannot read image", "002.png"]),
    "renamed text file": (_text_as_png, ["cannot read image", "notes.png"]),
    "empty class folder": (_empty_class, ["has no images", "test/b"]),
    "one class": (_one_class, ["at least 2"]),
    "32-bit float image": (_float_image, ["float.tif", "32-bit float", "8-bit or 16-bit"]),
}


@pytest.mark.parametrize("probe", DATASET_PROBES)
def test_bad_image_folders(world, capsys, probe):
    mutate, words = DATASET_PROBES[probe]
    images = _images(world["tmp"], probe.replace(" ", "-"), mutate)
    refused(capsys, world["root"], ["ingest", "--dataset", f"imagefolder:{images}",
                                    "--grayscale", "--storage", str(world["root"])], *words)


def _probes(w) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (arguments, key words of the message)."""
    d, m, p, r, b, d3, p3 = (w[k] for k in ("d", "m", "p", "r", "b", "d3", "p3"))
    return {
        # ad-hoc queries cannot write, nor read outside the lake
        "sql copy to any path": (["sql", f"copy (select 1) to '{w['tmp']}/out.csv'"],
                                 ["COPY statements are refused", "read-only"]),
        "sql copy into a partition": (
            ["sql", f"copy (select * from scores) to '{w['root']}/scores/scoring_run_id={r}/"
                    f"evil.parquet'"], ["COPY statements are refused"]),
        "sql explain analyze copy": (["sql", f"explain analyze copy (select 1) to "
                                             f"'{w['tmp']}/x.csv'"], ["COPY"]),
        "sql comments before explain analyze copy": (
            ["sql", f"/* hi */ -- there\n explain analyze copy (select 1) to '{w['tmp']}/y.csv'"],
            ["COPY"]),
        "sql attach": (["sql", f"attach '{w['tmp']}/x.db'"], ["ATTACH statements are refused"]),
        "sql create table": (["sql", "create table t as select 1"], ["CREATE"]),
        "sql install": (["sql", "install httpfs"], ["refused"]),
        "sql set": (["sql", "set enable_external_access = true"], ["SET statements"]),
        "sql read outside the lake": (["sql", "select * from read_csv('/etc/passwd')"],
                                      ["Permission", "lake's own files"]),
        "sql syntax error": (["sql", "selec 1"], ["Parser Error"]),
        "sql empty": (["sql", "  "], ["empty"]),
        # wrong paths and names
        "dataset path missing": (["ingest", "--dataset", "imagefolder:/no/such/dir"],
                                 ["not found", "/no/such/dir"]),
        "dataset files missing": (["ingest", "--data", str(w["tmp"] / "nothing")],
                                  ["fashion-mnist"]),
        "unknown dataset": (["ingest", "--dataset", "imagenet-21k"], ["imagenet-21k"]),
        "subset larger than a class": (["ingest", "--dataset", f"imagefolder:{w['four']}",
                                        "--per-class-train", "50"], ["50"]),
        # unknown ids
        "unknown dataset id": (["baseline", "--dataset-id", "nope"], ["no dataset_id 'nope'"]),
        "unknown model id": (["score", "--model-id", "nope", "--pool-id", p],
                             ["no model_id 'nope'"]),
        "unknown pool id": (["score", "--model-id", m, "--pool-id", "nope"], ["no pool_id"]),
        "unknown scoring run": (["select", "--scoring-run-id", "nope", "--all"],
                                ["no scoring run 'nope'"]),
        "unknown selection to match": (["select", "--scoring-run-id", r, "--random-matched",
                                        "nope"], ["no selection 'nope'"]),
        # your model
        "model module cannot be imported": (["baseline", "--dataset-id", d, "--model",
                                             "nomodule.sub:factory"],
                                            ["cannot import module 'nomodule.sub'"]),
        "model without a final nn.Linear": (["baseline", "--dataset-id", d, "--model",
                                             "torch.nn:Identity"], ["has no nn.Linear"]),
        "unknown torchvision model": (["baseline", "--dataset-id", d, "--model",
                                       "torchvision:resnet9000"], ["no classification model"]),
        "weights of another shape": (["baseline", "--dataset-id", d, "--weights",
                                      str(w["tmp"] / "weights-bad-shape.pt")],
                                     ["has shape (2, 2)"]),
        "weights that are a pickle": (["baseline", "--dataset-id", d, "--weights",
                                       str(w["tmp"] / "weights-pickled.pt")],
                                      ["refused", "weights_only=True"]),
        "weights file missing": (["baseline", "--dataset-id", d, "--weights", "/no/w.pt"],
                                 ["/no/w.pt"]),
        # export
        "export to a non-empty directory": (["export", "--selection-id", b, "--to", str(w["tmp"])],
                                            ["not an empty directory"]),
        "export into the lake": (["export", "--selection-id", b, "--to",
                                  str(w["root"] / "scores" / "scoring_run_id=evil")],
                                 ["lies inside the lake"]),
        "export an unknown selection": (["export", "--selection-id", "nope", "--to",
                                         str(w["tmp"] / "new-x")],
                                        ["no selection 'nope'"]),
        "export in an unknown format": (["export", "--selection-id", b, "--to", str(w["tmp"] / "new-y"),
                                         "--format", "zip"], ["unknown export format 'zip'"]),
        # experiment files
        "config file with an unknown key": (
            ["experiment", "--config", str(w["tmp"] / "exp-typo.toml")],
            ["unknown key 'data.per_class_trian'", "valid: dataset, root, per_class_train"]),
        "config file with a mistyped value": (
            ["experiment", "--config", str(w["tmp"] / "exp-type.toml")],
            ["baseline.epochs = 'five'", "integer"]),
        "config file missing": (["experiment", "--config", "/no/exp.toml"],
                                ["cannot read the experiment file"]),
        "reselect an unknown experiment": (["reselect", "--experiment-id", "nope"],
                                           ["no experiment_id 'nope'"]),
        # the user's files: checked when loaded, strictly in every format
        "space transform larger than the images": (
            ["augment", "--dataset-id", d, "--space", str(w["tmp"] / "space-crop.yaml")],
            ["kind 'crop' (RandomCrop) cannot be applied to 28x28x1 images"]),
        "JSON nested 100 000 deep": (["config", "check", str(w["tmp"] / "deep.json")],
                                     ["nested deeper than"]),
        "YAML nested 100 000 deep": (["config", "check", str(w["tmp"] / "deep.yaml")],
                                     ["nested deeper than"]),
        "YAML billion laughs": (["config", "check", str(w["tmp"] / "laughs.yaml")],
                                ["aliases are not accepted"]),
        "YAML key given twice": (["config", "check", str(w["tmp"] / "twice.yaml")],
                                 ["'seed' is given twice"]),
        "JSON key given twice": (["config", "check", str(w["tmp"] / "twice.json")],
                                 ["'seed' is given twice"]),
        "config per_class_train -5": (["config", "check", str(w["tmp"] / "negative.toml")],
                                      ["per_class_train must be an integer >= 1", "-5"]),
        "config val_fraction 2.0": (["config", "check", str(w["tmp"] / "val.toml")],
                                    ["val_fraction must be in [0, 1)", "2.0"]),
        "config image_size 2": (["config", "check", str(w["tmp"] / "size.toml")],
                                ["image_size must be an integer in [8, 1024]"]),
        "config band upside down": (["config", "check", str(w["tmp"] / "band.toml")],
                                    ["band [0.5, 0.2] must satisfy 0 <= lo < hi <= 1"]),
        "config image folder missing": (["config", "check", str(w["tmp"] / "nope.toml")],
                                        ["imagefolder:nope", "no directory"]),
        "config policy too large": (["config", "check", str(w["tmp"] / "policy.toml")],
                                    ["k:99999999999", "1 <= N <= 1000"]),
        "augment policy too large": (["augment", "--dataset-id", d, "--policy",
                                      "k:99999999999"], ["1 <= N <= 1000"]),
        # results that would be silently wrong
        "random matched to another set of items": (
            ["select", "--scoring-run-id", r, "--random-matched", w["b_val"]],
            ["was drawn from the val split of dataset", f"scores pool {p}"]),
        "a training that diverges": (["baseline", "--dataset-id", d, "--lr", "1e30",
                                      "--epochs", "2", "--device", "cpu"],
                                     ["the training diverged", "--lr"]),
        # out-of-range options
        "baseline --epochs 0": (["baseline", "--dataset-id", d, "--epochs", "0"], ["--epochs"]),
        "augment --workers 0": (["augment", "--dataset-id", d, "--workers", "0"], ["--workers"]),
        "augment --workers -3": (["augment", "--dataset-id", d, "--workers", "-3"],
                                 ["--workers"]),
        "augment unknown kind": (["augment", "--dataset-id", d, "--kinds", "rotate,shear"],
                                 ["unknown augmentation kind", "shear", "valid: rotate, noise"]),
        "space file not albumentations' format": (
            ["augment", "--dataset-id", d, "--space", str(w["tmp"] / "space-not-albu.yaml")],
            ["'grid'", "albumentations"]),
        "space parameter albumentations refuses": (
            ["augment", "--dataset-id", d, "--space", str(w["tmp"] / "space-refused.yaml")],
            ["albumentations refused GridDistortion", "num_steps"]),
        "space file missing": (["augment", "--dataset-id", d, "--space", "/no/space.yaml"],
                               ["cannot read the space file"]),
        "augment bad policy": (["augment", "--dataset-id", d, "--policy", "k:0"], ["k:N"]),
        "score --batch-size 0": (["score", "--model-id", m, "--pool-id", p, "--batch-size", "0"],
                                 ["--batch-size"]),
        "score both ids": (["score", "--model-id", m, "--pool-id", p, "--dataset-id", d],
                           ["exactly one"]),
        "experiment --epochs 0": (["experiment", "--epochs", "0"], ["--epochs"]),
        "experiment --seeds 0": (["experiment", "--seeds", "0"], ["--seeds"]),
        "image size too small": (["ingest", "--image-size", "3"], ["--image-size"]),
        "unknown option": (["ingest", "--bogus"], ["No such option", "--bogus"]),
        "unknown preset": (["experiment", "--preset", "huge"], ["unknown preset"]),
        # bands and subsets
        "band above 1": (["select", "--scoring-run-id", r, "--band", "0.5", "1.5"],
                         ["outside [0, 1]"]),
        "band below 0": (["select", "--scoring-run-id", r, "--band", "-0.1", "0.2"],
                         ["outside [0, 1]"]),
        "empty band": (["select", "--scoring-run-id", r, "--band", "0.4", "0.4"], ["empty"]),
        "fraction 0": (["select", "--scoring-run-id", r, "--random-fraction", "0"],
                       ["fraction"]),
        "fraction above 1": (["select", "--scoring-run-id", r, "--random-fraction", "1.5"],
                             ["fraction"]),
        "no selection method": (["select", "--scoring-run-id", r], ["exactly one"]),
        "window without a size": (["select", "--scoring-run-id", r, "--window", "easiest"],
                                  ["--size N or --fraction F"]),
        "window at an unknown position": (["select", "--scoring-run-id", r, "--window",
                                           "middle", "--size", "10"],
                                          ["'middle'", "easiest, offset, median, hardest"]),
        "window outside [0, 1]": (["select", "--scoring-run-id", r, "--window", "1.5",
                                   "--size", "10"], ["outside [0, 1]"]),
        "coverage larger than the run": (["select", "--scoring-run-id", r, "--coverage",
                                          "--size", "100000"], ["budget of 100000 items"]),
        "stratified fraction above 1": (["select", "--scoring-run-id", r, "--stratified",
                                         "--fraction", "2"], ["--fraction", "(0, 1]"]),
        "size without a sized selection": (["select", "--scoring-run-id", r, "--all",
                                            "--size", "3"], ["--size and --fraction go with"]),
        "coverage drop of 1": (["select", "--scoring-run-id", r, "--coverage", "--size", "10",
                                "--drop", "1"], ["0 <= drop < 1"]),
        "SQL-looking score name": (["select", "--scoring-run-id", r, "--band", "0.1", "0.2",
                                    "--score", "avh; drop table scores"],
                                   ["unknown score column"]),
        # a model and items that do not belong together
        "model classes differ from the items'": (
            ["score", "--model-id", m, "--pool-id", p3],
            ["trained on 4 classes", "a, b, c, d", "has 3 classes", "x, y, z"]),
        "score a split the dataset lacks": (["score", "--model-id", m, "--dataset-id", d3,
                                             "--split", "val"], ["no val split", "--val-fraction"]),
        # devices this machine does not have
        "baseline on a missing GPU": (["baseline", "--dataset-id", d, "--device", "cuda"],
                                      ["cuda", "no CUDA GPU", "--device cpu"]),
        "score on a missing GPU": (["score", "--model-id", m, "--pool-id", p, "--device",
                                    "cuda:0"], ["no CUDA GPU"]),
        "experiment on a missing GPU": (["experiment", "--device", "cuda", "--per-class-train",
                                         "10"], ["no CUDA GPU"]),
        "unknown device": (["baseline", "--dataset-id", d, "--device", "tpu"], ["tpu"]),
    }


PROBE_NAMES = list(_probes({**{k: "x" for k in ("d", "m", "p", "r", "b", "d3", "p3", "four",
                                                  "b_val")},
                           "tmp": Path("tmp"), "root": Path("root")}))


@pytest.mark.parametrize("probe", PROBE_NAMES)
def test_probe(world, capsys, probe):
    if "GPU" in probe and __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    args, words = _probes(world)[probe]
    lake = [] if args[0] == "config" else ["--storage", str(world["root"])]
    refused(capsys, world["root"], [*args, *lake], *words)


def test_probes_that_succeed_write_what_they_say(world, capsys):
    """The table's control: the same commands with good values work (the probes fail for the
    reason they name, not for another)."""
    root = str(world["root"])
    code, out, _ = smartaug(capsys, "sql", f"select count(*) as n from scores where "
                            f"scoring_run_id = '{world['r']}'", "--csv", "--storage", root)
    assert code == 0
    assert out.replace('"', "").split() == ["n", str(world["lake"].count("scores", world["r"]))]
    code, out, _ = smartaug(capsys, "select", "--scoring-run-id", world["r"], "--band", "0.25",
                            "0.75", "--storage", root)
    assert code == 0 and out.split()[-1] == world["b"]
    code, out, _ = smartaug(capsys, "sql", "explain select * from pools", "--storage", root)
    assert code == 0


def test_the_study_selectors_from_the_cli(world, capsys, tmp_path):
    """`select --window/--coverage/--stratified` make the study's selections, of exactly the
    size asked; `config check` reads a study file; `export --selection-id` exports one."""
    from smartaug.config import POSITIONS
    from smartaug.steps import select as S

    lake, r, root = world["lake"], world["r"], str(world["root"])
    total = lake.row("scoring_runs", r)["n_items"]
    k = round(0.2 * total)

    def select(*args) -> str:
        code, out, err = smartaug(capsys, "select", "--scoring-run-id", r, *args,
                                  "--storage", root)
        assert code == 0, err
        return out.split()[-1]

    sid = select("--window", "offset", "--fraction", "0.2")
    assert lake.count("selections", sid) == k
    assert sid == S.window(lake, r, k, score="avh", lo=POSITIONS["offset"](k / total))
    assert select("--window", "0.5", "--size", "7", "--score", "margin") == S.window(
        lake, r, 7, score="margin", lo=0.5)
    sid = select("--coverage", "--size", "10", "--bins", "5", "--seed", "3")
    assert sid == S.coverage(lake, r, 10, bins=5, seed=3) and lake.count("selections", sid) == 10
    sid = select("--stratified", "--size", "12")
    labels = lake.read("selections", sid)["label"].to_pylist()
    assert len(labels) == 12 and sorted(labels.count(c) for c in set(labels)) == [3, 3, 3, 3]
    (tmp_path / "study.toml").write_text("preset = 'quick'\nbudgets = [0.05]\nseeds = 3\n")
    code, out, err = smartaug(capsys, "config", "check", str(tmp_path / "study.toml"))
    assert code == 0, err
    assert "budgets = [0.05]" in out and "seeds = 3" in out and "[[pools]]" in out
    from smartaug.experiment_file import load_study

    code, _, err = smartaug(capsys, "config", "check", str(world["tmp"] / "study-bad.toml"))
    assert code == 2 and "error:" in err and "1.5" in err and "Traceback" not in err, err
    (tmp_path / "again.toml").write_text(out)
    assert load_study(tmp_path / "again.toml") == load_study(tmp_path / "study.toml")
    code, out, err = smartaug(capsys, "export", "--selection-id", sid, "--to",
                              str(tmp_path / "out"), "--no-originals", "--storage", root)
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["n_items"] == 12


def test_values_are_printed_as_they_are_and_an_empty_storage_is_refused(tmp_path, capsys,
                                                                        monkeypatch):
    """Nothing the user supplied is read as rich markup (a cell, a path in a message), and an
    empty --storage or SMARTAUG_STORAGE is an error, not ./storage."""
    from smartaug.lake import Lake

    monkeypatch.chdir(tmp_path)
    lake = str(Lake(tmp_path / "lake").root)
    code, out, _ = smartaug(capsys, "sql", "select '[bold]abc[/bold]' as s, '[/x]' as t",
                            "--storage", lake)
    assert code == 0 and "[bold]abc[/bold]" in out and "[/x]" in out
    code, _, err = smartaug(capsys, "ingest", "--dataset", "imagefolder:/no/[/x]/dir",
                            "--storage", lake)
    assert code == 2 and "/no/[/x]/dir" in err and "Traceback" not in err
    for args, env in (([" "], None), ([], "")):
        if env is not None:
            monkeypatch.setenv("SMARTAUG_STORAGE", env)
        code, _, err = smartaug(capsys, "sql", "select 1", *(["--storage", *args] if args else []))
        assert code == 2 and "empty" in err and "Traceback" not in err, err
    assert not (tmp_path / "storage").exists()


@pytest.mark.parametrize("text, words", [
    ('preset = "quick"\npools = 5\n', "pools must be a list of tables"),
    ('preset = "quick"\n[augment]\nkinds = 5\n', "augment.kinds = 5"),
    ('preset = "quick"\n[augment]\nkinds = 5\nspace = "s.yaml"\n',
     "augment.kinds must be a list"),
])
def test_config_check_of_mistyped_tables(tmp_path, capsys, text, words):
    (tmp_path / "s.yaml").write_text("kinds: {grid: builtin}\n")
    (tmp_path / "f.toml").write_text(text)
    code, _, err = smartaug(capsys, "config", "check", str(tmp_path / "f.toml"))
    assert code == 2 and words in " ".join(err.split()) and "Traceback" not in err, err


def test_lake_root_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "lake.txt"
    f.write_text("a file\n")
    for root in (f, f / "sub"):
        code, _, err = smartaug(capsys, "ingest", "--storage", str(root))
        assert code == 2 and "is a file, not a directory" in " ".join(err.split())
    assert f.read_text() == "a file\n"


def _lake_copy(world, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(world["root"], copy)
    return copy


def test_rows_added_by_hand_are_refused(world, tmp_path, capsys):
    """A file copied into a scoring run's partition doubles its rows: every reader refuses the
    run, naming the counts, instead of selecting 200 rows for 100 items."""
    copy = _lake_copy(world, tmp_path)
    part = copy / "scores" / f"scoring_run_id={world['r']}"
    shutil.copy(next(part.glob("*.parquet")), part / "copied.parquet")
    n = world["lake"].count("scores", world["r"])
    refused(capsys, copy, ["select", "--scoring-run-id", world["r"], "--band", "0.1",
                                  "0.3", "--storage", str(copy)],
                   f"scoring run {world['r']} holds {2 * n} rows, expected {n}",
                   "modified outside smartaug")
    pool = copy / "augmentations" / f"pool_id={world['p']}"
    (next(pool.glob("*.parquet"))).unlink()
    with pytest.raises(LakeError, match=f"pool {world['p']} holds 0 rows, expected "
                                        f"{world['lake'].count('augmentations', world['p'])}"):
        Lake(copy).read("augmentations", world["p"])


def test_checkpoints_the_safe_loader_refuses(world, tmp_path, capsys):
    """A checkpoint that would run code when unpickled is refused, and PyTorch's advice to
    retry with weights_only=False is not passed on; a modified one fails its sha256."""
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    copy = _lake_copy(world, tmp_path)
    ckpt = copy / "checkpoints" / f"{world['m']}.pt"
    args = ["score", "--model-id", world["m"], "--dataset-id", world["d"], "--split", "test",
            "--device", "cpu", "--storage", str(copy)]
    torch.save({"format": "smartaug-checkpoint/1", "x": Payload()}, ckpt)
    text = refused(capsys, copy, args, "was refused", "GLOBAL", "system", "never runs code")
    assert "weights_only=False" not in text and "weights_only` set to `False" not in text
    assert not Path("pwned").exists()
    # the weights changed, the recorded sha256 kept
    payload = torch.load(world["root"] / "checkpoints" / f"{world['m']}.pt", weights_only=True)
    key = next(iter(payload["state_dict"]))
    payload["state_dict"][key] = payload["state_dict"][key] + 1
    torch.save(payload, ckpt)
    refused(capsys, copy, args, "sha256", "corrupt")
    ckpt.write_bytes(b"not a checkpoint")
    refused(capsys, copy, args, "was refused", "not a plain checkpoint")


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    """A 16-bit PNG (PIL mode I;16) becomes round(v * 255 / 65535), not all 255."""
    root = tmp_path / "deep"
    values = {}
    for split, n in (("train", 3), ("test", 1)):
        for ci, c in enumerate(("dark", "light")):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                v = np.full((8, 8), 4000 + 50000 * ci + 1000 * i, np.uint16)
                v[0, 0] = 65535
                Image.fromarray(v).save(root / split / c / f"{i}.png")
                assert Image.open(root / split / c / f"{i}.png").mode == "I;16"
                values[(split, c, i)] = v
    lake = Lake(tmp_path / "lake")
    d = ingest(lake, DataConfig(f"imagefolder:{root}"))
    train = read_split(lake, d, "train")
    assert train.images.shape == (6, 8, 8, 1)
    expected = sorted(round(int(v[1, 1]) * 255 / 65535) for k, v in values.items()
                      if k[0] == "train")
    assert sorted(int(x) for x in train.images[:, 1, 1, 0]) == expected
    assert (train.images[:, 0, 0, 0] == 255).all() and train.images.min() < 20


def test_sql_looking_class_names_are_data(tmp_path, capsys):
    images = write_image_folder(tmp_path / "imgs", classes=("a'; drop table x; --", "b\"c"),
                                per_class=(3, 1), size=(28, 28), ext=".png")
    root = tmp_path / "lake"
    code, out, _ = smartaug(capsys, "ingest", "--dataset", f"imagefolder:{images}",
                            "--grayscale", "--storage", str(root))
    assert code == 0
    d = out.split()[-1]
    assert json.loads(Lake(root).row("datasets", d)["classes"]) == ["a'; drop table x; --", "b\"c"]


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (root only; skipped elsewhere)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                         capture_output=True)
    if res.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root: " + res.stderr.decode().strip())
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Fill the disk but ``leave`` bytes."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "filler", "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))


def test_full_disk_is_a_clear_error_and_leaves_nothing(world, small_disk, capsys):
    root = small_disk / "lake"
    Lake(root)
    # ingest: the samples do not fit
    _fill(small_disk, 64 * 1024)
    refused(capsys, root, ["ingest", "--dataset", f"imagefolder:{world['four']}", "--grayscale",
                           "--storage", str(root)], "no space left", "run the command again")
    (small_disk / "filler").unlink()
    code, out, err = smartaug(capsys, "ingest", "--dataset", f"imagefolder:{world['four']}",
                              "--grayscale", "--val-fraction", "0.25", "--storage", str(root))
    assert code == 0, err
    d = out.split()[-1]
    assert d == world["d"]  # the same content, the same id
    # augment and baseline: the pool and the checkpoint do not fit
    _fill(small_disk, 16 * 1024)
    refused(capsys, root, ["augment", "--dataset-id", d, "--policy", "all", "--workers", "1",
                           "--storage", str(root)], "no space left")
    refused(capsys, root, ["baseline", "--dataset-id", d, "--epochs", "1", "--device", "cpu",
                           "--storage", str(root)], "no space left")
    lake = Lake(root)
    assert lake.sql("select count(*) n from models").to_pylist() == [{"n": 0}]
    assert lake.sql("select count(*) n from pools").to_pylist() == [{"n": 0}]
    assert lake.count("samples", d) == world["lake"].count("samples", d)


def test_failures_through_the_installed_command(tmp_path):
    """The console script itself: the same error line and exit code, stdout empty."""
    res = subprocess.run([str(BIN / "smartaug"), "augment", "--dataset-id", "x", "--workers",
                          "0", "--storage", str(tmp_path / "lake")], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("error:") and "--workers" in res.stderr


def test_object_store_without_credentials(tmp_path):
    """An S3 lake with no credentials anywhere: a clear error naming the lake, not a trace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(
        tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true",
        FSSPEC_S3_ENDPOINT_URL="http://127.0.0.1:9", HOME=str(tmp_path))
    res = subprocess.run([str(BIN / "smartaug"), "ingest", "--storage", "s3://lakes/x"],
                         env=env, capture_output=True, text=True, timeout=300)
    text = " ".join(res.stderr.split())
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "error: cannot open the lake s3://lakes/x" in text and "credentials" in text.lower()


def test_space_file_pool_and_its_lineage(world, capsys, tmp_path):
    """A pool from a space file: every row records its kind, spec hash, item seed and applied
    parameters as JSON that DuckDB queries."""
    space = tmp_path / "space.yaml"
    space.write_text("kinds:\n  rotate180: builtin\n  crop: builtin\n  grid:\n"
                     "    __version__: 2.0.8\n"
                     "    transform: {__class_fullname__: GridDistortion, num_steps: 5, p: 1.0}\n")
    root = str(world["root"])
    code, out, err = smartaug(capsys, "augment", "--dataset-id", world["d"], "--space",
                              str(space), "--policy", "all", "--workers", "1", "--storage", root)
    assert code == 0, err
    pool = out.split()[-1]
    lake = world["lake"]
    rows = lake.sql("select kind, count(*) n, count(distinct spec_hash) h, "
                    "count(params) p, min(seed) > 0 s from augmentations where pool_id = $p "
                    "group by kind order by kind", {"p": pool}).to_pylist()
    n = lake.row("datasets", world["d"])["n_train"]
    assert rows == [{"kind": k, "n": n, "h": 1, "p": n, "s": True}
                    for k in ("crop", "grid", "rotate180")]
    angles = lake.sql("select min(cast(params->>'angle' as double)) lo, "
                      "max(cast(params->>'angle' as double)) hi from augmentations "
                      "where pool_id = $p and kind = 'rotate180'", {"p": pool}).to_pylist()[0]
    assert -180 <= angles["lo"] < -20 and 20 < angles["hi"] <= 180
    crops = lake.sql("select params->'crop_coords' c from augmentations where pool_id = $p "
                     "and kind = 'crop' limit 1", {"p": pool}).to_pylist()[0]["c"]
    assert len(json.loads(crops)) == 4
    again = smartaug(capsys, "augment", "--dataset-id", world["d"], "--space", str(space),
                     "--policy", "all", "--workers", "2", "--storage", root)
    assert again[0] == 0 and again[1].split()[-1] == pool  # same space, same pool id


def test_a_bug_is_not_a_user_error(world, capsys, monkeypatch):
    """Only the errors a user can fix print `error:` and exit 2: a plain ValueError from inside
    a step is a bug, so it keeps its traceback (the CLI lets it through) and Prefect may retry
    it; a UserError is not retried."""
    from smartaug.errors import ConfigError, UserError, is_user_error
    from smartaug.flows.failures import retry_transient
    from smartaug.steps import select as S

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(S, "band", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        cli.main(["select", "--scoring-run-id", world["r"], "--band", "0.1", "0.2",
                  "--storage", str(world["root"])])
    assert not is_user_error(ValueError("x")) and is_user_error(ConfigError("x"))
    assert is_user_error(LakeError("x")) and issubclass(S.SelectionError, UserError)
    assert is_user_error(OSError(28, "No space left on device"))
    state = type("State", (), {})
    state.data = ValueError("transient?")
    assert retry_transient(None, None, state) is True
    state.data = S.SelectionError("bad band")
    assert retry_transient(None, None, state) is False


def _edit_value(part: Path, column: str, value) -> None:
    """Rewrite a partition's first file with one value of ``column`` changed (what an edit by
    hand does): same file name, same row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = next(part.glob("*.parquet"))
    t = pq.read_table(f)
    col = t.column(column).to_pylist()
    col[0] = value
    pq.write_table(t.set_column(t.schema.get_field_index(column), column,
                                pa.array(col, t.schema.field(column).type)), f)


def test_verify_names_each_tampered_partition_and_reads_refuse_them(world, tmp_path, capsys):
    """`smartaug verify` exits 0 on an untouched lake and 2 naming each edited partition; a
    step that reads an edited partition refuses it (its sha256 differs from its commit's)."""
    copy = _lake_copy(world, tmp_path)
    lake, r, p, b = world["lake"], world["r"], world["p"], world["b"]
    code, out, err = smartaug(capsys, "verify", "--storage", str(copy))
    assert code == 0 and out.startswith("ok:") and "Traceback" not in err, err
    n_partitions = int(out.split()[1])
    assert n_partitions == sum(len(lake.partitions(t)) for t in TABLES)
    scores = copy / "scores" / f"scoring_run_id={r}"
    _edit_value(scores, "avh", 0.123)
    refused(capsys, copy, ["select", "--scoring-run-id", r, "--band", "0.1", "0.3", "--storage",
                           str(copy)], f"scoring_run_id={r}", "was edited")
    text = refused(capsys, copy, ["verify", "--storage", str(copy)], "1 problem(s)",
                   f"scores partition {copy}/scores/scoring_run_id={r}: file part-00000.parquet "
                   f"was edited")
    assert text.count("error:") == 2  # that partition, then the summary
    # one byte of a sample's pixels, a selection duplicated, a partition put in by hand
    f = next((copy / "samples" / f"dataset_id={world['d']}").glob("*.parquet"))
    data = bytearray(f.read_bytes())
    data[len(data) // 3] ^= 0xFF
    f.write_bytes(bytes(data))
    sel = copy / "selections" / f"selection_id={b}"
    shutil.copy(next(sel.glob("*.parquet")), sel / "part-99999.parquet")
    (copy / "scores" / "scoring_run_id=evil").mkdir()
    (copy / "scores" / "scoring_run_id=evil" / "part-00000.parquet").write_bytes(
        next(scores.glob("*.parquet")).read_bytes())
    text = refused(capsys, copy, ["verify", "--storage", str(copy)], "4 problem(s)")
    for words in (f"scoring_run_id={r}: file part-00000.parquet was edited",
                  f"dataset_id={world['d']}: file part-00000.parquet was edited (its sha256",
                  f"selection_id={b}: file part-99999.parquet was not written by smartaug",
                  "scoring_run_id=evil has no _manifest.json"):
        assert words in text, (words, text)
    gone = _lake_copy(world, tmp_path / "gone")
    next((gone / "selections" / f"selection_id={b}").glob("*.parquet")).unlink()
    refused(capsys, gone, ["export", "--selection-id", b, "--to", str(tmp_path / "y"),
                           "--storage", str(gone)], f"selection_id={b}", "is missing")
    pool = _lake_copy(world, tmp_path / "pool")
    _edit_value(pool / "augmentations" / f"pool_id={p}", "seed", 12345)
    refused(capsys, pool, ["export", "--selection-id", b, "--to", str(tmp_path / "x"),
                           "--storage", str(pool)], f"pool_id={p}", "was edited")


def test_a_run_whose_data_was_removed_is_not_reported_done(world, tmp_path, capsys):
    """`rm -r storage/scores`: score refuses the run (it is recorded, its scores are gone)
    and says how to rebuild it, instead of printing the old id with nothing scored."""
    copy = _lake_copy(world, tmp_path)
    shutil.rmtree(copy / "scores")
    Lake(copy)  # opening a lake recreates its empty tables
    refused(capsys, copy, ["score", "--model-id", world["m"], "--pool-id", world["p"],
                           "--device", "cpu", "--storage", str(copy)],
            f"scoring run {world['r']} is recorded", "scores partition is missing",
            f"scoring_runs/scoring_run_id={world['r']}")
    shutil.rmtree(copy / "scoring_runs" / f"scoring_run_id={world['r']}")
    code, out, err = smartaug(capsys, "score", "--model-id", world["m"], "--pool-id",
                              world["p"], "--device", "cpu", "--storage", str(copy))
    assert code == 0 and out.split()[-1] == world["r"], err
    assert Lake(copy).count("scores", world["r"]) == world["lake"].count("scores", world["r"])


def test_an_export_killed_midway_leaves_nothing_the_next_run_keeps(world, tmp_path, capsys):
    """The temporary directory of a killed export (its process gone) is removed by the next
    write beside it; one of a live process is left alone."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.tmp-{HOST}-{dead.pid}-0123abcd"
    (stale / "a").mkdir(parents=True)
    (stale / "a" / "x.png").write_bytes(b"partial")
    live = tmp_path / f".other.tmp-{HOST}-{os.getppid()}-89abcdef"
    live.mkdir()
    code, out, err = smartaug(capsys, "export", "--selection-id", world["b"], "--to",
                              str(tmp_path / "out"), "--no-originals", "--storage",
                              str(world["root"]))
    assert code == 0, err
    assert not stale.exists() and live.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "out"])


def test_a_lake_that_names_code_runs_none(world, tmp_path, capsys, monkeypatch):
    """A models row and its checkpoint rewritten (manifests and the weights' sha256 kept
    consistent, as anyone with write access can) to name ``tempfile:mkdtemp`` or ``this:x``:
    scoring imports and calls nothing and exits 2; naming it for the run is what trusts it."""
    import tempfile

    import torch

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for name in ("tempfile:mkdtemp", "this:x"):
        copy = _lake_copy(world, tmp_path / name.replace(":", "-"))
        lake = Lake(copy)
        row = lake.row("models", world["m"])
        shutil.rmtree(copy / "models" / f"model_id={world['m']}")
        lake.write("models", world["m"], {k: [v] for k, v in {**row, "arch": name}.items()})
        ckpt = copy / "checkpoints" / f"{world['m']}.pt"
        payload = torch.load(ckpt, weights_only=True)
        torch.save({**payload, "spec": {**payload["spec"], "name": name}}, ckpt)
        code, _, _ = smartaug(capsys, "verify", "--storage", str(copy))
        assert code == 0  # consistent: nothing for verify to find
        refused(capsys, copy, ["score", "--model-id", world["m"], "--dataset-id", world["d"],
                               "--split", "test", "--device", "cpu", "--storage", str(copy)],
                f"names model '{name}'", "does not import code because a lake names it",
                f"--trust-model {name}", "SMARTAUG_TRUST_MODELS")
    assert list(scratch.iterdir()) == [] and "this" not in sys.modules


MYMODS = """from torch import nn
def tiny(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.ReLU(), nn.Linear(16, num_classes))
def raises(num_classes):
    raise RuntimeError("no GPU for this one")
def needs(num_classes, depth):
    return tiny(num_classes)
class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = tiny(4)
    def forward(self, x):
        return self.net(x), x
def pair():
    return Pair()
def squashed(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 7), nn.Tanh())
"""


@pytest.mark.parametrize("name, words", [
    ("mymods:raises", ["raises(num_classes=4, ...) raised RuntimeError: no GPU for this one"]),
    ("mymods:needs", ["requires depth, which smartaug cannot give"]),
    (".mymods:tiny", ["absolute module path"]),
    ("mymods:pair", ["its forward returns tuple, not a tensor of logits"]),
    ("mymods:squashed", ["last nn.Linear (1) is not its final layer"]),
])
def test_models_of_yours_that_cannot_work(world, capsys, monkeypatch, tmp_path, name, words):
    """Your model's own failures are error lines naming the model, never tracebacks."""
    (tmp_path / "mymods.py").write_text(MYMODS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    refused(capsys, world["root"], ["baseline", "--dataset-id", world["d"], "--model", name,
                                    "--epochs", "1", "--device", "cpu", "--storage",
                                    str(world["root"])], f"'{name}'", *words)


def test_a_lake_from_before_manifests_is_adopted_only_when_asked(world, tmp_path, capsys):
    copy = _lake_copy(world, tmp_path)
    for m in copy.glob("*/*/_manifest.json"):
        m.unlink()
    text = refused(capsys, copy, ["verify", "--storage", str(copy)], "has no _manifest.json")
    assert text.count("has no _manifest.json") == len(list(world["root"].glob(
        "*/*/_manifest.json")))
    code, out, err = smartaug(capsys, "verify", "--adopt", "--storage", str(copy))
    assert code == 0 and "adopted" in err and out.startswith("ok:"), err
    assert sorted(p.relative_to(copy) for p in copy.glob("*/*/_manifest.json")) == sorted(
        p.relative_to(world["root"]) for p in world["root"].glob("*/*/_manifest.json"))


def test_a_command_that_reads_finds_no_lake_and_makes_none(tmp_path, capsys, monkeypatch):
    """Forgetting --storage: in a directory without a lake, a command that reads says where it
    looked, why there, and how to point it elsewhere, and creates nothing; the commands that
    make a lake (ingest, experiment, study) still do."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SMARTAUG_STORAGE", raising=False)
    for args in (["verify"], ["sql", "select 1"], ["views"],
                 ["augment", "--dataset-id", "d"], ["select", "--scoring-run-id", "r", "--all"]):
        code, out, err = smartaug(capsys, *args)
        said = " ".join(err.split())
        assert code == 2 and out == "" and "Traceback" not in err, err
        assert f"no lake at {tmp_path / 'storage'} (the default, ./storage: neither --storage " \
               f"nor SMARTAUG_STORAGE was given)" in said, said
        assert "Point --storage (or SMARTAUG_STORAGE) at the lake you made" in said
    monkeypatch.setenv("SMARTAUG_STORAGE", str(tmp_path / "elsewhere"))
    code, _, err = smartaug(capsys, "verify")
    assert code == 2 and f"no lake at {tmp_path / 'elsewhere'} (from SMARTAUG_STORAGE)" in \
        " ".join(err.split())
    code, _, err = smartaug(capsys, "verify", "--storage", str(tmp_path / "given"))
    assert code == 2 and "(given as --storage)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing was created
    code, _, err = smartaug(capsys, "ingest", "--dataset", "imagefolder:/no/such/dir")
    assert code == 2 and "/no/such/dir" in err  # ingest may make the lake; the data is wrong
