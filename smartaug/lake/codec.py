"""Images in the lake: raw uint8 HWC bytes, one binary value per image, with its shape in the
``height``, ``width`` and ``channels`` columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from smartaug.lake.store import LakeError

__all__ = ["decode_images", "encode_images", "image_columns"]


def encode_images(images) -> pa.Array:
    """uint8 [N, H, W, C] -> binary array of raw HWC bytes, one value per image."""
    images = np.ascontiguousarray(images)
    size = int(np.prod(images.shape[1:]))
    flat = images.reshape(len(images), size)
    offsets = pa.py_buffer((np.arange(len(flat) + 1, dtype=np.int32) * size).tobytes())
    return pa.Array.from_buffers(pa.binary(), len(flat), [None, offsets, pa.py_buffer(flat)])


def image_columns(images) -> dict:
    """The ``image``, ``height``, ``width``, ``channels`` columns of uint8 [N, H, W, C]."""
    n, h, w, c = images.shape
    return {"image": encode_images(images), "height": np.full(n, h, np.int32),
            "width": np.full(n, w, np.int32), "channels": np.full(n, c, np.int32)}


def decode_images(batch: pa.RecordBatch | pa.Table, id_column: str):
    """The ``image`` column of rows with ``height``/``width``/``channels`` -> uint8 [N, H, W, C].

    All rows must share one shape; a value of the wrong length (a corrupt image) raises
    ``LakeError`` naming the row's ``id_column`` value.
    """
    n = batch.num_rows
    if n == 0:
        return np.empty((0, 0, 0, 0), np.uint8)
    col = batch.column("image")
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    hwc = [np.asarray(batch.column(k)) for k in ("height", "width", "channels")]
    h, w, c = (int(a[0]) for a in hwc)
    if any((a != a[0]).any() for a in hwc):
        i = int(np.flatnonzero((hwc[0] != h) | (hwc[1] != w) | (hwc[2] != c))[0])
        raise LakeError(f"image {batch.column(id_column)[i]} is {hwc[0][i]}x{hwc[1][i]}x"
                        f"{hwc[2][i]}, the others {h}x{w}x{c}")
    size = h * w * c
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + n + 1]
    lengths = np.diff(offsets)
    if col.null_count or (lengths != size).any():
        bad = np.flatnonzero(lengths != size) if not col.null_count else \
            np.flatnonzero(np.asarray(col.is_null()))
        i = int(bad[0])
        raise LakeError(f"corrupt image in row {batch.column(id_column)[i]}: "
                        f"{lengths[i]} bytes, expected {size} ({h}x{w}x{c} uint8)")
    data = np.frombuffer(col.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[0] + n * size]
    return data.reshape(n, h, w, c)
