"""Transport settings (DESIGN §5). Default bind is loopback; crossing machines needs CURVE keys.

Servers (policy server, weight publisher, transition receiver) bind ``bind_host``; clients
connect to ``host``. Binding anything but a loopback address without ``curve_keys_dir`` is refused
unless ``allow_insecure`` is set explicitly.
"""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import ConfigError, choice, in_range, positive

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclasses.dataclass
class TransportConfig:
    host: str = "127.0.0.1"  # address clients connect to
    bind_host: str = "127.0.0.1"  # address servers bind (0.0.0.0 / a NIC needs CURVE keys)
    policy_port: int = 5555
    weights_port: int = 5556
    transitions_port: int = 5557
    request_timeout_s: float = 2.0  # per policy request; the client raises TransportTimeout after it
    request_retries: int = 0  # re-sends after a timeout (reconnecting with backoff in between)
    reconnect_backoff_max_s: float = 2.0  # upper bound of the exponential reconnect backoff
    max_frame_bytes: int = 256 * 1024 * 1024  # larger frames are rejected with an error reply
    curve_keys_dir: str = ""  # "" = no CURVE (loopback only); else a dir made by `hil-robot keys`
    curve_key_name: str = ""  # own key pair in curve_keys_dir ("" = "server" when binding, else "client")
    curve_server_key: str = "server"  # the server's public key name (clients)
    allow_insecure: bool = False  # permit a non-loopback bind without CURVE (trusted networks only)
    heartbeat_s: float = 0.5  # liveness ping period; a peer silent for 3x this is reported gone
    subscribe_weights: bool = False  # policy server: follow the learner's weight bus
    max_batch: int = 8  # policy server: simultaneous infer requests merged into one infer_batch call
    batch_window_s: float = 0.0  # policy server: extra wait to gather a batch (0 = only what is queued)
    weight_chunk_bytes: int = 8 * 1024 * 1024  # weight bus message size
    weight_checksum: str = "xxh3_128"  # xxh3_128 | sha256
    transition_queue: int = 1024  # sender queue bound (steps not yet sent)
    transition_window: int = 256  # steps in flight without acknowledgement
    transition_on_full: str = "block"  # block (backpressure, counted) | drop_oldest | drop_newest
    transition_block_s: float = 1.0  # longest a full queue blocks the caller before dropping

    def __post_init__(self) -> None:
        for k in ("policy_port", "weights_port", "transitions_port"):
            in_range(f"transport.{k}", getattr(self, k), 0, 65535)
        for k in ("request_timeout_s", "max_frame_bytes", "heartbeat_s", "reconnect_backoff_max_s", "max_batch",
                  "weight_chunk_bytes", "transition_queue", "transition_window"):
            positive(f"transport.{k}", getattr(self, k))
        positive("transport.request_retries", self.request_retries, allow_zero=True)
        positive("transport.batch_window_s", self.batch_window_s, allow_zero=True)
        positive("transport.transition_block_s", self.transition_block_s, allow_zero=True)
        choice("transport.weight_checksum", self.weight_checksum, ("xxh3_128", "sha256"))
        choice("transport.transition_on_full", self.transition_on_full, ("block", "drop_oldest", "drop_newest"))
        if self.bind_host not in LOOPBACK_HOSTS and not self.curve_keys_dir and not self.allow_insecure:
            raise ConfigError(
                f"transport.bind_host={self.bind_host!r} exposes endpoints beyond this machine without encryption; "
                "generate keys with `hil-robot keys dir=keys` and set transport.curve_keys_dir=keys "
                "(or set transport.allow_insecure=true on a trusted network)"
            )
