"""Per-frame image codecs for the episode store (each frame is its own blob, so replay and
readers can decode any single step without touching its neighbours).

* ``lz4`` (default): lossless raw uint8 + LZ4 (pyarrow's codec). On the MuJoCo scenes' 128x128
  frames ~7.4 kB per frame (~16.6 kB per step with two cameras, well under the 50 kB goal) at
  about half zstd's CPU per step: the recorder shares the robot computer with the controller and
  renderer, so CPU per step is what counts. Bit-exact: the learner trains on the pixels the policy saw.
* ``zstd``: lossless, zstandard level 1: ~4.3 kB per frame (as small as JPEG), ~1.7x the
  writer CPU of lz4. Use it when disk matters more than recorder CPU.
* ``jpeg``: 4:4:4 chroma, quality 95 -> ~4 kB per frame, lossy. Use it for real cameras: sensor
  noise defeats lossless coders (~33 kB per noisy 128x128 frame with zstd).
* ``png``: lossless, ~5x slower to encode than zstd and not smaller.
* ``raw``: no compression (debugging, or when disk is free and CPU is not).

See docs/data.md for the measurements behind the default.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import pyarrow as pa

CODECS = ("lz4", "zstd", "jpeg", "png", "raw")
DEFAULT_CODEC = "lz4"
_ZSTD = pa.Codec("zstd", compression_level=1)
_LZ4 = pa.Codec("lz4")


def encode_frame(img: np.ndarray, codec: str, quality: int = 95) -> bytes:
    """img: uint8 [H, W, 3] RGB -> bytes."""
    if codec == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], params)
    elif codec == "png":
        ok, buf = cv2.imencode(".png", img[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif codec in ("zstd", "lz4"):
        return (_ZSTD if codec == "zstd" else _LZ4).compress(np.ascontiguousarray(img).tobytes(), asbytes=True)
    elif codec == "raw":
        return np.ascontiguousarray(img).tobytes()
    else:
        raise ValueError(f"unknown image codec {codec!r}; choose one of {', '.join(CODECS)}")
    if not ok:
        raise ValueError(f"could not encode a {img.shape} {img.dtype} image as {codec}")
    return buf.tobytes()


def decode_frame(blob: bytes, codec: str, shape: tuple[int, int, int], out: np.ndarray | None = None) -> np.ndarray:
    """bytes -> uint8 [H, W, 3] RGB (written into ``out`` when given)."""
    if codec in ("jpeg", "png"):
        img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
        if img is None or img.shape != tuple(shape):
            raise ValueError(f"{codec} frame does not decode to {tuple(shape)}")
        img = img[:, :, ::-1]
    elif codec in ("zstd", "lz4"):
        n = int(np.prod(shape))
        img = np.frombuffer((_ZSTD if codec == "zstd" else _LZ4).decompress(blob, n, asbytes=True), np.uint8).reshape(shape)
    elif codec == "raw":
        img = np.frombuffer(blob, np.uint8).reshape(shape)
    else:
        raise ValueError(f"unknown image codec {codec!r}; choose one of {', '.join(CODECS)}")
    if out is None:
        return np.ascontiguousarray(img)
    out[...] = img
    return out


def decode_frames(blobs: list[bytes], codec: str, shape: tuple[int, int, int]) -> np.ndarray:
    """list of N blobs -> uint8 [N, H, W, 3]."""
    out = np.empty((len(blobs), *shape), np.uint8)
    for i, blob in enumerate(blobs):
        decode_frame(blob, codec, shape, out[i])
    return out


def encoder(codec: str, quality: int = 95) -> Callable[[np.ndarray], bytes]:
    if codec not in CODECS:
        raise ValueError(f"unknown image codec {codec!r}; choose one of {', '.join(CODECS)}")
    return lambda img: encode_frame(img, codec, quality)
