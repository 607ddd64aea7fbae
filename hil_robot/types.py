"""The contracts every part of hil_robot speaks (DESIGN §3). Keep them few and stable.

Conventions
-----------
* Positions in metres, angles in radians, times in seconds (``*_s``), frames in the robot base frame.
* Quaternions are ``[w, x, y, z]`` (MuJoCo order).
* ``D = ACTION_DIM = 7``: a normalised end-effector delta ``[dx, dy, dz, drx, dry, drz, gripper]``,
  each in [-1, 1]. Translation/rotation components are scaled to metres/radians per control tick
  by the robot config (``max_delta_pos_m``, ``max_delta_rot_rad``); ``drx..drz`` are an axis-angle
  increment in the base frame. ``gripper`` is an absolute command: -1 fully open, +1 fully closed.
* Observation (a plain dict, so it crosses msgpack unchanged)::

      images/<camera>   uint8   [H, W, 3]    e.g. images/front, images/wrist
      state             float32 [STATE_DIM]  layout in STATE_LAYOUT
      prompt            str                  the instruction the policy should follow
      timestamp_s       float                producer clock (time.monotonic on that host)
      task_state        float32 [K]          optional, sim-only privileged state (object poses)

* Policy output: ``{"actions": float32[H, D], "policy_version": int, ...}``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

ACTION_DIM = 7
ACTION_NAMES = ("dx", "dy", "dz", "drx", "dry", "drz", "gripper")
GRIPPER_INDEX = 6

# state vector layout: name -> (start, stop)
STATE_LAYOUT: dict[str, tuple[int, int]] = {
    "ee_pos": (0, 3),  # metres, base frame
    "ee_quat": (3, 7),  # [w, x, y, z]
    "gripper": (7, 8),  # opening, 0 = closed .. 1 = fully open
    "joints": (8, 15),  # radians, 7 arm joints
}
STATE_DIM = 15

IMAGE_PREFIX = "images/"


class ContractError(ValueError):
    """Data that breaks a contract. The message says which field and what was expected."""


class Segment(str, enum.Enum):
    """Who was in charge of a step and why (DESIGN §3)."""

    AUTONOMOUS = "autonomous"  # the policy acted and nobody intervened soon after
    PRE_INTERVENTION = "pre_intervention"  # the last K autonomous steps before a takeover
    RECOVERY = "recovery"  # operator brings the robot back to a familiar state
    CORRECTION = "correction"  # operator completes the sub-task
    DEMO = "demo"  # a fully teleoperated (or scripted-expert) episode
    PERTURBATION = "perturbation"  # operator disturbs the scene on purpose

    @classmethod
    def parse(cls, value: "Segment | str") -> "Segment":
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(s.value for s in cls)
            raise ContractError(f"unknown segment {value!r}; allowed: {allowed}") from None


# fixed order for integer-coded segments in replay batches and columnar files (append only!)
SEGMENT_ORDER: tuple[Segment, ...] = (
    Segment.AUTONOMOUS,
    Segment.PRE_INTERVENTION,
    Segment.RECOVERY,
    Segment.CORRECTION,
    Segment.DEMO,
    Segment.PERTURBATION,
)
SEGMENT_INDEX = {s: i for i, s in enumerate(SEGMENT_ORDER)}

INTERVENTION_SEGMENTS = frozenset({Segment.RECOVERY, Segment.CORRECTION})
HUMAN_SEGMENTS = frozenset({Segment.RECOVERY, Segment.CORRECTION, Segment.DEMO, Segment.PERTURBATION})


class Source(str, enum.Enum):
    POLICY = "policy"
    HUMAN = "human"

    @classmethod
    def parse(cls, value: "Source | str") -> "Source":
        try:
            return cls(value)
        except ValueError:
            raise ContractError(f"unknown source {value!r}; allowed: policy, human") from None


class OperatorMode(str, enum.Enum):
    """What the operator is doing right now; the controller's arbitration reads it every tick."""

    AUTONOMOUS = "autonomous"  # hands off: the policy drives
    TAKEOVER = "takeover"  # operator drives the DoFs in `dof_mask` (all of them by default)
    PERTURBATION = "perturbation"  # operator drives, on purpose away from the task


# ----------------------------------------------------------------------------- validation helpers


def validate_action(action: Any, *, name: str = "action") -> np.ndarray:
    """Return ``action`` as float32[7]; raise ContractError on wrong shape. Does NOT clip or
    touch NaN: the safety filter decides what to do with non-finite or out-of-range values."""
    arr = np.asarray(action, dtype=np.float32)
    if arr.shape != (ACTION_DIM,):
        raise ContractError(f"{name} must have shape ({ACTION_DIM},) [dx,dy,dz,drx,dry,drz,gripper], got {arr.shape}")
    return arr


