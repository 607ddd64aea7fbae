"""Transport settings (DESIGN §5). Default bind is loopback; crossing machines needs CURVE keys."""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import in_range, positive


@dataclasses.dataclass
class TransportConfig:
    host: str = "127.0.0.1"
    policy_port: int = 5555
    weights_port: int = 5556
    transitions_port: int = 5557
    request_timeout_s: float = 2.0
    max_frame_bytes: int = 256 * 1024 * 1024
    curve_keys_dir: str = ""  # "" = no CURVE (loopback only); else a dir made by `hil-robot keys`
    heartbeat_s: float = 0.5

    def __post_init__(self) -> None:
        for k in ("policy_port", "weights_port", "transitions_port"):
            in_range(f"transport.{k}", getattr(self, k), 0, 65535)
        positive("transport.request_timeout_s", self.request_timeout_s)
        positive("transport.max_frame_bytes", self.max_frame_bytes)
        positive("transport.heartbeat_s", self.heartbeat_s)
