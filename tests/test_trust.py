"""Trust, third pass: nothing outside the lake is touched, nothing is read unchecked, and no run
fails after doing work. One test (or one parameter) per cause; each failed before its fix.
The staging cleanup (a symlinked ``.tmp``, another host's staging) is in ``test_lake.py``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from smartaug.errors import ConfigError
from smartaug.lake import Lake
from tests import test_bad_input
from tests.conftest import smartaug
from tests.test_bad_input import _images, _lake_copy, files, refused

BIN = Path(sys.executable).parent
world = test_bad_input.world  # the module-scoped fixture: a small lake of every table


# ------------------------------------------------------------ 1. nothing outside the lake

def test_atlas_check_refuses_an_id_that_is_a_path(world, tmp_path, capsys):
    """The probe: `atlas-check --study-id ../../../elsewhere` read elsewhere/study.json and
    wrote elsewhere/prediction.json. Now an id that is not a name is refused first."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "study.json").write_text("{}")
    rel = os.path.relpath(elsewhere, world["root"] / "reports")
    for option, value in (("--study-id", rel), ("--atlas-id", "../x"), ("--study-id", "a/b")):
        args = ["atlas-check", "--atlas-id", "a1", "--study-id", "s1", "--storage",
                str(world["root"])]
        args[args.index(option) + 1] = value
        refused(capsys, world["root"], args, "is not a smartaug", "never a path")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["study.json"]


def test_lake_paths_take_names_not_paths(world):
    from smartaug.lake import LakeError

    lake = world["lake"]
    for bad in ("..", "../x", "a/../../b", "", ".hidden", "-rf", "a\\b", "x\x00y"):
        with pytest.raises(LakeError, match="is not a smartaug run_id"):
            lake.partition_dir("runs", bad)
    with pytest.raises(LakeError, match="is not a smartaug id"):
        lake.local_path("reports/../../elsewhere")
    assert lake.partition_dir("runs", "0123abcd4567ef89").name == "run_id=0123abcd4567ef89"


@pytest.mark.parametrize("name", ["timm:hf-hub:ORG/REPO", "timm:local-dir:/etc",
                                  "timm:../x", "torchvision:a/b"])
def test_a_library_model_name_is_a_registry_name_only(world, tmp_path, capsys, name):
    """A models row and checkpoint rewritten to name a hub or a directory through timm: it is
    refused before timm (or anything) is imported, as code a lake names would be."""
    import torch

    from smartaug.models import ModelError, check_trusted

    with pytest.raises(ModelError, match="registry|list_models"):
        check_trusted(name)
    copy = _lake_copy(world, tmp_path)
    lake = Lake(copy)
    row = lake.row("models", world["m"])
    shutil.rmtree(copy / "models" / f"model_id={world['m']}")
    lake.write("models", world["m"], {k: [v] for k, v in {**row, "arch": name}.items()})
    ckpt = copy / "checkpoints" / f"{world['m']}.pt"
    payload = torch.load(ckpt, weights_only=True)
    torch.save({**payload, "spec": {**payload["spec"], "name": name}}, ckpt)
    had_timm = "timm" in sys.modules
    refused(capsys, copy, ["score", "--model-id", world["m"], "--dataset-id", world["d"],
                           "--split", "test", "--device", "cpu", "--storage", str(copy)],
            "takes a")
    assert ("timm" in sys.modules) == had_timm


# ------------------------------------------------------------ 2. nothing read unchecked

