"""DSRL labels from the noise the served policy recorded: the controller keeps the chunk's noise
on the tick whose observation chose it, the store and replay carry it, the learner labels those
transitions with it exactly (and drops what it cannot label when the VLA is remote), and a
decision that ran its chunk several ticks is one multi-step transition."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hil_robot.config import load_config
from hil_robot.control.chunking import ChunkExecutor
from hil_robot.control.fakes import ChunkPolicy
from hil_robot.data import EpisodeStore, Recorder, StoreReplay
from hil_robot.data.synthetic import observation, step_record
from hil_robot.learn.dsrl import NoiseLabeler
from hil_robot.types import ContractError

K = 4 * 7  # noise of a [4, 7] chunk, flattened
HW = 16


def noise_of(episode: int, step: int) -> np.ndarray:
    return np.full(K, 0.01 * step + 0.1 * episode, np.float32)


def record(rec: Recorder, episode_id: str, segments: list[str], episode: int, noisy_every: int | None) -> None:
    n = len(segments)
    for t, seg in enumerate(segments):
        r = step_record(episode_id, t, seg, episode=episode, last=t == n - 1, hw=(HW, HW))
        if noisy_every and seg == "autonomous" and t % noisy_every == 0:
            r = dataclasses.replace(r, policy_noise=noise_of(episode, t))
        rec.add(r)
    rec.end_episode(True, final_observation=observation(n, episode, hw=(HW, HW)), task="pick_cube")


@pytest.fixture()
def replay(tmp_path):
    store = EpisodeStore(tmp_path / "store", image_codec="png")
    rec = Recorder(store, pre_intervention_k=0)
    record(rec, "demo", ["demo"] * 6, 0, None)  # no noise anywhere (an episode before DSRL)
    record(rec, "deploy", ["autonomous"] * 6 + ["recovery"] * 2 + ["correction"] * 2, 1, noisy_every=2)
    rec.close()
    store.close()
    return StoreReplay([str(tmp_path / "store")], 10_000, seed=0), tmp_path / "store"


def test_the_noise_is_kept_by_the_store_and_the_replay(replay):
    rp, path = replay
    store = EpisodeStore(path, read_only=True)
    metas = {m.episode_id: m for m in store.episodes()}
    ep = store.read_episode("deploy")
    col = ep.columns["policy_noise"]
    assert col.shape == (10, K)
    for t in range(10):
        if t < 6 and t % 2 == 0:
            np.testing.assert_array_equal(col[t], noise_of(1, t))
            np.testing.assert_array_equal(ep.step_record(t).policy_noise, noise_of(1, t))
        else:
            assert np.isnan(col[t]).all() and ep.step_record(t).policy_noise is None
    assert "policy_noise" not in store.read_episode("demo").columns and "demo" in metas
    b = rp.sample(64, 1, view="all", rng=np.random.default_rng(0), images=False)
    for row, ep_i, step in zip(b["policy_noise"], b["episode_index"], b["step_index"]):
        name = "deploy" if ep_i == ep.index else "demo"
        if name == "deploy" and step < 6 and step % 2 == 0:
            np.testing.assert_array_equal(row, noise_of(1, int(step)))
        else:
            assert np.isnan(row).all()


def test_bad_noise_is_a_contract_error():
    r = step_record("e", 0)
    for bad in (np.full(K, np.nan), np.zeros(0)):
        with pytest.raises(ContractError, match="policy_noise"):
            dataclasses.replace(r, policy_noise=bad)


def dsrl_cfg(*overrides: str):
    return load_config(["learner=dsrl", "learner.rl_noise_shape=[4,7]", *overrides]).learner


def test_a_remote_vla_learns_from_recorded_noise_only(replay):
    rp, _ = replay
    lc = dsrl_cfg("learner.rl_noise_bound=2.0")
    labeler = NoiseLabeler(None, rp.buffer, lc, noise_shape=(4, 7), images=False)
    batch = rp.sample(64, 1, view="all", rng=np.random.default_rng(1), images=False)
    rec = np.isfinite(batch["policy_noise"]).all(1)
    assert 0 < rec.sum() < 64
    out = labeler.relabel(dict(batch))
    assert len(out["action"]) == rec.sum() == len(out["reward"]) == len(out["obs/state"]) == len(out["instruction"])
    np.testing.assert_allclose(out["action"], batch["policy_noise"][rec] / 2.0)  # exactly the served noise / bound
    assert (out["source"] == 0).all()  # only the policy's own decisions have a label without the weights
    m = labeler.metrics()
    assert m["dsrl/labelled_frac"] == pytest.approx(rec.mean()) and m["dsrl/recorded_frac"] == pytest.approx(rec.mean())
    with pytest.raises(ValueError, match="rl_noise_shape"):
        NoiseLabeler(None, rp.buffer, lc)
    with pytest.raises(ValueError, match="56 .*28|28 .*56"):
        NoiseLabeler(None, rp.buffer, lc, noise_shape=(8, 7), images=False).relabel(dict(batch))


def test_a_local_vla_takes_the_recorded_noise_and_inverts_the_rest(replay):
    from tests.unit.test_learn_dsrl import tiny_vla
    from policies.vla import VLAPolicy

    rp, _ = replay
    lc = dsrl_cfg("learner.rl_noise_bound=3.0")
    labeler = NoiseLabeler(VLAPolicy(tiny_vla()), rp.buffer, lc, noise_shape=(4, 7))
    batch = rp.sample(32, 1, view="all", rng=np.random.default_rng(2), images=False)
    rec = np.isfinite(batch["policy_noise"]).all(1)
    inside_chunk = ~rec & (batch["source"] == 0) & (batch["episode_index"] == 1)  # deploy ticks between decisions
    assert inside_chunk.any()
    out = labeler.relabel(dict(batch))
    keep = ~inside_chunk  # decisions: recorded; the person's actions and the noiseless demos: inverted
    assert len(out["action"]) == keep.sum()
    np.testing.assert_allclose(out["action"][rec[keep]], batch["policy_noise"][rec] / 3.0)
    human_or_demo = keep & ~rec
    assert labeler.stats["inverted"] == len({(e, s) for e, s in zip(batch["episode_index"][human_or_demo],
                                                                      batch["step_index"][human_or_demo])})
    with pytest.raises(ValueError, match="rl_noise_shape"):
        NoiseLabeler(VLAPolicy(tiny_vla()), rp.buffer, lc, noise_shape=(5, 7))


def test_a_chunk_run_for_several_ticks_is_one_multi_step_transition(replay):
    rp, _ = replay
    buf = rp.buffer
    lc = dsrl_cfg("learner.gamma=0.9")
    labeler = NoiseLabeler(None, buf, lc, noise_shape=(4, 7), span=3, images=False)
    batch = rp.sample(200, 1, view="all", rng=np.random.default_rng(3), images=False)
    out = labeler.relabel(dict(batch))
    assert len(out["action"]) > 0
    for i in range(len(out["action"])):
        step = int(out["step_index"][i])  # a recorded decision at autonomous step 0, 2 or 4 of the 10-step deploy
        m = min(3, 10 - step)
        assert out["discount"][i] == pytest.approx(0.9 ** m)
        assert out["next_obs/state"][i][0] == step + m  # the observation after the span's last step
        assert out["done"][i] == float(step + m == 10)  # the episode's last step is inside the span
        assert out["reward"][i] == pytest.approx(0.9 ** (m - 1) if step + m == 10 else 0.0)
    assert labeler.metrics()["dsrl/span_steps"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="learner.reward=sparse"):
        NoiseLabeler(None, buf, dsrl_cfg("learner.reward=critic_online"), noise_shape=(4, 7), span=3)
    n = buf.n_step(np.asarray(out["replay_row"]), 30, 0.9)  # longer than the episode: stops at its end
    assert (n["done"] == 1.0).all() and (n["steps"] == 10 - out["step_index"]).all()


def test_the_controller_records_the_noise_on_the_tick_that_chose_the_chunk():
    def fn(call, obs):
        return np.zeros((4, 7), np.float32)

    class NoisyPolicy(ChunkPolicy):
        def infer(self, obs):
            out = super().infer(obs)
            out["noise"] = np.full((4, 7), float(obs["tick"]), np.float32)
            return out

    ex = ChunkExecutor(NoisyPolicy(fn), n_action_steps=2, request_lead_steps=0, max_wait_s=1.0, lockstep=True)
    got = [ex.action_for_tick(k, {"tick": k}) for k in range(6)]
    assert [None if p.noise is None else float(p.noise[0]) for p in got] == [0.0, None, 2.0, None, 4.0, None]
    ex.close()

    class NaNNoise(ChunkPolicy):
        def infer(self, obs):
            return {**super().infer(obs), "noise": np.full(3, np.nan)}

    ex = ChunkExecutor(NaNNoise(fn), n_action_steps=2, request_lead_steps=0, max_wait_s=1.0, lockstep=True)
    assert ex.action_for_tick(0, {"tick": 0}) is None  # an untrusted chunk is never executed
    assert ex.counters["rejected_non_finite"] >= 1
    ex.close()
