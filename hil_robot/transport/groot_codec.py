"""GR00T's wire encoding (Isaac-GR00T ``MsgSerializer``): msgpack where a numpy array becomes

    {"__ndarray_class__": True, "as_npy": <the bytes np.save writes, allow_pickle=False>}

and a modality config ``{"__ModalityConfig_class__": True, "as_json": <JSON text (N1.5) or map (N1.6)>}``.
Decoding uses ``np.load(..., allow_pickle=False)`` (object arrays are refused), turns modality configs
into plain dicts, and wraps every failure in ``CodecError``. numpy scalars are sent as plain numbers
(GR00T's own encoder cannot send them at all).
"""

from __future__ import annotations

import io
import json
from typing import Any

import msgpack
import numpy as np

from hil_robot.transport.codec import CodecError

ND_KEY, MODALITY_KEY = "__ndarray_class__", "__ModalityConfig_class__"


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise CodecError(f"cannot send an object array (dtype {obj.dtype}) over the GR00T protocol")
        buf = io.BytesIO()
        np.save(buf, obj, allow_pickle=False)
        return {ND_KEY: True, "as_npy": buf.getvalue()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise CodecError(f"cannot send {type(obj).__name__} over the GR00T protocol")


def _hook(obj: dict) -> Any:
    if ND_KEY in obj:
        data = obj.get("as_npy")
        if not isinstance(data, bytes):
            raise CodecError("GR00T ndarray without 'as_npy' bytes")
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise CodecError(f"bad .npy payload in a GR00T ndarray: {e}") from None
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
    try:
        return msgpack.packb(obj, default=_default)
    except (TypeError, ValueError, OverflowError) as e:
        raise CodecError(f"cannot encode message: {e}") from None


def unpackb(data: bytes, max_bytes: int = 256 * 1024 * 1024) -> Any:
    if len(data) > max_bytes:
        raise CodecError(f"frame of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        return msgpack.unpackb(data, object_hook=_hook, strict_map_key=False)
    except CodecError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise CodecError(f"malformed GR00T message: {type(e).__name__}: {e}") from None