def test_a_partition_copied_by_hand_is_refused_by_the_report(world, tmp_path, capsys):
    """The probe: `runs/run_id=copy/` copied by hand changed a method's n and mean in the
    experiment report. Every query reads through the lake's manifest check now."""
    from smartaug.config import TrainConfig, standard_methods
    from smartaug.steps.experiment import run_experiment
    from smartaug.steps.report import write_report
    from tests.conftest import tiny_config

    copy = _lake_copy(world, tmp_path)
    cfg = tiny_config(str(world["four"]), per_class_train=None, per_class_test=None,
                      methods=standard_methods(), reps=2, val_fraction=0.25)
    cfg = type(cfg)(**{**cfg.__dict__, "data": type(cfg.data)(
        f"imagefolder:{world['four']}", grayscale=True, val_fraction=0.25),
        "baseline": TrainConfig(epochs=1, batch_size=16, device="cpu"),
        "retrain": TrainConfig(epochs=1, batch_size=16, device="cpu")})
    lake = Lake(copy)
    exp_id = run_experiment(cfg, lake, log=None)
    one = sorted((copy / "runs").glob("run_id=*"))[0]
    shutil.copytree(one, copy / "runs" / "run_id=copy")
    with pytest.raises(Exception, match=r"run_id=copy.*manifest is that of runs"):
        write_report(Lake(copy), exp_id, command="pytest")
    code, _, err = smartaug(capsys, "sql", "select count(*) from runs", "--storage", str(copy))
    assert code == 2 and "run_id=copy" in err and "Traceback" not in err
    # a partition with no manifest: refused where it is read, naming verify --adopt
    (copy / "runs" / "run_id=copy" / "_manifest.json").unlink(missing_ok=True)
    for m in (copy / "runs" / "run_id=copy").iterdir():
        if not m.name.endswith(".parquet"):
            m.unlink()
    code, _, err = smartaug(capsys, "sql", "select count(*) from runs", "--storage", str(copy))
    text = " ".join(err.split())
    assert code == 2 and "smartaug verify --adopt" in text, text
    shutil.rmtree(copy / "runs" / "run_id=copy")
    code, out, _ = smartaug(capsys, "sql", "select count(*) n from runs", "--csv",
                            "--storage", str(copy))
    assert code == 0 and out.split()[-1] == "6"


def test_verify_refuses_a_manifest_entry_that_is_not_parquet(world, tmp_path, capsys):
    """A file replaced by one that is not Parquet, its size and sha256 rewritten into the
    manifest: the manifest matches, and verify still refuses it (its footer is read)."""
    import hashlib

    from smartaug.lake.manifest import MANIFEST

    copy = _lake_copy(world, tmp_path)
    part = copy / "selections" / f"selection_id={world['b']}"
    target = sorted(part.glob("*.parquet"))[0]
    target.write_bytes(b"not a parquet file at all" * 10)
    man = json.loads((part / MANIFEST).read_text())
    man["files"][target.name].update(bytes=target.stat().st_size,
                                     sha256=hashlib.sha256(target.read_bytes()).hexdigest())
    (part / MANIFEST).write_text(json.dumps(man))
    code, _, err = smartaug(capsys, "verify", "--storage", str(copy))
    text = " ".join(err.split())
    assert code == 2 and "is not a Parquet file" in text and target.name in text, text


# ------------------------------------------------------------ 3. everything before any work

