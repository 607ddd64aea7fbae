import numpy as np
import pytest

from hil_robot.types import (
    ACTION_DIM,
    STATE_DIM,
    ContractError,
    EpisodeMeta,
    OperatorCommand,
    Policy,
    Segment,
    StepRecord,
    validate_action,
    validate_chunk,
    validate_observation,
)


def _obs(**kw):
    obs = {
        "images/front": np.zeros((8, 8, 3), np.uint8),
        "state": np.zeros(STATE_DIM, np.float32),
        "prompt": "pick up the cube",
        "timestamp_s": 1.0,
    }
    obs.update(kw)
    return obs


def test_observation_valid_and_missing_camera():
    out = validate_observation(_obs(), cameras=("front",))
    assert out["state"].dtype == np.float32
    with pytest.raises(ContractError, match="images/wrist"):
        validate_observation(_obs(), cameras=("front", "wrist"))


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"state": np.zeros(3)}, "state"),
        ({"images/front": np.zeros((8, 8, 3), np.float32)}, "uint8"),
        ({"timestamp_s": float("nan")}, "timestamp_s"),
        ({"prompt": 3}, "prompt"),
    ],
)
def test_observation_rejects(bad, match):
    with pytest.raises(ContractError, match=match):
        validate_observation(_obs(**bad))


def test_action_and_chunk_shapes():
    assert validate_action(np.zeros(ACTION_DIM)).dtype == np.float32
    with pytest.raises(ContractError):
        validate_action(np.zeros(6))
    assert validate_chunk(np.zeros((5, ACTION_DIM))).shape == (5, 7)
    with pytest.raises(ContractError):
        validate_chunk(np.zeros((0, ACTION_DIM)))


def test_step_record_roundtrip_and_bad_segment():
    rec = StepRecord(
        episode_id="ep0", step=3, observation=_obs(), action_executed=np.zeros(7), action_policy=np.full(7, np.nan),
        source="human", segment="recovery", instruction="pick",
    )
    assert rec.is_intervention
    d = rec.to_dict()
    assert d["segment"] == "recovery" and d["source"] == "human"
    assert StepRecord.from_dict(d).segment is Segment.RECOVERY
    with pytest.raises(ContractError, match="allowed"):
        StepRecord.from_dict({**d, "segment": "napping"})
    with pytest.raises(ContractError, match="unknown fields"):
        StepRecord.from_dict({**d, "colour": 1})


def test_episode_meta_roundtrip():
    m = EpisodeMeta(episode_id="e", task="pick_cube", instruction="pick", segment_counts={"autonomous": 3})
    assert EpisodeMeta.from_dict(m.to_dict()) == m


def test_operator_command_validation():
    cmd = OperatorCommand(timestamp_s=0.0, mode="takeover", action=np.zeros(7), segment="correction")
    assert cmd.dof_mask.all()
    with pytest.raises(ContractError):
        OperatorCommand(timestamp_s=0.0, mark="maybe")
    with pytest.raises(ContractError):
        OperatorCommand(timestamp_s=0.0, dof_mask=np.ones(3, bool))


def test_policy_protocol_is_structural():
    class Zero:
        metadata = {"name": "zero"}

        def infer(self, obs):
            return {"actions": np.zeros((1, 7), np.float32), "policy_version": 0}

        def reset(self):
            pass

    assert isinstance(Zero(), Policy)
