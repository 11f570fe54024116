"""The user's files (experiment, study and space files) parsed strictly, the same way in every
format: TOML, YAML (safe: no Python tags) or JSON. A key given twice is an error (TOML's own
rule, applied to YAML and JSON), so is a YAML alias (a config needs none, and aliases are how a
few lines expand to gigabytes), and so is nesting deeper than any config needs. Messages show
a value at most ``SHOWN`` characters long."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from smartaug.errors import ConfigError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "parse", "read_text", "short"]

MAX_DEPTH = 64  # tables within tables: a config uses 4
MAX_BYTES = 16 * 2**20  # the largest config, space or policy file read
SHOWN = 200


def short(value: Any) -> str:
    """``repr(value)``, cut to ``SHOWN`` characters."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + f"... ({len(text)} characters)"


def read_text(path: Path, what: str, error: type[Exception], limit: int = MAX_BYTES) -> str:
    """The text of the user's file ``path`` (UTF-8, at most ``limit`` bytes: a config is a
    few kB, and /dev/zero never ends), or ``error`` saying why not."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as e:
        raise error(f"cannot read the {what} {path}: {e.strerror or e}") from e
    if len(raw) > limit:
        raise error(f"the {what} {path} is larger than {limit // 2**20} MiB; such a file is a "
                    f"few kB (is it the right file?)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"the {what} {path} is not UTF-8 text (byte {e.start}: "
                    f"{raw[e.start:e.start + 1]!r}); save it as UTF-8") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} is given twice")
        out[key] = value
    return out


def _yaml_loader():
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses aliases and keys given twice."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"found the alias *{event.anchor}: aliases are not accepted in "
                    f"a smartaug file (write the value out)", event.start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def _depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """The nesting depth of parsed data (iterative: any depth is measured safely)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def parse(text: str, path: Path, what: str, kind: str | None = None) -> Any:
    """The data in ``text`` (the contents of ``path``, a ``what`` file): ``kind`` (TOML, JSON
    or YAML), by default the one its suffix names."""
    kind = kind or {".toml": "TOML", ".json": "JSON", ".yaml": "YAML", ".yml": "YAML"}.get(
        path.suffix.lower())
    if kind is None:
        raise ConfigError(f"{path}: a {what} file ends in .toml, .yaml, .yml or .json")
    limit = sys.getrecursionlimit()
    try:
        if kind == "TOML":
            data = tomllib.loads(text)
        elif kind == "JSON":
            data = json.loads(text, object_pairs_hook=_no_duplicates)
        else:
            import yaml

            data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader
    except RecursionError:
        raise ConfigError(f"{path}: nested deeper than a {what} file can be (at most "
                          f"{MAX_DEPTH} levels)") from None
    except Exception as e:  # noqa: BLE001 - each parser's own errors, one message
        message = str(e)
        if len(message) > 4 * SHOWN:
            message = message[: 4 * SHOWN] + " ..."
        raise ConfigError(f"{path} is not valid {kind}: {message}") from None
    finally:
        sys.setrecursionlimit(limit)
    if _depth(data) > MAX_DEPTH:
        raise ConfigError(f"{path}: nested deeper than a {what} file can be (at most "
                          f"{MAX_DEPTH} levels)")
    return data
