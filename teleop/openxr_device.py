"""VR controllers through OpenXR (pyopenxr, ``import xr``) — a PC VR runtime such as Monado or
SteamVR with a headset tethered to the teleop machine.

The node renders nothing, so it asks for a headless session (``XR_MND_headless``): instance ->
system -> session without a graphics binding -> one action set (grip and aim poses, trigger,
squeeze, A/B/X/Y, thumbstick, thumbstick click, both hands) -> a frame loop on its own thread that
syncs actions and calls ``xrLocateSpace`` for each controller at the predicted display time.
A runtime without headless support, or no runtime at all, raises :class:`DeviceUnavailableError`
with what to do (``hil-robot teleop`` then falls back to the WebXR page).
"""

from __future__ import annotations

import ctypes
import logging
import math
import threading
import time
from typing import Any

import numpy as np

from teleop.base import Clock, Device, DeviceUnavailableError, OperatorInput
from teleop.vr import ControllerState, vr_input

log = logging.getLogger(__name__)

HANDS = ("left", "right")
PROFILE = "/interaction_profiles/oculus/touch_controller"
# action name -> (action type name, {hand: input path suffix})
ACTIONS: dict[str, tuple[str, dict[str, str]]] = {
    "grip_pose": ("POSE_INPUT", {"left": "grip/pose", "right": "grip/pose"}),
    "aim_pose": ("POSE_INPUT", {"left": "aim/pose", "right": "aim/pose"}),
    "trigger": ("FLOAT_INPUT", {"left": "trigger/value", "right": "trigger/value"}),
    "squeeze": ("FLOAT_INPUT", {"left": "squeeze/value", "right": "squeeze/value"}),
    "primary": ("BOOLEAN_INPUT", {"left": "x/click", "right": "a/click"}),
    "secondary": ("BOOLEAN_INPUT", {"left": "y/click", "right": "b/click"}),
    "stick_click": ("BOOLEAN_INPUT", {"left": "thumbstick/click", "right": "thumbstick/click"}),
    "thumbstick": ("VECTOR2F_INPUT", {"left": "thumbstick", "right": "thumbstick"}),
}
RUNTIME_HELP = (
    "no OpenXR runtime is active. Start one (e.g. `monado-service`, or SteamVR with its OpenXR runtime "
    "set active), or point XR_RUNTIME_JSON at its manifest — or use device=webxr, which needs only a "
    "headset browser"
)