def validate_chunk(actions: Any, *, name: str = "actions") -> np.ndarray:
    """Return an action chunk as float32[H, 7] (H >= 1)."""
    arr = np.asarray(actions, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != ACTION_DIM or arr.shape[0] < 1:
        raise ContractError(f"{name} must have shape [H, {ACTION_DIM}] with H >= 1, got {arr.shape}")
    return arr


def validate_observation(obs: Mapping[str, Any], *, cameras: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Check an observation dict against the contract and return it (arrays as numpy).

    cameras: if given, each ``images/<camera>`` must be present.
    """
    if not isinstance(obs, Mapping):
        raise ContractError(f"observation must be a dict, got {type(obs).__name__}")
    out: dict[str, Any] = dict(obs)
    if "state" not in out:
        raise ContractError("observation is missing 'state' (float32[15], see hil_robot.types.STATE_LAYOUT)")
    state = np.asarray(out["state"], dtype=np.float32)
    if state.shape != (STATE_DIM,):
        raise ContractError(f"observation 'state' must have shape ({STATE_DIM},), got {state.shape}")
    out["state"] = state
    if not isinstance(out.get("prompt", ""), str):
        raise ContractError("observation 'prompt' must be a str")
    out.setdefault("prompt", "")
    ts = out.get("timestamp_s")
    if ts is None or not isinstance(ts, (int, float, np.floating)) or not math.isfinite(float(ts)):
        raise ContractError(f"observation 'timestamp_s' must be a finite number of seconds, got {ts!r}")
    out["timestamp_s"] = float(ts)
    for key, value in out.items():
        if key.startswith(IMAGE_PREFIX):
            img = np.asarray(value)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ContractError(f"observation {key!r} must be uint8 [H, W, 3], got {img.dtype} {img.shape}")
            out[key] = img
    for cam in cameras or ():
        if IMAGE_PREFIX + cam not in out:
            raise ContractError(f"observation is missing camera {IMAGE_PREFIX + cam!r}; has {camera_names(out)}")
    return out


def camera_names(obs: Mapping[str, Any]) -> list[str]:
    return sorted(k[len(IMAGE_PREFIX) :] for k in obs if k.startswith(IMAGE_PREFIX))


# ----------------------------------------------------------------------------- records


@dataclasses.dataclass
class StepRecord:
    """One control tick, as the controller emits it and the episode store keeps it.

    ``observation`` is the observation the action was chosen from (images included). The next
    observation is the next record's observation; the store and replay handle episode ends.
    ``action_policy`` is what the policy wanted (NaN-filled when no policy output was available),
    ``action_executed`` what the safety filter actually sent.
    """

    episode_id: str
    step: int  # 0-based index within the episode
    observation: dict[str, Any]
    action_executed: np.ndarray  # float32[7]
    action_policy: np.ndarray  # float32[7], NaN where the policy gave nothing
    source: Source
    segment: Segment
    instruction: str
    policy_version: int = -1  # -1 = no policy output used this tick
    reward: float = 0.0
    critic_progress: float = float("nan")  # Δprogress from the critic, NaN if not evaluated
    done: bool = False  # episode ended after this step (success, failure or critic done)
    truncated: bool = False  # ended by the time limit (bootstrap through it)
    success: bool = False
    timestamp_s: float = 0.0  # when the action was sent (controller clock)
    obs_timestamp_s: float = 0.0  # when the observation was taken (producer clock)
    operator_id: str = ""
    device_id: str = ""
    safety_flags: tuple[str, ...] = ()  # limits that fired on this tick, e.g. ("workspace", "step_pos")
    language_correction: str = ""  # text the operator attached at this step (empty if none)
    # DSRL: the initial noise (flattened float32[H*D]) the served flow policy integrated the chunk
    # from, on the tick whose observation chose it (the chunk's first row); None on every other tick
    policy_noise: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.action_executed = validate_action(self.action_executed, name="action_executed")
        self.action_policy = validate_action(self.action_policy, name="action_policy")
        if self.policy_noise is not None:
            noise = np.asarray(self.policy_noise, dtype=np.float32).reshape(-1)
            if noise.size == 0 or not np.isfinite(noise).all():
                raise ContractError(f"policy_noise must be a non-empty finite array (the chunk's initial noise), got "
                                    f"{noise.size} values{'' if noise.size == 0 else ' with NaN/inf'}")
            self.policy_noise = noise
        self.source = Source.parse(self.source)
        self.segment = Segment.parse(self.segment)
        self.safety_flags = tuple(self.safety_flags)
        if self.step < 0:
            raise ContractError(f"step must be >= 0, got {self.step}")

    @property
    def is_intervention(self) -> bool:
        return self.segment in INTERVENTION_SEGMENTS

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (numpy arrays kept) for msgpack/numpy codecs — never pickle."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["source"] = self.source.value
        d["segment"] = self.segment.value
        d["safety_flags"] = list(self.safety_flags)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StepRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ContractError(f"step record has unknown fields {sorted(unknown)}; allowed: {sorted(names)}")
        return cls(**dict(d))


@dataclasses.dataclass
class EpisodeMeta:
    """Per-episode metadata written when an episode is finalised."""

    episode_id: str
    task: str
    instruction: str
    robot: str = "sim"
    operator: str = ""
    success: bool = False
    num_steps: int = 0
    segment_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    num_interventions: int = 0  # number of takeovers (not steps)
    start_time_s: float = 0.0  # wall clock (time.time)
    end_time_s: float = 0.0
    seed: int | None = None
    policy_versions: list[int] = dataclasses.field(default_factory=list)  # distinct versions used
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EpisodeMeta":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ContractError(f"episode metadata has unknown fields {sorted(unknown)}; allowed: {sorted(names)}")
        return cls(**dict(d))


@dataclasses.dataclass
class OperatorCommand:
    """What an operator (person with a device, or the simulated operator) asks of the controller.

    ``action`` is a normalised EE delta like a policy action (or None with ``pose_target`` set).
    ``dof_mask[i]`` True means the operator owns DoF i this tick (all True = full takeover).
    """

    timestamp_s: float
    mode: OperatorMode = OperatorMode.AUTONOMOUS
    action: np.ndarray | None = None  # float32[7] normalised delta
    pose_target: np.ndarray | None = None  # float32[8]: pos[3] m, quat[4] wxyz, gripper[1] in [-1, 1]
    dof_mask: np.ndarray = dataclasses.field(default_factory=lambda: np.ones(ACTION_DIM, dtype=bool))
    segment: Segment | None = None  # recovery / correction / perturbation while not autonomous
    mark: str = ""  # "" | "success" | "failure": ends the episode with that outcome
    language_correction: str = ""  # new instruction text, attached to the segment
    estop: bool = False
    operator_id: str = ""
    device_id: str = ""

    def __post_init__(self) -> None:
        self.mode = OperatorMode(self.mode)
        if self.action is not None:
            self.action = validate_action(self.action, name="operator action")
        if self.pose_target is not None:
            pt = np.asarray(self.pose_target, dtype=np.float32)
            if pt.shape != (8,):
                raise ContractError(f"pose_target must be float32[8] (pos, quat wxyz, gripper), got {pt.shape}")
            self.pose_target = pt
        mask = np.asarray(self.dof_mask, dtype=bool)
        if mask.shape != (ACTION_DIM,):
            raise ContractError(f"dof_mask must have shape ({ACTION_DIM},), got {mask.shape}")
        self.dof_mask = mask
        if self.segment is not None:
            self.segment = Segment.parse(self.segment)
        if self.mark not in ("", "success", "failure"):
            raise ContractError(f"mark must be '', 'success' or 'failure', got {self.mark!r}")


@dataclasses.dataclass(frozen=True)
class SentAction:
    """What ``Robot.send_action`` actually commanded, after clipping and safety limits."""

    action: np.ndarray  # float32[7], the command actually applied
    limits: tuple[str, ...] = ()  # names of limits that fired, e.g. ("workspace", "nan_hold")

    @property
    def clipped(self) -> bool:
        return bool(self.limits)


# ----------------------------------------------------------------------------- protocols


@runtime_checkable
class Policy(Protocol):
    """Anything that produces action chunks. Wrappers (remote client, chunk executor, recorder,
    intervention mux) are policies too."""

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        """obs: the observation dict above -> {"actions": float32[H, 7], "policy_version": int, ...}."""
        ...

    def reset(self) -> None:
        """Forget per-episode state (queued actions, history)."""
        ...

    @property
    def metadata(self) -> dict[str, Any]:
        """Static facts: {"name", "action_horizon", "action_dim", "cameras", "policy_version", ...}."""
        ...


@runtime_checkable
class Robot(Protocol):
    """A sim or real arm. Each implementation is a context manager (connect on enter, stop on exit)."""

    def connect(self) -> None: ...

    def observe(self) -> dict[str, Any]:
        """Latest observation (contract above), with its own ``timestamp_s``."""
        ...

    def send_action(self, action: np.ndarray) -> SentAction:
        """Apply a normalised EE delta float32[7]; return what was actually sent after clipping."""
        ...

    def stop(self) -> None:
        """Hold position and stop motion now (safe to call repeatedly, from any state)."""
        ...

    @property
    def metadata(self) -> dict[str, Any]:
        """{"name", "cameras", "image_hw", "control_hz", "action_dim", ...}."""
        ...


@runtime_checkable
class WeightUpdatable(Protocol):
    """A policy whose weights the weight bus can swap (in-process, or inside the policy server).

    Swaps happen between ``infer`` calls only (a chunk boundary), never during one.
    """

    def weight_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """name -> (shape, numpy dtype string) of every tensor the bus may replace."""
        ...

    def load_weights(self, weights: dict[str, np.ndarray], version: int) -> None:
        """Install already-validated weights atomically and report ``version`` from then on."""
        ...
