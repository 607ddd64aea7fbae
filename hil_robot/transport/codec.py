"""Wire format: msgpack with a numpy extension; large arrays travel as separate zero-copy frames.

A message is a ``dict`` with a ``"type"`` string. ``encode(msg)`` returns a list of frames:
frame 0 is the msgpack header; every numpy array of at least ``OUT_OF_BAND_BYTES`` becomes its own
frame (sent without copying by zmq) and the header keeps ``(dtype, shape, frame index)``. Smaller
arrays are inlined as ``(dtype, shape, bytes)``. ``decode(frames)`` inverts it and checks
everything a hostile or broken peer could get wrong: frame sizes, dtypes (plain numeric and bool
only: object, void, string dtypes are refused), shape/byte-count agreement, frame indices, extra
frames, and the message type. There is no pickle anywhere on this path.

Decoded out-of-band arrays are read-only views of the received frame (no copy).
"""

from __future__ import annotations

import enum
import threading
from typing import Any, Iterable, Sequence

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
OUT_OF_BAND_BYTES = 4096  # arrays this big or bigger get their own frame
DEFAULT_MAX_FRAME_BYTES = 256 * 1024 * 1024

_EXT_INLINE = 1  # payload: msgpack [dtype_str, shape, bytes]
_EXT_FRAME = 2  # payload: msgpack [dtype_str, shape, frame_index]
_ALLOWED_KINDS = frozenset("biuf")  # bool, signed, unsigned, float (complex/object/void/str refused)
_MAX_NDIM = 32


class CodecError(ValueError):
    """A frame or message that breaks the wire format; the message says what and how to fix it."""


_DTYPES: dict[str, np.dtype] = {}  # validated dtype strings (bounded cache)


def _check_dtype(dtype_str: Any) -> np.dtype:
    if type(dtype_str) is not str:
        raise CodecError(f"array dtype must be a string like '<f4', got {type(dtype_str).__name__}")
    dtype = _DTYPES.get(dtype_str)
    if dtype is not None:
        return dtype
    try:
        dtype = np.dtype(dtype_str)
    except (TypeError, ValueError):
        raise CodecError(f"unknown array dtype {dtype_str!r:.40}") from None
    if dtype.kind not in _ALLOWED_KINDS or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise CodecError(f"array dtype {dtype_str!r:.40} is not allowed; send bool, integer or float arrays only")
    if len(_DTYPES) < 64:
        _DTYPES[dtype_str] = dtype
    return dtype


_SEND_DSTR: dict[np.dtype, str] = {}  # dtypes already checked on the sending side -> wire dtype string
_CACHE_MAX = 1024  # bound on each cache below (a peer cannot grow them without limit)
_FRAME_EXT: dict[tuple[str, tuple[int, ...], int], msgpack.ExtType] = {}  # (dtype, shape, frame) -> packed ext
_INLINE_PREFIX: dict[tuple[str, tuple[int, ...]], bytes] = {}  # (dtype, shape) -> msgpack bytes before the data


def _send_dtype(arr: np.ndarray) -> tuple[np.ndarray, str]:
    """First sight of a dtype on the sending side: refuse what the wire does not carry, convert
    big-endian data to little-endian, remember plain dtypes for next time."""
    dtype = arr.dtype
    if dtype.kind not in _ALLOWED_KINDS or dtype.hasobject or dtype.fields is not None:
        raise CodecError(f"cannot send numpy arrays of dtype {dtype}; use bool, integer or float arrays")
    if dtype.byteorder == ">":
        arr = arr.astype(dtype.newbyteorder("<"))
        return arr, arr.dtype.str
    if len(_SEND_DSTR) < 64:
        _SEND_DSTR[dtype] = dtype.str
    return arr, dtype.str


