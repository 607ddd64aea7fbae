"""Message conversion: numpy arrays / observation pieces <-> standard ROS 2 messages.

Only standard messages are used (DESIGN §8): sensor_msgs Image, CompressedImage, CameraInfo,
JointState, Joy; geometry_msgs PoseStamped, TwistStamped; std_msgs Bool, String, Float32,
Float32MultiArray. Structured records that have no standard message (a policy chunk with its
version, a controller step's labels, an operator command) travel as ``std_msgs/String`` holding
JSON; floats are written with enough digits that float32 values round-trip exactly.

Conventions: images are ``uint8 [H, W, 3]`` RGB (encoding ``rgb8``); quaternions in our arrays are
``[w, x, y, z]`` and are mapped field by field onto ROS's named ``x, y, z, w``; stamps are
``builtin_interfaces/Time`` and convert to integer nanoseconds or float seconds.
"""

from __future__ import annotations

import array
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TwistStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState, Joy
from std_msgs.msg import Bool, Float32, Float32MultiArray, MultiArrayDimension, String

from hil_robot.types import ACTION_DIM, STATE_DIM, STATE_LAYOUT, ContractError, OperatorCommand, OperatorMode

GRIPPER_JOINT = "gripper"  # JointState entry that carries the gripper opening (0 closed .. 1 open)
DEFAULT_JOINT_NAMES = tuple(f"joint{i}" for i in range(1, 8))


class ConversionError(ContractError):
    """A message that cannot become the array/record we expect; the text names field and fix."""


# ----------------------------------------------------------------------------- time


def stamp_from_ns(ns: int) -> Time:
    ns = int(ns)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def stamp_to_s(stamp: Time) -> float:
    return stamp_to_ns(stamp) * 1e-9


# ----------------------------------------------------------------------------- images


def image_to_msg(img: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """uint8 [H, W, 3] RGB -> sensor_msgs/Image (rgb8)."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ConversionError(f"image must be uint8 [H, W, 3] RGB, got {img.dtype} {img.shape}")
    msg = Image()
    msg.header.stamp = stamp_from_ns(stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = int(img.shape[1] * 3)
    buf = array.array("B")
    buf.frombytes(np.ascontiguousarray(img).tobytes())
    msg.data = buf
    return msg


def msg_to_image(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8 or mono8) -> uint8 [H, W, 3] RGB (a copy)."""
    h, w, enc = int(msg.height), int(msg.width), msg.encoding
    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1}.get(enc)
    if channels is None:
        raise ConversionError(f"image encoding {enc!r} is not supported; publish rgb8, bgr8 or mono8")
    if msg.step < w * channels:
        raise ConversionError(f"image step {msg.step} is smaller than width*channels = {w * channels}")
    flat = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    if flat.size < h * msg.step:
        raise ConversionError(f"image data has {flat.size} bytes, expected height*step = {h * msg.step}")
    rows = flat[: h * msg.step].reshape(h, msg.step)[:, : w * channels]
    img = rows.reshape(h, w, channels)
    if enc == "bgr8":
        img = img[:, :, ::-1]
    elif enc == "mono8":
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def image_to_compressed_msg(img: np.ndarray, stamp_ns: int, frame_id: str, fmt: str = "jpeg", quality: int = 90) -> CompressedImage:
    """uint8 [H, W, 3] RGB -> sensor_msgs/CompressedImage (jpeg: lossy, png: lossless)."""
    import cv2

    if fmt not in ("jpeg", "png"):
        raise ConversionError(f"compressed format {fmt!r} is not supported; use jpeg or png")
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ConversionError(f"image must be uint8 [H, W, 3] RGB, got {img.dtype} {img.shape}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, enc = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", img[:, :, ::-1], params)
    if not ok:
        raise ConversionError(f"OpenCV could not encode a {img.shape} image as {fmt}")
    msg = CompressedImage()
    msg.header.stamp = stamp_from_ns(stamp_ns)
    msg.header.frame_id = frame_id
    msg.format = f"rgb8; {fmt} compressed bgr8"
    buf = array.array("B")
    buf.frombytes(enc.tobytes())
    msg.data = buf
    return msg