class OpenXRDevice(Device):
    kind = "openxr"
    pose_based = True

    def __init__(
        self, *, hand: str = "right", headless: bool = True, app_name: str = "hil_robot teleop",
        stale_s: float = 0.1, clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.hand = hand
        self.headless = headless
        self.app_name = app_name
        self.stale_s = stale_s
        self._lock = threading.Lock()
        self._controllers: dict[str, ControllerState] = {}
        self._sample_s = -math.inf
        self.frames = 0
        self.runtime_name = ""
        self.session_state = "UNKNOWN"
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        self._stop.clear()
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="openxr", daemon=True)
        self._thread.start()  # every OpenXR call happens on this one thread
        if not self._ready.wait(10.0):
            self.close()
            raise DeviceUnavailableError("the OpenXR runtime did not create a session within 10 s")
        if self._error is not None:
            err, self._error = self._error, None
            self.close()
            if isinstance(err, DeviceUnavailableError):
                raise err
            raise DeviceUnavailableError(f"OpenXR failed: {err}") from err

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def read(self) -> OperatorInput:
        now = self.clock()
        with self._lock:
            ctrls, t = dict(self._controllers), self._sample_s
        if now - t > self.stale_s:
            return OperatorInput(timestamp_s=t if math.isfinite(t) else now, tracking_valid=False)
        return vr_input(ctrls, self.hand, t)

    # ------------------------------------------------------------------ OpenXR thread
    def _run(self) -> None:
        try:
            import xr
        except ImportError as e:
            self._error = DeviceUnavailableError("pyopenxr is missing: pip install 'hil-robot[teleop]'")
            self._error.__cause__ = e
            self._ready.set()
            return
        handles: dict[str, Any] = {}
        try:
            self._setup(xr, handles)
            self._ready.set()
            self._loop(xr, handles)
        except BaseException as e:  # surfaced by open(), or logged when the loop dies later
            if not self._ready.is_set():
                self._error = self._explain(xr, e)
                self._ready.set()
            else:
                log.error("OpenXR loop stopped: %s", e)
        finally:
            self._teardown(xr, handles)
            with self._lock:
                self._controllers = {}

    def _explain(self, xr: Any, e: BaseException) -> BaseException:
        if isinstance(e, xr.RuntimeUnavailableError) or isinstance(e, xr.RuntimeFailureError):
            return DeviceUnavailableError(f"{RUNTIME_HELP} ({type(e).__name__})")
        return e

    def _setup(self, xr: Any, h: dict[str, Any]) -> None:
        names = {e.extension_name.decode() if isinstance(e.extension_name, bytes) else e.extension_name
                 for e in xr.enumerate_instance_extension_properties()}
        if xr.MND_HEADLESS_EXTENSION_NAME not in names or not self.headless:
            raise DeviceUnavailableError(
                "this OpenXR runtime offers no headless session (XR_MND_headless), and the teleop node "
                "renders nothing; use Monado, or device=webxr"
            )
        h["instance"] = inst = xr.create_instance(xr.InstanceCreateInfo(
            application_info=xr.ApplicationInfo(application_name=self.app_name, engine_name="hil_robot"),
            enabled_extension_names=[xr.MND_HEADLESS_EXTENSION_NAME],
        ))
        props = xr.get_instance_properties(inst)
        self.runtime_name = props.runtime_name.decode() if isinstance(props.runtime_name, bytes) else str(props.runtime_name)
        system = xr.get_system(inst, xr.SystemGetInfo(form_factor=xr.FormFactor.HEAD_MOUNTED_DISPLAY))
        h["session"] = session = xr.create_session(inst, xr.SessionCreateInfo(system_id=system))
        self.hand_paths = {hand: xr.string_to_path(inst, f"/user/hand/{hand}") for hand in HANDS}
        h["action_set"] = aset = xr.create_action_set(inst, xr.ActionSetCreateInfo(
            action_set_name="teleop", localized_action_set_name="Teleoperation", priority=0))
        self.actions: dict[str, Any] = {}
        bindings = []
        for name, (type_name, paths) in ACTIONS.items():
            act = xr.create_action(aset, xr.ActionCreateInfo(
                action_name=name, action_type=getattr(xr.ActionType, type_name),
                subaction_paths=list(self.hand_paths.values()), localized_action_name=name.replace("_", " ")))
            self.actions[name] = act
            for hand, suffix in paths.items():
                bindings.append(xr.ActionSuggestedBinding(act, xr.string_to_path(inst, f"/user/hand/{hand}/input/{suffix}")))
        xr.suggest_interaction_profile_bindings(inst, xr.InteractionProfileSuggestedBinding(
            interaction_profile=xr.string_to_path(inst, PROFILE), suggested_bindings=bindings))
        xr.attach_session_action_sets(session, xr.SessionActionSetsAttachInfo(action_sets=[aset]))
        h["space"] = xr.create_reference_space(session, xr.ReferenceSpaceCreateInfo(
            reference_space_type=xr.ReferenceSpaceType.LOCAL, pose_in_reference_space=xr.Posef()))
        self.spaces: dict[tuple[str, str], Any] = {}
        for hand in HANDS:
            for kind in ("grip_pose", "aim_pose"):
                self.spaces[(hand, kind)] = xr.create_action_space(session, xr.ActionSpaceCreateInfo(
                    action=self.actions[kind], subaction_path=self.hand_paths[hand], pose_in_action_space=xr.Posef()))
        self.device_id = f"openxr:{self.runtime_name}:{self.hand}"
        log.info("OpenXR runtime %r: headless session created", self.runtime_name)

    def _poll(self, xr: Any, h: dict[str, Any]) -> None:
        buf = xr.EventDataBuffer()
        while xr.raw_functions.xrPollEvent(h["instance"], ctypes.byref(buf)) == xr.Result.SUCCESS:
            if buf.type == xr.StructureType.EVENT_DATA_SESSION_STATE_CHANGED:
                ev = ctypes.cast(ctypes.byref(buf), ctypes.POINTER(xr.EventDataSessionStateChanged)).contents
                state = xr.SessionState(ev.state)
                self.session_state = state.name
                if state == xr.SessionState.READY:
                    xr.begin_session(h["session"], xr.SessionBeginInfo(xr.ViewConfigurationType.PRIMARY_STEREO))
                    h["running"] = True
                elif state == xr.SessionState.STOPPING:
                    xr.end_session(h["session"])
                    h["running"] = False
                elif state in (xr.SessionState.EXITING, xr.SessionState.LOSS_PENDING):
                    h["exit"] = True
            elif buf.type == xr.StructureType.EVENT_DATA_INSTANCE_LOSS_PENDING:
                h["exit"] = True
            buf = xr.EventDataBuffer()

    def _loop(self, xr: Any, h: dict[str, Any]) -> None:
        session = h["session"]
        deadline = math.inf
        while not h.get("exit"):
            if self._stop.is_set():
                deadline = min(deadline, time.monotonic() + 2.0)
                if time.monotonic() > deadline:  # runtime never confirmed the exit: leave anyway
                    return
            self._poll(xr, h)
            if self._stop.is_set() and h.get("running") and not h.get("exit_requested"):
                xr.request_exit_session(session)
                h["exit_requested"] = True
            if not h.get("running"):
                if self._stop.is_set() and not h.get("exit_requested"):
                    return
                time.sleep(0.005)
                continue
            state = xr.wait_frame(session)
            xr.begin_frame(session)
            if self.session_state == "FOCUSED":
                self._sample(xr, h, state.predicted_display_time)
            xr.end_frame(session, xr.FrameEndInfo(
                display_time=state.predicted_display_time, environment_blend_mode=xr.EnvironmentBlendMode.OPAQUE))
            self.frames += 1

    def _sample(self, xr: Any, h: dict[str, Any], display_time: int) -> None:
        session = h["session"]
        try:
            xr.sync_actions(session, xr.ActionsSyncInfo(active_action_sets=[xr.ActiveActionSet(h["action_set"], xr.NULL_PATH)]))
        except xr.SessionNotFocused:  # focus moved away this frame (e.g. exiting): keep the last sample
            return
        ctrls: dict[str, ControllerState] = {}
        for hand in HANDS:
            sub = self.hand_paths[hand]

            def get(fn: Any, name: str) -> Any:
                return fn(session, xr.ActionStateGetInfo(action=self.actions[name], subaction_path=sub))

            poses = {}
            for kind in ("grip_pose", "aim_pose"):
                loc = xr.locate_space(self.spaces[(hand, kind)], h["space"], display_time)
                ok = loc.location_flags & xr.SpaceLocationFlags.POSITION_VALID_BIT and \
                    loc.location_flags & xr.SpaceLocationFlags.ORIENTATION_VALID_BIT
                p, q = loc.pose.position, loc.pose.orientation
                poses[kind] = np.array([p.x, p.y, p.z, q.w, q.x, q.y, q.z]) if ok else None
            stick = get(xr.get_action_state_vector2f, "thumbstick").current_state
            ctrls[hand] = ControllerState(
                grip=poses["grip_pose"], aim=poses["aim_pose"],
                trigger=float(get(xr.get_action_state_float, "trigger").current_state),
                squeeze=float(get(xr.get_action_state_float, "squeeze").current_state),
                primary=bool(get(xr.get_action_state_boolean, "primary").current_state),
                secondary=bool(get(xr.get_action_state_boolean, "secondary").current_state),
                stick_click=bool(get(xr.get_action_state_boolean, "stick_click").current_state),
                thumbstick=(float(stick.x), float(stick.y)), valid=poses["grip_pose"] is not None,
            )
        with self._lock:
            self._controllers = ctrls
            self._sample_s = self.clock()

    def _teardown(self, xr: Any, h: dict[str, Any]) -> None:
        try:
            for space in getattr(self, "spaces", {}).values():
                xr.destroy_space(space)
            if "space" in h:
                xr.destroy_space(h["space"])
            if "action_set" in h:
                xr.destroy_action_set(h["action_set"])
            if "session" in h:
                xr.destroy_session(h["session"])
            if "instance" in h:
                xr.destroy_instance(h["instance"])
        except Exception as e:  # teardown must not mask the original error
            log.warning("OpenXR teardown: %s", e)
        self.spaces = {}
