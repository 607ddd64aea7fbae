"""Fine-tuning LeRobot policies (hil_robot/learn/lerobot_bc.py) with real lerobot + peft in the LeRobot
environment, on tiny random-weight ACT and SmolVLA checkpoints: the weighted-BC loss falls, LoRA trains
only adapters (base bit-exact), deltas move a second LeRobotPolicy onto the trained one, bad deltas and
bad full updates are refused with the last good weights kept; the checks run in
``lerobot_learn_checks.py`` under .venv-lerobot and print JSON."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LEROBOT_PY = Path(os.environ.get("HIL_ROBOT_LEROBOT_PYTHON", REPO / ".venv-lerobot" / "bin" / "python"))
pytestmark = pytest.mark.skipif(not LEROBOT_PY.is_file(),
                                reason=f"no LeRobot environment at {LEROBOT_PY}: run make lerobot-env")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl",
       "PYTHONPATH": str(REPO)}


def test_lerobot_finetuning_checks(tmp_path):
    for kind in ("act", "smolvla"):
        built = subprocess.run([str(LEROBOT_PY), "-m", "policies.lerobot_tiny", f"out={tmp_path / kind}", f"type={kind}"],
                               cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
        assert built.returncode == 0, built.stderr[-3000:]
    proc = subprocess.run([str(LEROBOT_PY), str(REPO / "tests" / "integration" / "lerobot_learn_checks.py"),
                           str(tmp_path / "act"), str(tmp_path / "smolvla")], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    act, smol = res["act"], res["smolvla"]
    assert act["act_loss_matches_lerobot"]  # our per-sample ACT loss averages to LeRobot's own
    for mode in ("full", "lora", "expert"):  # the Sirius-weighted loss on the batch falls
        before, after = act[f"{mode}_loss"]
        assert after < 0.95 * before, (mode, before, after)
    assert act["full_load_matches"] and act["full_nan_rejected"]
    assert act["lora_all_delta_are_lora"] and act["lora_trainable"] == ["action_head", "linear1", "linear2"]
    assert act["lora_base_bit_exact"] and act["lora_base_id_stable"]
    assert act["server_base_id_equal"] and act["server_adapter_info_equal"]
    assert act["delta_changed_output"] > 1e-3 and act["delta_matches_trained"] < 1e-5 and act["delta_version"] == 5
    assert act["bad_delta_rank_rejected"] and act["bad_delta_nan_rejected"]
    assert act["saved_lora_policy_matches"] < 1e-4  # LoRA merged into a plain LeRobot checkpoint
    assert act["expert_prefixes"] == ["model.action_head", "model.decoder", "model.decoder_pos_embed"]
    for mode in ("full", "lora", "expert"):
        assert smol[f"{mode}_loss_kind"] == "reduction" and smol[f"{mode}_loss_finite"]
    assert smol["lora_delta_modules"] == ["lm_expert"] and smol["lora_delta_loaded"]
    assert "vlm_with_expert" in smol["expert_delta_modules"] and "action_out_proj" in smol["expert_delta_modules"]
    assert smol["expert_delta_loaded"]
