"""GR00T wire encoding: fixed arrays <-> exact msgpack bytes ({"__ndarray_class__", "as_npy"} maps
holding np.save bytes), modality configs, and refusal of what must not decode."""

from __future__ import annotations

import io

import msgpack
import numpy as np
import pytest

from hil_robot.transport.codec import CodecError
from hil_robot.transport.groot_codec import packb, unpackb

NPY_1x2_F4 = (
    b"\x93NUMPY\x01\x00v\x00"  # magic, format 1.0, header length 118
    + b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }".ljust(117) + b"\n"
    + np.array([1.0, 2.0], "<f4").tobytes()
)

REQUEST = {"endpoint": "get_action",
           "data": {"state.x": np.array([[1.0, 2.0]], np.float32), "annotation.human.task_description": ["pick"]},
           "api_token": "k"}

GOLDEN = (
    bytes.fromhex("83a8656e64706f696e74aa6765745f616374696f6e")  # {"endpoint": "get_action",
    + bytes.fromhex("a46461746182a773746174652e78")  # "data": {"state.x":
    + bytes.fromhex("82b15f5f6e6461727261795f636c6173735f5fc3")  # {"__ndarray_class__": True,
    + bytes.fromhex("a661735f6e7079c488") + NPY_1x2_F4  # "as_npy": bin8(136) <.npy bytes>},
    + bytes.fromhex("d921616e6e6f746174696f6e2e68756d616e2e7461736b5f6465736372697074696f6e91a47069636b")
    + bytes.fromhex("a96170695f746f6b656ea16b")  # "api_token": "k"}
)


def test_encode_is_byte_exact():
    assert len(NPY_1x2_F4) == 136
    assert packb(REQUEST) == GOLDEN


def test_decode_golden_bytes():
    out = unpackb(GOLDEN)
    assert out["endpoint"] == "get_action" and out["api_token"] == "k"
    x = out["data"]["state.x"]
    assert x.dtype == np.float32 and x.shape == (1, 2) and x.tolist() == [[1.0, 2.0]]
    assert out["data"]["annotation.human.task_description"] == ["pick"]


def test_modality_configs_decode_to_dicts_in_both_server_generations():
    n15 = {"__ModalityConfig_class__": True, "as_json": '{"delta_indices": [0], "modality_keys": ["video.front"]}'}
    n16 = {"__ModalityConfig_class__": True, "as_json": {"delta_indices": [-1, 0], "modality_keys": ["front"]}}
    out = unpackb(msgpack.packb({"video": n15, "state": n16}))
    assert out == {"video": {"delta_indices": [0], "modality_keys": ["video.front"]},
                   "state": {"delta_indices": [-1, 0], "modality_keys": ["front"]}}


def test_pickled_npy_payload_is_refused():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CodecError, match="npy"):
        unpackb(msgpack.packb({"__ndarray_class__": True, "as_npy": buf.getvalue()}))
    with pytest.raises(CodecError):
        packb({"x": np.array([object()], dtype=object)})


def test_numpy_scalars_go_as_plain_numbers():
    assert unpackb(packb({"v": np.float32(0.5), "n": np.int64(3)})) == {"v": 0.5, "n": 3}


@pytest.mark.parametrize("arr", [
    np.arange(6, dtype="<f4").reshape(2, 3), np.arange(6, dtype=">i2").reshape(3, 2).T,  # Fortran order
    np.zeros((1, 1, 24, 32, 3), np.uint8), np.float64(2.5) * np.ones(()), np.zeros((0, 7), np.float32),
    np.array([True, False]), np.arange(8, dtype=np.float64)[::2], np.zeros((3,), dtype=[("a", "<f4"), ("b", "u1")]),
])
def test_npy_bytes_match_np_save_and_load_back(arr):
    from hil_robot.transport.groot_codec import npy_array, npy_bytes

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    assert npy_bytes(arr) == buf.getvalue()
    back = npy_array(buf.getvalue())
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_npy_payload_with_a_lying_length_is_refused():
    from hil_robot.transport.groot_codec import npy_array, npy_bytes

    with pytest.raises(CodecError, match="data bytes"):
        npy_array(npy_bytes(np.zeros(4, np.float32))[:-1])
