"""``hil-robot`` command line. One plain dict maps each command to ``module:function``; modules are
imported only when their command runs, so ``hil-robot controller`` never imports torch.

Each command function takes ``argv: list[str]`` (everything after the command name) and returns an
exit code. Arguments are Hydra overrides (``sim.image_height=64``), command options
(``episodes=5``) and short aliases (``task=push_target`` -> ``sim.task=push_target``); see
``parse_command_args``.

``-v`` / ``--verbose`` (anywhere on the line) shows INFO logs on the console of the supervising
commands (``run``, ``launch``) and the traceback of an unexpected error; without it an error is one
line that says what to do. A process started by another hil_robot process ends when that one dies
(``hil_robot.procs.watch_parent``).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any, Callable, Mapping, Sequence

from hil_robot.config import ConfigError, RootConfig, load_config

COMMANDS: dict[str, tuple[str, str]] = {
    # name: ("module:function", one-line help)
    "sim-demo": ("sim.cli:sim_demo", "run the scripted expert (or a noisy one) under the simulated operator"),
    "collect-demos": ("hil_robot.data.cli:collect_demos", "record scripted-expert demos into an episode store"),
    "inspect": ("hil_robot.data.cli:inspect", "table of the episodes in a store"),
    "export": ("hil_robot.data.cli:export", "export a store (--format lerobot)"),
    "render": ("hil_robot.data.cli:render", "render an episode of a store to mp4"),
    "serve-policy": ("hil_robot.transport.cli:serve_policy", "host a policy behind a zmq endpoint"),
    "serve-critic": ("policies.critic_remote:serve_critic", "host the progress critic (critic.kind=small|vlm) behind a zmq endpoint"),
    "keys": ("hil_robot.transport.cli:keys", "generate ZMQ CURVE key pairs"),
    "receive-transitions": ("hil_robot.transport.cli:receive_transitions", "learner host: persist a remote controller's transition stream into a store"),
    "controller": ("hil_robot.control.cli:controller", "run the control loop against the sim robot"),
    "train-bc": ("hil_robot.learn.cli:train_bc", "train the VLA with (weighted) BC from a store"),
    "train-critic": ("hil_robot.learn.critic:train_critic_cli", "train the progress critic from a store (or sim rollouts)"),
    "learner": ("hil_robot.learn.cli:learner", "background learner: tail a store, train, publish weights"),
    "run": ("hil_robot.run:run", "the embedded sim human-in-the-loop run (main job)"),
    "eval": ("hil_robot.run:evaluate", "operator-free evaluation of a checkpoint"),
    "report": ("hil_robot.run:report", "redraw the plots of a run directory"),
    "teleop": ("teleop.cli:teleop", "drive the sim robot with an operator device"),
    "operator": ("hil_robot.transport.operator_link:operator_main", "host an operator source (simulated operator, device) for a remote controller"),
    "launch": ("hil_robot.launch:launch", "start an experiment's node graph as supervised processes"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: hil-robot COMMAND [key=value ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Any Hydra override (group=option, a.b=value) composes configs/ (see README).",
              "-v / --verbose: INFO logs on the console, tracebacks of errors."]
    return "\n".join(lines)


def parse_command_args(
    argv: Sequence[str],
    options: Mapping[str, Any] | None = None,
    aliases: Mapping[str, str] | None = None,
    positional: Sequence[str] = (),
) -> tuple[dict[str, Any], RootConfig]:
    """Split ``argv`` into command options and Hydra overrides; compose and validate the config.

    options: name -> default value (its type converts the string); e.g. {"episodes": 5}.
    aliases: short key -> config key, e.g. {"task": "sim.task"}.
    positional: names for leading bare arguments (e.g. ("path",)).
    Flags written ``--name value`` or ``--name=value`` are accepted for options too.
    ROS 2 argument blocks (``--ros-args ... [--]``) are stripped first.
    """
    options = dict(options or {})
    aliases = dict(aliases or {})
    args = strip_ros_args(list(argv))
    out: dict[str, Any] = dict(options)
    overrides: list[str] = []
    pos_names = list(positional)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            key = key.replace("-", "_")
            if not eq:
                if i + 1 >= len(args):
                    raise ConfigError(f"option --{key} needs a value")
                value = args[i + 1]
                i += 1
            arg = f"{key}={value}"
        key, eq, value = arg.partition("=")
        if not eq:
            if pos_names:
                out[pos_names.pop(0)] = arg
                i += 1
                continue
            raise ConfigError(f"unexpected argument {arg!r}; use key=value (options: {', '.join(options) or 'none'})")
        if key in options:
            out[key] = _coerce(key, value, options[key])
        elif key in aliases:
            overrides.append(f"{aliases[key]}={value}")
        else:
            overrides.append(arg)
        i += 1
    if pos_names:
        raise ConfigError(f"missing argument(s): {', '.join(pos_names)}")
    return out, load_config(overrides)


def strip_ros_args(argv: list[str]) -> list[str]:
    """Remove ``--ros-args ... [--]`` blocks that ROS 2 appends to node command lines."""
    out, skipping = [], False
    for arg in argv:
        if arg == "--ros-args":
            skipping = True
            continue
        if skipping:
            if arg == "--":
                skipping = False
            continue
        out.append(arg)
    return out


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")  # also "no file" where an option takes a path (sim-demo video=false)


def _coerce(key: str, value: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if value.lower() in TRUE_WORDS:
                return True
            if value.lower() in FALSE_WORDS:
                return False
            raise ValueError
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ConfigError(f"option {key}={value!r} must be a {type(default).__name__}") from None
    return value


def resolve(name: str) -> Callable[[list[str]], int]:
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


VERBOSE_FLAGS = ("-v", "--verbose")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_verbose = False


def verbose() -> bool:
    """Whether ``-v`` was given (the console shows INFO logs and tracebacks)."""
    return _verbose


def console_logging(logfile: str | None = None) -> None:
    """For commands that talk to a person (``run``, ``launch``): the console shows warnings and
    errors (everything with ``-v``); ``logfile`` gets every INFO line."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (sys.stderr, sys.stdout):
            handler.setLevel(logging.INFO if _verbose else logging.WARNING)
            handler.setFormatter(logging.Formatter(LOG_FORMAT if _verbose else "%(levelname)s %(message)s"))
    if logfile:
        fh = logging.FileHandler(logfile)
        fh.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(fh)


