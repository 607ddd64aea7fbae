"""``hil-robot learner`` and ``hil-robot train-bc``.

    hil-robot learner store=runs/x/store run_dir=runs/x/learner learner=rlpd learner.utd_ratio=2
    hil-robot train-bc store=runs/demos out=runs/bc_policy steps=2000 policy.head=flow
    torchrun --nproc_per_node 2 -m hil_robot learner store=... learner.device=cpu   # DDP

Options (key=value or --key value): ``store`` (one or more store folders, comma-separated),
``run_dir``, ``endpoint`` (weight bus PUB endpoint, bound; default ``transport.bind_host`` :
``transport.weights_port``, with CURVE when ``transport.curve_keys_dir`` is set; ``none`` to not publish), ``resume``
(continue from the run's latest checkpoint), ``wait_s`` (how long to wait for data),
``wait_episodes`` (do not build the model before the stores hold this many finished episodes — so a
learner started while demos are still being recorded fits its normalisation on all of them); everything
else is a Hydra override (``learner.*``, ``policy.*``, ``experiment.*``).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from hil_robot.cli import parse_command_args
from hil_robot.config import ConfigError

log = logging.getLogger("hil_robot.learner")


def _stores(value: str, cfg: Any) -> list[str]:
    stores = [s for s in (value or f"{cfg.experiment.run_dir}/store").split(",") if s]
    missing = [s for s in stores if not Path(s).is_dir()]
    if missing:
        raise ConfigError(f"episode store(s) {missing} do not exist; record some first (hil-robot collect-demos "
                          f"store=...) or pass store=PATH[,PATH...]")
    return stores


def _stop_on_signals() -> threading.Event:
    """SIGTERM/SIGINT finish the current update, publish, checkpoint and exit 0; a second SIGINT
    interrupts at once."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.info("signal %d: stopping after this update (checkpoint + final publish)", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
    return stop


def wait_for_episodes(stores: list[str], n: int, timeout_s: float, stop: threading.Event) -> None:
    """Block until the stores hold ``n`` finished episodes (a learner started beside a demo
    collection): TimeoutError after ``timeout_s`` says how many there are."""
    import time

    from hil_robot.data import EpisodeStore, StoreError

    def count() -> int:
        total = 0
        for s in stores:
            try:
                total += len(EpisodeStore(s, read_only=True))
            except StoreError:  # not created yet by its writer: empty so far
                pass
        return total

    deadline = time.monotonic() + timeout_s
    while (have := count()) < n:
        if stop.is_set():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the stores {stores} hold {have} finished episodes after {timeout_s:.0f} s; "
                               f"wait_episodes={n}. Record episodes there first (hil-robot collect-demos) or lower wait_episodes")
        time.sleep(0.2)
    log.info("stores hold %d finished episodes (wait_episodes=%d): building the learner", have, n)


def learner(argv: list[str]) -> int:
    from hil_robot.learn import dist
    from hil_robot.learn.loop import main

    opts, cfg = parse_command_args(
        argv,
        options={"store": "", "run_dir": "", "endpoint": "", "resume": True, "wait_s": 600.0, "wait_episodes": 0},
        aliases={"algorithm": "learner.algorithm", "steps": "learner.max_updates"},
    )
    stores = _stores(opts["store"], cfg)
    from hil_robot.transport.links import tcp_endpoint
    from hil_robot.transport.security import check_bind_endpoint, keys_from_config

    # the learner *binds* the weight bus: transport.bind_host (loopback unless CURVE keys are set);
    # subscribers connect to transport.host
    t = cfg.transport
    endpoint = opts["endpoint"] or tcp_endpoint(t.bind_host, t.weights_port)
    curve = None
    if endpoint.lower() == "none":
        endpoint = None
    else:
        curve = keys_from_config(t, server=True)
        check_bind_endpoint(endpoint, curve, t.allow_insecure)
    stop = _stop_on_signals()
    if int(opts["wait_episodes"]) > 0:
        wait_for_episodes(stores, int(opts["wait_episodes"]), float(opts["wait_s"]), stop)
    try:
        summary = main(cfg, stores, opts["run_dir"] or None, endpoint=endpoint, resume=opts["resume"],
                       stop=stop, wait_for_data_s=opts["wait_s"], curve=curve)
        is_main = dist.is_main()
    finally:
        dist.cleanup()
    if is_main:
        print(json.dumps({k: v for k, v in summary.items() if k != "last_metrics"}))
    return 0


def train_bc(argv: list[str]) -> int:
    """Train the VLA with (weighted) BC for ``steps`` updates from a store and write a policy
    checkpoint to ``out`` (loadable with ``policy.checkpoint=OUT``)."""
    import shutil

    from hil_robot.learn import checkpoint as ckpt
    from hil_robot.learn import dist
    from hil_robot.learn.loop import main

    opts, cfg = parse_command_args(
        argv,
        options={"store": "", "out": "", "run_dir": "", "steps": 2000, "resume": False, "wait_s": 60.0},
        aliases={"algorithm": "learner.algorithm"},
    )
    if cfg.learner.algorithm not in ("weighted_bc", "bc"):
        raise ConfigError(f"train-bc trains the VLA with learner=weighted_bc or learner=bc, not {cfg.learner.algorithm}")
    cfg.learner.max_updates = int(opts["steps"])
    stores = _stores(opts["store"], cfg)
    run_dir = Path(opts["run_dir"] or f"{cfg.experiment.run_dir}/train_bc")
    out = Path(opts["out"] or run_dir / "policy")
    try:
        summary = main(cfg, stores, run_dir, endpoint=None, resume=opts["resume"], stop=_stop_on_signals(),
                       wait_for_data_s=opts["wait_s"])
        is_main = dist.is_main()
    finally:
        dist.cleanup()
    if not is_main:
        return 0
    last = ckpt.latest(run_dir)
    if last is None or not (last / "policy").is_dir():
        raise RuntimeError(f"training finished but {run_dir}/checkpoints has no policy checkpoint")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(last / "policy", out)
    print(json.dumps({"checkpoint": str(out), "step": summary["step"], "run_dir": str(run_dir)}))
    return 0
