"""Typed configuration. Hydra composes YAML from ``configs/``; entry points turn the result into
these dataclasses once (``load_config``) and pass dataclasses from then on.

    cfg = load_config(["experiment=sim_pick_cube", "sim.image_height=64"])
    cfg.sim.image_height  # 64
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

from hil_robot.config._build import ConfigError, build, choice, in_range, positive
from hil_robot.config.control import ControlConfig
from hil_robot.config.critic import CriticConfig
from hil_robot.config.experiment import ExperimentConfig
from hil_robot.config.graph import GraphConfig, NodeSpec
from hil_robot.config.learner import LearnerConfig, SiriusWeights
from hil_robot.config.policy import PolicyConfig
from hil_robot.config.robot import RobotConfig, SafetyConfig
from hil_robot.config.sim import SimConfig
from hil_robot.config.teleop import SimOperatorConfig, TeleopConfig
from hil_robot.config.transport import TransportConfig

__all__ = [
    "ConfigError", "CriticConfig", "RootConfig", "load_config", "config_dir", "build", "choice", "in_range", "positive",
    "ExperimentConfig", "LearnerConfig", "SiriusWeights", "PolicyConfig", "RobotConfig", "SafetyConfig",
    "SimConfig", "SimOperatorConfig", "TeleopConfig", "TransportConfig", "ControlConfig", "GraphConfig", "NodeSpec",
]


@dataclasses.dataclass
class RootConfig:
    experiment: ExperimentConfig = dataclasses.field(default_factory=ExperimentConfig)
    robot: RobotConfig = dataclasses.field(default_factory=RobotConfig)
    sim: SimConfig = dataclasses.field(default_factory=SimConfig)
    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    learner: LearnerConfig = dataclasses.field(default_factory=LearnerConfig)
    teleop: TeleopConfig = dataclasses.field(default_factory=TeleopConfig)
    transport: TransportConfig = dataclasses.field(default_factory=TransportConfig)
    control: ControlConfig = dataclasses.field(default_factory=ControlConfig)
    graph: GraphConfig = dataclasses.field(default_factory=GraphConfig)
    critic: CriticConfig = dataclasses.field(default_factory=CriticConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_dir() -> Path:
    """The ``configs/`` folder: $HIL_ROBOT_CONFIG_DIR, else the one beside the installed packages."""
    env = os.environ.get("HIL_ROBOT_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "configs"
    if not (path / "config.yaml").is_file():
        raise ConfigError(
            f"no configs/config.yaml at {path}; install hil_robot from its repository (pip install -e .) "
            "or set HIL_ROBOT_CONFIG_DIR to the configs folder"
        )
    return path


def compose_dict(overrides: Sequence[str] = (), config_name: str = "config") -> dict[str, Any]:
    """Compose the YAML tree with Hydra and return it as a plain resolved dict."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"config error: {e}") from None
    finally:
        GlobalHydra.instance().clear()


def load_config(overrides: Sequence[str] = (), config_name: str = "config") -> RootConfig:
    """Compose with Hydra and convert to ``RootConfig`` (validated; errors name key and choices)."""
    checked = []
    for override in overrides:
        if check_override_key(override):
            # the key is in the schema: add-or-override, so keys a group's YAML leaves at their
            # dataclass default can still be set from the command line
            override = "++" + override.lstrip("+")
        checked.append(override)
    return build(RootConfig, compose_dict(checked, config_name))


def check_override_key(override: str) -> bool:
    """Fail early, naming the allowed keys, when ``a.b.c=value`` names no field of the schema.

    Returns True when the override sets a schema field (False: group selections, deletions, and
    keys below a free-form mapping, which Hydra checks itself)."""
    if override.startswith("~") or "=" not in override:
        return False
    key = override.partition("=")[0].lstrip("+")
    parts = key.split(".")
    if len(parts) < 2 or "@" in key:
        return False  # group selection (robot=sim_panda) or hydra.* — Hydra checks those
    cls: Any = RootConfig
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return False
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            where = ".".join(parts[:depth]) or "the root"
            raise ConfigError(f"unknown config key {key}; allowed keys under {where}: {', '.join(sorted(fields))}")
        import typing

        cls = typing.get_type_hints(cls).get(part)
    return True
