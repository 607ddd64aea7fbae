"""Episode video (mp4 via OpenCV) and PNG contact sheet."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sim.video import contact_sheet, write_mp4


def frames(n=12, h=48, w=96):
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:, : (i + 1) * w // n] = (200, 30, 30)  # a red bar that grows: frames differ
        out.append(f)
    return out


def test_write_mp4_is_readable_with_all_frames(tmp_path):
    path = write_mp4(frames(), tmp_path / "sub" / "ep.mp4", fps=10)
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FPS) == 10.0
    n, first = 0, None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        first = f if first is None else first
        n += 1
    cap.release()
    assert n == 12
    assert first.shape == (48, 96, 3)
    b, g, r = first[:, :4].reshape(-1, 3).mean(0)
    assert r > 120 and b < 80, "RGB frames must be written as RGB (not channel-swapped)"


def test_odd_sizes_are_padded(tmp_path):
    path = write_mp4(frames(4, 33, 47), tmp_path / "odd.mp4")
    cap = cv2.VideoCapture(str(path))
    ok, f = cap.read()
    cap.release()
    assert ok and f.shape[:2] == (34, 48)


def test_contact_sheet_grid(tmp_path):
    path = contact_sheet(frames(20), tmp_path / "sheet.png", n=8, cols=4)
    img = cv2.imread(str(path))
    assert img.shape == (2 * (48 + 2) + 2, 4 * (96 + 2) + 2, 3)


def test_bad_frames_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        write_mp4([], tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="frame 1"):
        write_mp4([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)], tmp_path / "x.mp4")
