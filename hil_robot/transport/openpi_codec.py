"""openpi's wire encoding: msgpack where numpy values become maps (no pickle).

    array  -> {b"__ndarray__": True, b"data": <raw bytes, C order>, b"dtype": "<f4", b"shape": [H, D]}
    scalar -> {b"__npgeneric__": True, b"data": <python value>, b"dtype": "<f4"}

The marker keys are msgpack *bin* (bytes) keys, in that order, and the dtype is numpy's ``dtype.str``
— what openpi-client 0.1.2's ``msgpack_numpy`` writes, byte for byte (tests/unit/test_openpi_codec.py
pins it). Decoding checks dtype, shape and length before building an array, and refuses object,
void and complex dtypes, so a hostile frame cannot run code or allocate from a lying header.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hil_robot.transport.codec import CodecError, packb_with, unpackb_with

_ND, _NPG = b"__ndarray__", b"__npgeneric__"
_REFUSED_KINDS = ("V", "O", "c")


def _default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _REFUSED_KINDS:
        raise CodecError(f"cannot send numpy dtype {obj.dtype} over the openpi protocol (object/void/complex)")
    if isinstance(obj, np.ndarray):
        return {_ND: True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {_NPG: True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise CodecError(f"cannot send {type(obj).__name__} over the openpi protocol (numpy, str, numbers, lists, dicts)")


def _dtype(text: Any) -> np.dtype:
    if not isinstance(text, str):
        raise CodecError(f"numpy dtype must be a string like '<f4', got {text!r}")
    try:
        dt = np.dtype(text)
    except TypeError:
        raise CodecError(f"unknown numpy dtype {text!r}") from None
    if dt.kind in _REFUSED_KINDS or dt.hasobject:
        raise CodecError(f"refusing numpy dtype {text!r} (object/void/complex)")
    return dt


def _hook(obj: dict) -> Any:
    if _ND in obj:
        dt = _dtype(obj.get(b"dtype"))
        shape, data = obj.get(b"shape"), obj.get(b"data")
        if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise CodecError(f"ndarray shape must be a list of non-negative ints, got {shape!r}")
        if not isinstance(data, bytes):
            raise CodecError("ndarray data must be bytes")
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if n * dt.itemsize != len(data):
            raise CodecError(f"ndarray of shape {tuple(shape)} {dt.str} needs {n * dt.itemsize} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=dt).reshape(shape)
    if _NPG in obj:
        dt = _dtype(obj.get(b"dtype"))
        try:
            return dt.type(obj.get(b"data"))
        except (TypeError, ValueError, OverflowError) as e:
            raise CodecError(f"bad numpy scalar of dtype {dt.str}: {e}") from None
    return obj


def packb(obj: Any) -> bytes:
    """Encode one message (what an openpi client or server sends in a binary frame)."""
    return packb_with(obj, _default)


def unpackb(data: bytes, max_bytes: int = 256 * 1024 * 1024) -> Any:
    """Decode one binary frame; raises CodecError on anything malformed."""
    return unpackb_with(data, _hook, max_bytes=max_bytes, what="openpi frame")
