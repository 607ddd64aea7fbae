"""Wire format: numpy round trips, zero-copy frames, and rejection of everything malformed."""

import msgpack
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from hil_robot.transport.codec import CodecError, decode, encode
from hil_robot.transport.safetensors_io import SafetensorsError, pack, unpack


def _obs():
    return {"images/front": np.arange(128 * 128 * 3, dtype=np.uint8).reshape(128, 128, 3),
            "images/wrist": np.full((128, 128, 3), 7, np.uint8), "state": np.linspace(0, 1, 32, dtype=np.float32),
            "prompt": "pick the red cube", "timestamp_s": 12.5}


def test_observation_round_trip_uses_separate_frames_for_images():
    frames = encode({"type": "infer", "id": 3, "obs": _obs()})
    assert len(frames) == 3  # header + two image frames; the 32-float state is inlined
    out = decode(frames, allowed_types={"infer"})
    for k, v in _obs().items():
        if isinstance(v, np.ndarray):
            assert out["obs"][k].dtype == v.dtype and out["obs"][k].shape == v.shape
            np.testing.assert_array_equal(out["obs"][k], v)
        else:
            assert out["obs"][k] == v
    assert out["id"] == 3


@pytest.mark.parametrize("dtype", ["bool", "int8", "uint16", "int32", "int64", "float16", "float32", "float64"])
def test_dtypes_and_layouts_round_trip(dtype):
    a = (np.arange(3000) % 3).astype(dtype).reshape(30, 100)
    for arr in (a, a[:, ::2], a.T, a[0, 0:0], np.asarray(a[0, 0]), a.astype(np.dtype(dtype).newbyteorder(">"))):
        out = decode(encode({"type": "x", "a": arr}))["a"]
        assert out.shape == arr.shape
        np.testing.assert_array_equal(out, arr)


def test_numpy_scalars_enums_and_tuples_become_plain_values():
    from hil_robot.types import Segment

    out = decode(encode({"type": "x", "f": np.float32(1.5), "i": np.int64(3), "s": Segment.RECOVERY, "t": (1, 2)}))
    assert out == {"type": "x", "f": 1.5, "i": 3, "s": "recovery", "t": [1, 2]}


def test_encode_refuses_objects_and_untyped_messages():
    with pytest.raises(CodecError, match="dtype object"):
        encode({"type": "x", "a": np.array([object()])})
    with pytest.raises(CodecError, match="cannot send objects of type"):
        encode({"type": "x", "a": {1, 2}.__iter__()})
    with pytest.raises(CodecError, match="string 'type'"):
        encode({"obs": 1})


def _ext(code, fields):
    return msgpack.ExtType(code, msgpack.packb(fields))


@pytest.mark.parametrize("frames, match", [
    ([], "empty message"),
    ([b"\xc1"], "not valid msgpack"),
    ([b"\x91" * 5000], "not valid msgpack"),
    ([msgpack.packb([1, 2])], "must be a msgpack map"),
    ([msgpack.packb({"id": 1})], "no string 'type'"),
    ([msgpack.packb({"type": "launch_missiles"})], "unknown message type"),
    ([msgpack.packb({"type": "infer"}), b"spare"], "array frames but the header uses 0"),
    ([msgpack.packb({"type": "infer", "a": _ext(1, ["|O", [1], b"12345678"])})], "not allowed"),
    ([msgpack.packb({"type": "infer", "a": _ext(1, ["<V8", [1], b"12345678"])})], "not allowed"),
    ([msgpack.packb({"type": "infer", "a": _ext(1, ["<U2", [1], b"12345678"])})], "not allowed"),
    ([msgpack.packb({"type": "infer", "a": _ext(1, ["<f4", [3], b"12345678"])})], "needs 12 bytes"),
    ([msgpack.packb({"type": "infer", "a": _ext(1, ["<f4", [-2], b"12345678"])})], "non-negative"),
    ([msgpack.packb({"type": "infer", "a": _ext(2, ["<f4", [2], 5])})], "refers to frame 5"),
    ([msgpack.packb({"type": "infer", "a": _ext(2, ["<f4", [2], 1]), "b": _ext(2, ["<f4", [2], 1])}), b"x" * 8],
     "refers to frame 1"),
    ([msgpack.packb({"type": "infer", "a": _ext(9, ["<f4", [2], 1])})], "unknown msgpack extension"),
    ([msgpack.packb({1: "infer"})], "not valid msgpack"),
])
def test_decode_rejects_malformed_frames(frames, match):
    with pytest.raises(CodecError, match=match):
        decode(frames, allowed_types={"infer"})


def test_oversized_frame_is_rejected_with_the_config_key():
    frames = encode({"type": "infer", "a": np.zeros(10_000, np.uint8)})
    with pytest.raises(CodecError, match="max_frame_bytes"):
        decode(frames, max_frame_bytes=5000)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=4))
