"""Controller side beside the robot: the fixed-rate loop, chunk execution, human/policy
arbitration, the action-space adapters for foreign policies and the always-on safety filter
(DESIGN §2, §6). Torch-free.

    from hil_robot.control import Controller, SafetyFilter
    ctl = Controller(robot, policy, operator, recorder, cfg, clock=MonotonicClock())
    ctl.run_episode(seed=0)          # one StepRecord per tick to the recorder
    ctl.estop("button"); ctl.reset_estop()
"""

from hil_robot.control.action_space import ActionAdapter, BadChunkError
from hil_robot.control.arbitration import Arbiter, Arbitration
from hil_robot.control.chunking import ChunkExecutor, PlannedAction
from hil_robot.control.clock import Clock, FakeClock, MonotonicClock
from hil_robot.control.loop import Controller, EpisodeResult
from hil_robot.control.safety import SafetyDecision, SafetyFilter, SafetyLimits

__all__ = [
    "ActionAdapter", "BadChunkError", "Arbiter", "Arbitration", "ChunkExecutor", "PlannedAction", "Clock", "FakeClock", "MonotonicClock",
    "Controller", "EpisodeResult", "SafetyDecision", "SafetyFilter", "SafetyLimits",
]