def compressed_msg_to_image(msg: CompressedImage) -> np.ndarray:
    import cv2

    raw = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    bgr = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConversionError(f"compressed image ({msg.format!r}, {raw.size} bytes) could not be decoded")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def camera_info_msg(height: int, width: int, stamp_ns: int, frame_id: str, fx: float = 0.0, fy: float = 0.0,
                    cx: float | None = None, cy: float | None = None, fovy_deg: float | None = None) -> CameraInfo:
    """Pinhole CameraInfo without distortion. Focal lengths come from fx/fy, or from a vertical
    field of view (the way MuJoCo cameras are specified)."""
    if fovy_deg is not None:
        fy = 0.5 * height / math.tan(math.radians(fovy_deg) / 2.0)
        fx = fx or fy
    if fx <= 0 or fy <= 0:
        raise ConversionError("camera_info needs fx, fy > 0 (or fovy_deg)")
    cx = (width - 1) / 2.0 if cx is None else cx
    cy = (height - 1) / 2.0 if cy is None else cy
    msg = CameraInfo()
    msg.header.stamp = stamp_from_ns(stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(height), int(width)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def camera_info_intrinsics(msg: CameraInfo) -> dict[str, float]:
    k = list(msg.k)
    return {"height": int(msg.height), "width": int(msg.width), "fx": k[0], "fy": k[4], "cx": k[2], "cy": k[5]}


# ----------------------------------------------------------------------------- robot state


def joint_state_msg(positions: Sequence[float], names: Sequence[str], stamp_ns: int,
                    velocities: Sequence[float] | None = None) -> JointState:
    if len(positions) != len(names):
        raise ConversionError(f"{len(positions)} joint positions for {len(names)} joint names {list(names)}")
    msg = JointState()
    msg.header.stamp = stamp_from_ns(stamp_ns)
    msg.name = list(names)
    msg.position = [float(p) for p in positions]
    if velocities is not None:
        msg.velocity = [float(v) for v in velocities]
    return msg


def joint_state_positions(msg: JointState, names: Sequence[str]) -> np.ndarray:
    """Positions of ``names`` (in that order) from a JointState that may list more joints."""
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ConversionError(f"joint_states lacks joints {missing}; it has {list(msg.name)} "
                              "(set the node's joint_names parameter to match the arm driver)")
    return np.array([msg.position[index[n]] for n in names], dtype=np.float64)


def pose_msg(pos: Sequence[float], quat_wxyz: Sequence[float], stamp_ns: int, frame_id: str) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp = stamp_from_ns(stamp_ns)
    msg.header.frame_id = frame_id
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in pos)
    q.w, q.x, q.y, q.z = (float(v) for v in quat_wxyz)
    return msg


def msg_to_pose(msg: PoseStamped) -> tuple[np.ndarray, np.ndarray]:
    """-> (pos float64[3] m, quat float64[4] wxyz)."""
    p, q = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([q.w, q.x, q.y, q.z])


def twist_msg(linear: Sequence[float], angular: Sequence[float], stamp_ns: int, frame_id: str) -> TwistStamped:
    msg = TwistStamped()
    msg.header.stamp = stamp_from_ns(stamp_ns)
    msg.header.frame_id = frame_id
    t = msg.twist
    t.linear.x, t.linear.y, t.linear.z = (float(v) for v in linear)
    t.angular.x, t.angular.y, t.angular.z = (float(v) for v in angular)
    return msg


def msg_to_twist(msg: TwistStamped) -> np.ndarray:
    """-> float64[6]: linear m/s then angular rad/s."""
    t = msg.twist
    return np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z])


