"""Minimal streaming safetensors reader/writer on NumPy memory maps.

Reading maps the file and returns zero-copy views, so loading a checkpoint tensor by tensor
(or shard by shard) keeps host memory near one tensor. Writing streams tensors one at a time.
bfloat16 is supported through ``ml_dtypes``.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from typing import Any

import ml_dtypes
import numpy as np

_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class SafetensorsError(ValueError):
    """A malformed or inconsistent safetensors file (the message names the file)."""


class SafetensorsFile:
    """Read-only view of one ``.safetensors`` file; ``get(name)`` returns a memmap view."""

    def __init__(self, path: str):
        self.path = path
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n <= 0 or 8 + n > size:
                    raise SafetensorsError(f"{path}: header length {n} exceeds file size {size}")
                header = json.loads(f.read(n))
        except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SafetensorsError(f"{path}: not a readable safetensors file ({e})") from e
        header.pop("__metadata__", None)
        self.header: dict[str, dict[str, Any]] = header
        self._base = 8 + n
        self._size = size

    def keys(self) -> list[str]:
        return list(self.header)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.header[name]["shape"])

    def get(self, name: str) -> np.ndarray:
        info = self.header[name]
        if info["dtype"] not in _DTYPES:
            raise SafetensorsError(
                f"{self.path}: tensor {name!r} has unsupported dtype {info['dtype']}"
            )
        dtype = np.dtype(_DTYPES[info["dtype"]])
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end - begin != int(np.prod(shape)) * dtype.itemsize or self._base + end > self._size:
            raise SafetensorsError(
                f"{self.path}: tensor {name!r} data offsets {begin}..{end} "
                f"do not match shape {shape} {info['dtype']} / file size"
            )
        if 0 in shape:
            return np.zeros(shape, dtype)
        # One mapping per tensor: its pages are released when the caller drops the view,
        # instead of the whole file staying resident until every tensor is loaded.
        mm = np.memmap(
            self.path, dtype=dtype, mode="r", offset=self._base + begin, shape=shape or (1,)
        )
        return mm.reshape(shape)


def save_file(
    tensors: Iterable[tuple[str, Any]], path: str, metadata: dict[str, str] | None = None
) -> None:
    """Writes ``(name, array)`` pairs to ``path`` atomically (via a ``.tmp`` file).

    Each array may instead be a ``(shape, dtype, produce)`` triple: ``produce()`` is called only
    when that tensor is written, so host memory holds one tensor at a time.
    """
    entries = []
    for name, item in tensors:
        if isinstance(item, tuple):
            shape, dtype, produce = item
        else:
            shape, dtype, produce = item.shape, item.dtype, (lambda a=item: a)
        entries.append((name, tuple(shape), np.dtype(dtype), produce))
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, shape, dt, _ in entries:
        if dt not in _NAMES:
            raise SafetensorsError(f"{path}: cannot store tensor {name!r} of dtype {dt}")
        nbytes = int(np.prod(shape)) * dt.itemsize
        header[name] = {
            "dtype": _NAMES[dt],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dt, produce in entries:
            arr = np.ascontiguousarray(produce(), dtype=dt)
            if arr.shape != shape:
                raise SafetensorsError(
                    f"{path}: tensor {name!r} produced shape {arr.shape}, expected {shape}"
                )
            f.write(arr.tobytes())
    os.replace(tmp, path)
