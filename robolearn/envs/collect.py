"""Generate demonstrations with a scripted expert and record them into a Zarr episode store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping


from robolearn.data.store import EpisodeStore, KeyInfo, is_image_key
from robolearn.utils.errors import StoreError

OBS_DOC = {
    "robot0_eef_pos": KeyInfo((3,), "float32", "m", "end-effector position, world frame"),
    "robot0_eef_quat": KeyInfo((4,), "float32", "xyzw", "end-effector orientation quaternion, world frame"),
    "robot0_gripper_qpos": KeyInfo((2,), "float32", "m", "gripper finger joint positions"),
    "agent_pos": KeyInfo((2,), "float32", "m", "pusher position, world frame"),
    "keypoints": KeyInfo((16,), "float32", "m", "PushT block's 8 corners (x, y), world frame"),
}


def _action_doc(env) -> KeyInfo:
    units = "m, rad, gripper" if "rad" in " ".join(env.action_layout) else "m, gripper"
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
) -> dict[str, Any]:
    """Roll out the task's scripted expert and commit each episode to a store, one at a time.

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

    Returns:
        ``{"path", "attempted", "kept", "dropped", "steps", "wall_s", "seeds"}``.

    Raises:
        StoreError: ``out`` exists and neither ``append`` nor ``overwrite`` is set, or the
            existing store was recorded for another task.
    """
    from robolearn.utils.progress import progress_bar

    from robolearn.envs import make_env, make_expert

    out = Path(out)
    env = make_env(task_cfg)
    expert = make_expert(task_cfg.get("env") or task_cfg["name"])
    if out.exists() and not overwrite:
        if not append:
            raise StoreError(f"{out}: already exists (use --append to add episodes or --overwrite to replace it)")
        store = EpisodeStore.open(out, mode="a")
        if store.attrs.get("task") not in (None, task_cfg["name"]):
            raise StoreError(f"{out}: recorded for task {store.attrs.get('task')!r}, not {task_cfg['name']!r}")
        if store.n_episodes and "seed" in store.meta_keys:
            seed_start = max(seed_start, int(store.episode_meta("seed").max()) + 1)
    else:
        low, high = env.action_space.low.tolist(), env.action_space.high.tolist()
        store = EpisodeStore.create(
            out, fps=float(task_cfg.get("control_freq", 20)), robot=task_cfg.get("robot"), overwrite=overwrite,
            action_space={"type": env.action_type, "dim": len(low), "low": low, "high": high,
                          "layout": list(env.action_layout)},
            attrs={"task": task_cfg["name"], "source": "scripted_expert",
                   "cameras": {c: dict(zip(("height", "width"), env.cameras.image_size)) for c in env.cameras.cameras}},
        )
        obs, _ = env.reset(seed=seed_start)
        codec = task_cfg.get("image_codec")
        for k, v in obs.items():
            if is_image_key(v.shape, v.dtype):
                info = KeyInfo(v.shape, "uint8", None, f"RGB image of camera {k[:-len('_image')]}, top row first",
                               codec=codec)
            else:
                info = OBS_DOC.get(k, KeyInfo(v.shape, "float32", None, f"{task_cfg['name']} object state"))
            store.define_key(k, info)
        store.define_key("action", _action_doc(env))

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
