"""Observation mapping: our observation dict -> the keys a foreign backend (openpi, GR00T, LeRobot)
expects, declared in config. Torch-free (numpy + OpenCV for resizing).

    policy.obs_map:
      observation/exterior_image_1_left: images/front|resize_pad:224x224
      observation/joint_position: state.joints
      observation/gripper_position: state.gripper|one_minus
      observation/state: state.ee_pos + state.ee_quat|quat_to_axis_angle + state.gripper
      prompt: prompt

    mapping = ObsMapping(cfg.policy.obs_map)
    backend_obs = mapping.apply(obs)          # {"observation/...": array, "prompt": str}
    our_obs = mapping.invert(backend_obs)     # the other way round (servers that speak a foreign protocol)

Syntax of a value: ``TERM [+ TERM ...]`` (the terms' arrays are concatenated along the last axis);
``TERM = SOURCE [|OP ...]``.

SOURCE
    ``prompt`` (the instruction string; alone), ``images/<camera>`` (uint8 [H, W, 3]), ``state.<name>``
    (a named slice of ``hil_robot.types.STATE_LAYOUT``: ee_pos, ee_quat, gripper, joints),
    ``<key>[a:b]`` (an index range of any array key, e.g. ``state[0:8]``), or ``<key>`` (the whole
    array, e.g. ``state`` or ``task_state``).
OP
    ``resize_pad:HxW`` (keep the aspect ratio, pad with zeros to H x W — what openpi clients do),
    ``resize:HxW`` (stretch), ``one_minus`` (1 - x: our gripper opening 1 = open becomes 1 = closed),
    ``quat_to_axis_angle`` ([w, x, y, z] -> rotation vector [3]), ``float32`` | ``float64`` | ``uint8``.

A wrong mapping fails at the first request with an ``ObsMappingError`` naming the backend key, the
source and the shape it found; a syntax error fails when the mapping is built.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import numpy as np

from hil_robot.types import IMAGE_PREFIX, STATE_DIM, STATE_LAYOUT


class ObsMappingError(ValueError):
    """A mapping that does not fit the observation (or cannot be parsed). Names key and shape."""


_SLICE = re.compile(r"^(?P<key>[A-Za-z0-9_/.\-]+?)\[(?P<a>-?\d*):(?P<b>-?\d*)\]$")
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_DTYPES = {"float32": np.float32, "float64": np.float64, "uint8": np.uint8}
_IMAGE_OPS = ("resize_pad", "resize")
_ARRAY_OPS = ("one_minus", "quat_to_axis_angle", *_DTYPES)


@dataclasses.dataclass(frozen=True)
class _Term:
    key: str  # source key in our observation
    start: int | None = None  # index range (None: the whole array)
    stop: int | None = None
    ops: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def is_prompt(self) -> bool:
        return self.key == "prompt"

    @property
    def is_image(self) -> bool:
        return self.key.startswith(IMAGE_PREFIX)

    def describe(self) -> str:
        rng = "" if self.start is None else f"[{self.start}:{self.stop}]"
        return self.key + rng + "".join(f"|{n}" + (":" + "x".join(map(str, a)) if a else "") for n, a in self.ops)

    def out_len(self) -> int | None:
        """Length of this term's last axis after the ops (None: known only from the data)."""
        if self.start is None or self.stop is None or self.start < 0 or self.stop < 0:
            return None
        n = self.stop - self.start
        return 3 if any(op == "quat_to_axis_angle" for op, _ in self.ops) else n


def _parse_term(text: str, target: str) -> _Term:
    parts = [p.strip() for p in text.split("|")]
    src, ops_text = parts[0], parts[1:]
    if not src:
        raise ObsMappingError(f"obs_map[{target!r}]: empty source in {text!r}")
    start = stop = None
    if src.startswith("state.") and src[len("state."):] in STATE_LAYOUT:
        start, stop = STATE_LAYOUT[src[len("state."):]]
        key = "state"
    elif src.startswith("state.") and "[" not in src:
        raise ObsMappingError(f"obs_map[{target!r}]: unknown state slice {src!r}; named slices: "
                              f"{', '.join('state.' + n for n in STATE_LAYOUT)} (or an index range like state[0:8])")
    elif (m := _SLICE.match(src)) is not None:
        key = m["key"]
        start = int(m["a"]) if m["a"] else 0
        stop = int(m["b"]) if m["b"] else None
        if stop is None:
            raise ObsMappingError(f"obs_map[{target!r}]: {src!r} needs an explicit end index ({key}[{start}:N])")
    else:
        key = src
    ops: list[tuple[str, tuple[int, ...]]] = []
    for op in ops_text:
        name, _, arg = op.partition(":")
        if name in _IMAGE_OPS:
            m = _SIZE.match(arg)
            if not m:
                raise ObsMappingError(f"obs_map[{target!r}]: {name} needs a size HxW, e.g. {name}:224x224; got {op!r}")
            ops.append((name, (int(m[1]), int(m[2]))))
        elif name in _ARRAY_OPS and not arg:
            ops.append((name, ()))
        else:
            raise ObsMappingError(f"obs_map[{target!r}]: unknown operation {op!r}; allowed: "
                                  f"{', '.join(o + ':HxW' for o in _IMAGE_OPS)}, {', '.join(_ARRAY_OPS)}")
    term = _Term(key, start, stop, tuple(ops))
    if term.is_prompt and (ops or start is not None):
        raise ObsMappingError(f"obs_map[{target!r}]: 'prompt' is a string and takes no index range or operation")
    if not term.is_image and any(n in _IMAGE_OPS for n, _ in ops):
        raise ObsMappingError(f"obs_map[{target!r}]: resize operations apply to images/<camera> sources only, not {src!r}")
    return term