def state_to_msgs(state: np.ndarray, stamp_ns: int, base_frame: str,
                  joint_names: Sequence[str] = DEFAULT_JOINT_NAMES) -> tuple[JointState, PoseStamped]:
    """state float32[15] (types.STATE_LAYOUT) -> (joint_states incl. the gripper entry, EE pose)."""
    state = np.asarray(state, dtype=np.float32)
    if state.shape != (STATE_DIM,):
        raise ConversionError(f"state must be float32[{STATE_DIM}], got {state.shape}")
    j0, j1 = STATE_LAYOUT["joints"]
    g0, _ = STATE_LAYOUT["gripper"]
    js = joint_state_msg(list(state[j0:j1]) + [state[g0]], list(joint_names) + [GRIPPER_JOINT], stamp_ns)
    p0, p1 = STATE_LAYOUT["ee_pos"]
    q0, q1 = STATE_LAYOUT["ee_quat"]
    return js, pose_msg(state[p0:p1], state[q0:q1], stamp_ns, base_frame)


def msgs_to_state(joints: JointState, pose: PoseStamped, joint_names: Sequence[str] = DEFAULT_JOINT_NAMES,
                  gripper_joint: str = GRIPPER_JOINT) -> np.ndarray:
    """(joint_states, EE pose) -> state float32[15]. The inverse of ``state_to_msgs``."""
    state = np.zeros(STATE_DIM, dtype=np.float32)
    pos, quat = msg_to_pose(pose)
    state[slice(*STATE_LAYOUT["ee_pos"])] = pos
    state[slice(*STATE_LAYOUT["ee_quat"])] = quat
    state[slice(*STATE_LAYOUT["joints"])] = joint_state_positions(joints, joint_names)
    state[slice(*STATE_LAYOUT["gripper"])] = joint_state_positions(joints, [gripper_joint])
    return state


# ----------------------------------------------------------------------------- commands


def action_to_twist(action: np.ndarray, max_delta_pos_m: float, max_delta_rot_rad: float, control_hz: float,
                    stamp_ns: int, frame_id: str) -> tuple[TwistStamped, Float32]:
    """Normalised EE delta float32[7] -> (TwistStamped velocity in m/s, rad/s; gripper Float32 in [-1, 1]).

    The delta per control tick becomes a velocity held for one tick (1 / control_hz seconds), the way
    moveit_servo-style drivers consume twists. ``twist_to_action`` is the exact inverse.
    """
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (ACTION_DIM,):
        raise ConversionError(f"action must be float[{ACTION_DIM}], got {a.shape}")
    lin = a[:3] * max_delta_pos_m * control_hz
    ang = a[3:6] * max_delta_rot_rad * control_hz
    return twist_msg(lin, ang, stamp_ns, frame_id), Float32(data=float(a[6]))


def twist_to_action(twist: TwistStamped, gripper: float, max_delta_pos_m: float, max_delta_rot_rad: float,
                    control_hz: float) -> np.ndarray:
    v = msg_to_twist(twist)
    a = np.empty(ACTION_DIM, dtype=np.float64)
    a[:3] = v[:3] / (max_delta_pos_m * control_hz)
    a[3:6] = v[3:6] / (max_delta_rot_rad * control_hz)
    a[6] = gripper
    return a.astype(np.float32)


def bool_msg(value: bool) -> Bool:
    return Bool(data=bool(value))


def float32_array_msg(values: np.ndarray, label: str = "") -> Float32MultiArray:
    arr = np.asarray(values, dtype=np.float32)
    msg = Float32MultiArray()
    stride = int(arr.size)
    for size in arr.shape:
        msg.layout.dim.append(MultiArrayDimension(label=label, size=int(size), stride=stride))
        stride = stride // max(int(size), 1)
    buf = array.array("f")
    buf.frombytes(arr.tobytes())
    msg.data = buf
    return msg


def msg_to_float32_array(msg: Float32MultiArray) -> np.ndarray:
    arr = np.frombuffer(memoryview(msg.data), dtype=np.float32).copy() if len(msg.data) else np.zeros(0, np.float32)
    shape = tuple(int(d.size) for d in msg.layout.dim)
    if shape and int(np.prod(shape)) == arr.size:
        arr = arr.reshape(shape)
    return arr


