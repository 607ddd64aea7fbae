"""Fixtures for the ROS 2 tests: ``hil_robot_ros`` importable from the source tree, an isolated
DDS domain per test session (loopback only), and a helper to spin nodes in-process."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

ROS_PKG = Path(__file__).resolve().parents[2] / "ros2_ws" / "src" / "hil_robot_ros"
if str(ROS_PKG) not in sys.path:
    sys.path.insert(0, str(ROS_PKG))

# one DDS domain per pytest process so parallel runs (and other helpers' runs) never cross-talk;
# 1..101 keeps clear of the default 0 and of the participant-port arithmetic limit (232)
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 101)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


@pytest.fixture
def rclpy_context():
    """rclpy initialised for one test (own context), shut down afterwards."""
    rclpy = pytest.importorskip("rclpy")
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    if ctx.ok():
        rclpy.shutdown(context=ctx)
