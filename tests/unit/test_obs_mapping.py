"""Config-declared observation mapping (hil_robot/obs_mapping.py): forward, inverse, and errors that
name the key and the shape."""

from __future__ import annotations

import numpy as np
import pytest

from hil_robot.obs_mapping import ObsMapping, ObsMappingError
from hil_robot.rotations import quat_from_rotvec
from hil_robot.types import STATE_DIM


def obs(h=48, w=64):
    state = np.arange(STATE_DIM, dtype=np.float32) / 100
    state[3:7] = quat_from_rotvec(np.array([0.1, -0.2, 0.3]))
    state[7] = 0.8  # gripper opening: mostly open
    front = np.full((h, w, 3), 200, np.uint8)
    return {"images/front": front, "images/wrist": front.copy(), "state": state, "prompt": "pick the cube",
            "timestamp_s": 1.0, "task_state": np.ones(14, np.float32)}


DROID = {"observation/exterior_image_1_left": "images/front|resize_pad:224x224",
         "observation/joint_position": "state.joints",
         "observation/gripper_position": "state.gripper|one_minus",
         "prompt": "prompt"}


def test_droid_style_mapping():
    out = ObsMapping(DROID).apply(obs())
    img = out["observation/exterior_image_1_left"]
    assert img.shape == (224, 224, 3) and img.dtype == np.uint8
    # 48x64 -> 168x224 centred with zero rows above and below (aspect ratio kept)
    assert img[:28].max() == 0 and img[-28:].max() == 0 and img[28:196].min() == 200
    np.testing.assert_allclose(out["observation/joint_position"], obs()["state"][8:15])
    np.testing.assert_allclose(out["observation/gripper_position"], [0.2], atol=1e-6)
    assert out["prompt"] == "pick the cube"


def test_concatenation_index_ranges_and_axis_angle():
    m = ObsMapping({"observation/state": "state.ee_pos + state.ee_quat|quat_to_axis_angle + state[7:8]",
                    "raw": "state[0:8]|float64", "objects": "task_state"})
    out = m.apply(obs())
    s = out["observation/state"]
    assert s.shape == (7,) and s.dtype == np.float32
    np.testing.assert_allclose(s[3:6], [0.1, -0.2, 0.3], atol=1e-5)
    assert out["raw"].dtype == np.float64 and out["raw"].shape == (8,) and out["objects"].shape == (14,)


def test_inverse_rebuilds_our_observation():
    m = ObsMapping({"observation/image": "images/front", "observation/state": "state.ee_pos + "
                    "state.ee_quat|quat_to_axis_angle + state.gripper|one_minus", "observation/task": "task_state",
                    "prompt": "prompt"})
    o = obs()
    ours, filled = m.invert(m.apply(o))
    np.testing.assert_allclose(ours["state"][:8], o["state"][:8], atol=1e-5)
    assert filled[:8].all() and not filled[8:].any() and (ours["state"][8:] == 0).all()
    np.testing.assert_array_equal(ours["images/front"], o["images/front"])
    assert ours["prompt"] == "pick the cube" and ours["task_state"].shape == (14,)


def test_missing_key_names_key_and_what_is_there():
    o = obs()
    del o["images/wrist"]
    with pytest.raises(ObsMappingError, match=r"observation/wrist_image.*no 'images/wrist'.*images/front"):
        ObsMapping({"observation/wrist_image": "images/wrist"}).apply(o)


def test_wrong_shapes_are_named():
    o = obs()
    o["images/front"] = np.zeros((48, 64), np.uint8)
    with pytest.raises(ObsMappingError, match=r"images/front.*uint8 \[H, W, 3\].*\(48, 64\)"):
        ObsMapping({"img": "images/front"}).apply(o)
    with pytest.raises(ObsMappingError, match=r"'s'.*state\[0:20\].*shape \(15,\)"):
        ObsMapping({"s": "state[0:20]"}).apply(obs())
    with pytest.raises(ObsMappingError, match=r"quat_to_axis_angle.*shape \(3,\)"):
        ObsMapping({"s": "state.ee_pos|quat_to_axis_angle"}).apply(obs())


def test_inverse_errors_name_key_and_shape():
    m = ObsMapping({"observation/state": "state[0:8]", "prompt": "prompt"})
    with pytest.raises(ObsMappingError, match=r"observation/state.*shape \(5,\).*expects 8"):
        m.invert({"observation/state": np.zeros(5), "prompt": "x"})
    with pytest.raises(ObsMappingError, match=r"no 'prompt'"):
        m.invert({"observation/state": np.zeros(8)})


@pytest.mark.parametrize("spec, msg", [
    ({}, "empty"),
    ({"a": ""}, "non-empty string"),
    ({"a": "state.elbow"}, "unknown state slice"),
    ({"a": "images/front|resize:224"}, "HxW"),
    ({"a": "state|blur"}, "unknown operation"),
    ({"a": "state|resize:4x4"}, "images/<camera> sources only"),
    ({"a": "prompt + state"}, "only arrays"),
    ({"a": "state[3:]"}, "explicit end"),
])
def test_syntax_errors_fail_when_built(spec, msg):
    with pytest.raises(ObsMappingError, match=msg):
        ObsMapping(spec)
