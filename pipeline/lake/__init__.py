"""The lake: Parquet tables under one storage root (a directory or an fsspec URL).

``schemas`` defines the tables, ``store.Lake`` reads and locates them, ``writer`` is the one
way rows enter them, ``files`` the one way whole files do, ``codec`` stores images and
``provenance`` makes ids and stamps rows.
"""

from pipeline.lake.codec import decode_images, encode_images, image_columns
from pipeline.lake.files import atomic_path
from pipeline.lake.provenance import content_id, git_sha, provenance
from pipeline.lake.schemas import PARTITION_KEYS, SCHEMAS, TABLES, views_sql
from pipeline.lake.store import Lake, LakeError, engine, query_arrow, resolve_root

__all__ = ["Lake", "LakeError", "PARTITION_KEYS", "SCHEMAS", "TABLES", "atomic_path",
           "content_id", "decode_images", "encode_images", "engine", "git_sha",
           "image_columns", "provenance", "query_arrow", "resolve_root", "views_sql"]
