"""Lock-step RLPD diagnostic on a sim task from state: no processes, no store, one loop.

Each env step: the SAC actor samples an action, the sim applies it (the *applied* action — after the
robot's step limits — is what the buffer keeps), ``utd`` RLPD updates on a mixed batch (the
learner's ``sample_rlpd`` proportions: ``rl_demo_fraction`` from scripted demos, the rest online).
Every ``--eval-every`` env steps the deterministic actor runs on fixed held-out seeds.

What it prints per evaluation: success, env steps, updates, wall time, Q on demo transitions against
their discounted Monte-Carlo return (over- or under-estimation), temperature, entropy, the share of
actor actions the robot clipped, and the gripper critic's agreement with the demo's gripper class.

    python scripts/diag_rl.py --minutes 5 --utd 4                       # pick_cube, the committed recipe
    python scripts/diag_rl.py --minutes 5 learner.gamma=0.99 learner.num_critics=10
    python scripts/diag_rl.py --task push_target --minutes 5
    python scripts/diag_rl.py --operator ...                            # the simulated operator takes over

Learner settings are ``learner.*`` overrides on ``learner=rlpd``; ``--json`` writes the eval rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hil_robot.config import load_config  # noqa: E402
from hil_robot.learn.rlpd import RLPD, obs_spec_from_batch, to_torch  # noqa: E402
from hil_robot.types import GRIPPER_INDEX, STATE_LAYOUT, OperatorMode  # noqa: E402
from policies.rl import gripper_class  # noqa: E402


class Buffer:
    """Flat transition arrays (state-only): obs/state, obs/task_state, action, reward, done, truncated."""

    def __init__(self, cap: int, state_dim: int, task_dim: int):
        self.cap, self.n, self.i = cap, 0, 0
        self.s = np.zeros((cap, state_dim), np.float32)
        self.ts = np.zeros((cap, task_dim), np.float32)
        self.s2 = np.zeros((cap, state_dim), np.float32)
        self.ts2 = np.zeros((cap, task_dim), np.float32)
        self.a = np.zeros((cap, 7), np.float32)
        self.r = np.zeros(cap, np.float32)
        self.d = np.zeros(cap, bool)
        self.tr = np.zeros(cap, bool)
        self.ret = np.zeros(cap, np.float32)  # discounted return-to-go (filled at episode end)

    def add_episode(self, steps: list[tuple], gamma: float) -> None:
        g = 0.0
        rets = []
        for (_, _, _, r, _, _, _, _) in reversed(steps):
            g = r + gamma * g
            rets.append(g)
        for (s, ts, a, r, d, tr, s2, ts2), ret in zip(steps, reversed(rets)):
            j = self.i
            self.s[j], self.ts[j], self.a[j], self.r[j], self.d[j], self.tr[j] = s, ts, a, r, d, tr
            self.s2[j], self.ts2[j], self.ret[j] = s2, ts2, ret
            self.i = (self.i + 1) % self.cap
            self.n = min(self.n + 1, self.cap)

    def sample(self, k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        idx = rng.integers(0, self.n, size=k)
        return {"obs/state": self.s[idx], "obs/task_state": self.ts[idx], "next_obs/state": self.s2[idx],
                "next_obs/task_state": self.ts2[idx], "action": self.a[idx], "reward": self.r[idx],
                "done": self.d[idx], "truncated": self.tr[idx], "mc_return": self.ret[idx]}


def cat(a: dict, b: dict) -> dict:
    out = {k: np.concatenate([a[k], b[k]]) for k in a}
    out["is_offline"] = np.r_[np.ones(len(a["reward"]), np.float32), np.zeros(len(b["reward"]), np.float32)]
    return out


def run_episode(env, act, seed, max_steps, reward_scale=1.0, operator=None, safety=None):
    """-> (transitions, success, clipped share, takeovers). Transitions keep the applied action.
    ``safety``: the controller's SafetyFilter between the actor and the sim (as in the run)."""
    obs, _ = env.reset(seed=seed)
    if operator is not None:
        operator.reset(seed)
    period = 1.0 / env.robot_cfg.control_hz
    if safety is not None:
        safety.reset(0.0, obs["state"])
    steps, clipped, success, human_steps = [], 0, False, []
    for t in range(max_steps):
        a = np.asarray(act(obs), np.float32)
        human = False
        if operator is not None:
            cmd = operator.command(obs, {"policy_action": a, "step": t, "task_status": env.robot.task_status()})
            if cmd.mark:
                break
            if cmd.action is not None and cmd.mode == OperatorMode.TAKEOVER:
                a, human = np.where(cmd.dof_mask, cmd.action, a).astype(np.float32), True
        if safety is not None:
            a = np.asarray(safety.filter(a, t * period, t * period, obs["state"]).action, np.float32)
        nxt, r, term, trunc, info = env.step(a)
        applied = np.asarray(info["action_applied"], np.float32)
        clipped += bool(np.abs(applied[:6] - np.clip(a[:6], -1, 1)).max() > 1e-4)
        success = bool(info["success"])
        steps.append((obs["state"], obs["task_state"], applied, reward_scale * r, bool(term), bool(trunc and not term),
                      nxt["state"], nxt["task_state"]))
        human_steps.append(human)
        obs = nxt
        if term or trunc:
            break
    if steps and not (steps[-1][4] or steps[-1][5]):
        s = steps[-1]
        steps[-1] = (*s[:5], True, *s[6:])  # cut by max_steps: a time limit
    return steps, success, clipped / max(len(steps), 1), human_steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pick_cube")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--max-env-steps", type=int, default=0)
    ap.add_argument("--utd", type=int, default=0, help="updates per env step (0: learner.utd_ratio)")
    ap.add_argument("--demos", type=int, default=30)
    ap.add_argument("--max-steps", type=int, default=100, help="episode time limit")
    ap.add_argument("--eval-every", type=int, default=2000)
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--reward-scale", type=float, default=1.0)
    ap.add_argument("--operator", action="store_true", help="the simulated operator may take over (its steps go to the demo view)")
    ap.add_argument("--safety", action="store_true", help="the controller's safety filter between actor and sim (as in the run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="")
    ap.add_argument("overrides", nargs="*", help="learner.* overrides")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    cfg = load_config(["learner=rlpd", f"sim.task={args.task}", "sim.render=false",
                       f"sim.max_episode_steps={args.max_steps}", *args.overrides])
    lc = cfg.learner
    from sim.env import make_env
    from sim.expert import make_expert

    env = make_env(cfg.sim, cfg.robot)
    expert = make_expert(args.task, cfg.robot)
    operator = None
    if args.operator:
        from sim.operator import SimulatedOperator

        operator = SimulatedOperator(cfg.teleop.sim_operator, task=args.task, seed=args.seed, robot_cfg=cfg.robot)

    safety = None
    if args.safety:
        from hil_robot.control.safety import SafetyFilter

        safety = SafetyFilter(cfg.robot, 1.0 / cfg.robot.control_hz)
    obs0, _ = env.reset(seed=10_000)
    sd, td = len(obs0["state"]), len(obs0["task_state"])
    demo, online = Buffer(200_000, sd, td), Buffer(500_000, sd, td)
    ok = 0
    for i in range(args.demos):
        steps, s, _, _ = run_episode(env, expert.act, 10_000 + i, args.max_steps, args.reward_scale, safety=safety)
        demo.add_episode(steps, lc.gamma)
        ok += s
    print(f"demos: {args.demos} episodes, {demo.n} steps, {ok} successes", flush=True)

    probe = demo.sample(2, rng)
    algo = RLPD(lc, obs_spec_from_batch(probe, lc))
    algo.fit_state_stats(demo.sample(4096, rng))
    utd = args.utd or lc.utd_ratio
    B = lc.batch_size

    def act_sample(o):
        return algo.act({"obs/state": o["state"][None], "obs/task_state": o["task_state"][None]}, deterministic=False)[0]

    def act_det(o):
        return algo.act({"obs/state": o["state"][None], "obs/task_state": o["task_state"][None]}, deterministic=True)[0]

    def batch(k):
        if online.n == 0:
            return dict(demo.sample(k, rng), is_offline=np.ones(k, np.float32))
        n_off = int(round(k * lc.rl_demo_fraction))
        return cat(demo.sample(n_off, rng), online.sample(k - n_off, rng))

    rows, env_steps, updates, t0 = [], 0, 0, time.monotonic()
    ep, succ_hist, clip_hist, takeovers = 0, [], [], 0
    next_eval = 0
    while True:
        el = time.monotonic() - t0
        if el > args.minutes * 60 or (args.max_env_steps and env_steps >= args.max_env_steps):
            break
        if env_steps >= next_eval:
            next_eval += args.eval_every
            es = []
            for j in range(args.eval_episodes):
                _, s, _, _ = run_episode(env, act_det, 20_000 + j, args.max_steps, safety=safety)
                es.append(s)
            d = demo.sample(1024, rng)
            with torch.no_grad():
                b = to_torch(d, algo.device)
                st = algo.featurizer.state(b, "obs/")
                feat = algo.featurizer(st)
                q = algo.critic(feat, b["action"][:, : algo.action_dim]).mean(0)
                qa = algo.critic(feat, algo.actor(feat, deterministic=True)[0]).mean(0)
                g_ok = float("nan")
                if algo.gripper_critic is not None:
                    cls = gripper_class(b["action"][:, GRIPPER_INDEX], st[:, STATE_LAYOUT["gripper"][0]], lc.rl_gripper_closed_below)
                    g_ok = float((algo.gripper_critic(feat).argmax(1) == cls).float().mean())
            row = {"env_steps": env_steps, "updates": updates, "minutes": el / 60, "eval_success": float(np.mean(es)),
                   "train_success_last20": float(np.mean(succ_hist[-20:])) if succ_hist else 0.0,
                   "q_demo": float(q.mean()), "mc_demo": float(d["mc_return"].mean()), "q_demo_actor": float(qa.mean()),
                   "temperature": float(algo.alpha), "clipped_share": float(np.mean(clip_hist[-20:])) if clip_hist else 0.0,
                   "gripper_agree_demo": g_ok, "episodes": ep, "takeovers": takeovers}
            rows.append(row)
            print(" ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
        steps, s, clip, human = run_episode(env, act_sample, 100_000 + ep, args.max_steps, args.reward_scale, operator, safety)
        ep += 1
        succ_hist.append(s)
        clip_hist.append(clip)
        takeovers += int(any(human))
        if any(human):  # as the replay's views: operator steps to both, the policy's own to the online view
            demo.add_episode([x for x, h in zip(steps, human) if h], lc.gamma)
        if steps:
            online.add_episode(steps, lc.gamma)
        n_new = len(steps)
        env_steps += n_new
        for _ in range(max(1, (n_new * utd) // max(lc.utd_ratio, 1))):
            m = algo.update(batch(B * lc.utd_ratio))
            updates += lc.utd_ratio
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    best = max((r["eval_success"] for r in rows), default=0.0)
    first90 = next((r for r in rows if r["eval_success"] >= 0.9), None)
    print(json.dumps({"best_eval": best, "first90_env_steps": first90 and first90["env_steps"],
                      "first90_min": first90 and first90["minutes"], "last": rows[-1] if rows else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
