"""On-disk framing of episode files: a log of CRC-checked chunks, readable while it grows.

An episode file (``*.hep``) is::

    FILE_MAGIC (8 bytes)
    chunk*          each: CHUNK_HEADER (16 bytes: magic, kind, payload length, crc32) + payload
    [TRAILER]       only in finalised files: offset of the META chunk + END_MAGIC (16 bytes)

Payloads are msgpack maps; numpy arrays inside them are plain maps
``{"__nd__": True, "dtype": str, "shape": list, "data": bytes}`` (no pickle, no extension types),
so a file written here can be read by any msgpack reader.

A writer only ever appends whole chunks (one ``write`` per flush). After a crash the file ends in
at most one incomplete chunk; ``scan_chunks`` stops at the first chunk whose length or CRC does not
check out and reports where the good prefix ends.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Any, BinaryIO, Iterator

import msgpack
import numpy as np

FILE_MAGIC = b"HILEPS01"
CHUNK_MAGIC = b"HCK1"
END_MAGIC = b"HILEND01"
_CHUNK = struct.Struct("<4sBxxxII")  # magic, kind, pad, payload length, crc32
_TRAILER = struct.Struct("<Q8s")  # offset of META chunk, END_MAGIC
CHUNK_HEADER_BYTES = _CHUNK.size
TRAILER_BYTES = _TRAILER.size
MAX_CHUNK_BYTES = 1 << 31

# chunk kinds
HEADER = 1  # episode header: id, index, defaults (task, robot, ...), cameras, codec
STEPS = 2  # a batch of steps, columnar
RELABEL = 3  # {"steps": [...], "segment": str}: overrides the segment of already written steps
FINAL_OBS = 4  # the observation after the last step (for bootstrapping at time limits)
META = 5  # EpisodeMeta as a dict: present only in finalised files
KIND_NAMES = {HEADER: "header", STEPS: "steps", RELABEL: "relabel", FINAL_OBS: "final_obs", META: "meta"}


class StoreError(RuntimeError):
    """A problem with an episode store; the message names the store/episode and what to do."""


class EpisodeCorruptError(StoreError):
    """An episode file that cannot be read. The rest of the store is unaffected."""


# ----------------------------------------------------------------------------- msgpack + numpy


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {"__nd__": True, "dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in an episode file")


def _object_hook(obj: dict) -> Any:
    if obj.get("__nd__") is True:
        dtype = np.dtype(obj["dtype"])
        if dtype.hasobject:
            raise ValueError("object arrays are not allowed in episode files")
        return np.frombuffer(obj["data"], dtype=dtype).reshape(obj["shape"])
    return obj


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, object_hook=_object_hook, raw=False, strict_map_key=False)


# ----------------------------------------------------------------------------- chunks


def encode_chunk(kind: int, payload_obj: Any) -> bytes:
    payload = pack(payload_obj)
    if len(payload) >= MAX_CHUNK_BYTES:
        raise StoreError(f"chunk of {len(payload)} bytes is too large; flush more often")
    return _CHUNK.pack(CHUNK_MAGIC, kind, len(payload), zlib.crc32(payload)) + payload


def encode_trailer(meta_offset: int) -> bytes:
    return _TRAILER.pack(meta_offset, END_MAGIC)


@dataclasses.dataclass
class ScanResult:
    chunks: list[tuple[int, int, bytes]]  # (offset, kind, payload bytes)
    good_bytes: int  # length of the valid prefix (file magic + whole chunks [+ trailer])
    finalised: bool  # a valid trailer follows the chunks
    problem: str  # "" or why scanning stopped before the end of the file


def scan_chunks(f: BinaryIO, size: int) -> ScanResult:
    """Read every valid chunk of an open episode file of ``size`` bytes, from the start."""
    f.seek(0)
    if f.read(len(FILE_MAGIC)) != FILE_MAGIC:
        return ScanResult([], 0, False, "not an episode file (bad magic)")
    pos = len(FILE_MAGIC)
    chunks: list[tuple[int, int, bytes]] = []
    while pos < size:
        if size - pos == TRAILER_BYTES:
            off, magic = _TRAILER.unpack(f.read(TRAILER_BYTES))
            if magic == END_MAGIC and any(o == off and k == META for o, k, _ in chunks):
                return ScanResult(chunks, size, True, "")
            f.seek(pos)
        head = f.read(CHUNK_HEADER_BYTES)
        if len(head) < CHUNK_HEADER_BYTES:
            return ScanResult(chunks, pos, False, f"incomplete chunk header at byte {pos}")
        magic, kind, length, crc = _CHUNK.unpack(head)
        if magic != CHUNK_MAGIC or kind not in KIND_NAMES:
            return ScanResult(chunks, pos, False, f"bad chunk header at byte {pos}")
        payload = f.read(length)
        if len(payload) < length:
            return ScanResult(chunks, pos, False, f"incomplete chunk at byte {pos} ({len(payload)}/{length} bytes)")
        if zlib.crc32(payload) != crc:
            return ScanResult(chunks, pos, False, f"checksum mismatch in {KIND_NAMES[kind]} chunk at byte {pos}")
        chunks.append((pos, kind, payload))
        pos += CHUNK_HEADER_BYTES + length
    return ScanResult(chunks, pos, False, "")


def read_trailer_meta(f: BinaryIO, size: int) -> dict[str, Any] | None:
    """Fast path: the META chunk of a finalised file via its trailer, or None if there is none."""
    if size < len(FILE_MAGIC) + TRAILER_BYTES + CHUNK_HEADER_BYTES:
        return None
    f.seek(size - TRAILER_BYTES)
    off, magic = _TRAILER.unpack(f.read(TRAILER_BYTES))
    if magic != END_MAGIC or off + CHUNK_HEADER_BYTES > size - TRAILER_BYTES:
        return None
    f.seek(off)
    cmagic, kind, length, crc = _CHUNK.unpack(f.read(CHUNK_HEADER_BYTES))
    if cmagic != CHUNK_MAGIC or kind != META or off + CHUNK_HEADER_BYTES + length != size - TRAILER_BYTES:
        return None
    payload = f.read(length)
    if zlib.crc32(payload) != crc:
        return None
    return unpack(payload)


def iter_payloads(scan: ScanResult, kind: int) -> Iterator[Any]:
    for _, k, payload in scan.chunks:
        if k == kind:
            yield unpack(payload)