def one_line_config_error(text: str) -> str:
    """Hydra's multi-line composition errors as one line: the problem and the available options
    (its config search path is left out)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) <= 1:
        return text.strip()
    head, options, in_options = lines[0], [], False
    for line in lines[1:]:
        if line.startswith("Available options"):
            in_options = True
        elif line.startswith(("\t", " ")) and in_options:
            options.append(line.strip())
        else:
            in_options = False
    return f"{head}; available: {', '.join(options)}" if options else head


def _one_line(e: BaseException) -> str:
    """An unexpected error as one line that says what to do."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, OSError) and getattr(e, "errno", None) == 98 or "Address already in use" in text:
        return f"{text}: another process holds that port; stop it or choose another port (e.g. port=...)"
    if isinstance(e, FileNotFoundError):
        return f"{text}: check the path"
    return f"{type(e).__name__}: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    global _verbose
    from hil_robot import procs

    argv = list(sys.argv[1:] if argv is None else argv)
    _verbose = any(a in VERBOSE_FLAGS for a in argv)
    argv = [a for a in argv if a not in VERBOSE_FLAGS]
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    procs.watch_parent()  # started by another hil_robot process: end when it does
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"hil-robot: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        func = resolve(name)
    except ModuleNotFoundError as e:
        print(f"hil-robot {name}: cannot import {e.name!r}; run `make setup` to install everything", file=sys.stderr)
        return 2
    try:
        return int(func(rest) or 0)
    except ConfigError as e:
        print(f"hil-robot {name}: {one_line_config_error(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hil-robot {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the command line's last resort: one line, traceback with -v
        if _verbose or procs.PARENT_ENV in os.environ:
            raise  # a supervised child: the traceback goes to its log file
        print(f"hil-robot {name}: {_one_line(e)} (-v shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
