"""Where ``policy=lerobot`` runs: the LeRobot environment's interpreter (torch-free helper).

LeRobot needs Python >= 3.12 and its own torch, so its policies are served from a separate virtual
environment (``make lerobot-env`` creates ``.venv-lerobot/``; ``policy.python`` names another one).
``hil-robot serve-policy policy=lerobot`` started from the main environment replaces itself with the
same command under that interpreter (same process id, so supervisors and signals are unaffected).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from hil_robot.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VENV = REPO / ".venv-lerobot"


def lerobot_python(policy_cfg: Any) -> str:
    """``policy.python``, or ``.venv-lerobot/bin/python`` of this checkout; a clear error when absent."""
    py = Path(getattr(policy_cfg, "python", "") or DEFAULT_VENV / "bin" / "python")
    if not py.is_file():
        hint = "run make lerobot-env" if not getattr(policy_cfg, "python", "") else "fix policy.python"
        raise ConfigError(f"policy=lerobot is served from the LeRobot environment, but {py} does not exist; {hint} "
                          "(needs Python >= 3.12; see docs/byo_vla.md)")
    return str(py)


def reexec_in_lerobot_env(policy_cfg: Any, argv: Sequence[str]) -> None:
    """If this interpreter has no lerobot, exec ``python -m hil_robot serve-policy ARGV`` under the
    LeRobot environment's interpreter (never returns then); else return and serve here."""
    if importlib.util.find_spec("lerobot") is not None:
        return
    py = lerobot_python(policy_cfg)
    if Path(py).parent.parent.resolve() == Path(sys.prefix).resolve():
        raise ConfigError(f"{py} is this environment but it has no lerobot installed; run make lerobot-env")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(py, [py, "-m", "hil_robot", "serve-policy", *argv])
