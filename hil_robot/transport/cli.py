"""``hil-robot serve-policy``, ``hil-robot keys`` and ``hil-robot receive-transitions``.

    hil-robot serve-policy policy=vla checkpoint=runs/x/ckpt            # 127.0.0.1:5555
    hil-robot serve-policy policy=expert transport=remote               # 0.0.0.0, CURVE keys required
    hil-robot serve-policy policy=vla transport.subscribe_weights=true  # follow the learner's weights
    hil-robot serve-policy policy=expert protocol=openpi port=8000      # openpi websocket front (openpi-client works)
    hil-robot serve-policy policy=vla protocol=groot obs_map=groot      # GR00T zmq protocol front
    hil-robot keys dir=keys names=server,client,robot2
    hil-robot receive-transitions store=runs/learner_store          # learner host, port 5557
"""

from __future__ import annotations

import gc
import importlib
import logging
import time
from typing import Any, Callable

from hil_robot.cli import parse_command_args
from hil_robot.config import ConfigError, RootConfig
from hil_robot.transport.links import tcp_endpoint
from hil_robot.transport.policy_server import PolicyServer
from hil_robot.transport.security import generate_keys, keys_from_config
from hil_robot.transport.serving import serve_until_stopped

log = logging.getLogger(__name__)


def _load_factory(spec: str) -> Callable[[RootConfig], Any]:
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise ConfigError(f"policy_factory={spec!r} must look like package.module:function")
    try:
        return getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"policy_factory={spec!r} cannot be loaded: {e}") from None


def build_policy(cfg: RootConfig, factory: str = "") -> Any:
    """The policy to serve: ``policies.registry.make_policy(cfg)`` unless a factory is named."""
    if factory:
        return _load_factory(factory)(cfg)
    try:
        from policies.registry import make_policy
    except ImportError as e:
        raise ConfigError(f"cannot import policies.registry ({e}); install the policies package (make setup)") from None
    return make_policy(cfg)


PROTOCOLS = ("hil", "openpi", "groot")


def serve_policy(argv: list[str]) -> int:
    """protocol: hil (our zmq, default) | openpi (websocket, port 8000 by default) | groot (GR00T zmq REQ/REP).
    obs_map (openpi/groot): the mapping the clients use, inverted to build our observation — a preset
    name (configs/policy/<protocol>_<name>.yaml, or <protocol>.yaml for ""), a YAML file, or
    policy.obs_map when that is set. api_key: required key (openpi Api-Key header / groot api_token)."""
    opts, cfg = parse_command_args(
        argv,
        options={"port": -1, "policy_factory": "", "max_seconds": 0.0, "status_every_s": 10.0,
                 "protocol": "hil", "obs_map": "", "api_key": ""},
        aliases={"checkpoint": "policy.checkpoint", "host": "transport.bind_host"},
    )
    if opts["protocol"] not in PROTOCOLS:
        raise ConfigError(f"protocol={opts['protocol']!r}; choose one of: {', '.join(PROTOCOLS)}")
    if cfg.policy.name == "lerobot" and not opts["policy_factory"]:  # served from the LeRobot env (Python 3.12)
        from hil_robot.lerobot_env import reexec_in_lerobot_env

        reexec_in_lerobot_env(cfg.policy, argv)
    t = cfg.transport
    if opts["protocol"] != "hil":
        return _serve_foreign(opts, cfg)
    port = t.policy_port if opts["port"] < 0 else opts["port"]
    policy = build_policy(cfg, opts["policy_factory"])
    weights = None
    if t.subscribe_weights:
        if not (callable(getattr(policy, "weight_spec", None)) and callable(getattr(policy, "load_weights", None))):
            raise ConfigError(f"transport.subscribe_weights=true but policy {cfg.policy.name!r} has no "
                              "weight_spec()/load_weights(); serve a weight-updatable policy or turn it off")
        from hil_robot.transport.weights import WeightSubscriber

        weights = WeightSubscriber(tcp_endpoint(t.host, t.weights_port), policy,
                                   curve=keys_from_config(t, server=False), heartbeat_s=t.heartbeat_s)
        log.info("following weights from %s", weights.endpoint)
    warm_up = getattr(policy, "warm_up", None)
    if callable(warm_up):  # pay the first inference's start-up cost before anyone is waiting on it
        log.info("policy warmed up in %.2f s", warm_up())
    server = PolicyServer(policy, tcp_endpoint(t.bind_host, port), curve=keys_from_config(t, server=True),
                          weights=weights, max_frame_bytes=t.max_frame_bytes, max_batch=t.max_batch,
                          batch_window_s=t.batch_window_s, heartbeat_s=t.heartbeat_s)
    explore = policy.metadata.get("explore") if isinstance(getattr(policy, "metadata", None), dict) else None
    print(f"serving policy {cfg.policy.name!r} on {server.endpoint} (CURVE {'on' if t.curve_keys_dir else 'off'}"
          f"{'' if explore is None else ', explore ' + ('on' if explore else 'off')})", flush=True)
    gc.freeze()  # the model and libraries are long-lived: keep them out of the collector's full passes
    try:
        serve_until_stopped(lambda: server.poll_once(t.heartbeat_s / 2), max_seconds=opts["max_seconds"],
                            status=server.status, status_every_s=opts["status_every_s"], logger=log)
    finally:
        server.link.close()
        if weights is not None:
            weights.close()
    return 0


