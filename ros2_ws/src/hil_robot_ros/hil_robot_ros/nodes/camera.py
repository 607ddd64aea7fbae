"""``camera`` node: a V4L2/USB camera -> ``camera/<name>/image_raw`` (Image), ``.../compressed``
(CompressedImage, optional) and ``camera/<name>/camera_info``. A lifecycle node: configure opens
the device (an error names it), activate starts the frame timer, deactivate/cleanup release it.

Parameters: camera_name, device (/dev/videoN or an index), width, height, rate_hz, frame_id,
publish_compressed, jpeg_quality, fovy_deg (or fx, fy), autostart.
"""

from __future__ import annotations

from typing import Any, Callable

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from hil_robot.config import RootConfig
from hil_robot_ros import convert, topics
from hil_robot_ros.capture import Capture, CameraError
from hil_robot_ros.node_base import Param, autostart_lifecycle, declare_params, positive, run_node

PARAMS = {
    "camera_name": Param("front", "name in topics and observations (images/<camera_name>)",
                         lambda v: None if isinstance(v, str) and v.isidentifier() else "must be an identifier"),
    "device": Param("/dev/video0", "V4L2 device path or OpenCV index", lambda v: None if v else "must not be empty"),
    "width": Param(640, "frame width in pixels", positive),
    "height": Param(480, "frame height in pixels", positive),
    "rate_hz": Param(30.0, "publish rate", positive),
    "frame_id": Param("", "header frame (default <camera_name>_optical_frame)"),
    "publish_compressed": Param(True, "also publish image_raw/compressed (jpeg)"),
    "jpeg_quality": Param(90, "jpeg quality 1..100", lambda v: None if 1 <= v <= 100 else "must be within 1..100"),
    "fovy_deg": Param(60.0, "vertical field of view for camera_info when fx/fy are 0", positive),
    "fx": Param(0.0, "focal length x in pixels (0 = from fovy_deg)"),
    "fy": Param(0.0, "focal length y in pixels (0 = from fovy_deg)"),
    "autostart": Param(True, "configure and activate on start (no lifecycle manager needed)"),
}


class CameraNode(LifecycleNode):
    def __init__(self, cfg: RootConfig, opener: Callable[[Any], Any] | None = None, name: str = "camera") -> None:
        super().__init__(name)
        self.cfg = cfg
        self.p = declare_params(self, PARAMS)
        self.frame_id = self.p["frame_id"] or f"{self.p['camera_name']}_optical_frame"
        self._opener = opener
        self.capture: Capture | None = None
        self.timer = None
        self.done, self.exit_code, self.last_error = False, 0, ""
        self.frames = 0
        self._group = MutuallyExclusiveCallbackGroup()  # frame grabbing blocks: keep it off the default group
        if self.p["autostart"]:
            autostart_lifecycle(self)

    # ---------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.p
        try:
            kwargs = {"opener": self._opener} if self._opener is not None else {}
            self.capture = Capture(p["device"], p["width"], p["height"], p["rate_hz"], **kwargs)
        except CameraError as e:
            self.last_error = str(e)
            self.get_logger().error(self.last_error)
            return TransitionCallbackReturn.FAILURE
        from hil_robot_ros.qos import SENSOR_QOS
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        cam = p["camera_name"]
        self.pub_image = self.create_lifecycle_publisher(Image, topics.image_topic(cam), SENSOR_QOS)
        self.pub_info = self.create_lifecycle_publisher(CameraInfo, topics.info_topic(cam), SENSOR_QOS)
        self.pub_compressed = (self.create_lifecycle_publisher(CompressedImage, topics.compressed_topic(cam), SENSOR_QOS)
                               if p["publish_compressed"] else None)
        self.get_logger().info(f"opened {p['device']} as camera '{cam}' ({p['width']}x{p['height']} @ {p['rate_hz']} Hz)")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.timer = self.create_timer(1.0 / self.p["rate_hz"], self._grab, callback_group=self._group)
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.timer is not None:
            self.destroy_timer(self.timer)
            self.timer = None
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    # ---------------------------------------------------------------- frames

    def _grab(self) -> None:
        if self.capture is None:
            return
        try:
            rgb = self.capture.read()
        except CameraError as e:
            self.get_logger().warning(str(e), throttle_duration_sec=2.0)
            if self.capture.dead:
                self.last_error, self.exit_code, self.done = str(e), 1, True  # the runner's restart policy takes over
            return
        stamp_ns = self.get_clock().now().nanoseconds
        self.pub_image.publish(convert.image_to_msg(rgb, stamp_ns, self.frame_id))
        if self.pub_compressed is not None:
            self.pub_compressed.publish(convert.image_to_compressed_msg(rgb, stamp_ns, self.frame_id, "jpeg",
                                                                        self.p["jpeg_quality"]))
        h, w = rgb.shape[:2]
        p = self.p
        fovy = None if (p["fx"] > 0 and p["fy"] > 0) else p["fovy_deg"]
        self.pub_info.publish(convert.camera_info_msg(h, w, stamp_ns, self.frame_id, fx=p["fx"], fy=p["fy"], fovy_deg=fovy))
        self.frames += 1

    def close(self) -> None:
        if self.capture is not None:
            self.capture.close()
            self.capture = None


def main(argv: list[str] | None = None) -> int:
    return run_node(lambda cfg: CameraNode(cfg), argv)
