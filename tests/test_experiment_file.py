"""Experiments as files: the issue's TOML as it stands, presets shipped as files, overrides on
top, and errors that name the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from smartaug.config import preset
from smartaug.experiment_file import ConfigError, load_experiment, preset_text
from smartaug.lake import Lake
from tests.conftest import write_image_folder

BIN = Path(sys.executable).parent

EXAMPLE = """\
preset = "quick"              # optional: start from a preset; the keys below override it
model = "torchvision:resnet18"
reps = 2
[data]
dataset = "imagefolder:/data/pets"
grayscale = true
image_size = 28
per_class_train = 200
per_class_test = 50
val_fraction = 0.1
[augment]
space = "space.yaml"
policy = "k:2"
[baseline]
epochs = 2
[retrain]
epochs = 2
"""

SPACE = """\
kinds:
  rotate: builtin            # a built-in kind by name
  grid:                      # A.to_dict(A.GridDistortion(num_steps=5, p=1.0))
    __version__: 2.0.8
    transform: {__class_fullname__: GridDistortion, num_steps: 5, p: 1.0}
"""


def test_each_preset_as_a_file_loads_back_to_the_preset(tmp_path):
    """`smartaug config show NAME` prints the preset (its one definition, in smartaug.config)
    as an experiment file that gives the preset back."""
    for name in ("quick", "paper", "gpu"):
        (tmp_path / f"{name}.toml").write_text(preset_text(name))
        assert load_experiment(tmp_path / f"{name}.toml") == preset(name)
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_text("huge")


def test_the_example_file_as_it_stands(tmp_path):
    pets = tmp_path / "pets"
    (tmp_path / "exp.toml").write_text(EXAMPLE.replace("/data/pets", "pets"))
    with pytest.raises(ValueError, match="data.dataset = 'imagefolder:pets': no directory"):
        load_experiment(tmp_path / "exp.toml")  # checked when the file is loaded
    pets.mkdir()
    (tmp_path / "space.yaml").write_text(SPACE)
    cfg = load_experiment(tmp_path / "exp.toml")
    assert cfg.model == "torchvision:resnet18" and cfg.reps == 2 and cfg.preset == "quick"
    assert cfg.data.dataset == f"imagefolder:{pets}"  # relative to the file
    assert (cfg.data.grayscale, cfg.data.image_size, cfg.data.per_class_train,
            cfg.data.per_class_test, cfg.data.val_fraction) == (True, 28, 200, 50, 0.1)
    assert cfg.augment.policy == "k:2" and cfg.augment.kinds == ("rotate", "grid")
    assert [n for n, _ in cfg.augment.space] == ["grid"]
    assert cfg.baseline.epochs == cfg.retrain.epochs == 2
    assert cfg.retrain.lr == preset("quick").retrain.lr  # the rest from the preset
    assert [m.name for m in cfg.methods] == ["M0", "M1", "M2"]
    # the same file with an absolute path, in YAML
    import tomllib

    import yaml

    data = tomllib.loads(EXAMPLE.replace("/data/pets", str(pets)))
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(data))
    assert load_experiment(tmp_path / "exp.yaml").data.dataset == f"imagefolder:{pets}"


@pytest.mark.parametrize("text,words", [
    ("[data]\ndatset = 'mnist'\n", ["unknown key 'data.datset'"]),
    ("reps = 'three'\n", ["reps = 'three'", "integer"]),
    ("[augment]\npolicy = 'some'\n", ["augment", "unknown policy 'some'"]),
    ("[augment]\nkinds = ['rotate', 'shear']\n", ["unknown augmentation kind", "'shear'"]),
    ("[baseline]\nepochs = 0\n", ["epochs must be >= 1"]),
    ("[[methods]]\nname = 'M9'\nselection = 'best'\n", ["unknown selection 'best'"]),
    ("preset = 'huge'\n", ["preset", "unknown preset 'huge'"]),
    ("data = 3\n", ["data must be a table"]),
    ("[augment]\nspace = 'missing.yaml'\n", ["cannot read the space file"]),
    ("reps = [\n", ["not valid TOML"]),
])
def test_errors_name_the_field(tmp_path, text, words):
    f = tmp_path / "exp.toml"
    f.write_text(text)
    with pytest.raises(ValueError) as e:
        load_experiment(f)
    for w in words:
        assert w in str(e.value), str(e.value)


@pytest.mark.slow
def test_experiment_from_the_example_file_with_overrides(tmp_path):
    """The issue's file on an image folder, with command-line options on top: it runs
    through the report, with a torchvision model and a space file."""
    write_image_folder(tmp_path / "pets", classes=("cat", "dog", "eel"), per_class=(14, 4),
                       size=(32, 32), ext=".jpg")
    (tmp_path / "exp.toml").write_text(EXAMPLE.replace("/data/pets", "pets"))
    (tmp_path / "space.yaml").write_text(SPACE)
    storage = tmp_path / "lake"
    res = subprocess.run([str(BIN / "smartaug"), "experiment", "--config",
                          str(tmp_path / "exp.toml"), "--per-class-train", "12",
                          "--per-class-test", "4", "--epochs", "1", "--seeds", "1",
                          "--device", "cpu", "--storage", str(storage)],
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    report = Path(res.stdout.strip().splitlines()[-1])
    assert (report / "report.html").is_file() and (report / "report.json").is_file()
    lake = Lake(storage)
    kinds = lake.sql("select kind, count(*) n, count(params) p from augmentations group by kind "
                     "order by kind").to_pylist()
    n_train = lake.sql("select n_train from datasets").to_pylist()[0]["n_train"]
    assert sum(k["n"] for k in kinds) == 2 * n_train and {k["kind"] for k in kinds} <= \
        {"rotate", "grid"} and all(k["p"] == k["n"] for k in kinds)
    assert lake.sql("select distinct arch from models").to_pylist() == \
        [{"arch": "torchvision:resnet18"}]
    res = subprocess.run([str(BIN / "smartaug"), "experiment", "--config", "x.toml",
                          "--preset", "quick", "--storage", str(storage)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "not both" in res.stderr


def test_a_files_image_folder_may_name_environment_variables(tmp_path, monkeypatch):
    """A committed file names its data portably: relative to the file, or through a
    variable (``${NAME:-default}``), resolved to one absolute path when the file loads."""
    write_image_folder(tmp_path / "shared" / "pets")
    (tmp_path / "a" / "b").mkdir(parents=True)
    exp = tmp_path / "a" / "b" / "exp.toml"
    exp.write_text('preset = "quick"\n[data]\n'
                   'dataset = "imagefolder:${PETS:-../../shared/pets}"\n')
    monkeypatch.delenv("PETS", raising=False)
    want = f"imagefolder:{tmp_path / 'shared' / 'pets'}"
    assert load_experiment(exp).data.dataset == want  # the default, relative to the file
    monkeypatch.setenv("PETS", str(tmp_path / "shared" / "pets"))
    assert load_experiment(exp).data.dataset == want  # the variable, absolute
    exp.write_text('preset = "quick"\n[data]\ndataset = "imagefolder:$PETS_HOME/pets"\n')
    monkeypatch.setenv("PETS_HOME", str(tmp_path / "shared"))
    assert load_experiment(exp).data.dataset == want
    monkeypatch.delenv("PETS_HOME")
    with pytest.raises(ConfigError, match=r"names the environment variable PETS_HOME, which "
                       r"is not set.*export PETS_HOME="):
        load_experiment(exp)


def test_one_name_per_job_across_commands_and_files(tmp_path, capsys):
    """`seeds` in a file is --seeds on the command line (reps, its older name, still reads);
    an old option name still works for a release, with a note; --no-grayscale on ingest."""
    from smartaug.config import preset as get_preset
    from tests.conftest import smartaug

    f = tmp_path / "e.toml"
    f.write_text('preset = "quick"\nseeds = 2\n')
    assert load_experiment(f).reps == 2
    f.write_text('preset = "quick"\nreps = 2\n')
    assert load_experiment(f).reps == 2
    f.write_text('preset = "quick"\nreps = 2\nseeds = 2\n')
    with pytest.raises(ConfigError, match="give seeds .reps is its older name., not both"):
        load_experiment(f)
    text = preset_text("quick")
    assert "\nseeds = 3\n" in text and "\nreps" not in text
    f.write_text(text)
    assert load_experiment(f) == get_preset("quick")
    from smartaug.cli import _renamed

    assert _renamed(["export", "--selection-id", "s", "--to=d"]) == [
        "export", "--selection-id", "s", "--out=d"]
    assert _renamed(["views", "--output", "v.sql"]) == ["views", "--out", "v.sql"]
    assert _renamed(["sql", "--to", "x"]) == ["sql", "--to", "x"]  # only where it was a name
    code, out, err = smartaug(capsys, "ingest", "--help")
    assert code == 0 and "--no-grayscale" in out