def test_random_bytes_only_ever_raise_codec_error(frames):
    try:
        msg = decode(frames, allowed_types={"infer", "ping"})
    except CodecError:
        return
    assert isinstance(msg, dict) and msg["type"] in {"infer", "ping"}  # anything accepted is a valid message


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 255))
def test_truncated_or_flipped_valid_messages_only_raise_codec_error(cut, byte):
    header = bytearray(encode({"type": "infer", "id": 1, "obs": {"state": np.ones(15, np.float32), "p": "x"}})[0])
    if cut < len(header):
        header[cut % len(header)] = byte
    for frames in ([bytes(header)], [bytes(header[: cut % (len(header) + 1)])]):
        try:
            msg = decode(frames, allowed_types={"infer"})
        except CodecError:
            continue
        assert isinstance(msg, dict) and msg["type"] == "infer"  # anything accepted is a valid message


def test_safetensors_pack_matches_the_reference_library_both_ways():
    w = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], np.int8),
         "c": np.ones((2, 2), np.float64), "d": np.array([True, False]), "e": np.zeros((0, 3), np.float16)}
    ref = safetensors.numpy.load(pack(w).tobytes())
    mine = unpack(safetensors.numpy.save(w))
    for k in w:
        np.testing.assert_array_equal(ref[k], w[k])
        np.testing.assert_array_equal(mine[k], w[k])
        assert mine[k].dtype == w[k].dtype


@pytest.mark.parametrize("mutate, match", [
    (lambda b: b[:4], "shorter than"),
    (lambda b: (10**9).to_bytes(8, "little") + b[8:], "does not fit"),
    (lambda b: b[:-4], "offsets|needs"),
    (lambda b: b + b"xxxx", "after the last tensor"),
    (lambda b: b[:8] + b"#" + b[9:], "not valid JSON"),
])
def test_safetensors_unpack_rejects_corrupt_payloads(mutate, match):
    good = pack({"w": np.ones((4, 4), np.float32), "v": np.zeros(3, np.float32)}).tobytes()
    with pytest.raises(SafetensorsError, match=match):
        unpack(mutate(good))


def test_safetensors_unpack_rejects_overlapping_and_duplicate_tensors():
    import json
    import struct

    def build(header):
        h = json.dumps(header).encode()
        return struct.pack("<Q", len(h)) + h
    body = b"\0" * 16
    overlap = build({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                     "b": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}) + body
    with pytest.raises(SafetensorsError, match="overlap"):
        unpack(overlap)
    dup = b'{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'
    with pytest.raises(SafetensorsError, match="duplicate"):
        unpack(struct.pack("<Q", len(dup)) + dup + body)
    bf16 = build({"a": {"dtype": "BF16", "shape": [8], "data_offsets": [0, 16]}}) + body
    with pytest.raises(SafetensorsError, match="known dtype"):
        unpack(bf16)


def test_cached_array_headers_never_mix_up_messages():
    """Extension headers are parsed once and remembered; repeats, look-alikes of the same length
    and different data must still decode exactly."""
    for i in range(3):
        a = np.full((50, 7), i, np.float32)
        img = np.full((64, 64, 3), i, np.uint8)
        out = decode(encode({"type": "x", "a": a, "img": img}))
        np.testing.assert_array_equal(out["a"], a)
        np.testing.assert_array_equal(out["img"], img)
        assert out["a"].flags.writeable  # inline arrays are copies the caller may modify
    same_len = {"<f4": np.arange(6, dtype=np.float32), "<i4": np.arange(6, dtype=np.int32),
                "<u4": np.arange(6, dtype=np.uint32)}  # identical payload lengths, different headers
    for _ in range(2):
        for dstr, arr in same_len.items():
            out = decode(encode({"type": "x", "a": arr}))["a"]
            assert out.dtype == np.dtype(dstr)
            np.testing.assert_array_equal(out, arr)
    out = decode(encode({"type": "x", "a": np.arange(6, dtype=np.float32).reshape(2, 3)}))["a"]
    assert out.shape == (2, 3)
    frames = encode({"type": "x", "img": np.zeros((64, 64, 3), np.uint8)})
    with pytest.raises(CodecError, match="needs 12288 bytes"):  # a cached header still checks the frame size
        decode([frames[0], b"x" * 100])


def test_header_caches_stay_bounded_under_a_flood_of_distinct_headers():
    from hil_robot.transport import codec

    for n in range(1, 3000):
        decode([msgpack.packb({"type": "x", "a": _ext(2, ["<u1", [n], 1])}), b"\0" * n])
        decode([msgpack.packb({"type": "x", "a": _ext(1, ["<u1", [n % 2000], b"\0" * (n % 2000)])})])
    assert len(codec._FRAME_REFS) <= codec._CACHE_MAX and len(codec._INLINE_SPECS) <= codec._CACHE_MAX
    out = decode(encode({"type": "x", "a": np.arange(5000, dtype=np.int16), "b": np.ones(3, np.float32)}))
    np.testing.assert_array_equal(out["a"], np.arange(5000, dtype=np.int16))
    np.testing.assert_array_equal(out["b"], np.ones(3, np.float32))
