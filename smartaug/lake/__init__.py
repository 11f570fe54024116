"""The lake: ``schemas`` (the tables), ``store`` (where they live, reads), ``writer`` (the one
way rows enter), ``files`` (the one way whole files do), ``codec`` (images), ``provenance``."""

from smartaug.files import atomic_path
from smartaug.lake.codec import decode_images, encode_images, image_columns
from smartaug.lake.provenance import content_id, git_sha, provenance
from smartaug.lake.schemas import PARTITION_KEYS, SCHEMAS, TABLES, views_sql
from smartaug.lake.store import Lake, LakeError, check_name, query_arrow, resolve_root

__all__ = ["Lake", "LakeError", "PARTITION_KEYS", "SCHEMAS", "TABLES", "atomic_path",
           "check_name", "content_id", "decode_images", "encode_images", "git_sha",
           "image_columns", "provenance", "query_arrow", "resolve_root", "views_sql"]
