"""GR00T's wire encoding (Isaac-GR00T ``MsgSerializer``): msgpack where a numpy array becomes

    {"__ndarray_class__": True, "as_npy": <the bytes np.save writes, allow_pickle=False>}

and a modality config ``{"__ModalityConfig_class__": True, "as_json": <JSON text (N1.5) or map (N1.6)>}``.
Decoding uses ``np.load(..., allow_pickle=False)`` (object arrays are refused), turns modality configs
into plain dicts, and wraps every failure in ``CodecError``. The .npy bytes are built and parsed
directly for plain arrays (byte-identical to np.save; the header parse is a strict pattern, anything
else goes to np.load), which keeps the encoding off the round trip's critical path. numpy scalars are sent as plain numbers
(GR00T's own encoder cannot send them at all).
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import numpy as np

from hil_robot.transport.codec import CodecError, packb_with, unpackb_with

ND_KEY, MODALITY_KEY = "__ndarray_class__", "__ModalityConfig_class__"


_NPY_MAGIC = b"\x93NUMPY\x01\x00"
_NPY_HEADER = re.compile(r"^\{'descr': '([<>|=]?[a-zA-Z]\d*)', 'fortran_order': (True|False), "
                         r"'shape': \(((?:\d+, ?)*\d*)\), \}[ ]*\n$")


def npy_bytes(arr: np.ndarray) -> bytes:
    """What ``np.save(f, arr, allow_pickle=False)`` writes, built directly (format 1.0: magic, a
    header padded to 64 bytes, the raw data); other cases go through np.save itself."""
    fortran = arr.flags.f_contiguous and not arr.flags.c_contiguous
    descr = np.lib.format.dtype_to_descr(arr.dtype)
    if isinstance(descr, str):
        header = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {tuple(arr.shape)!r}, }}"
        pad = 64 - (len(_NPY_MAGIC) + 2 + len(header) + 1) % 64
        header = header + " " * (pad % 64) + "\n"
        if len(header) < 65536:
            return b"".join((_NPY_MAGIC, len(header).to_bytes(2, "little"), header.encode("latin1"),
                             arr.tobytes(order="F" if fortran else "C")))
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def npy_array(data: bytes) -> np.ndarray:
    """``np.load(..., allow_pickle=False)`` of .npy bytes, zero-copy for plain format-1.0 arrays."""
    if data[:8] == _NPY_MAGIC and len(data) >= 10:
        hlen = int.from_bytes(data[8:10], "little")
        m = _NPY_HEADER.match(data[10:10 + hlen].decode("latin1"))
        if m:
            dt = np.dtype(m[1])
            if dt.hasobject:
                raise CodecError(f"refusing a .npy object array (dtype {m[1]}): no pickle on a socket")
            shape = tuple(int(n) for n in m[3].replace(" ", "").split(",") if n)
            count = int(np.prod(shape, dtype=np.int64))
            if len(data) - 10 - hlen != count * dt.itemsize:
                raise CodecError(f".npy payload of shape {shape} {dt.str} has {len(data) - 10 - hlen} data bytes, "
                                 f"expected {count * dt.itemsize}")
            flat = np.frombuffer(data, dtype=dt, count=count, offset=10 + hlen)
            return flat.reshape(shape, order="F" if m[2] == "True" else "C")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CodecError(f"bad .npy payload in a GR00T ndarray: {e}") from None


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise CodecError(f"cannot send an object array (dtype {obj.dtype}) over the GR00T protocol")
        return {ND_KEY: True, "as_npy": npy_bytes(obj)}
    if isinstance(obj, np.generic):
        return obj.item()
    raise CodecError(f"cannot send {type(obj).__name__} over the GR00T protocol")


def _hook(obj: dict) -> Any:
    if ND_KEY in obj:
        data = obj.get("as_npy")
        if not isinstance(data, bytes):
            raise CodecError("GR00T ndarray without 'as_npy' bytes")
        return npy_array(data)
    if MODALITY_KEY in obj:
        cfg = obj.get("as_json")
        if isinstance(cfg, str):
            try:
                cfg = json.loads(cfg)
            except ValueError as e:
                raise CodecError(f"bad modality config JSON: {e}") from None
        if not isinstance(cfg, dict):
            raise CodecError(f"modality config must be a map, got {type(cfg).__name__}")
        return cfg
    return obj


def packb(obj: Any) -> bytes:
    return packb_with(obj, _default)


def unpackb(data: bytes, max_bytes: int = 256 * 1024 * 1024) -> Any:
    return unpackb_with(data, _hook, max_bytes=max_bytes, what="GR00T message")
