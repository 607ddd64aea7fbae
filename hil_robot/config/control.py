"""Controller settings: loop timing, chunk execution, arbitration and logging (DESIGN §2).

Safety limits live with the robot (``robot.safety``) because they belong to the hardware; these
are the loop's own knobs.
"""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import ConfigError, choice, in_range, positive


@dataclasses.dataclass
class ControlConfig:
    obs_max_age_s: float = 0.25  # an observation older than this is not used: the tick holds
    request_lead_steps: int = 2  # ask for the next chunk when this many planned steps remain
    max_policy_wait_s: float = 0.04  # a tick with no planned action waits this long for a reply
    first_chunk_timeout_s: float = 15.0  # each episode gets its first chunk before tick 0 (0 = don't; tick 0 waits as above)
    temporal_ensembling: bool | None = None  # None: take policy.temporal_ensembling
    ensemble_decay: float = 0.01  # ACT weights exp(-decay * i), i = 0 for the oldest chunk
    handback_max_delta: float = 0.2  # normalised units per tick when the policy takes back over
    takeover_segment: str = "recovery"  # segment of a takeover that does not name one
    observe_lead_s: float = 0.0  # > 0: observe + decide this early, send exactly on the slot
    deadline_frac: float = 0.5  # a tick whose command reaches the robot later than this * period after its slot is a miss
    log_every_s: float = 10.0  # counters to the log this often (and at every episode end)
    rt_priority: int = 0  # 1..99: run the loop thread SCHED_FIFO (needs CAP_SYS_NICE); 0 = normal
    estop_key: str = "x"  # controller CLI: this key (then Enter) latches the e-stop
    reset_key: str = "r"  # ... and this one clears it (explicit reset)

    def __post_init__(self) -> None:
        positive("control.obs_max_age_s", self.obs_max_age_s)
        positive("control.request_lead_steps", self.request_lead_steps, allow_zero=True)
        positive("control.max_policy_wait_s", self.max_policy_wait_s, allow_zero=True)
        positive("control.first_chunk_timeout_s", self.first_chunk_timeout_s, allow_zero=True)
        positive("control.ensemble_decay", self.ensemble_decay, allow_zero=True)
        in_range("control.handback_max_delta", self.handback_max_delta, 1e-3, 2.0)
        choice("control.takeover_segment", self.takeover_segment, ("recovery", "correction"))
        positive("control.observe_lead_s", self.observe_lead_s, allow_zero=True)
        in_range("control.deadline_frac", self.deadline_frac, 0.01, 1.0)
        positive("control.log_every_s", self.log_every_s)
        in_range("control.rt_priority", self.rt_priority, 0, 99)
        for k in ("estop_key", "reset_key"):
            if len(getattr(self, k)) != 1:
                raise ConfigError(f"control.{k}={getattr(self, k)!r} must be a single character")
        if self.estop_key == self.reset_key:
            raise ConfigError("control.estop_key and control.reset_key must differ")
