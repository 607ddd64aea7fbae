"""CI-sized smoke test of the whole human-in-the-loop run: separate processes on loopback (recorder,
learner, policy server, simulated operator, controllers), small images, a few episodes."""

from __future__ import annotations

import json

import psutil
import pytest

from hil_robot import run as hil_run
from hil_robot.config import load_config
from hil_robot.data import EpisodeStore

OVERRIDES = [
    "experiment=sim_pick_cube",
    "experiment.demo_episodes=6",
    "experiment.rounds=2",
    "experiment.episodes_per_round=3",
    "experiment.eval_episodes=2",
    "experiment.wandb_mode=offline",
    "sim.image_height=32",
    "sim.image_width=32",
    "sim.max_episode_steps=60",
    "learner.batch_size=16",
    "learner.min_replay_steps=32",
    "learner.publish_every_s=0.5",
]


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.slow
def test_hil_run_end_to_end(tmp_path):
    before = _descendants()
    cfg = load_config(OVERRIDES)
    result = hil_run.main(cfg, OVERRIDES, tmp_path / "run", quiet=True)
    assert "error" not in result, result.get("error")
    run_dir = tmp_path / "run"

    # the store holds every episode: demos + deployment; evaluation apart
    store = EpisodeStore(run_dir / "store", read_only=True)
    metas = store.episodes()
    assert not store.errors
    assert len(metas) == 6 + 2 * 3, [m.episode_id for m in metas]
    eval_metas = EpisodeStore(run_dir / "eval_store", read_only=True).episodes()
    assert len(eval_metas) == 2 * (2 + 2)  # per round: the fixed seeds + as many fresh ones

    # fresh evaluation seeds differ per round and from the fixed ones; both rates and the load per round
    rows = [r for r in hil_run.read_csv(run_dir / "metrics" / "episodes.csv") if r["phase"] == "eval"]
    fixed = {(r["round"], r["seed"]) for r in rows if r["seed_kind"] == "fixed"}
    fresh = [r["seed"] for r in rows if r["seed_kind"] == "fresh"]
    assert len(fixed) == 4 and len(set(fresh)) == 4 and not set(fresh) & {s for _, s in fixed}
    assert {s for r, s in fixed if r == 1} == {s for r, s in fixed if r == 2}  # the same fixed seeds every round
    for rnd in result["rounds"][1:]:
        assert rnd["eval_fresh_episodes"] == 2 and rnd["eval_fixed_episodes"] == 2
        assert rnd["learner_updates"] > 0 and rnd["learner_updates_per_s"] >= 0
        assert rnd["cpu_share"]["learner"] > 0 and rnd["cpu_share"]["controller"] > 0, rnd["cpu_share"]
    assert "round 2 details" in (run_dir / "logs" / "run.log").read_text()

    # weights were published, swapped into the policy server and used by the controller
    deploy = [m for m in metas if "demo" not in m.segment_counts]
    versions = [max(m.policy_versions, default=-1) for m in deploy]
    assert min(versions) >= 1, f"deployment ran without trained weights: {versions}"
    assert versions[-1] > versions[0], f"policy_version did not increase across deployment: {versions}"
    assert result["weight_version"] >= versions[-1]
    last = store.read_episode(deploy[-1].episode_id)
    sources, step_versions = last.columns["source"], last.columns["policy_version"]
    used = [int(v) for v, s in zip(step_versions, sources) if int(s) == 0]  # source index 0 = policy
    assert used and min(used) >= 1, f"policy steps without trained weights: {used}"

    # every segment type the simulated operator produces appears, with its own log agreeing
    segments = set()
    for m in metas:
        segments |= {k for k, v in m.segment_counts.items() if v}
    assert {"demo", "autonomous", "pre_intervention", "recovery", "correction"} <= segments, segments
    op_log = [json.loads(line) for line in (run_dir / "metrics" / "operator_log.jsonl").read_text().splitlines()]
    assert len(op_log) == sum(m.num_steps for m in deploy)

    # the run directory has what a person looks at
    assert (run_dir / "metrics" / "episodes.csv").is_file()
    assert (run_dir / "plots" / "success_autonomy.png").is_file()
    assert (run_dir / "videos" / "eval_latest.mp4").stat().st_size > 0
    assert list((run_dir / "learner" / "checkpoints").glob("step_*"))
    assert list((run_dir / "learner").rglob("offline-run-*")), "no wandb offline run"

    # shutdown leaves no orphan processes
    psutil.wait_procs([psutil.Process(p) for p in _descendants() - before if psutil.pid_exists(p)], timeout=10)
    leftover = [p for p in _descendants() - before if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not leftover, f"orphan processes after the run: {leftover}"
    strays = [p.pid for p in psutil.process_iter(["cmdline"]) if any(str(run_dir) in a for a in (p.info["cmdline"] or []))]
    assert not strays, f"processes still running with the run directory on their command line: {strays}"


@pytest.mark.slow
def test_rlpd_run_serves_and_uses_the_actor_the_learner_publishes(tmp_path):
    # from state without rendering, as recipe=rl runs: nothing in the run may need a camera image
    overrides = [*OVERRIDES, "policy=rl", "learner.algorithm=rlpd", "learner.reward=sparse",
                 "experiment.rounds=2", "experiment.eval_episodes=1", "sim.render=false"]
    cfg = load_config(overrides)
    result = hil_run.main(cfg, overrides, tmp_path / "run", quiet=True)
    assert "error" not in result, result.get("error")
    store = EpisodeStore(tmp_path / "run" / "store", read_only=True)
    deploy = [m for m in store.episodes() if "demo" not in m.segment_counts]
    assert len(deploy) == 2 * 3
    last = store.read_episode(deploy[-1].episode_id)
    assert last.cameras == []  # nothing rendered, nothing stored
    assert result["video"] is None  # and no eval video claimed
    used = [int(v) for v, s in zip(last.columns["policy_version"], last.columns["source"]) if int(s) == 0]
    assert used and min(used) >= 1, f"the RL actor ran without the learner's weights: {used}"
    logs = tmp_path / "run" / "logs"
    assert "weight update rejected" not in (logs / "policy.log").read_text()
    # deployment explores (samples the actor); evaluation is served the actor's mean by its own server
    assert "explore on" in (logs / "policy.log").read_text()
    assert "explore off" in (logs / "eval_policy.log").read_text()
    assert "weight update rejected" not in (logs / "eval_policy.log").read_text()
    evals = EpisodeStore(tmp_path / "run" / "eval_store", read_only=True).episodes()
    # 2 rounds x (1 fixed-seed + 1 fresh-seed eval episode)
    assert len(evals) == 2 * 2 and all(min(m.policy_versions) >= 1 for m in evals)


def test_a_policy_that_cannot_load_the_learners_weights_is_refused_before_anything_starts(tmp_path):
    from hil_robot.config import ConfigError

    for bad, hint in ((["learner.algorithm=rlpd"], "policy=rl"), (["policy=rl"], "policy=vla")):
        with pytest.raises(ConfigError, match=hint):
            hil_run.main(load_config([*OVERRIDES, *bad]), [*OVERRIDES, *bad], tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def _cli(args: list[str], cwd) -> "subprocess.CompletedProcess[str]":
    import os
    import subprocess
    import sys

    from hil_robot import procs

    env = {k: v for k, v in os.environ.items() if k != procs.PARENT_ENV}  # as a person runs it
    return subprocess.run([sys.executable, "-m", "hil_robot", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_bad_input_to_run_and_launch_is_one_line_that_says_what_to_do(tmp_path):
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    cases = [
        (["run", "foo.bar=1"], "unknown config key foo.bar"),
        (["run", "experiment=nope"], "available: sim_peg_insert, sim_pick_cube"),
        (["run", "experiment.rounds=abc"], "experiment.rounds must be an integer"),
        (["run", f"policy.checkpoint={tmp_path / 'no_such_ckpt'}"], "does not exist; give a policy directory"),
        (["launch", "sim_pick_cube", "policy=expert", f"transport.policy_port={port}", f"log_dir={tmp_path / 'l'}"],
         f"port {port} (policy_server: transport.policy_port) is already in use"),
        (["launch", "sim_pick_cube", "learner.critic_checkpoint=/no/such/critic"], "learner.critic_checkpoint"),
    ]
    try:
        for args, hint in cases:
            proc = _cli([*args, f"run_dir={tmp_path / 'run'}"] if args[0] == "run" else args, tmp_path)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2, (args, proc.returncode, proc.stderr[-2000:])
            assert len(lines) == 1 and hint in lines[0], (args, proc.stderr[-2000:])
            assert "Traceback" not in proc.stdout + proc.stderr, args
    finally:
        busy.close()
    assert not (tmp_path / "run").exists() and not (tmp_path / "l").exists()  # refused before anything started


def test_a_child_that_fails_at_start_stops_the_run_with_its_last_words_and_log(tmp_path):
    cfg = load_config(["experiment=sim_pick_cube"])
    hil = hil_run.HilRun(cfg, [], tmp_path / "run", quiet=True)
    try:
        with pytest.raises(hil_run.RunStopped) as err:
            hil.run_child("demos", ["collect-demos", "episodes=1", f"out={tmp_path / 'store'}", "sim.task=juggle"])
    finally:
        hil.shutdown()
    msg = str(err.value)
    assert "demos exited with code 2" in msg and "juggle" in msg, msg
    assert msg.endswith(f"see {tmp_path / 'run' / 'logs' / 'demos.log'}"), msg
    assert "juggle" in (tmp_path / "run" / "logs" / "demos.log").read_text()