def _parse(target: str, spec: Any) -> tuple[_Term, ...]:
    if not isinstance(spec, str) or not spec.strip():
        raise ObsMappingError(f"obs_map[{target!r}] must be a non-empty string like 'images/front' or 'state[0:8]', "
                              f"got {spec!r}")
    terms = tuple(_parse_term(t.strip(), target) for t in spec.split("+"))
    if len(terms) > 1 and any(t.is_prompt or t.is_image for t in terms):
        raise ObsMappingError(f"obs_map[{target!r}]: only arrays can be joined with '+' (not prompt or images): {spec!r}")
    return terms


def _resize(img: np.ndarray, height: int, width: int, pad: bool) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    if not pad:
        return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    ratio = max(w / width, h / height)
    rh, rw = max(1, int(h / ratio)), max(1, int(w / ratio))
    small = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((height, width, img.shape[2]), dtype=img.dtype)
    top, left = max(0, (height - rh) // 2), max(0, (width - rw) // 2)
    out[top:top + rh, left:left + rw] = small
    return out


def _quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    from hil_robot.rotations import quat_to_rotvec

    return np.asarray(quat_to_rotvec(q), dtype=np.float64)


def _rotvec_to_quat(v: np.ndarray) -> np.ndarray:
    from hil_robot.rotations import quat_from_rotvec

    return np.asarray(quat_from_rotvec(v), dtype=np.float64)


class ObsMapping:
    """A parsed ``policy.obs_map``: ``{backend_key: "TERM + TERM ..."}`` (see the module docstring)."""

    def __init__(self, spec: Mapping[str, str]) -> None:
        if not isinstance(spec, Mapping) or not spec:
            raise ObsMappingError("policy.obs_map is empty: declare which of our observation keys each backend key "
                                  "comes from, e.g. {observation/image: images/front, observation/state: state[0:8], "
                                  "prompt: prompt}")
        self.spec = {str(k): str(v) for k, v in spec.items()}
        self.entries = {k: _parse(k, v) for k, v in self.spec.items()}

    # ------------------------------------------------------------------ ours -> backend
    def apply(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """Our observation -> the backend's dict. Raises ObsMappingError naming key, source and shape."""
        out: dict[str, Any] = {}
        for target, terms in self.entries.items():
            if terms[0].is_prompt:
                value = obs.get("prompt", "")
                if not isinstance(value, str):
                    raise ObsMappingError(f"obs_map[{target!r}] <- 'prompt': expected a str, got {type(value).__name__}")
                out[target] = value
                continue
            parts = [self._term_value(target, t, obs) for t in terms]
            out[target] = parts[0] if len(parts) == 1 else self._concat(target, terms, parts)
        return out

    def _term_value(self, target: str, term: _Term, obs: Mapping[str, Any]) -> np.ndarray:
        if term.key not in obs:
            have = ", ".join(sorted(k for k in obs if k != "timestamp_s"))
            raise ObsMappingError(f"obs_map[{target!r}] <- {term.describe()!r}: the observation has no {term.key!r} "
                                  f"(it has: {have})")
        arr = np.asarray(obs[term.key])
        if term.is_image:
            if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
                raise ObsMappingError(f"obs_map[{target!r}] <- {term.key!r}: expected a uint8 [H, W, 3] image, "
                                      f"got {arr.dtype} {arr.shape}")
        elif arr.dtype.kind not in "biuf":
            raise ObsMappingError(f"obs_map[{target!r}] <- {term.key!r}: expected a numeric array, got {arr.dtype} {arr.shape}")
        if term.start is not None:
            n = arr.shape[-1] if arr.ndim else 0
            if arr.ndim == 0 or not (-n <= term.start < n) or term.stop is None or term.stop > n or term.stop < -n:
                raise ObsMappingError(f"obs_map[{target!r}] <- {term.describe()!r}: {term.key!r} has shape {arr.shape}, "
                                      f"too short for index range [{term.start}:{term.stop}]")
            arr = arr[..., term.start:term.stop]
            if arr.shape[-1] == 0:
                raise ObsMappingError(f"obs_map[{target!r}] <- {term.describe()!r}: empty index range on shape "
                                      f"{np.asarray(obs[term.key]).shape}")
        for name, args in term.ops:
            if name in _IMAGE_OPS:
                arr = _resize(arr, args[0], args[1], pad=name == "resize_pad")
            elif name == "one_minus":
                arr = 1.0 - arr.astype(np.float32 if arr.dtype != np.float64 else np.float64)
            elif name == "quat_to_axis_angle":
                if arr.shape[-1:] != (4,):
                    raise ObsMappingError(f"obs_map[{target!r}] <- {term.describe()!r}: quat_to_axis_angle needs "
                                          f"a [w, x, y, z] quaternion (last axis 4), got shape {arr.shape}")
                arr = _quat_to_rotvec(arr).astype(np.float32)
            else:
                arr = arr.astype(_DTYPES[name])
        return arr

    @staticmethod
    def _concat(target: str, terms: tuple[_Term, ...], parts: list[np.ndarray]) -> np.ndarray:
        try:
            return np.concatenate([np.atleast_1d(p) for p in parts], axis=-1)
        except ValueError:
            shapes = ", ".join(f"{t.describe()}: {p.shape}" for t, p in zip(terms, parts))
            raise ObsMappingError(f"obs_map[{target!r}]: terms joined with '+' have incompatible shapes ({shapes})") from None

    # ------------------------------------------------------------------ backend -> ours
    def invert(self, backend_obs: Mapping[str, Any], state_dim: int = STATE_DIM) -> tuple[dict[str, Any], np.ndarray]:
        """The backend's observation -> (our observation without ``timestamp_s``, filled[state_dim] bool).

        Image resizes are not undone (the image is taken as sent); ``one_minus`` and
        ``quat_to_axis_angle`` are. ``state`` entries the mapping does not cover stay 0 and are
        False in ``filled``. Raises ObsMappingError naming the backend key and shape."""
        obs: dict[str, Any] = {}
        state = np.zeros(state_dim, np.float32)
        filled = np.zeros(state_dim, bool)
        for target, terms in self.entries.items():
            if target not in backend_obs:
                have = ", ".join(sorted(map(str, backend_obs)))
                raise ObsMappingError(f"request has no {target!r} (expected keys: {', '.join(self.entries)}; got: {have})")
            value = backend_obs[target]
            if terms[0].is_prompt:
                if not isinstance(value, str):
                    raise ObsMappingError(f"{target!r} must be a str (the instruction), got {type(value).__name__}")
                obs["prompt"] = value
                continue
            arr = np.asarray(value)
            if terms[0].is_image:
                if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
                    raise ObsMappingError(f"{target!r} must be a uint8 [H, W, 3] image, got {arr.dtype} {arr.shape}")
                obs[terms[0].key] = arr
                continue
            if arr.dtype.kind not in "biuf" or arr.ndim != 1:
                raise ObsMappingError(f"{target!r} must be a 1-D numeric array, got {arr.dtype} {arr.shape}")
            lengths = [t.out_len() for t in terms]
            unknown = [i for i, n in enumerate(lengths) if n is None]
            if len(unknown) > 1:
                raise ObsMappingError(f"{target!r}: cannot split {self.spec[target]!r} back into its parts "
                                      "(more than one term without an index range)")
            if unknown:
                lengths[unknown[0]] = arr.shape[0] - sum(n for n in lengths if n is not None)
            if sum(lengths) != arr.shape[0] or min(lengths) < 1:  # type: ignore[type-var]
                raise ObsMappingError(f"{target!r} has shape {arr.shape}; the mapping {self.spec[target]!r} "
                                      f"expects {sum(n for n in lengths if n)} values")
            offset = 0
            for term, n in zip(terms, lengths):
                piece = arr[offset:offset + n].astype(np.float64)
                offset += n
                for name, _ in reversed(term.ops):
                    if name == "one_minus":
                        piece = 1.0 - piece
                    elif name == "quat_to_axis_angle":
                        piece = _rotvec_to_quat(piece)
                if term.key == "state":
                    start = 0 if term.start is None else term.start
                    stop = start + piece.shape[0]
                    if stop > state_dim:
                        raise ObsMappingError(f"{target!r}: {term.describe()!r} reaches past our state[{state_dim}]")
                    state[start:stop] = piece
                    filled[start:stop] = True
                elif term.start is None:
                    obs[term.key] = piece.astype(np.float32)
                else:
                    buf = obs.setdefault(term.key, np.zeros(max(term.stop or 0, 0), np.float32))
                    buf[term.start:term.start + piece.shape[0]] = piece
        obs["state"] = state
        return obs, filled
