"""policy=lerobot without its environment: clear errors that say what to run (no lerobot needed)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from hil_robot.cli import main
from hil_robot.config import ConfigError, load_config
from hil_robot.lerobot_env import lerobot_python, reexec_in_lerobot_env


def test_missing_interpreter_is_named(tmp_path):
    cfg = load_config(["policy=lerobot", f"policy.python={tmp_path / 'nope' / 'python'}"])
    with pytest.raises(ConfigError, match=r"nope/python does not exist; fix policy.python"):
        lerobot_python(cfg.policy)


def test_this_env_named_as_the_lerobot_env_without_lerobot_is_refused():
    if importlib.util.find_spec("lerobot") is not None:
        pytest.skip("this environment has lerobot: nothing to re-execute")
    cfg = load_config(["policy=lerobot", f"policy.python={sys.executable}"])
    with pytest.raises(ConfigError, match=r"has no lerobot installed; run make lerobot-env"):
        reexec_in_lerobot_env(cfg.policy, ["policy=lerobot"])


def test_serve_policy_cli_reports_a_missing_lerobot_env(tmp_path, capsys):
    if importlib.util.find_spec("lerobot") is not None:
        pytest.skip("this environment has lerobot: it would serve here")
    rc = main(["serve-policy", "policy=lerobot", f"policy.python={tmp_path / 'python3.12'}", "policy.checkpoint=/x"])
    err = capsys.readouterr()
    assert rc != 0
    assert "python3.12 does not exist" in err.out + err.err


def test_lerobot_type_is_checked():
    with pytest.raises(ConfigError, match=r"policy.lerobot_type='diffusion'.*act, smolvla, pi0, pi05"):
        load_config(["policy=lerobot", "policy.lerobot_type=diffusion"])


def test_run_refuses_lerobot_without_checkpoint_or_env_up_front(tmp_path):
    from hil_robot import run as hil_run

    with pytest.raises(ConfigError, match=r"policy=lerobot needs policy.checkpoint=DIR"):
        hil_run.main(load_config(["policy=lerobot"]), [], tmp_path / "run")
    cfg = load_config(["policy=lerobot", f"policy.checkpoint={tmp_path}", f"policy.python={tmp_path / 'py'}"])
    with pytest.raises(ConfigError, match=r"does not exist; fix policy.python"):
        hil_run.main(cfg, [], tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing was started
