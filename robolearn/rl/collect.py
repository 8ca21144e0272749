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
    valid: torch.Tensor       # 1 where the step belongs to an episode, 0 where the env waited for a chunk boundary
    log_prob: torch.Tensor
    values: torch.Tensor
    next_values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    episodes: list[dict] = field(default_factory=list)   # finished episodes: seed, success, length
    timings: dict[str, float] = field(default_factory=dict)  # env_s, base_s, residual_s
    base_queries: int = 0

    def flat(self, advantages: torch.Tensor, returns: torch.Tensor) -> dict[str, torch.Tensor]:
        """The PPO batch: the valid steps only, flattened to ``(M, ...)`` (``input``, ``residual``,
        ``log_prob``, and the given ``(T, N)`` ``advantages`` and ``returns``)."""
        keep = self.valid.flatten() > 0
        return {"input": self.input.flatten(0, 1)[keep], "residual": self.residual.flatten(0, 1)[keep],
                "log_prob": self.log_prob.flatten(0, 1)[keep], "advantages": advantages.flatten()[keep],
                "returns": returns.flatten()[keep]}


class SeedCounter:
    """Hands out episode seeds ``start, start + step, start + 2 * step, ...`` below ``stop``, never one
    of ``exclude`` (checked). Parallel collection groups take interleaved seeds of one range (group
    ``g`` of ``G``: ``start + g``, step ``G``), so no two groups ever draw the same seed.

    Args:
        start: the first seed.
        stop: one past the last seed allowed (the range is reserved for this use).
        exclude: seeds that must never be drawn (demonstration and evaluation seeds).
        step: distance between consecutive seeds (>= 1).

    Raises:
        ValueError: the range ``[start, stop)`` meets ``exclude`` (at construction), or is used up.
    """

    def __init__(self, start: int, stop: int, exclude: Sequence[int] | set = (), step: int = 1):
        bad = sorted(s for s in set(exclude) if start <= s < stop)
        if bad:
            raise ValueError(f"RL seed range [{start}, {stop}) overlaps reserved seeds (demos or evaluation), "
                             f"e.g. {bad[:5]}")
        if step < 1:
            raise ValueError(f"seed step must be >= 1, got {step}")
        self.start, self.stop, self.next, self.step = int(start), int(stop), int(start), int(step)

    def take(self) -> int:
        """The next seed."""
        if self.next >= self.stop:
            raise ValueError(f"RL seed range [{self.start}, {self.stop}) is used up")
        s = self.next
        self.next += self.step
        return s


def collect_rollout(policy, venv, obs_keys: Sequence[str], n_steps: int, seeds: SeedCounter,
                    generator: torch.Generator, reward_fn: Callable | None = None,
                    align_chunks: bool = True) -> Rollout:
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
        reward_fn: optional shaping ``(reward (N,), obs, next_obs, terminated (N,)) -> reward (N,)``
            (``obs``/``next_obs``: the vector env's observation dicts ``{key: (N, ...)}`` before and
            after the step); default: the task's reward (sparse success).
        align_chunks: an environment whose episode ends waits (its steps marked invalid: no reward,
            no advantage, left out of the update) until the rollout step is a multiple of the base's
            ``n_action_steps`` before its next episode starts (it is reset at once, since the vector
            env steps every environment, idles with zero actions, and is reset again with the same
            seed at the boundary), so every environment asks the base
            for a chunk at the same steps and each query is one batch of all of them. Without it,
            episodes that end early put environments out of phase and the base is queried up to
            ``n_action_steps`` times as often (each query costs about the same at these batch sizes).

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
    period = int(policy.n_action_steps) if align_chunks else 1
    cur_obs: dict[str, np.ndarray] = {}

    def start(mask: np.ndarray, same_seed: bool = False):
        ids = np.flatnonzero(mask)
        env_seeds = [None] * n_envs
        for i in ids:
            if not same_seed:
                env_seed[i] = seeds.take()
            env_seeds[i] = env_seed[i]
        t0 = time.perf_counter()
        obs, _ = venv.reset(seed=env_seeds, options={"reset_mask": mask})
        timings["env_s"] += time.perf_counter() - t0
        for k in obs:
            if k in cur_obs:
                cur_obs[k][ids] = obs[k][ids]
            else:
                cur_obs[k] = np.array(obs[k])
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
           "dones": torch.zeros(T, N), "valid": torch.zeros(T, N)}
    episodes: list[dict] = []
    active = [True] * N
    waiting = np.zeros(N, dtype=bool)  # episode over, next one starts at the next chunk boundary
    final_value = {}  # (t, i) -> bootstrap value of a truncated episode's final observation
    for t in range(T):
        if waiting.any() and t % period == 0:
            start(waiting, same_seed=True)  # the same initial state again: the waiting steps leave no trace
            for i in np.flatnonzero(waiting):
                active[i] = True
            waiting[:] = False
        buf["valid"][t] = torch.tensor(active, dtype=torch.float32)
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
            reward = np.asarray(reward_fn(reward, cur_obs, obs, np.asarray(terminated)), dtype=np.float32)
        idle = ~np.asarray(active)
        reward[idle] = 0.0
        for k in obs:
            cur_obs[k] = np.array(obs[k])
        buf["rewards"][t] = torch.from_numpy(reward)
        ended = np.asarray(terminated) | np.asarray(truncated)
        if (ended & idle).any():  # a waiting environment cannot stay ended in the vector env: reset it again
            start(ended & idle, same_seed=True)
        done = ended & ~idle
        buf["dones"][t] = torch.from_numpy((done | idle).astype(np.float32))
        for i in np.flatnonzero(~idle):
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
            start(done)  # the vector env steps every environment, so a finished one is reset at once
            if period > 1 and (t + 1) % period:
                waiting |= done  # ... and reset again with its seed at the next chunk boundary
                for i in np.flatnonzero(done):
                    active[i] = False
    # next-state values: the following step's value unless the episode ended there
    with torch.no_grad():
        actor.act(active, history)  # the input of the state after the last step (its action is not executed)
        v_after = policy.residual.value(actor.last["input"])
    buf["values"] *= buf["valid"]
    for t in range(T):
        nxt = buf["values"][t + 1] if t + 1 < T else v_after
        buf["next_values"][t] = torch.where(buf["dones"][t] > 0, torch.zeros(N), nxt)
    for (t, i), v in final_value.items():
        buf["next_values"][t, i] = v
    return Rollout(**buf, episodes=episodes, timings=timings, base_queries=actor.base.n_queries)