class _Encoder:
    """Packs one message at a time; kept per thread so msgpack's packers (and their buffers) are
    reused — a fresh packer per array inside the ``default`` hook costs tens of microseconds. The
    extension headers of arrays (dtype, shape, frame index) repeat from message to message, so
    they are packed once and cached: the per-message work is the array data alone."""

    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.oob = OUT_OF_BAND_BYTES
        self.inner = msgpack.Packer(use_bin_type=True)
        self.outer = msgpack.Packer(default=self.default, use_bin_type=True, strict_types=False)

    def default(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            dstr = _SEND_DSTR.get(obj.dtype)
            if dstr is None:
                obj, dstr = _send_dtype(obj)
            shape = obj.shape
            if obj.nbytes >= self.oob:
                if not obj.flags.c_contiguous:
                    obj = np.ascontiguousarray(obj).reshape(shape)
                self.frames.append(memoryview(obj).cast("B") if obj.ndim else obj.tobytes())
                key = (dstr, shape, len(self.frames))
                ext = _FRAME_EXT.get(key)
                if ext is None:
                    ext = msgpack.ExtType(_EXT_FRAME, self.inner.pack([dstr, list(shape), key[2]]))
                    if len(_FRAME_EXT) < _CACHE_MAX:
                        _FRAME_EXT[key] = ext
                return ext
            prefix = _INLINE_PREFIX.get((dstr, shape))
            if prefix is None:  # msgpack of [dtype, shape, <bin header>]: everything before the data
                n = obj.nbytes
                packed = self.inner.pack([dstr, list(shape), bytes(n)])
                prefix = packed[: len(packed) - n]
                if len(_INLINE_PREFIX) < _CACHE_MAX:
                    _INLINE_PREFIX[(dstr, shape)] = prefix
            return msgpack.ExtType(_EXT_INLINE, prefix + obj.tobytes())  # tobytes: C order, any layout
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, enum.Enum):
            return obj.value
        if isinstance(obj, (tuple, set, frozenset)):
            return list(obj)
        raise CodecError(f"cannot send objects of type {type(obj).__name__}; use dicts, lists, str, numbers, numpy arrays")


_local = threading.local()


def encode(msg: dict[str, Any], *, out_of_band_bytes: int = OUT_OF_BAND_BYTES) -> list[Any]:
    """Message dict -> frames ``[header, array frames...]`` (array frames are zero-copy views)."""
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise CodecError("a message must be a dict with a string 'type'")
    enc = getattr(_local, "encoder", None)
    if enc is None:
        enc = _local.encoder = _Encoder()
    enc.frames, enc.oob = [], out_of_band_bytes
    try:
        header = enc.outer.pack(msg)
    except CodecError:
        raise
    except (TypeError, ValueError, OverflowError) as e:  # msgpack's own refusals (e.g. ints over 64 bits)
        raise CodecError(f"cannot encode message: {e}") from None
    finally:
        frames, enc.frames = enc.frames, []
    return [header, *frames]


def _ext_fields(data: bytes) -> tuple[np.dtype, tuple[int, ...], int, Any]:
    """A numpy extension payload -> (dtype, shape, byte count, frame index or inline bytes), checked."""
    try:
        fields = msgpack.unpackb(data)
    except Exception as e:  # msgpack raises several types for junk
        raise CodecError(f"bad numpy extension payload: {e}") from None
    if type(fields) is not list or len(fields) != 3:
        raise CodecError("numpy extension must be [dtype, shape, data]")
    dstr, shape, ref = fields
    dtype = _DTYPES.get(dstr) if type(dstr) is str else None
    if dtype is None:
        dtype = _check_dtype(dstr)
    if type(shape) is not list or len(shape) > _MAX_NDIM:
        raise CodecError(f"array shape must be a list of at most {_MAX_NDIM} non-negative ints, got {shape!r:.80}")
    need = dtype.itemsize
    for d in shape:
        if type(d) is not int or d < 0:
            raise CodecError(f"array shape must be a list of at most {_MAX_NDIM} non-negative ints, got {shape!r:.80}")
        need *= d
    return dtype, tuple(shape), need, ref


# frame-extension payloads already checked -> (dtype, shape, byte count, frame index); the payload
# bytes fully determine the result, so a repeat skips the parse (per-message checks still run)
_FRAME_REFS: dict[bytes, tuple[np.dtype, tuple[int, ...], int, Any]] = {}
# inline payloads: [dtype, shape, bin header] + data. A checked header is remembered under the
# payload's total length; a later payload of that length that starts with the very same header bytes
# can only be that header followed by exactly the data, so it skips the parse.
_INLINE_SPECS: dict[int, tuple[bytes, np.dtype, tuple[int, ...]]] = {}


