"""Vectorized residual-RL rollouts: many environments, one batched base forward per chunk.

Every rollout (one PPO iteration) starts fresh episodes in all environments with seeds drawn in
order from the run's RL seed range, so an iteration is a function of the parameters, the RNG state
and the seed counter alone: a run resumed from a checkpoint repeats the next update exactly.
Episodes that end mid-rollout are restarted at once with the next seed.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch


def make_vector_env(task_cfg: Mapping[str, Any], n_envs: int, kind: str = "sync"):
    """A gymnasium vector env of ``n_envs`` copies of the task, autoreset off (resets are seeded by the caller).

    Args:
        kind: ``"sync"`` (all in this process) or ``"async"`` (one worker process per env,
            ``forkserver``; needs the ``if __name__ == "__main__":`` guard in scripts).

    Raises:
        ValueError: unknown ``kind`` or ``n_envs < 1``.
    """
    import gymnasium as gym

    from robolearn.eval.rollout import _make_env_fn

    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    fns = [_make_env_fn(task_cfg) for _ in range(n_envs)]
    mode = gym.vector.AutoresetMode.DISABLED
    if kind == "sync":
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    if kind == "async":
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode, context="forkserver")
    raise ValueError(f"vector env kind must be 'sync' or 'async', got {kind!r}")


@dataclass
class Rollout:
    """One rollout of ``T`` steps in ``N`` environments (tensors ``(T, N, ...)``) and its episode outcomes."""

    input: torch.Tensor
    residual: torch.Tensor
    log_prob: torch.Tensor
    values: torch.Tensor
    next_values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    episodes: list[dict] = field(default_factory=list)   # finished episodes: seed, success, length
    timings: dict[str, float] = field(default_factory=dict)  # env_s, base_s, residual_s
    base_queries: int = 0


class SeedCounter:
    """Hands out episode seeds ``start, start + 1, ...``, never one of ``exclude`` (checked).

    Args:
        start: the first seed.
        stop: one past the last seed allowed (the range is reserved for this use).
        exclude: seeds that must never be drawn (demonstration and evaluation seeds).

    Raises:
        ValueError: the range ``[start, stop)`` meets ``exclude`` (at construction), or is used up.
    """

    def __init__(self, start: int, stop: int, exclude: Sequence[int] | set = ()):
        bad = sorted(s for s in set(exclude) if start <= s < stop)
        if bad:
            raise ValueError(f"RL seed range [{start}, {stop}) overlaps reserved seeds (demos or evaluation), "
                             f"e.g. {bad[:5]}")
        self.start, self.stop, self.next = int(start), int(stop), int(start)

    def take(self) -> int:
        """The next seed."""
        if self.next >= self.stop:
            raise ValueError(f"RL seed range [{self.start}, {self.stop}) is used up")
        s = self.next
        self.next += 1
        return s


def collect_rollout(policy, venv, obs_keys: Sequence[str], n_steps: int, seeds: SeedCounter,
                    generator: torch.Generator, reward_fn: Callable | None = None) -> Rollout:
    """Run ``n_steps`` steps of the stochastic combined policy in every environment of ``venv``.

    The base acts per chunk (its ``n_action_steps`` open loop; one batched forward for all
    environments whose chunk ran out), the residual every step with a sample from its Gaussian.
    At an episode end the next state's value is 0 on termination (success) and the critic's value
    of the final observation on truncation (the base action in that input is the environment's
    next queued base action, or its last one when the chunk ran out: an approximation noted here).

    Args:
        policy: a :class:`~robolearn.rl.residual.ResidualPolicy`.
        venv: vector env with autoreset disabled (:func:`make_vector_env`).
        obs_keys: observation keys of the policy.
        n_steps: steps per environment ``T``.
        seeds: the RL seed counter (every episode, including the first, takes the next seed).
        generator: draws the residual's noise and the base's diffusion noise.
        reward_fn: optional shaping ``(reward (N,), info) -> reward (N,)``; default: the task's
            reward (sparse success).

    Returns:
        The :class:`Rollout`.
    """
    n_envs = venv.num_envs
    actor = policy.make_actor(n_envs, venv.single_action_space.shape[0], obs_keys, deterministic=False,
                              generator=generator)
    To = policy.n_obs_steps
    history = [deque(maxlen=To) for _ in range(n_envs)]
    env_seed = [0] * n_envs
    length = np.zeros(n_envs, dtype=np.int64)
    success = np.zeros(n_envs, dtype=bool)
    timings = {"env_s": 0.0, "base_s": 0.0, "residual_s": 0.0}

    def start(mask: np.ndarray):
        ids = np.flatnonzero(mask)
        env_seeds = [None] * n_envs
        for i in ids:
            env_seed[i] = seeds.take()
            env_seeds[i] = env_seed[i]
        t0 = time.perf_counter()
        obs, _ = venv.reset(seed=env_seeds, options={"reset_mask": mask})
        timings["env_s"] += time.perf_counter() - t0
        for i in ids:
            history[i].clear()
            for _ in range(To):
                history[i].append({k: obs[k][i] for k in obs_keys})
            actor.reset(i)
            length[i], success[i] = 0, False

    start(np.ones(n_envs, dtype=bool))
    T, N, D, A = n_steps, n_envs, policy.in_dim, policy.action_dim
    buf = {"input": torch.zeros(T, N, D), "residual": torch.zeros(T, N, A), "log_prob": torch.zeros(T, N),
           "values": torch.zeros(T, N), "next_values": torch.zeros(T, N), "rewards": torch.zeros(T, N),
           "dones": torch.zeros(T, N)}
    episodes: list[dict] = []
    active = [True] * N
    final_value = {}  # (t, i) -> bootstrap value of a truncated episode's final observation
    for t in range(T):
        q0 = actor.base.n_queries
        t0 = time.perf_counter()
        action = actor.act(active, history)
        t1 = time.perf_counter()
        last = actor.last
        with torch.no_grad():
            buf["values"][t] = policy.residual.value(last["input"])
        buf["input"][t], buf["residual"][t], buf["log_prob"][t] = last["input"], last["residual"], last["log_prob"]
        t2 = time.perf_counter()
        # act() of a step that ran the base counts as base time (its residual part is ~1 %), else residual time
        timings["base_s" if actor.base.n_queries > q0 else "residual_s"] += t1 - t0
        timings["residual_s"] += t2 - t1
        obs, reward, terminated, truncated, info = venv.step(action)
        timings["env_s"] += time.perf_counter() - t2
        reward = np.asarray(reward, dtype=np.float32)
        if reward_fn is not None:
            reward = np.asarray(reward_fn(reward, info), dtype=np.float32)
        buf["rewards"][t] = torch.from_numpy(reward)
        done = np.asarray(terminated) | np.asarray(truncated)
        buf["dones"][t] = torch.from_numpy(done.astype(np.float32))
        for i in range(N):
            history[i].append({k: obs[k][i] for k in obs_keys})
            length[i] += 1
            success[i] |= bool(info["is_success"][i])
        for i in np.flatnonzero(done):
            episodes.append({"seed": env_seed[i], "success": bool(success[i]), "length": int(length[i])})
            if truncated[i] and not terminated[i]:
                q = actor.base.queue[i]
                base_next = torch.from_numpy(np.asarray(q[0] if q else last["base"][i].numpy()))[None]
                o = {k: torch.from_numpy(obs[k][i])[None] for k in policy.obs_keys}
                with torch.no_grad():
                    final_value[(t, i)] = float(policy.residual.value(policy.residual_input(o, base_next))[0])
        if done.any():
            start(done)
    # next-state values: the following step's value unless the episode ended there
    with torch.no_grad():
        actor.act(active, history)  # the input of the state after the last step (its action is not executed)
        v_after = policy.residual.value(actor.last["input"])
    for t in range(T):
        nxt = buf["values"][t + 1] if t + 1 < T else v_after
        buf["next_values"][t] = torch.where(buf["dones"][t] > 0, torch.zeros(N), nxt)
    for (t, i), v in final_value.items():
        buf["next_values"][t, i] = v
    return Rollout(**buf, episodes=episodes, timings=timings, base_queries=actor.base.n_queries)