def front_obs_map(protocol: str, spec: str, cfg: RootConfig) -> Any:
    """The ObsMapping a foreign-protocol front inverts (see ``serve_policy``)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from hil_robot.config import config_dir
    from hil_robot.obs_mapping import ObsMapping, ObsMappingError

    if not spec and cfg.policy.obs_map:
        mapping = dict(cfg.policy.obs_map)
    else:
        path = Path(spec) if spec.endswith((".yaml", ".yml")) else \
            config_dir() / "policy" / (f"{protocol}_{spec}.yaml" if spec else f"{protocol}.yaml")
        if not path.is_file():
            presets = sorted(p.stem for p in (config_dir() / "policy").glob(f"{protocol}*.yaml"))
            raise ConfigError(f"obs_map={spec!r}: no {path}; presets: {', '.join(presets) or 'none'} (or a YAML path)")
        mapping = dict(OmegaConf.to_container(OmegaConf.load(path), resolve=True).get("obs_map") or {})
    try:
        return ObsMapping(mapping)
    except ObsMappingError as e:
        raise ConfigError(str(e)) from None


def _serve_foreign(opts: dict[str, Any], cfg: RootConfig) -> int:
    """serve-policy protocol=openpi|groot: one of our policies behind a foreign VLA protocol."""
    protocol, t = opts["protocol"], cfg.transport
    from hil_robot.config.transport import LOOPBACK_HOSTS

    if t.bind_host not in LOOPBACK_HOSTS and not opts["api_key"] and not t.allow_insecure:
        raise ConfigError(f"protocol={protocol} on transport.bind_host={t.bind_host!r} has no encryption (CURVE does not "
                          "apply): set api_key=<secret> and reach it through an SSH tunnel or TLS proxy, or set "
                          "transport.allow_insecure=true on a trusted network")
    mapping = front_obs_map(protocol, opts["obs_map"], cfg)
    policy = build_policy(cfg, opts["policy_factory"])
    warm_up = getattr(policy, "warm_up", None)
    if callable(warm_up):
        log.info("policy warmed up in %.2f s", warm_up())
    if protocol == "openpi":
        from hil_robot.transport.openpi_server import OpenpiPolicyServer

        port = 8000 if opts["port"] < 0 else opts["port"]
        server: Any = OpenpiPolicyServer(policy, mapping, host=t.bind_host, port=port, api_key=opts["api_key"],
                                         max_frame_bytes=t.max_frame_bytes).start()
        where = server.url
    else:
        from hil_robot.transport.groot_server import GrootPolicyServer

        port = t.policy_port if opts["port"] < 0 else opts["port"]
        server = GrootPolicyServer(policy, mapping, tcp_endpoint(t.bind_host, port), api_token=opts["api_key"],
                                   protocol=cfg.policy.groot_protocol).start()
        where = server.endpoint
    print(f"serving policy {cfg.policy.name!r} on {where} ({protocol} protocol, obs keys "
          f"{', '.join(sorted(mapping.spec))}; api key {'required' if opts['api_key'] else 'off'})", flush=True)
    try:
        serve_until_stopped(lambda: time.sleep(0.1), max_seconds=opts["max_seconds"], status=server.status,
                            status_every_s=opts["status_every_s"], logger=log)
    finally:
        server.stop()
    return 0


def keys(argv: list[str]) -> int:
    opts, _ = parse_command_args(argv, options={"dir": "keys", "names": "server,client", "overwrite": False})
    names = [n.strip() for n in opts["names"].split(",") if n.strip()]
    try:
        written = generate_keys(opts["dir"], names, overwrite=opts["overwrite"])
    except (FileExistsError, ValueError) as e:
        raise ConfigError(str(e)) from None
    for path in written:
        print(path)
    print(f"copy public/*.key to every peer; keep private/<name>.key_secret only on the machine named <name>; "
          f"set transport.curve_keys_dir={opts['dir']} (clients: transport.curve_key_name=<name>)")
    return 0


def receive_transitions(argv: list[str]) -> int:
    """Learner host: bind the transition stream and persist everything into ``store`` (a Recorder)."""
    opts, cfg = parse_command_args(argv, options={"store": "", "port": -1, "pre_intervention_k": 15,
                                                  "image_codec": "jpeg", "max_seconds": 0.0, "status_every_s": 10.0})
    if not opts["store"]:
        raise ConfigError("receive-transitions needs store=<episode store directory>")
    from hil_robot.data import EpisodeStore, Recorder
    from hil_robot.transport.transitions import TransitionReceiver

    t = cfg.transport
    port = t.transitions_port if opts["port"] < 0 else opts["port"]
    store = EpisodeStore(opts["store"], image_codec=opts["image_codec"])
    from hil_robot.data.recorder import recorder_options

    recorder = Recorder(store, **{**recorder_options(cfg.learner), "pre_intervention_k": opts["pre_intervention_k"]})
    receiver = TransitionReceiver(recorder, tcp_endpoint(t.bind_host, port), curve=keys_from_config(t, server=True),
                                  heartbeat_s=t.heartbeat_s, max_frame_bytes=t.max_frame_bytes)
    print(f"receiving transitions on {receiver.endpoint} into {opts['store']}", flush=True)
    try:
        serve_until_stopped(lambda: receiver.poll_once(0.05), max_seconds=opts["max_seconds"],
                            status=receiver.status, status_every_s=opts["status_every_s"], logger=log)
    finally:
        receiver.link.close()
        recorder.close()
    return 0
