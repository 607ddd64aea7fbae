"""Controller side beside the robot: the fixed-rate loop, chunk execution, human/policy
arbitration and the always-on safety filter (DESIGN §2, §6). Torch-free."""

from hil_robot.control.clock import Clock, FakeClock, MonotonicClock
from hil_robot.control.safety import SafetyDecision, SafetyFilter, SafetyLimits

__all__ = ["Clock", "FakeClock", "MonotonicClock", "SafetyDecision", "SafetyFilter", "SafetyLimits"]