def collect_parallel(policy, venvs: Sequence, obs_keys: Sequence[str], n_steps: int, seeds: Sequence[SeedCounter],
                     generator: torch.Generator, reward_fn: Callable | None = None,
                     align_chunks: bool = True) -> Rollout:
    """:func:`collect_rollout` in several groups of environments at once, one thread per group, merged
    into one :class:`Rollout` (environments of group 0 first).

    The threads overlap one group's base forward (torch runs its kernels without holding Python's
    GIL) with another group's environment stepping, so two groups keep two cores busy where one
    group leaves one core idle while the other works. Each group draws from its own generator,
    seeded from ``generator`` in group order before any thread starts, and from its own seed
    counter, so the merged rollout does not depend on how the threads interleave: a resumed run
    repeats the next update exactly. The frozen base and the residual are only read (the base's
    DDIM scheduler is reset to the same step count by every query, and its ``step`` keeps no state
    between calls).

    Args:
        venvs: one vector env per group (:func:`make_vector_env`).
        seeds: one :class:`SeedCounter` per group, over disjoint seeds (interleaved with ``step``).
        generator: seeds the groups' generators (advanced by one draw per group).
        policy, obs_keys, n_steps, reward_fn, align_chunks: as :func:`collect_rollout`.

    Returns:
        The merged rollout: tensors ``(T, sum of N_g, ...)``; episodes, timings (summed over the
        groups: thread time, which may exceed wall time) and base queries of all groups.

    Raises:
        ValueError: ``venvs`` and ``seeds`` of different lengths, or none.
    """
    from concurrent.futures import ThreadPoolExecutor

    if len(venvs) != len(seeds) or not venvs:
        raise ValueError(f"one seed counter per vector env: got {len(venvs)} vector envs and {len(seeds)} counters")
    gens = [torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            for _ in venvs]
    if len(venvs) == 1:
        parts = [collect_rollout(policy, venvs[0], obs_keys, n_steps, seeds[0], gens[0], reward_fn, align_chunks)]
    else:
        with ThreadPoolExecutor(max_workers=len(venvs), thread_name_prefix="rl-collect") as pool:
            futures = [pool.submit(collect_rollout, policy, v, obs_keys, n_steps, s, g, reward_fn, align_chunks)
                       for v, s, g in zip(venvs, seeds, gens)]
            parts = [f.result() for f in futures]
    tensors = {f: torch.cat([getattr(p, f) for p in parts], dim=1)
               for f in ("input", "residual", "valid", "log_prob", "values", "next_values", "rewards", "dones")}
    timings = {k: sum(p.timings.get(k, 0.0) for p in parts) for k in parts[0].timings}
    return Rollout(**tensors, episodes=[e for p in parts for e in p.episodes], timings=timings,
                   base_queries=sum(p.base_queries for p in parts))
