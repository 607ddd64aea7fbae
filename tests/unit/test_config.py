import pytest

from hil_robot.cli import parse_command_args, strip_ros_args
from hil_robot.config import ConfigError, RootConfig, load_config


def test_default_composes_to_dataclasses():
    cfg = load_config()
    assert isinstance(cfg, RootConfig)
    assert cfg.sim.task == "pick_cube" and cfg.sim.image_height == 64  # the experiment picks 64x64 for CPU learning
    assert cfg.robot.safety.watchdog_hold_s == pytest.approx(0.1)
    assert cfg.experiment.run_dir == "runs/sim_pick_cube"  # interpolation resolved


def test_override_types_are_checked():
    cfg = load_config(["sim.image_height=64", "robot.safety.max_step_m=0.01"])
    assert cfg.sim.image_height == 64 and cfg.robot.safety.max_step_m == 0.01
    with pytest.raises(ConfigError, match="sim.image_height must be an integer"):
        load_config(["sim.image_height=big"])


def test_unknown_key_names_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown config key sim\.imge_height; allowed keys under sim: .*image_height"):
        load_config(["sim.imge_height=64"])


def test_bad_value_names_choices():
    with pytest.raises(ConfigError, match=r"sim\.task='fly'.*pick_cube"):
        load_config(["sim.task=fly"])
    with pytest.raises(ConfigError, match="workspace_min_m"):
        load_config(["robot.safety.workspace_min_m=[1,0,0]"])


def test_bad_group_option_lists_available():
    with pytest.raises(ConfigError, match="sim_panda"):
        load_config(["robot=nope"])


def test_command_args_aliases_and_ros_args():
    opts, cfg = parse_command_args(
        ["task=push_target", "episodes=3", "--ros-args", "-r", "__node:=x", "--", "sim.image_width=32"],
        options={"episodes": 1},
        aliases={"task": "sim.task"},
    )
    assert opts["episodes"] == 3 and cfg.sim.task == "push_target" and cfg.sim.image_width == 32
    assert strip_ros_args(["a=1", "--ros-args", "-p", "x:=1"]) == ["a=1"]
    with pytest.raises(ConfigError, match="episodes"):
        parse_command_args(["episodes=many"], options={"episodes": 1})


def test_schema_key_absent_from_yaml_can_be_overridden():
    # teleop/sim_operator.yaml does not list http_port; the dataclass schema does
    cfg = load_config(["teleop.http_port=9443"])
    assert cfg.teleop.http_port == 9443


@pytest.mark.parametrize("task", ["pick_cube", "push_target", "peg_insert", "stack_cubes"])
def test_rl_recipe_is_the_measured_settings_on_every_task(task):
    # recipe=rl must compose to exactly the settings the learning bench measured as rlpd_bc
    # (docs/learning.md): the sim recipe + learner=rlpd, batch 256, policy=rl, sparse reward, BC term,
    # two critic updates per actor update
    explicit = load_config([f"experiment=sim_{task}", "learner=rlpd", "learner.batch_size=256", "policy=rl",
                            "learner.reward=sparse", "learner.rl_bc_weight=1", "learner.utd_ratio=2"])
    recipe = load_config([f"experiment=sim_{task}", "recipe=rl"])
    assert recipe == explicit
    assert recipe.learner.algorithm == "rlpd" and recipe.policy.name == "rl" and recipe.learner.rl_bc_weight == 1.0
    assert recipe.sim.task == task and recipe.learner.pre_intervention_k == 30  # the sim recipe's settings stay
    # the command line still wins over the recipe
    assert load_config([f"experiment=sim_{task}", "recipe=rl", "learner.rl_bc_weight=0"]).learner.rl_bc_weight == 0.0
    assert load_config([f"experiment=sim_{task}"]).learner.algorithm == "weighted_bc"  # the default is unchanged


def test_bad_recipe_lists_available():
    with pytest.raises(ConfigError, match="rl"):
        load_config(["recipe=nope"])
