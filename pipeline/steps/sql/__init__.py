"""The pipeline's SQL, one query per file (DuckDB; values bound as ``$name`` parameters).
Selection queries read a run's Parquet files (``$files``); the others the lake's views."""

from __future__ import annotations

from importlib import resources

__all__ = ["query", "sql_text"]


def sql_text(name: str) -> str:
    """The text of ``pipeline/steps/sql/<name>``."""
    return resources.files(__name__).joinpath(name).read_text()


def query(lake, name: str, **params):
    """Run ``pipeline/steps/sql/<name>.sql`` over ``lake``'s views; a pyarrow Table."""
    return lake.sql(sql_text(f"{name}.sql"), params or None)