def joy_msg(axes: Sequence[float], buttons: Sequence[int], stamp_ns: int, frame_id: str = "") -> Joy:
    msg = Joy()
    msg.header.stamp = stamp_from_ns(stamp_ns)
    msg.header.frame_id = frame_id
    msg.axes = [float(a) for a in axes]
    msg.buttons = [int(b) for b in buttons]
    return msg


def msg_to_joy(msg: Joy) -> tuple[np.ndarray, np.ndarray]:
    return np.array(msg.axes, dtype=np.float32), np.array(msg.buttons, dtype=np.int32)


# ----------------------------------------------------------------------------- JSON records


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()] if value.ndim else _jsonable(value.item())
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else repr(f)  # 'nan', 'inf' kept as strings (JSON has no NaN)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "value") and isinstance(getattr(value, "value"), str):  # str enums
        return value.value
    return value


def _floats(value: Any, dtype: Any = np.float32) -> np.ndarray:
    def conv(v: Any) -> Any:
        if isinstance(v, list):
            return [conv(x) for x in v]
        return float(v)  # float('nan') also parses the 'nan' strings written above

    return np.asarray(conv(value), dtype=dtype)


def json_msg(record: Mapping[str, Any]) -> String:
    """Any record of numbers/arrays/strings -> std_msgs/String JSON (NaN/Inf survive as strings)."""
    return String(data=json.dumps(_jsonable(record), separators=(",", ":")))


def msg_to_json(msg: String) -> dict[str, Any]:
    try:
        out = json.loads(msg.data)
    except json.JSONDecodeError as e:
        raise ConversionError(f"expected a JSON object in std_msgs/String, got {msg.data[:80]!r}: {e}") from None
    if not isinstance(out, dict):
        raise ConversionError(f"expected a JSON object in std_msgs/String, got {type(out).__name__}")
    return out


def chunk_to_msg(actions: np.ndarray, obs_stamp_ns: int, policy_version: int, **extra: Any) -> String:
    """A policy reply (action chunk float32[H, 7]) for the observation stamped ``obs_stamp_ns``."""
    from hil_robot.types import validate_chunk

    return json_msg({"obs_stamp_ns": int(obs_stamp_ns), "actions": validate_chunk(actions),
                     "policy_version": int(policy_version), **extra})


def msg_to_chunk(msg: String) -> dict[str, Any]:
    from hil_robot.types import validate_chunk

    d = msg_to_json(msg)
    for key in ("obs_stamp_ns", "actions", "policy_version"):
        if key not in d:
            raise ConversionError(f"policy chunk message lacks {key!r}")
    d["actions"] = validate_chunk(_floats(d["actions"]))
    return d


def operator_command_to_msg(cmd: OperatorCommand) -> String:
    return json_msg({
        "timestamp_s": cmd.timestamp_s, "mode": cmd.mode.value,
        "action": cmd.action, "pose_target": cmd.pose_target, "dof_mask": cmd.dof_mask.astype(bool),
        "segment": cmd.segment.value if cmd.segment is not None else None, "mark": cmd.mark,
        "language_correction": cmd.language_correction, "estop": cmd.estop,
        "operator_id": cmd.operator_id, "device_id": cmd.device_id,
    })


def msg_to_operator_command(msg: String) -> OperatorCommand:
    d = msg_to_json(msg)
    try:
        return OperatorCommand(
            timestamp_s=float(d["timestamp_s"]), mode=OperatorMode(d.get("mode", "autonomous")),
            action=None if d.get("action") is None else _floats(d["action"]),
            pose_target=None if d.get("pose_target") is None else _floats(d["pose_target"]),
            dof_mask=np.asarray(d.get("dof_mask", [True] * ACTION_DIM), dtype=bool),
            segment=d.get("segment"), mark=d.get("mark", ""), language_correction=d.get("language_correction", ""),
            estop=bool(d.get("estop", False)), operator_id=d.get("operator_id", ""), device_id=d.get("device_id", ""),
        )
    except (KeyError, ValueError) as e:
        raise ConversionError(f"bad operator command message: {e}") from None


def decode_floats(value: Any) -> np.ndarray:
    """JSON list (with 'nan' strings) -> float32 array; the inverse of the JSON writer above."""
    return _floats(value)
