"""The pipeline's SQL, one query per file (DuckDB; values bound as ``$name`` parameters).
Selection queries read a run's Parquet files (``$files``); the others the lake's views.

Selection queries may use the table macros of ``macros.sql`` (created on their connection
first). A query that reads a score takes its column by name (``columns(lambda c: c = score)``),
so no file lists the score columns: ``smartaug.config.SCORE_COLUMNS`` is the one list, and the
callers check ``$score`` against it. Ids that depend on a query hash ``normalized(text)``:
its comments and layout can change without changing an id."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

__all__ = ["normalized", "query", "sql_hash", "sql_text"]

# a quoted string or identifier (kept whole), or a run of comments and whitespace (one space)
_TOKENS = re.compile(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")|((?:\s|--[^\n]*)+)")


def sql_text(name: str) -> str:
    """The text of ``smartaug/steps/sql/<name>``."""
    return resources.files(__name__).joinpath(name).read_text()


def normalized(text: str) -> str:
    """``text`` without its comments, its whitespace collapsed to single spaces (quoted
    strings kept as they are): what a query means, not how it is laid out."""
    return _TOKENS.sub(lambda m: m.group(1) or " ", text).strip()


def sql_hash(*names: str) -> str:
    """sha256 of the normalised texts of ``smartaug/steps/sql/<name>`` for each name."""
    return hashlib.sha256("\n".join(normalized(sql_text(n)) for n in names).encode()).hexdigest()


def query(lake, name: str, **params):
    """Run ``smartaug/steps/sql/<name>.sql`` over ``lake``'s views; a pyarrow Table."""
    return lake.sql(sql_text(f"{name}.sql"), params or None)
