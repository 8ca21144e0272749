"""Seeded policy rollouts across parallel environments.

Each environment keeps its own observation history (the last ``n_obs_steps`` observations, the
first one repeated at the start of an episode, as in Diffusion Policy) and its own queue of actions;
when a queue runs dry the policy is queried, batched over every environment that needs a new
chunk, and the first ``n_action_steps`` actions of the chunk are executed open loop.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from robolearn.eval.metrics import wilson_interval


def _make_env_fn(task_cfg: Mapping[str, Any], render_mode: str | None = None) -> Callable:
    cfg = dict(task_cfg)

    def fn():
        from robolearn.envs import make_env

        return make_env(cfg, render_mode=render_mode)

    return fn


class ChunkActor:
    """Actions for a set of environments from a chunked policy, executed open loop.

    Each environment has a queue of actions; :meth:`act` queries the policy once, batched over
    every active environment whose queue ran dry, and queues the first ``n_action_steps`` actions
    of each chunk (Diffusion Policy's receding horizon). Used by evaluation and by residual RL's
    frozen base.

    Args:
        policy: a :class:`~robolearn.policies.base.Policy` (eval mode).
        n_envs: environments.
        action_dim: the environments' action size.
        obs_keys: the observation keys the policy sees.
        device: torch device of the policy.
        predict_kwargs: extra arguments of ``policy.predict_action`` (e.g. a diffusion ``generator``).
    """

    def __init__(self, policy, n_envs: int, action_dim: int, obs_keys: Sequence[str], device: str = "cpu",
                 **predict_kwargs: Any):
        self.policy, self.n_envs, self.action_dim, self.keys = policy, n_envs, action_dim, list(obs_keys)
        self.device, self.predict_kwargs = device, predict_kwargs
        self.queue = [deque() for _ in range(n_envs)]
        self.n_queries = 0  # policy forwards (batched), for throughput reports

    def reset(self, i: int) -> None:
        """Drop environment ``i``'s queued actions (a new episode starts there)."""
        self.queue[i].clear()

    def act(self, active: Sequence[bool], history: Sequence[Sequence[Mapping[str, np.ndarray]]]) -> np.ndarray:
        """The next action of every environment, ``(n_envs, action_dim)`` float32 (zeros where inactive).

        Args:
            active: per environment, whether it runs an episode.
            history: per environment, its last ``n_obs_steps`` observations (oldest first), each
                ``{key: array}`` in raw units.
        """
        need = [i for i in range(self.n_envs) if active[i] and not self.queue[i]]
        if need:
            batch = {k: torch.from_numpy(np.stack([np.stack([h[k] for h in history[i]]) for i in need])).to(self.device)
                     for k in self.keys}
            chunk = self.policy.predict_action(batch, **self.predict_kwargs).cpu().numpy()
            self.n_queries += 1
            for j, i in enumerate(need):
                self.queue[i].extend(chunk[j, : self.policy.n_action_steps])
        actions = np.zeros((self.n_envs, self.action_dim), dtype=np.float32)
        for i in range(self.n_envs):
            if active[i]:
                actions[i] = self.queue[i].popleft()
        return actions


class PolicyExpert:
    """A trained policy as a one-environment demonstrator, ``expert(obs) -> action``, the interface of
    the scripted experts (:func:`robolearn.envs.make_expert`): :func:`robolearn.apps.collect.collect_demos`
    records its rollouts (the observations it visits, the actions it executes), e.g. to distil a
    student on the states it reaches itself (DAgger, Ross et al., AISTATS 2011).

    It keeps the last ``n_obs_steps`` observations (the first repeated at the start of an episode, as
    :func:`rollout` does) and executes ``n_action_steps`` actions of each chunk open loop
    (:class:`ChunkActor`). :meth:`reset` seeds torch's global generator with the episode seed, so the
    same policy and seeds give the same episodes.

    Args:
        policy: a :class:`~robolearn.policies.base.Policy` (eval mode); its ``action_dim`` is the
            size of the actions returned.
        obs_keys: the observation keys the policy sees.
        device: torch device of the policy.
    """

    def __init__(self, policy, obs_keys: Sequence[str], device: str = "cpu"):
        self.keys = list(obs_keys)
        self.n_obs_steps = int(policy.n_obs_steps)
        self.actor = make_actor(policy, 1, int(policy.action_dim), self.keys, device)
        self.history: deque = deque(maxlen=self.n_obs_steps)

    def reset(self, seed: int | None = None) -> None:
        """Start an episode: clear the history and the queued actions; seed torch with ``seed``."""
        self.history.clear()
        self.actor.reset(0)
        if seed is not None:
            torch.manual_seed(int(seed))

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The action for ``obs`` (``{key: array}``, raw units, one step): ``(action_dim,)`` float32.

        Raises:
            KeyError: ``obs`` lacks a key the policy sees.
        """
        missing = [k for k in self.keys if k not in obs]
        if missing:
            raise KeyError(f"the observation lacks {missing} that the policy sees (it has {sorted(obs)})")
        step = {k: np.asarray(obs[k]) for k in self.keys}
        if not self.history:
            self.history.extend([step] * self.n_obs_steps)
        else:
            self.history.append(step)
        return self.actor.act([True], [self.history])[0]


def make_actor(policy, n_envs: int, action_dim: int, obs_keys: Sequence[str], device: str = "cpu"):
    """The actor that runs ``policy`` in :func:`rollout`: the policy's own (``policy.make_actor``, e.g.
    a residual policy that acts every step) or a :class:`ChunkActor`."""
    if hasattr(policy, "make_actor"):
        return policy.make_actor(n_envs, action_dim, obs_keys, device)
    return ChunkActor(policy, n_envs, action_dim, obs_keys, device)


def rollout(
    policy,
    task_cfg: Mapping[str, Any],
    seeds: Sequence[int],
    n_envs: int = 1,
    progress: bool = True,
    device: str = "cpu",
    n_videos: int = 0,
    video_dir: str | Path | None = None,
    noise_seed: int | None = None,
    in_process: bool = False,
) -> list[dict[str, Any]]:
    """Run one episode per seed with ``policy`` and return per-episode results.

    The policy's own randomness (a diffusion policy's initial noise) is drawn from torch's global
    generator seeded with ``noise_seed`` (default: the first episode seed) inside a forked RNG state,
    so the same checkpoint, seeds and ``n_envs`` give the same results, and the caller's RNG is left
    as it was.

    Args:
        policy: a :class:`robolearn.policies.base.Policy` (eval mode).
        task_cfg: task config; ``obs_keys`` selects the observation keys the policy sees.
        seeds: one reset seed per episode.
        n_envs: environments in parallel worker processes (1 = in this process). Workers start with
            the ``forkserver`` method (no fork of a process holding torch threads), so a script that
            calls this with ``n_envs > 1`` needs the usual ``if __name__ == "__main__":`` guard.
        n_videos: record the first ``n_videos`` episodes as MP4 files in ``video_dir`` (frames from
            the task's ``render_camera``; the file name carries seed and outcome).
        video_dir: folder of the videos (required when ``n_videos > 0``).
        in_process: step all ``n_envs`` environments in this process (no worker processes: no start-up
            cost, for frequent small evaluations such as residual RL's validation).

    Returns:
        ``[{"seed", "success", "length", "return"}]`` in the order of ``seeds``; recorded episodes
        also have ``"video"`` (the file path), and a task whose ``info`` carries float scores has the
        episode's maximum of each as ``"max_<key>"`` (PushT: ``max_coverage``, the metric Diffusion
        Policy reports beside success).

    Raises:
        ValueError: ``n_videos > 0`` without ``video_dir``.
        RenderError: videos requested but no offscreen rendering backend is available.
    """
    seeds = list(seeds)
    if noise_seed is None:
        noise_seed = int(seeds[0]) if seeds else 0
    with torch.random.fork_rng(devices=[] if torch.device(device).type == "cpu" else None):
        torch.manual_seed(int(noise_seed))
        return _rollout(policy, task_cfg, seeds, n_envs, progress, device, n_videos, video_dir, in_process)


def _rollout(policy, task_cfg, seeds, n_envs, progress, device, n_videos, video_dir,
             in_process=False) -> list[dict[str, Any]]:
    import gymnasium as gym
    from robolearn.utils.progress import progress_bar

    from robolearn.eval.video import write_mp4

    seeds = list(seeds)
    if n_videos > 0 and video_dir is None:
        raise ValueError("n_videos > 0 needs a video_dir")
    n_envs = max(1, min(n_envs, len(seeds)))
    fns = [_make_env_fn(task_cfg, "rgb_array" if n_videos > 0 else None) for _ in range(n_envs)]
    fps = float(task_cfg.get("control_freq", 20))
    frames: dict[int, list] = {}  # episode index -> frames, for the recorded episodes
    mode = gym.vector.AutoresetMode.DISABLED
    if n_envs == 1 or in_process:
        venv = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    else:
        venv = gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode, context="forkserver")
    keys = list(task_cfg["obs_keys"])
    To = policy.n_obs_steps
    act_dim = venv.single_action_space.shape[0]
    actor = make_actor(policy, n_envs, act_dim, keys, device)
    results: dict[int, dict] = {}
    pending = deque(enumerate(seeds))
    slot: list[tuple[int, int] | None] = [None] * n_envs  # (episode index, seed) per env
    history = [deque(maxlen=To) for _ in range(n_envs)]
    length = np.zeros(n_envs, dtype=np.int64)
    ret = np.zeros(n_envs)
    success = np.zeros(n_envs, dtype=bool)
    best: list[dict[str, float]] = [{} for _ in range(n_envs)]  # per env: the episode's max of each score
    bar = progress_bar(total=len(seeds), desc="eval", disable=not progress, unit="ep")

    def grab_frames(envs=range(n_envs)):
        recording = [i for i in envs if slot[i] is not None and slot[i][0] < n_videos]
        if recording:
            rendered = venv.call("render")
            for i in recording:
                frames.setdefault(slot[i][0], []).append(rendered[i])

    def start(mask: np.ndarray):
        env_seeds = [None] * n_envs
        for i in np.flatnonzero(mask):
            slot[i] = pending.popleft()
            env_seeds[i] = int(slot[i][1])
        obs, _ = venv.reset(seed=env_seeds, options={"reset_mask": mask})
        for i in np.flatnonzero(mask):
            history[i].clear()
            for _ in range(To):
                history[i].append({k: obs[k][i] for k in keys})
            actor.reset(i)
            length[i], ret[i], success[i] = 0, 0.0, False
            best[i] = {}
        grab_frames(np.flatnonzero(mask))  # the first frame of the new episodes only

    start(np.arange(n_envs) < min(n_envs, len(pending)))
    try:
        while any(s is not None for s in slot):
            actions = actor.act([slot[i] is not None for i in range(n_envs)], history)
            obs, reward, terminated, truncated, info = venv.step(actions)
            grab_frames()
            done_mask = np.zeros(n_envs, dtype=bool)
            # the task's float scores in info (PushT's coverage), tracked as each episode's max
            scores = [k for k, v in info.items() if k[0] != "_" and k != "is_success"
                      and np.issubdtype(np.asarray(v).dtype, np.floating)]
            for i in range(n_envs):
                if slot[i] is None:
                    continue
                history[i].append({k: obs[k][i] for k in keys})
                length[i] += 1
                ret[i] += float(reward[i])
                success[i] |= bool(info["is_success"][i])
                for k in scores:
                    if info.get(f"_{k}", np.ones(n_envs, bool))[i]:
                        best[i][k] = max(best[i].get(k, -np.inf), float(info[k][i]))
                if terminated[i] or truncated[i]:
                    ep, seed = slot[i]
                    results[ep] = {"seed": int(seed), "success": bool(success[i]), "length": int(length[i]),
                                   "return": float(ret[i]), **{f"max_{k}": v for k, v in best[i].items()}}
                    if ep in frames:
                        name = f"episode{ep:03d}_seed{seed}_{'success' if success[i] else 'failure'}.mp4"
                        results[ep]["video"] = str(write_mp4(Path(video_dir) / name, frames.pop(ep), fps))
                    bar.update(1)
                    bar.set_postfix(success=f"{np.mean([r['success'] for r in results.values()]):.2f}", refresh=False)
                    slot[i] = None
                    done_mask[i] = True
            restart = done_mask & (np.cumsum(done_mask) <= len(pending))
            if restart.any():
                start(restart)
            idle = done_mask & ~restart
            if in_process and n_envs > 1 and idle.any():
                # gymnasium's SyncVectorEnv refuses to step a finished env with autoreset off: reset it
                # (unseeded; it is stepped with zero actions and its results are ignored)
                venv.reset(options={"reset_mask": idle})
    finally:
        bar.close()
        venv.close()
    return [results[i] for i in range(len(seeds))]


def summarize(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Success rate with its 95 % Wilson interval, mean episode length, and the mean of every per-episode
    ``max_<score>`` (as ``mean_max_<score>``), of rollout results."""
    n = len(results)
    k = sum(bool(r["success"]) for r in results)
    lo, hi = wilson_interval(k, n)
    return {
        "n_episodes": n,
        "n_success": k,
        "success_rate": k / n if n else 0.0,
        "success_ci95": [round(lo, 4), round(hi, 4)],
        "mean_episode_length": float(np.mean([r["length"] for r in results])) if n else 0.0,
        **{f"mean_{k}": float(np.mean([r[k] for r in results]))  # e.g. PushT's mean max coverage
           for k in (results[0] if n else {}) if k.startswith("max_") and all(k in r for r in results)},
    }


def evaluate_checkpoint(checkpoint, episodes: int, seed_start: int | None = None, n_envs: int | None = None,
                        use_ema: bool = True, progress: bool = True, exclude_seeds: Sequence[int] = (),
                        num_inference_steps: int | None = None, n_videos: int = 0,
                        video_dir: str | Path | None = None, n_action_steps: int | None = None,
                        backend: str = "eager", zero_initial_noise: bool = False) -> dict:
    """Load a checkpoint and evaluate it on ``episodes`` seeded episodes.

    Seeds are ``seed_start, seed_start + 1, ...`` skipping any in ``exclude_seeds`` and any seed of
    the training demonstrations (read from the store named in the checkpoint's config, when it is
    still there), so evaluation never replays a demo's initial state. ``num_inference_steps``
    overrides a diffusion policy's denoising steps (fewer steps: lower latency), ``n_action_steps``
    the actions executed per chunk (fewer: more closed-loop, more policy calls). ``n_videos`` and
    ``video_dir`` record the first episodes as MP4 (see :func:`rollout`). ``backend`` runs the policy
    through :func:`robolearn.policies.fast.accelerate` (``"onnxruntime"``, ``"compile"``; eager where
    the backend is missing), with torch's thread count. ``zero_initial_noise`` samples a diffusion
    policy from ``x_T = 0`` (deterministic chunks: how residual RL runs its frozen base).

    Returns:
        The :func:`summarize` dict plus ``checkpoint``, ``checkpoint_dir`` (the directory read: a run
        directory's best or latest checkpoint), ``use_ema``, ``task``, ``seeds``, ``episodes``
        (per-episode results) and ``wall_s``.

    Raises:
        CheckpointError: unreadable checkpoint.
        ValueError: a bad argument (:func:`check_episode_args`; ``n_envs < 1``, ``n_videos < 0``, an
            unknown backend), checked before the checkpoint is read, or a step count, backend or
            ``zero_initial_noise`` the policy cannot take.
    """
    from robolearn.policies.fast import accelerate, check_backend
    from robolearn.train.checkpoint import _checkpoint_dir, load_policy

    check_episode_args(episodes, seed_start)
    for name, value, lo in (("n_envs", n_envs, 1), ("n_videos", n_videos, 0)):
        if value is not None and value < lo:
            raise ValueError(f"{name} must be >= {lo}, got {value}")
    check_backend(backend)
    policy, cfg = load_policy(checkpoint, use_ema=use_ema)
    chunked = chunked_model(policy)
    set_inference_steps(chunked, num_inference_steps)
    set_action_steps(policy, n_action_steps)
    if zero_initial_noise:
        set_zero_initial_noise(chunked)
    policy = accelerate(policy, backend, threads=torch.get_num_threads())
    n_envs = int(cfg.eval.n_envs if n_envs is None else n_envs)
    seeds = held_out_seeds(cfg, episodes, seed_start, exclude_seeds)
    t0 = time.monotonic()
    results = rollout(policy, cfg.task, seeds, n_envs=n_envs, progress=progress, n_videos=n_videos,
                      video_dir=video_dir)
    out = summarize(results)
    out.update({"checkpoint": str(checkpoint), "checkpoint_dir": str(_checkpoint_dir(checkpoint)),
                "use_ema": bool(use_ema), "task": cfg.task.name, "policy": cfg.policy.name,
                "num_inference_steps": getattr(chunked, "num_inference_steps", None),
                "zero_initial_noise": bool(getattr(chunked, "zero_initial_noise", False)),
                "n_action_steps": policy.n_action_steps, "backend": getattr(policy, "backend", "eager"),
                "seeds": [seeds[0], seeds[-1]], "n_envs": n_envs, "wall_s": round(time.monotonic() - t0, 2),
                "episodes": results})
    return out


def chunked_model(policy):
    """The model that predicts ``policy``'s action chunks, which ``num_inference_steps``, the initial
    noise and an inference backend apply to: a per-step (residual-RL) policy's frozen ``base``, else
    the policy itself."""
    return policy.base if getattr(policy, "per_step", False) else policy


def set_zero_initial_noise(policy) -> None:
    """Make a diffusion policy sample from ``x_T = 0`` (deterministic chunks with DDIM: how residual
    RL runs its frozen base).

    Raises:
        ValueError: a policy that does not start from noise (ACT), or a consistency policy (which
            cannot start from zeros).
    """
    if not hasattr(policy, "zero_initial_noise"):
        raise ValueError(f"{type(policy).__name__} does not start from x_T = 0: zero initial noise does not apply")
    policy.zero_initial_noise = True


def set_inference_steps(policy, steps: int | None) -> None:
    """Override the denoising steps of a diffusion policy (``None`` keeps the checkpoint's).

    Raises:
        ValueError: ``steps < 1``, or a policy without denoising steps.
    """
    if steps is None:
        return
    if not hasattr(policy, "num_inference_steps"):
        raise ValueError(f"{type(policy).__name__} has no denoising steps to set")
    if steps < 1:
        raise ValueError(f"inference steps must be >= 1, got {steps}")
    policy.num_inference_steps = int(steps)


def set_action_steps(policy, steps: int | None) -> None:
    """Override the actions executed per chunk, ``n_action_steps`` (``None`` keeps the checkpoint's),
    through the policy's validated setter (:attr:`robolearn.policies.base.Policy.n_action_steps`).

    Raises:
        ValueError: ``steps`` outside ``[1, horizon - n_obs_steps + 1]`` (the chunk predicted from the
            current step on).
    """
    if steps is not None:
        policy.n_action_steps = steps


def check_episode_args(episodes: int, seed_start: int | None = None) -> None:
    """Check the episode count and first seed of ``robolearn eval`` and ``robolearn deploy``.

    Raises:
        ValueError: ``episodes < 1``, or ``seed_start < 0`` (environments take only seeds >= 0).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if seed_start is not None and seed_start < 0:
        raise ValueError(f"seed_start must be >= 0, got {seed_start}")


def held_out_seeds(cfg, episodes: int, seed_start: int | None = None, exclude_seeds: Sequence[int] = ()) -> list[int]:
    """The evaluation seeds of a run: ``episodes`` seeds from ``seed_start`` (default the config's
    ``eval.seed_start``) on, skipping ``exclude_seeds`` and every demonstration seed of the run's
    store. ``robolearn eval`` and ``robolearn deploy`` use the same seeds for the same arguments."""
    start = int(cfg.eval.seed_start if seed_start is None else seed_start)
    excluded = set(int(s) for s in exclude_seeds) | _demo_seeds(cfg)
    seeds, s = [], start
    while len(seeds) < episodes:
        if s not in excluded:
            seeds.append(s)
        s += 1
    return seeds


def _demo_seeds(cfg) -> set[int]:
    from robolearn.data.store import EpisodeStore
    from robolearn.utils.errors import StoreError

    try:
        store = EpisodeStore.open(cfg.data.path)
        return set(int(s) for s in store.episode_meta("seed")) if "seed" in store.meta_keys else set()
    except (StoreError, OSError):
        return set()
