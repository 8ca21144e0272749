"""``robolearn collect``: roll out a task's scripted expert and record its episodes into a Zarr store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

from robolearn.data.schema import create_episode_store, open_for_append
from robolearn.data.store import KeyInfo


def _action_doc(env) -> KeyInfo:
    units = getattr(env, "action_units", None) or ("m, rad, gripper" if "rad" in " ".join(env.action_layout) else "m, gripper")
    return KeyInfo(env.action_space.shape, "float32", units, f"{env.action_type}: " + ", ".join(env.action_layout))


def collect_demos(
    task_cfg: Mapping[str, Any],
    out: str | Path,
    episodes: int,
    seed_start: int = 0,
    keep_failed: bool = False,
    append: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    expert=None,
    source: str = "scripted_expert",
) -> dict[str, Any]:
    """Roll out the task's scripted expert (or another ``expert``, e.g. a trained policy's
    :class:`~robolearn.eval.rollout.PolicyExpert`) and commit each episode to a store, one at a time.

    Episode ``i`` uses seed ``seed_start + i`` (appending continues after the largest seed already
    in the store). Failed episodes are discarded unless ``keep_failed``; their count is reported.

    Args:
        task_cfg: task config (``configs/task/*.yaml``).
        out: store path (a directory, conventionally ``*.zarr``).
        episodes: episodes to attempt; with ``keep_failed`` false only successful ones are kept.
        seed_start: first seed.
        keep_failed: also commit failed episodes (``meta/success`` is 0 for them).
        append: add to an existing store instead of refusing.
        overwrite: replace an existing store.
        expert: ``expert(obs) -> action`` with ``reset(seed=...)`` (default: the task's scripted expert).
        source: the store's ``source`` attribute of a new store (what recorded it).

    Returns:
        ``{"path", "attempted", "kept", "dropped", "steps", "wall_s", "seeds"}``.

    Raises:
        ValueError: ``episodes < 1`` or ``seed_start < 0``, before the store is touched.
        StoreError: ``out`` exists and neither ``append`` nor ``overwrite`` is set, or the
            existing store was recorded for another task.
    """
    from robolearn.utils.progress import progress_bar

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if seed_start < 0:
        raise ValueError(f"seed_start must be >= 0, got {seed_start}")

    from robolearn.envs import make_env, make_expert

    out = Path(out)
    env = make_env(task_cfg)
    if expert is None:
        expert = make_expert(task_cfg.get("env") or task_cfg["name"])
    if out.exists() and not overwrite:
        store = open_for_append(out, task_cfg["name"], append, can_overwrite=True)
        if store.n_episodes and "seed" in store.meta_keys:
            seed_start = max(seed_start, int(store.episode_meta("seed").max()) + 1)
    else:
        low, high = env.action_space.low.tolist(), env.action_space.high.tolist()
        obs, _ = env.reset(seed=seed_start)
        store = create_episode_store(
            out, obs=obs, action=_action_doc(env), fps=float(task_cfg.get("control_freq", 20)),
            robot=task_cfg.get("robot"), task=task_cfg["name"], source=source, overwrite=overwrite,
            action_space={"type": env.action_type, "dim": len(low), "low": low, "high": high,
                          "layout": list(env.action_layout)},
            image_codec=task_cfg.get("image_codec"),
            attrs={"cameras": {c: dict(zip(("height", "width"), env.cameras.image_size)) for c in env.cameras.cameras}},
            obs_units=getattr(env, "obs_units", None),
        )

    kept = dropped = steps = 0
    t0 = time.monotonic()
    bar = progress_bar(range(episodes), desc=f"collect {task_cfg['name']}", disable=not progress, unit="ep")
    seeds = []
    for i in bar:
        seed = seed_start + i
        obs, _ = env.reset(seed=seed)
        expert.reset(seed=seed)
        success = False
        for _t in range(env.max_episode_steps):
            action = expert(obs)
            store.add_step({**obs, "action": action})
            obs, _, terminated, truncated, info = env.step(action)
            success = success or info["is_success"]
            if terminated or truncated:
                break
        if success or keep_failed:
            steps += store.episode_in_progress
            store.commit_episode({"seed": seed, "success": success, "length": _t + 1})
            kept += 1
            seeds.append(seed)
        else:
            store.discard_episode()
            dropped += 1
        bar.set_postfix(kept=kept, dropped=dropped, refresh=False)
    env.close()
    return {"path": str(out), "attempted": episodes, "kept": kept, "dropped": dropped, "steps": steps,
            "wall_s": round(time.monotonic() - t0, 2), "seeds": [seeds[0], seeds[-1]] if seeds else []}


def collect(task: str | None, episodes: int, out: str | Path | None = None, cameras: list[str] | None = None,
            overrides: list[str] | tuple = (), policy: str | Path | None = None, **kwargs) -> dict[str, Any]:
    """``robolearn collect``: compose task ``task``'s config (default ``lift``; with ``cameras`` as
    ``task.cameras`` and further ``overrides``) and run :func:`collect_demos` into ``out``
    (default: the config's ``data.path``); ``kwargs`` go to :func:`collect_demos`.

    With ``policy`` (a checkpoint or run directory) the demonstrator is that trained policy
    (:class:`~robolearn.eval.rollout.PolicyExpert`, EMA weights) on the task of its own config
    (``task.*`` overrides apply on top; ``cameras`` are refused: the policy's config names its cameras;
    ``out`` is required), and
    the store's ``source`` names the checkpoint. Its rollouts are the states a policy reaches
    itself: ``robolearn distill`` can distil a student on them (DAgger).

    Raises:
        ConfigError: a bad override or unknown task (with ``policy``: other than ``task.*``, or a key,
            type or value the task's schema refuses, :func:`~robolearn.utils.config.override_saved_task`);
            ``task`` other than the policy's; ``cameras`` or no ``out`` with ``policy``.
        CheckpointError: an unreadable ``policy`` checkpoint.
        StoreError: see :func:`collect_demos`.
    """
    from robolearn.utils.config import load_config, override_saved_task
    from robolearn.utils.errors import ConfigError

    if policy is None:
        cams = [f"task.cameras=[{','.join(cameras)}]"] if cameras else []
        cfg = load_config([f"task={task or 'lift'}", *cams, *overrides])
        return collect_demos(cfg.task, out or cfg.data.path, episodes, **kwargs)

    from robolearn.eval.rollout import PolicyExpert
    from robolearn.train.checkpoint import _checkpoint_dir, load_policy

    if out is None:
        raise ConfigError("collect: --policy needs --out (the store of the policy's rollouts)")
    if cameras:
        raise ConfigError("collect: --cameras does not apply with --policy (the policy's config names its cameras)")
    model, pcfg = load_policy(policy)
    if task is not None and task != pcfg.task.name:
        raise ConfigError(f"collect: --task {task} but the policy {policy} was trained on {pcfg.task.name}")
    if overrides:
        try:
            pcfg = override_saved_task(pcfg, overrides)
        except ConfigError as exc:
            raise ConfigError(f"collect --policy: {exc}") from None
    expert = PolicyExpert(model, list(pcfg.task.obs_keys))
    return collect_demos(pcfg.task, out, episodes, expert=expert,
                         source=f"policy {_checkpoint_dir(policy).resolve()}", **kwargs)
