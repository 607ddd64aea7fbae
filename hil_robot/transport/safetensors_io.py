"""Safetensors bytes without extra copies: ``pack`` writes tensors once into one buffer, ``unpack``
returns numpy views into a received buffer after checking the header strictly.

Layout (the public safetensors format): ``u64 little-endian header length N``, ``N`` bytes of JSON
``{name: {"dtype": "F32", "shape": [..], "data_offsets": [start, end]}, "__metadata__": {..}}``
(padded with spaces to 8 bytes), then the tensor bytes. Output of ``pack`` loads with
``safetensors.numpy.load`` and vice versa (tested). Tensors are laid out largest itemsize first so
every view is aligned.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

_TO_ST = {"f8": "F64", "f4": "F32", "f2": "F16", "i8": "I64", "i4": "I32", "i2": "I16", "i1": "I8",
          "u8": "U64", "u4": "U32", "u2": "U16", "u1": "U8", "b1": "BOOL"}
_FROM_ST = {v: np.dtype(k) for k, v in _TO_ST.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    pass


def _st_dtype(dtype: np.dtype) -> str:
    key = f"{dtype.kind}{dtype.itemsize}"
    if key not in _TO_ST:
        raise SafetensorsError(f"dtype {dtype} cannot be stored in safetensors from numpy")
    return _TO_ST[key]


def pack(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> np.ndarray:
    """{name: array} -> uint8 buffer holding a safetensors file (one copy of the data)."""
    arrays = {str(k): np.asarray(v) for k, v in tensors.items()}
    order = sorted(arrays, key=lambda k: (-arrays[k].dtype.itemsize, k))
    header: dict[str, Any] = {}
    offset = 0
    for name in order:
        a = arrays[name]
        header[name] = {"dtype": _st_dtype(a.dtype), "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)
    buf = np.empty(8 + len(hjson) + offset, dtype=np.uint8)
    buf[:8] = np.frombuffer(struct.pack("<Q", len(hjson)), np.uint8)
    buf[8:8 + len(hjson)] = np.frombuffer(hjson, np.uint8)
    base = 8 + len(hjson)
    for name in order:
        a = arrays[name]
        start, end = header[name]["data_offsets"]
        if a.nbytes:
            dst = buf[base + start:base + end].view(a.dtype.newbyteorder("<")).reshape(a.shape)
            dst[...] = a
    return buf


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise SafetensorsError(f"duplicate tensor name {k!r} in header")
        out[k] = v
    return out


def unpack(buf: Any) -> dict[str, np.ndarray]:
    """Buffer (bytes / uint8 array) -> {name: array view}. Raises SafetensorsError on anything malformed."""
    data = np.frombuffer(buf, dtype=np.uint8) if not isinstance(buf, np.ndarray) else buf.reshape(-1).view(np.uint8)
    if data.size < 8:
        raise SafetensorsError("payload shorter than the 8-byte safetensors header length")
    (n,) = struct.unpack("<Q", data[:8].tobytes())
    if n > MAX_HEADER_BYTES or 8 + n > data.size:
        raise SafetensorsError(f"header length {n} does not fit a payload of {data.size} bytes")
    try:
        header = json.loads(data[8:8 + n].tobytes(), object_pairs_hook=_no_duplicates)
    except SafetensorsError:
        raise
    except Exception as e:
        raise SafetensorsError(f"header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError("header must be a JSON object")
    header.pop("__metadata__", None)
    body = data[8 + n:]
    spans, out = [], {}
    for name, info in header.items():
        try:
            dtype = _FROM_ST[info["dtype"]]
            shape = tuple(info["shape"])
            start, end = info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"tensor {name!r}: header entry needs a known dtype, shape and data_offsets") from None
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise SafetensorsError(f"tensor {name!r}: bad shape {info.get('shape')!r}")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)) or not 0 <= start <= end <= body.size:
            raise SafetensorsError(f"tensor {name!r}: data_offsets {info.get('data_offsets')!r} outside the payload")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dtype.itemsize != end - start:
            raise SafetensorsError(f"tensor {name!r}: shape {list(shape)} of {info['dtype']} needs "
                                   f"{count * dtype.itemsize} bytes, offsets give {end - start}")
        spans.append((start, end))
        view = body[start:end]
        arr = view.view(dtype.newbyteorder("<")) if view.ctypes.data % dtype.itemsize == 0 \
            else np.frombuffer(view.tobytes(), dtype=dtype.newbyteorder("<"))
        out[name] = arr.reshape(shape)
    spans.sort()
    pos = 0
    for start, end in spans:
        if start != pos:
            raise SafetensorsError("tensor data regions overlap or leave gaps")
        pos = end
    if pos != body.size:
        raise SafetensorsError(f"payload has {body.size - pos} bytes after the last tensor")
    return out
