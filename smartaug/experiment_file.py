"""An experiment as a file (TOML, YAML or JSON): everything a preset describes. ``preset``
(optional) starts from a preset; every other key overrides it, section by section (``[data]``,
``[augment]``, ``[baseline]``, ``[retrain]``, ``[[methods]]``...). Paths are relative to the
file: ``data.dataset = "imagefolder:DIR"``, ``data.root`` and ``augment.space`` (a space file:
its kinds become the pool's); the dataset's folder may name environment variables
(``imagefolder:${CIFAR:-../data/cifar10}``). One typed schema (``smartaug.config``) validates the result; an
error names the field, the value and what is valid.

``dumps(cfg)`` writes a config as TOML (what ``smartaug config show`` prints for a preset,
from its one definition in ``smartaug.config``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import fields
from pathlib import Path

from pydantic import ValidationError

from smartaug import config as C
from smartaug.config import (
    ExperimentConfig,
    StudyConfig,
    config_from_dict,
    preset,
    study_from_dict,
    study_preset,
)
from smartaug.core.augment import load_space
from smartaug.errors import ConfigError
from smartaug.policy import PolicyFileError
from smartaug.policy import load as load_policy
from smartaug.textfile import parse, read_text, short

__all__ = ["ConfigError", "dumps", "is_study_file", "load_experiment", "load_file", "load_study",
           "preset_text"]

_SECTIONS = ("data", "augment", "baseline", "retrain")


def _read(path: Path) -> dict:
    data = parse(read_text(path, "experiment file", ConfigError), path, "experiment")
    return {} if data is None else data


def _merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: mappings merged key by key, anything else replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) \
            else v
    return out


def _table_of_keys(path: Path, what: str) -> dict:
    data = _read(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of keys ({what}), got "
                          f"{type(data).__name__}")
    data = dict(data)
    for section in _SECTIONS:
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"{path}: {section} must be a table ([{section}]), got "
                              f"{short(data[section])}")
    return data


_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand(path: Path, text: str) -> str:
    """``text`` with its environment variables filled in: ``$NAME``, ``${NAME}`` and
    ``${NAME:-default}`` (the default when NAME is unset or empty). ConfigError naming an
    unset variable that has no default."""
    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        got = os.environ.get(name)
        if got:
            return got
        if m.group(2) is not None:
            return m.group(2)
        raise ConfigError(f"{path}: {text!r} names the environment variable {name}, which is "
                          f"not set: set it to the directory it stands for "
                          f"(export {name}=/path/to/it)")
    return _VARIABLE.sub(value, text)


def _paths(path: Path, data: dict) -> None:
    """The file's paths (dataset folder, data root, space file) made absolute: relative to
    the file, environment variables filled in (``expand``), so a committed file names its
    data the same way on every machine."""
    here = path.parent.absolute()
    d = data.get("data", {})
    if isinstance(d.get("dataset"), str) and d["dataset"].startswith("imagefolder:"):
        folder = Path(os.path.normpath(here / expand(path, d["dataset"].split(":", 1)[1])))
        if not folder.is_dir():
            raise ConfigError(f"{path}: data.dataset = {d['dataset']!r}: no directory {folder} "
                              f"(a path relative to the file, holding train/CLASS/*.png)")
        d["dataset"] = f"imagefolder:{folder}"
    if isinstance(d.get("root"), str):
        d["root"] = str(here / d["root"])
        if not Path(d["root"]).is_dir():
            raise ConfigError(f"{path}: data.root = {short(d['root'])}: no such directory")
    arms = data.get("arms", [])
    for item in [*(arms if isinstance(arms, list) else []), data.get("retrain", {}),
                 data.get("baseline", {})]:
        policy = item.get("policy") if isinstance(item, dict) else None
        if isinstance(policy, str) and policy.endswith(".json"):  # a policy file
            item["policy"] = str(here / policy)
            if not Path(item["policy"]).is_file():
                raise ConfigError(f"{path}: policy = {policy!r}: no file {item['policy']} (a "
                                  f"path relative to the file, from `smartaug policy`)")
            try:
                load_policy(item["policy"])  # albumentations must load it, before any work
            except PolicyFileError as e:
                raise ConfigError(f"{path}: policy = {policy!r}: {e}") from None
    pools = data.get("pools", [])
    augments = [data.get("augment", {})] + [p.get("augment", {}) for p in
                                            (pools if isinstance(pools, list) else [])
                                            if isinstance(p, dict)]
    for aug in augments:
        if not isinstance(aug, dict) or "space" not in aug:
            continue
        space = aug.pop("space")
        if not isinstance(space, str):
            raise ConfigError(f"{path}: augment.space must be the path of a space file, got "
                              f"{space!r}")
        kinds, defined = load_space(here / space)
        aug.setdefault("kinds", list(kinds))
        if not isinstance(aug["kinds"], list):
            raise ConfigError(f"{path}: augment.kinds must be a list of kind names, got "
                              f"{aug['kinds']!r}")
        aug["space"] = [list(d_) for d_ in defined if d_[0] in aug["kinds"]]


def load_experiment(path: str | Path) -> ExperimentConfig:
    """The ExperimentConfig a file describes (see the module's docstring)."""
    path = Path(path)
    data = _table_of_keys(path, "preset, model, data, augment, ...")
    name = data.pop("preset", None)
    try:
        base = preset(name).to_dict() if name not in (None, "custom") else \
            ExperimentConfig().to_dict()  # "custom": a config's own name, as to_dict() writes
    except ConfigError as e:
        raise ConfigError(f"{path}: preset: {e}") from e
    base["preset"] = name or "custom"
    if "seeds" in data:  # the name --seeds and study files use; reps is the older one
        if "reps" in data:
            raise ConfigError(f"{path}: give seeds (reps is its older name), not both")
        data["reps"] = data.pop("seeds")
    _paths(path, data)
    merged = _merge(base, data)
    try:
        return config_from_dict(merged)
    except ValidationError as e:
        raise ConfigError(f"{path}: " + "; ".join(_describe(err) for err in e.errors())) from None


def load_study(path: str | Path) -> StudyConfig:
    """The StudyConfig a study file describes: ``preset`` (optional) starts from the study
    at that experiment preset's size (``study_preset``); ``[data]``, ``[baseline]`` and
    ``[retrain]`` merge into it key by key; ``[[pools]]`` (name + ``[pools.augment]``, whose
    ``space`` may name a space file), ``budgets``, ``scores``, ``positions``, ``coverage``,
    ``losses``, ``seeds`` ... replace its values; ``[primary]`` and ``[[secondary]]`` declare
    the hypotheses (``smartaug.config.Hypothesis``)."""
    path = Path(path)
    data = _table_of_keys(path, "preset, data, pools, budgets, scores, seeds, ...")
    name = data.pop("preset", None)
    try:
        base = study_preset(name).to_dict() if name not in (None, "custom") else \
            StudyConfig().to_dict()
    except ConfigError as e:
        raise ConfigError(f"{path}: preset: {e}") from e
    base["preset"] = name or "custom"
    if "pools" in data and not (isinstance(data["pools"], list)
                                and all(isinstance(p, dict) for p in data["pools"])):
        raise ConfigError(f"{path}: pools must be a list of tables ([[pools]] name = ... and "
                          f"[pools.augment]), got {data['pools']!r}")
    _paths(path, data)
    merged = _merge(base, data)
    try:
        return study_from_dict(merged)
    except ValidationError as e:
        raise ConfigError(f"{path}: " + "; ".join(_describe(err, C.StudyConfig)
                                                  for err in e.errors())) from None


def _describe(err: dict, root: type = C.ExperimentConfig) -> str:
    where = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged")))
    value = err.get("input")
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"unknown key {where!r}; valid: {', '.join(_valid_keys(err['loc'], root))}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where} = {short(value)}: {msg}" if where else msg


def _valid_keys(loc, root: type = C.ExperimentConfig) -> list[str]:
    """The keys of the table an unknown key was found in."""
    cls = root
    by_field = {"data": C.DataConfig, "augment": C.AugmentConfig, "baseline": C.TrainConfig,
                "retrain": C.TrainConfig, "methods": C.MethodSpec, "loss": C.LossSpec,
                "pools": C.PoolSpec, "primary": C.Hypothesis, "secondary": C.Hypothesis}
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


def is_study_file(path: str | Path) -> bool:
    """Whether a file describes a study: it names a key only a study has (``pools``,
    ``budgets``, ``seeds``, ...)."""
    data = _read(Path(path))
    only = {f.name for f in fields(StudyConfig)} - {f.name for f in fields(ExperimentConfig)}
    return isinstance(data, dict) and bool(only & set(data))


def load_file(path: str | Path) -> ExperimentConfig | StudyConfig:
    """The config an experiment file or a study file describes (``is_study_file``)."""
    return load_study(path) if is_study_file(path) else load_experiment(path)


def dumps(cfg: ExperimentConfig | StudyConfig) -> str:
    """``cfg`` as a TOML experiment or study file (None values left out: the defaults)."""
    d = cfg.to_dict()
    if d["preset"] not in C.PRESETS:  # a name, not a preset to start from
        del d["preset"]
    if isinstance(cfg, StudyConfig):
        pools = d.pop("pools")
        primary, secondary = d.pop("primary", None), d.pop("secondary", [])
        arms = d.pop("arms", [])
        lines = [f"# smartaug study file ({cfg.preset}): smartaug study --config FILE"]
        _table({k: v for k, v in d.items() if k not in _SECTIONS}, "", lines)
        for section in _SECTIONS:
            if section in d:
                _table(d[section], section, lines)
        if primary is not None:
            _table(primary, "primary", lines)
        for h in secondary:
            _table(h, "secondary", lines, array=True)
        for a in arms:
            _table(a, "arms", lines, array=True)
        for p in pools:
            _table(p, "pools", lines, array=True)
        return "\n".join(lines) + "\n"
    methods = d.pop("methods")
    d = {("seeds" if k == "reps" else k): v for k, v in d.items()}  # the CLI's name, --seeds
    lines = [f"# smartaug experiment file ({cfg.preset}): smartaug experiment --config FILE"]
    _table({k: v for k, v in d.items() if k not in _SECTIONS}, "", lines)
    for section in _SECTIONS:
        _table(d[section], section, lines)
    for m in methods:
        _table(m, "methods", lines, array=True)
    return "\n".join(lines) + "\n"


def preset_text(name: str) -> str:
    """A preset as an experiment file (``smartaug config show NAME``): written from the
    preset itself (``smartaug.config.preset``, the one definition), so it loads back to it."""
    return dumps(preset(name))
