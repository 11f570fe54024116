"""An experiment as a file (TOML, YAML or JSON): everything a preset describes. ``preset``
(optional) starts from a preset; every other key overrides it, section by section (``[data]``,
``[augment]``, ``[baseline]``, ``[retrain]``, ``[[methods]]``...). Paths are relative to the
file: ``data.dataset = "imagefolder:DIR"``, ``data.root`` and ``augment.space`` (a space file:
its kinds become the pool's). One typed schema (``pipeline.config``) validates the result; an
error names the field, the value and what is valid.

``dumps(cfg)`` writes a config as TOML (what ``smartaug config show`` prints); the presets are
shipped as such files in ``pipeline/presets/``.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import fields
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from pipeline import config as C
from pipeline.config import ExperimentConfig, config_from_dict, preset
from pipeline.core.augment import load_space

__all__ = ["ConfigError", "dumps", "load_experiment", "preset_text"]

_SECTIONS = ("data", "augment", "baseline", "retrain")


class ConfigError(ValueError):
    """An experiment file cannot be used; the message names the file, the field and why."""


def _read(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the experiment file {path}: {e.strerror or e}") from e
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix == ".json":
            return json.loads(text)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
            return {} if data is None else data
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise ConfigError(f"{path} is not valid {path.suffix[1:].upper()}: {e}") from e
    except Exception as e:  # noqa: BLE001 - yaml's errors
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    raise ConfigError(f"{path}: an experiment file ends in .toml, .yaml, .yml or .json")


def _merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: mappings merged key by key, anything else replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) \
            else v
    return out


def load_experiment(path: str | Path) -> ExperimentConfig:
    """The ExperimentConfig a file describes (see the module's docstring)."""
    path = Path(path)
    data = _read(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of keys (preset, model, data, augment, "
                          f"...), got {type(data).__name__}")
    data = dict(data)
    here = path.parent.absolute()
    name = data.pop("preset", None)
    try:
        base = preset(name).to_dict() if name is not None else ExperimentConfig().to_dict()
    except ValueError as e:
        raise ConfigError(f"{path}: preset: {e}") from e
    base["preset"] = name or "custom"
    for section in _SECTIONS:
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"{path}: {section} must be a table ([{section}]), got "
                              f"{data[section]!r}")
    d = data.get("data", {})
    if isinstance(d.get("dataset"), str) and d["dataset"].startswith("imagefolder:"):
        d["dataset"] = "imagefolder:" + str(here / d["dataset"].split(":", 1)[1])
    if isinstance(d.get("root"), str):
        d["root"] = str(here / d["root"])
    aug = data.get("augment", {})
    if "space" in aug:
        space = aug.pop("space")
        if not isinstance(space, str):
            raise ConfigError(f"{path}: augment.space must be the path of a space file, got "
                              f"{space!r}")
        kinds, defined = load_space(here / space)
        aug.setdefault("kinds", list(kinds))
        aug["space"] = [list(d_) for d_ in defined if d_[0] in aug["kinds"]]
    merged = _merge(base, data)
    try:
        return config_from_dict(merged)
    except ValidationError as e:
        raise ConfigError(f"{path}: " + "; ".join(_describe(err) for err in e.errors())) from None


def _describe(err: dict) -> str:
    where = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged")))
    value = err.get("input")
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"unknown key {where!r}; valid: {', '.join(_valid_keys(err['loc']))}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where} = {value!r}: {msg}" if where else msg


def _valid_keys(loc) -> list[str]:
    """The keys of the table an unknown key was found in."""
    cls = C.ExperimentConfig
    by_field = {"data": C.DataConfig, "augment": C.AugmentConfig, "baseline": C.TrainConfig,
                "retrain": C.TrainConfig, "methods": C.MethodSpec, "loss": C.LossSpec}
    for part in loc[:-1]:
        cls = by_field.get(str(part), cls)
    return [f.name for f in fields(cls)]


# ------------------------------------------------------------------ writing


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def _table(d: dict, name: str, lines: list[str], array: bool = False) -> None:
    scalars = {k: v for k, v in d.items() if v is not None and not isinstance(v, dict)}
    tables = {k: v for k, v in d.items() if isinstance(v, dict)}
    if name:
        lines += ["", f"[[{name}]]" if array else f"[{name}]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
    for k, v in tables.items():
        _table(v, f"{name}.{k}" if name else k, lines)


def dumps(cfg: ExperimentConfig) -> str:
    """``cfg`` as a TOML experiment file (None values left out: they are the defaults)."""
    d = cfg.to_dict()
    if d["preset"] not in ("quick", "paper"):  # a name, not a preset to start from
        del d["preset"]
    methods = d.pop("methods")
    lines = [f"# smartaug experiment file ({cfg.preset}): smartaug experiment --config FILE"]
    _table({k: v for k, v in d.items() if k not in _SECTIONS}, "", lines)
    for section in _SECTIONS:
        _table(d[section], section, lines)
    for m in methods:
        _table(m, "methods", lines, array=True)
    return "\n".join(lines) + "\n"


def preset_text(name: str) -> str:
    """The shipped file of a preset (``pipeline/presets/NAME.toml``)."""
    f = resources.files("pipeline").joinpath("presets", f"{name}.toml")
    if not f.is_file():
        raise ConfigError(f"unknown preset {name!r}; valid: quick, paper")
    return f.read_text()
