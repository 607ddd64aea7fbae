"""RLPD learns a small MuJoCo task from state, through the real store -> replay -> RLPD path.

Task ("reach the cube"): the pick-cube scene, success when the gripper centre is within 4 cm of
a point 5 cm above the (randomised) cube; reward = progress towards it (what the progress critic's
Δprogress provides in the full system) + 1 on success (terminal); 30-step limit (truncation,
bootstrapped); a 10-critic ensemble as in RLPD. A handful of scripted demos go into the demo view; the rest is the
actor's own experience (50/50 batches). The learned deterministic policy must succeed on at
least half of the held-out cube placements (averaged over three late evaluations); the untrained
one almost never does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hil_robot.config import load_config
from hil_robot.data import EpisodeStore, Recorder, StoreReplay
from hil_robot.learn.rlpd import RLPD, obs_spec_from_batch
from hil_robot.types import StepRecord

pytestmark = pytest.mark.slow

MAX_STEPS = 30
SUCCESS_M = 0.04


def task_view(env_obs: dict) -> tuple[dict, float]:
    """-> (what the agent observes and the store records: robot state + the offset to the goal as
    ``task_state``; distance to the goal in metres)."""
    target = env_obs["task_state"][:3] + np.array([0.0, 0.0, 0.05], np.float32)
    offset = (target - env_obs["state"][:3]).astype(np.float32)
    return dict(env_obs, task_state=offset), float(np.linalg.norm(offset))


def scripted(obs, rng) -> np.ndarray:
    a = np.zeros(7, np.float32)
    a[:3] = np.clip(obs["task_state"] / 0.02, -1, 1) + rng.normal(0, 0.2, 3)
    a[6] = -1.0
    return np.clip(a, -1, 1)


def rollout(env, act, seed: int, recorder=None, episode_id: str = "", segment: str = "autonomous") -> bool:
    obs, dist = task_view(env.reset(seed=seed)[0])
    for t in range(MAX_STEPS):
        a = act(obs)
        nxt, nxt_dist = task_view(env.step(a)[0])
        success = nxt_dist < SUCCESS_M
        # dense progress reward (as the progress critic's Δprogress would give) + success bonus
        reward = 10.0 * (dist - nxt_dist) + float(success)
        last = success or t == MAX_STEPS - 1
        if recorder is not None:
            human = segment == "demo"
            recorder.add(StepRecord(
                episode_id=episode_id, step=t, observation=obs, action_executed=a,
                action_policy=np.full(7, np.nan, np.float32) if human else a, source="human" if human else "policy",
                segment=segment, instruction="reach the cube", reward=reward, done=success,
                truncated=last and not success, success=success,
            ))
        obs, dist = nxt, nxt_dist
        if last:
            if recorder is not None:
                recorder.end_episode(success, final_observation=obs, task="reach_cube")
            return success
    return False


def test_rlpd_learns_to_reach_from_state(tmp_path):
    import sim

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # RLPD's published 10-critic ensemble (target = min of 2 random members): with the 2-critic
    # default, success at this budget depended on the seed (2 of 4 seeds >= 0.5; 3 of 3 with 10)
    cfg = load_config(["learner=rlpd", "sim.render=false", "sim.task=pick_cube", "learner.batch_size=256",
                       "learner.rl_hidden_dims=[128,128]", "learner.num_critics=10"])
    env = sim.make_env(cfg.sim, cfg.robot, seed=0)
    store = EpisodeStore(tmp_path / "store")
    rec = Recorder(store, pre_intervention_k=0)
    for i in range(6):
        rollout(env, lambda o: scripted(o, rng), seed=1000 + i, recorder=rec, episode_id=f"demo{i}", segment="demo")
    replay = StoreReplay([store.root], capacity_steps=20_000, seed=0)
    agent = RLPD(cfg.learner, obs_spec_from_batch(replay.sample(2, 1, view="all"), cfg.learner))
    agent.fit_state_stats(replay.sample(1024, 1, view="all", rng=rng))

    def policy(deterministic: bool):
        def act(obs):
            batch = {"obs/state": obs["state"][None], "obs/task_state": obs["task_state"][None]}
            return agent.act(batch, deterministic=deterministic)[0]
        return act

    eval_seeds = range(5000, 5010)
    before = np.mean([rollout(env, policy(True), s) for s in eval_seeds])
    late = []
    for ep in range(60):
        rollout(env, policy(False), seed=ep, recorder=rec, episode_id=f"online{ep}")
        replay.refresh()
        for _ in range(40):  # ~1.3 updates per environment step
            agent.update(replay.sample_rlpd(cfg.learner.batch_size, rng=rng))
        if ep + 1 in (40, 50, 60):  # SAC's success rate oscillates: judge the average of late evaluations
            late.append(np.mean([rollout(env, policy(True), s) for s in eval_seeds]))
    rec.close()
    env.close()
    assert replay.num_episodes == 66
    assert before <= 0.2
    assert np.mean(late) >= 0.5 and np.mean(late) >= before + 0.4, f"success {late} after training (before {before:.0%})"