def _cfg(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


CONFIG_CASES = {
    "online space:nosuch": ('[retrain]\naugment = "online"\npolicy = "space:nosuch"\n'
                            '[[methods]]\nname = "A"\n', ["unknown augmentation kind", "nosuch"]),
    "online bin out of range": ('[retrain]\naugment = "online"\npolicy = "bin:rotate@9/5"\n'
                                '[[methods]]\nname = "A"\n', ["need 0 <= B < N"]),
    "online bin of 0 bins": ('[retrain]\naugment = "online"\npolicy = "bin:rotate@1/0"\n'
                             '[[methods]]\nname = "A"\n', ["need 0 <= B < N"]),
    "online beside selections": ('[retrain]\naugment = "online"\npolicy = "randaugment"\n',
                                 ["cannot add a selection", "M0"]),
    "band_grid reversed": ('band_grid = [[0.5, 0.2]]\n[data]\nval_fraction = 0.2\n',
                           ["band_grid entry [0.5, 0.2]"]),
    "matched_to itself": ('[[methods]]\nname = "A"\nselection = "random_matched"\n'
                          'matched_to = "A"\n', ["circle", "A -> A"]),
    "matched_to a cycle": ('[[methods]]\nname = "A"\nselection = "random_matched"\n'
                           'matched_to = "B"\n[[methods]]\nname = "B"\n'
                           'selection = "random_matched"\nmatched_to = "A"\n',
                           ["circle", "A -> B -> A"]),
    "unknown model": ('model = "nosuch"\n', ["unknown model 'nosuch'"]),
    "timm hub model": ('model = "timm:hf-hub:org/repo"\n', ["registry"]),
    "growth nan": None,  # a study file (below)
    "seed 2**66": ('seed = 73786976294838206464\n', ["seed must be an integer in [0, "]),
    "huge epochs integer": ('[retrain]\nepochs = 9223372036854775807\nlr = nan\n',
                            ["lr must be a finite number"]),
}
STUDY_CASES = {
    "study seed 2**66": ("seed = 73786976294838206464\n", ["seed must be an integer"]),
    "growth nan": ('[[arms]]\nname = "sched"\nsource = "schedule"\npacing = "exponential"\n'
                   'growth = nan\n', ["growth must be a finite number"]),
    "arm space:nosuch": ('[[arms]]\nname = "p"\nsource = "policy"\npolicy = "space:nosuch"\n',
                         ["arm p", "unknown augmentation kind"]),
    "arm bin 1/0": ('[[arms]]\nname = "p"\nsource = "policy"\npolicy = "bin:rotate@1/0"\n',
                    ["arm p", "need 0 <= B < N"]),
}


@pytest.mark.parametrize("case", [c for c in CONFIG_CASES if CONFIG_CASES[c]])
def test_config_check_refuses_what_the_run_would_fail_on(tmp_path, capsys, case):
    """Each value that failed a run after ingest, baseline, augment and scoring is refused by
    `config check`, and by `experiment` before the lake is made."""
    text, words = CONFIG_CASES[case]
    f = _cfg(tmp_path, "exp.toml", 'preset = "quick"\n' + text)
    refused(capsys, tmp_path, ["config", "check", str(f)], *words)
    storage = tmp_path / "lake"
    refused(capsys, tmp_path, ["experiment", "--config", str(f), "--storage", str(storage)],
            *words)
    assert not storage.exists()


@pytest.mark.parametrize("case", STUDY_CASES)
def test_config_check_refuses_a_study_the_run_would_fail_on(tmp_path, capsys, case):
    text, words = STUDY_CASES[case]
    f = _cfg(tmp_path, "study.toml", 'preset = "quick"\nbudgets = [0.1]\n' + text)
    refused(capsys, tmp_path, ["config", "check", str(f)], *words)
    storage = tmp_path / "lake"
    refused(capsys, tmp_path, ["study", "--config", str(f), "--storage", str(storage)], *words)
    assert not storage.exists()


@pytest.mark.parametrize("args, words", [
    (["--model", "nosuch"], ["unknown model 'nosuch'"]),
    (["--device", "cuda"], ["no CUDA GPU"]),
])
def test_experiment_options_are_checked_before_the_lake_is_made(tmp_path, capsys, args, words):
    if "cuda" in args and __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    storage = tmp_path / "lake"
    refused(capsys, tmp_path, ["experiment", *args, "--storage", str(storage)], *words)
    assert not storage.exists()


# ------------------------------------------------------------ 4. silent wrong results

def test_nan_in_any_config_number_is_refused():
    from smartaug.config import Arm, DataConfig, LossSpec, TrainConfig

    with pytest.raises(ConfigError, match="growth must be a finite number, got nan"):
        Arm("s", source="schedule", pacing="exponential", growth=float("nan"))
    for make in (lambda: TrainConfig(lr=float("nan")), lambda: LossSpec(lam=float("inf")),
                 lambda: DataConfig(val_fraction=float("nan"))):
        with pytest.raises(ConfigError, match="finite|val_fraction"):
            make()


def test_a_per_class_policy_refuses_labels_it_was_not_made_for(tmp_path):
    import albumentations as A

    from smartaug.policy import PolicyFileError, PolicyInputError, from_dict, load

    pooled = A.to_dict(A.Compose([A.HorizontalFlip(p=1.0)]))
    own = A.to_dict(A.Compose([A.VerticalFlip(p=1.0)]))
    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    p = from_dict({**pooled, "smartaug": {"classes": 3}}, {"1": own})
    assert (p(img, 1) == img[::-1]).all() and (p(img, 2) == img[:, ::-1]).all()
    for label in (999, -1, 3, "cat", float("nan"), np.float64("nan"), True):
        with pytest.raises(PolicyInputError):
            p(img, label)
    for table, words in (({"x": own}, "not a class index"), ({"5": own}, "0..2"),
                         ([own], "must be a mapping")):
        with pytest.raises(PolicyFileError, match=words):
            from_dict({**pooled, "smartaug": {"classes": 3}}, table)
    f = tmp_path / "p.json"
    for data, words in (({**pooled, "smartaug": ["x"]}, "must be a mapping"),
                        ({**pooled, "smartaug": {"per_class": ["a"]}}, "must name a file")):
        f.write_text(json.dumps(data))
        with pytest.raises(PolicyFileError, match=words):
            load(f)
    f.write_text(json.dumps(pooled))
    with pytest.raises(PolicyInputError, match="seed must be an integer"):
        load(f, seed=-1)
    with pytest.raises(PolicyInputError, match="no pixels"):
        load(f)(np.zeros((0, 0, 3), np.uint8))


def test_policy_files_deep_or_huge_are_refused_when_read(tmp_path):
    import albumentations as A

    from smartaug.policy import MAX_DEPTH, PolicyFileError, load

    inner = json.dumps(A.to_dict(A.HorizontalFlip(p=1.0))["transform"])
    deep = ('{"__class_fullname__": "Compose", "p": 1.0, "transforms": [' * 3000 + inner
            + "]}" * 3000)
    f = tmp_path / "deep.json"
    f.write_text(f'{{"__version__": "{A.__version__}", "transform": {deep}}}')
    with pytest.raises(PolicyFileError, match=f"nested more than {MAX_DEPTH}"):
        load(f)
    f.write_text(json.dumps(A.to_dict(A.Compose([A.Resize(100000, 100000, p=1.0)]))))
    with pytest.raises(PolicyFileError, match="height = 100000 is above the largest side"):
        load(f)
    f.write_bytes(b'{"transform": "\xff\xfe"}')
    with pytest.raises(PolicyFileError, match="not UTF-8"):
        load(f)


def _dangling(root):
    os.symlink(root / "no-such-file.png", root / "train" / "a" / "gone.png")


def _looping(root):
    os.symlink(root / "train" / "a" / "loop.png", root / "train" / "a" / "loop.png")


def _short_png(root):
    """A PNG with valid chunks (CRCs right) whose pixel data stops halfway: PIL fills the
    missing rows with zeros; libpng says "Not enough image data"."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(range(28)) for _ in range(14))  # 14 of 28 rows
    (root / "train" / "a" / "short.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("mutate, words", [
    (_dangling, ["gone.png", "symbolic link to nothing"]),
    (_looping, ["loop.png", "symbolic link"]),
    (_short_png, ["short.png", "ends before its last row"]),
], ids=["dangling link", "looping link", "PNG short of rows"])
def test_image_files_that_cannot_be_read_whole_are_named(world, tmp_path, capsys, mutate, words):
    images = _images(tmp_path, "imgs", mutate)
    refused(capsys, world["root"], ["ingest", "--dataset", f"imagefolder:{images}",
                                    "--grayscale", "--storage", str(world["root"])], *words)


# ------------------------------------------------------------ 6. bounded inputs

def test_a_config_file_that_never_ends_is_refused_at_its_cap(tmp_path, capsys):
    """The probe read /dev/zero until the kernel killed it at 22 GB."""
    t0 = time.perf_counter()
    refused(capsys, tmp_path, ["config", "check", "/dev/zero"], "larger than 16 MiB")
    assert time.perf_counter() - t0 < 60


def _space(tmp: Path, transform: dict) -> Path:
    import yaml

    f = tmp / "space.yaml"
    f.write_text(yaml.safe_dump({"kinds": {"k": {"__version__": "2.0.8",
                                                 "transform": transform}}}))
    return f


@pytest.mark.parametrize("transform, words", [
    ({"__class_fullname__": "Resize", "height": 100000, "width": 100000, "p": 1.0},
     ["height = 100000 is above the largest side smartaug makes, 4096"]),
    ({"__class_fullname__": "PadIfNeeded", "min_height": 50000, "min_width": 8, "p": 1.0},
     ["min_height = 50000"]),
    ({"__class_fullname__": "HistogramMatching", "p": 1.0},
     ["cannot augment an image", "HistogramMatching"]),
], ids=["Resize bomb", "PadIfNeeded bomb", "HistogramMatching"])
def test_space_kinds_are_bounded_and_tried_when_read(world, tmp_path, capsys, transform, words):
    f = _space(tmp_path, transform)
    refused(capsys, world["root"], ["augment", "--dataset-id", world["d"], "--space", str(f),
                                    "--storage", str(world["root"])], *words)
    g = _cfg(tmp_path, "exp.toml", f'preset = "quick"\n[augment]\nspace = "{f}"\n')
    refused(capsys, tmp_path, ["config", "check", str(g)], *words)


# ------------------------------------------------------------ 7. error lines, not tracebacks

@pytest.mark.parametrize("args, words", [
    (["ingest", "--val-fraction", "2"], ["val_fraction must be in [0, 1)"]),
    (["ingest", "--val-fraction", "nan"], ["val_fraction must be"]),
    (["ingest", "--val-fraction", "-0.1"], ["val_fraction must be"]),
    (["ingest", "--val-fraction", "1"], ["val_fraction must be"]),
    (["ingest", "--val-fraction", "inf"], ["val_fraction must be"]),
    (["describe", "--val-fraction", "nan"], ["val_fraction must be"]),
    (["ingest", "--dataset", ""], ["dataset must be a name"]),
    (["ingest", "--seed", "-1"], ["seed"]),
    (["baseline", "--dataset-id", "x", "--seed", "99999999999999999999999"], ["seed"]),
])
def test_bad_numbers_on_the_command_line_are_error_lines(world, tmp_path, capsys, args, words):
    storage = [] if args[0] == "describe" else ["--storage", str(tmp_path / "new")]
    refused(capsys, tmp_path, [*args, *storage], *words)
    assert not (tmp_path / "new").exists()


def test_a_config_that_is_not_utf8_is_an_error_line(tmp_path, capsys):
    f = tmp_path / "exp.toml"
    f.write_bytes(b'preset = "quick"\n\xff\xfe = 1\n')
    refused(capsys, tmp_path, ["config", "check", str(f)], "not UTF-8 text")


def test_a_trusted_checkpoint_that_does_not_fit_is_an_error_line(tmp_path):
    import torch

    from smartaug.models import ModelError, load_checkpoint, make_model, save_checkpoint, weights_sha256

    f = tmp_path / "m.pt"
    save_checkpoint(make_model("lenet5", 4, 1, 28), f)
    payload = torch.load(f, weights_only=True)
    key = next(iter(payload["state_dict"]))
    payload["state_dict"][key] = torch.zeros(3, 3)
    payload["sha256"] = weights_sha256(payload["state_dict"])  # consistent, as anyone can
    torch.save(payload, f)
    with pytest.raises(ModelError, match="its weights do not fit model 'lenet5'"):
        load_checkpoint(f)


def _study_with_workers(tmp_path, epochs: int) -> list[str]:
    """`smartaug study --workers 2` on a tiny image folder: the command, its files made."""
    from tests.conftest import tiny_study_data, write_image_folder

    write_image_folder(tmp_path / "images", per_class=(16, 4), size=(28, 28), ext=".png")
    f = _cfg(tmp_path, "study.toml", 'budgets = [0.5]\nscores = ["avh"]\npositions = '
             '["easiest", "hardest"]\ncoverage = []\nseeds = 3\nchoose_seeds = 0\n'
             'references = ["none"]\n' + tiny_study_data(16, 4, epochs=epochs))
    return [str(BIN / "smartaug"), "study", "--config", str(f), "--workers", "2", "--storage",
            str(tmp_path / "lake")]


def test_a_worker_killed_mid_grid_is_one_error_and_the_rerun_goes_on(tmp_path):
    """One study worker killed (SIGKILL): one `error:` line saying what finished is kept, no
    BrokenProcessPool traceback; the same command then finishes the study."""
    import psutil

    cmd = _study_with_workers(tmp_path, epochs=30)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    victim = None
    while victim is None and proc.poll() is None and time.time() < deadline:
        kids = [c for c in psutil.Process(proc.pid).children(recursive=True)
                if "resource_tracker" not in " ".join(c.cmdline())]
        if len(kids) >= 2 and list((tmp_path / "lake" / "baseline").glob("*")) is not None \
                and (tmp_path / "lake" / "selections").is_dir() \
                and any((tmp_path / "lake" / "selections").glob("selection_id=*")):
            victim = kids[-1]
        time.sleep(0.2)
    assert victim is not None, "the study ended before a worker could be killed"
    time.sleep(1.0)
    victim.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    if proc.returncode == 0:
        pytest.skip("the killed worker had already finished its cells")
    assert proc.returncode == 2, err[-2000:]
    assert "Traceback" not in err and "error: a worker process ended" in " ".join(err.split())
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]


# ------------------------------------------------------------ 8. Ctrl-C

def _as_from_a_terminal():
    """Ctrl-C reaches a command started from a terminal; a background job of a non-interactive
    shell (how CI may start the suite) inherits SIGINT ignored, so give the child the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_in_augment_is_one_line(fashion_root, tmp_path):
    """SIGINT (Ctrl-C) while augment's worker processes run: one `aborted` line from the
    main process, exit 130, nothing committed; no traceback from any process."""
    from smartaug.config import DataConfig
    from smartaug.steps.ingest import ingest

    copy = tmp_path / "lake"
    d = ingest(Lake(copy), DataConfig(root=fashion_root, per_class_train=500,
                                      per_class_test=5))
    before = files(copy)
    proc = subprocess.Popen([str(BIN / "smartaug"), "augment", "--dataset-id", d,
                             "--policy", "k:100", "--materialize", "always", "--workers", "2",
                             "--storage", str(copy)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_as_from_a_terminal)
    import psutil

    deadline = time.time() + 120
    while len(psutil.Process(proc.pid).children()) < 2 and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()  # augmenting: its workers are forked
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "aborted" and "Traceback" not in err, err[-2000:]
    assert "KeyboardInterrupt" not in err
    assert [f for f in files(copy) if not f.startswith(".tmp")] == \
        [f for f in before if not f.startswith(".tmp")]


def test_ctrl_c_during_a_duckdb_query_is_the_aborted_line(world, capsys, monkeypatch):
    """DuckDB turns Ctrl-C mid-query into its own InterruptException ("Query interrupted"):
    the CLI says `aborted` and exits 130, as for any other Ctrl-C."""
    import duckdb

    from smartaug.lake import store

    def interrupted(*a, **k):
        raise duckdb.InterruptException("INTERRUPT Error: Query interrupted")

    monkeypatch.setattr(store, "query_arrow", interrupted)
    code, _, err = smartaug(capsys, "sql", "select 1", "--storage", str(world["root"]))
    assert code == 130 and err.strip() == "aborted"


@pytest.mark.slow
def test_ctrl_c_in_a_study_with_workers_is_one_line(tmp_path):
    """SIGINT while `study --workers 2` trains cells: `aborted` from the main process (no
    KeyboardInterrupt from the workers, which leave Ctrl-C to it), exit 130, the workers
    gone; the rerun finishes the study."""
    import psutil

    cmd = _study_with_workers(tmp_path, epochs=20)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_from_a_terminal)
    deadline = time.time() + 600
    runs = tmp_path / "lake" / "runs"
    while not (runs.is_dir() and any(runs.glob("run_id=*"))) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "aborted", err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
