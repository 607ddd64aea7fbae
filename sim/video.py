"""Episode videos (mp4 via OpenCV) and PNG contact sheets, for people who would rather look than read."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np


def _check(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(frames) == 0:
        raise ValueError("no frames to write")
    out = [np.asarray(f) for f in frames]
    shape = out[0].shape
    for i, f in enumerate(out):
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3 or f.shape != shape:
            raise ValueError(f"frame {i} must be uint8 {shape} RGB like frame 0, got {f.dtype} {f.shape}")
    return out


def write_mp4(frames: Sequence[np.ndarray], path: str | Path, fps: float = 10.0) -> Path:
    """Write RGB uint8 [H, W, 3] frames to an mp4 (codec mp4v). Returns the path."""
    import cv2

    frames = _check(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    # even sizes keep every mp4 decoder happy
    h2, w2 = h + h % 2, w + w % 2
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w2, h2))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could not open a video writer for {path} (mp4v); is the folder writable?")
    try:
        for f in frames:
            if (h2, w2) != (h, w):
                f = np.pad(f, ((0, h2 - h), (0, w2 - w), (0, 0)))
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def contact_sheet(frames: Sequence[np.ndarray], path: str | Path, n: int = 8, cols: int = 4) -> Path:
    """PNG grid of ``n`` frames evenly spaced over the episode (first and last included)."""
    import cv2

    frames = _check(frames)
    n = max(1, min(n, len(frames)))
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    h, w = frames[0].shape[:2]
    pad = 2
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for k, i in enumerate(idx):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        tile = frames[i].copy()
        cv2.putText(tile, f"t={i}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
        sheet[y : y + h, x : x + w] = tile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise RuntimeError(f"could not write {path}")
    return path