def decode(
    frames: Sequence[Any],
    *,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    allowed_types: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Frames -> message dict. Raises CodecError for anything malformed (never another exception).

    frames: bytes, zmq.Frame (its ``buffer`` is used, no copy) or anything with the buffer protocol.
    """
    if not frames:
        raise CodecError("empty message: expected a msgpack header frame")
    bufs: list[Any] = []
    sizes: list[int] = []
    for f in frames:
        if type(f) is bytes:
            b, size = f, len(f)
        else:
            b = getattr(f, "buffer", None)
            if b is None:
                b = memoryview(f)
            size = b.nbytes
        if size > max_frame_bytes:
            raise CodecError(f"frame {len(bufs)} has {size} bytes, over the limit of {max_frame_bytes} "
                             "(transport.max_frame_bytes)")
        bufs.append(b)
        sizes.append(size)
    nbufs = len(bufs)
    used: set[int] = set()

    def ext_hook(code: int, data: bytes) -> Any:
        if code == _EXT_FRAME:
            spec = _FRAME_REFS.get(data)
            if spec is None:
                spec = _ext_fields(data)
                if type(spec[3]) is int:
                    if len(_FRAME_REFS) >= _CACHE_MAX:  # e.g. a peer sending junk: start over, stay bounded
                        _FRAME_REFS.clear()
                    _FRAME_REFS[data] = spec
            dtype, shape, need, ref = spec
            if type(ref) is not int or not 1 <= ref < nbufs or ref in used:
                raise CodecError(f"array refers to frame {ref!r:.20}, but the message has frames 1..{nbufs - 1}")
            used.add(ref)
            if need != sizes[ref]:
                raise CodecError(f"array of {dtype.str} {list(shape)} needs {need} bytes, frame has {sizes[ref]}")
            return np.frombuffer(bufs[ref], dtype=dtype).reshape(shape)  # zero-copy, read-only view
        if code == _EXT_INLINE:
            known = _INLINE_SPECS.get(len(data))
            if known is not None and data.startswith(known[0]):
                prefix, dtype, shape = known
                return np.frombuffer(data, dtype=dtype, offset=len(prefix)).reshape(shape).copy()  # writable
            dtype, shape, need, ref = _ext_fields(data)
            if type(ref) is not bytes:
                raise CodecError("inline array data must be bytes")
            if need != len(ref):
                raise CodecError(f"array of {dtype.str} {list(shape)} needs {need} bytes, frame has {len(ref)}")
            if len(_INLINE_SPECS) >= _CACHE_MAX:
                _INLINE_SPECS.clear()
            _INLINE_SPECS[len(data)] = (data[: len(data) - need], dtype, shape)
            return np.frombuffer(ref, dtype=dtype).reshape(shape).copy()  # writable
        raise CodecError(f"unknown msgpack extension type {code}")

    try:
        msg = msgpack.unpackb(bufs[0], raw=False, strict_map_key=True, ext_hook=ext_hook)
    except CodecError:
        raise
    except Exception as e:  # ExtraData, FormatError, StackError, ValueError, UnicodeDecodeError, ...
        raise CodecError(f"header frame is not valid msgpack ({type(e).__name__}: {e})"[:300]) from None
    if type(msg) is not dict:
        raise CodecError(f"message header must be a msgpack map, got {type(msg).__name__}")
    mtype = msg.get("type")
    if type(mtype) is not str:
        raise CodecError("message has no string 'type'")
    if allowed_types is not None and mtype not in allowed_types:
        raise CodecError(f"unknown message type {mtype!r:.60}; this endpoint accepts: {', '.join(sorted(allowed_types))}")
    if len(used) != nbufs - 1:
        raise CodecError(f"message has {nbufs - 1} array frames but the header uses {len(used)}")
    return msg


def packb_with(obj: Any, default: Any) -> bytes:
    """msgpack-encode one message of a foreign protocol (openpi, GR00T) with its own ``default``
    hook for numpy values; CodecError on anything it cannot send."""
    try:
        return msgpack.packb(obj, default=default)
    except (TypeError, ValueError, OverflowError) as e:
        raise CodecError(f"cannot encode message: {e}") from None


def unpackb_with(data: bytes, object_hook: Any, *, max_bytes: int, what: str) -> Any:
    """Decode one frame of a foreign protocol with its ``object_hook``; CodecError (naming ``what``)
    on an oversized or malformed frame."""
    if len(data) > max_bytes:
        raise CodecError(f"frame of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        return msgpack.unpackb(data, object_hook=object_hook, strict_map_key=False)
    except CodecError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise CodecError(f"malformed {what}: {type(e).__name__}: {e}") from None


def error_message(request_id: Any, text: str, kind: str = "error") -> dict[str, Any]:
    """The reply every endpoint sends for a request it cannot serve."""
    rid = request_id if isinstance(request_id, (int, str)) and not isinstance(request_id, bool) else None
    return {"type": "error", "id": rid, "kind": kind, "message": text}
