"""openpi wire encoding: fixed arrays <-> exact msgpack bytes (the bytes openpi-client 0.1.2's
msgpack_numpy writes), checked in this process and, when .venv-openpi exists, against
openpi-client itself in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hil_robot.transport.codec import CodecError
from hil_robot.transport.openpi_codec import packb, unpackb

ROOT = Path(__file__).resolve().parents[2]
OPENPI_PY = ROOT / ".venv-openpi" / "bin" / "python"


def message():
    return {"actions": np.array([[0.5, -1.0], [2.0, 0.25]], np.float32), "state": np.arange(3, dtype=np.int16),
            "t": np.float32(1.5), "prompt": "pick"}


GOLDEN = bytes.fromhex(
    "84"  # map of 4
    "a7616374696f6e73"  # "actions"
    "84c40b5f5f6e6461727261795f5fc3"  # {b"__ndarray__": True,
    "c40464617461c4100000003f000080bf000000400000803e"  # b"data": 16 raw bytes (float32 LE, C order),
    "c4056474797065a33c6634"  # b"dtype": "<f4",
    "c4057368617065920202"  # b"shape": [2, 2]}
    "a5737461746584c40b5f5f6e6461727261795f5fc3c40464617461c406000001000200c4056474797065a33c6932"
    "c40573686170659103"  # "state": int16 [3]
    "a17483c40d5f5f6e7067656e657269635f5fc3c40464617461cb3ff8000000000000c4056474797065a33c6634"  # "t": npgeneric
    "a670726f6d7074a47069636b"  # "prompt": "pick"
)


def test_encode_is_byte_exact():
    assert packb(message()) == GOLDEN


def test_decode_golden_bytes():
    out = unpackb(GOLDEN)
    np.testing.assert_array_equal(out["actions"], message()["actions"])
    assert out["actions"].dtype == np.float32 and out["actions"].shape == (2, 2)
    assert out["state"].dtype == np.int16 and out["state"].tolist() == [0, 1, 2]
    assert isinstance(out["t"], np.float32) and out["t"] == 1.5
    assert out["prompt"] == "pick"


def test_non_contiguous_and_big_endian_arrays_round_trip():
    a = np.arange(12, dtype=">f8").reshape(3, 4)[:, ::2]
    out = unpackb(packb({"a": a}))["a"]
    assert out.dtype == np.dtype(">f8")
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("bad", [
    {b"__ndarray__": True, b"data": b"\0" * 7, b"dtype": "<f4", b"shape": [2]},  # length lies
    {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]},  # object dtype
    {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "<f4", b"shape": [-2]},
    {b"__ndarray__": True, b"data": "text", b"dtype": "<f4", b"shape": [1]},
    {b"__npgeneric__": True, b"data": 1, b"dtype": "V8"},
])
def test_malformed_arrays_are_refused(bad):
    import msgpack

    with pytest.raises(CodecError):
        unpackb(msgpack.packb({"x": bad}))


def test_object_arrays_are_not_sent():
    with pytest.raises(CodecError, match="object"):
        packb({"x": np.array([object()], dtype=object)})


@pytest.mark.skipif(not OPENPI_PY.exists(), reason="needs .venv-openpi (bash scripts/openpi_env.sh)")
def test_openpi_client_writes_and_reads_the_same_bytes():
    script = f"""
import sys, numpy as np
from openpi_client import msgpack_numpy as m
msg = {{"actions": np.array([[0.5, -1.0], [2.0, 0.25]], np.float32), "state": np.arange(3, dtype=np.int16),
       "t": np.float32(1.5), "prompt": "pick"}}
assert m.packb(msg) == bytes.fromhex("{GOLDEN.hex()}"), m.packb(msg).hex()
back = m.unpackb(bytes.fromhex("{GOLDEN.hex()}"))
assert back["actions"].dtype == np.float32 and back["actions"].tolist() == [[0.5, -1.0], [2.0, 0.25]]
assert back["state"].tolist() == [0, 1, 2] and back["t"] == np.float32(1.5) and back["prompt"] == "pick"
print("ok")
"""
    out = subprocess.run([str(OPENPI_PY), "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
