"""Simulation tasks (gymnasium API) and their scripted experts."""

from __future__ import annotations

from typing import Any, Mapping

TASK_TYPES = {"lift": "robosuite", "can": "robosuite", "square": "robosuite", "insertion": "mujoco", "pusht": "mujoco"}


def make_env(task_cfg: Mapping[str, Any], render_mode: str | None = None):
    """Build the gymnasium environment described by a task config (``configs/task/*.yaml``).

    The config's ``cameras`` (list of camera names) and ``image_size`` (``[H, W]``) add image
    observations; ``env`` names the underlying environment when the config's ``name`` differs
    (e.g. ``lift_image`` is ``lift`` with a camera); ``render_camera`` picks the video camera.

    Args:
        task_cfg: the task config.
        render_mode: ``None`` or ``"rgb_array"`` (frames for videos from ``env.render()``).

    Raises:
        ValueError: unknown task name or type, or unknown camera.
    """
    name = task_cfg["name"]
    kind = task_cfg.get("type", TASK_TYPES.get(name))
    view = {"cameras": list(task_cfg.get("cameras") or []), "render_mode": render_mode}
    if task_cfg.get("image_size"):  # otherwise the environment's own default size
        view["image_size"] = tuple(task_cfg["image_size"])
    if task_cfg.get("render_camera"):
        view["render_camera"] = task_cfg["render_camera"]
    if kind == "robosuite":
        from robolearn.envs.robosuite_env import RobosuiteEnv

        return RobosuiteEnv(task=task_cfg.get("env", name), robot=task_cfg.get("robot", "Panda"),
                            max_episode_steps=int(task_cfg.get("max_episode_steps", 160)),
                            control_freq=float(task_cfg.get("control_freq", 20)), **view)
    if kind == "mujoco" and task_cfg.get("env", name) == "insertion":
        from robolearn.envs.insertion import InsertionEnv

        return InsertionEnv(max_episode_steps=int(task_cfg.get("max_episode_steps", 200)),
                            hold_steps=int(task_cfg.get("hold_steps", 5)), **view)
    if kind == "mujoco" and task_cfg.get("env", name) == "pusht":
        from robolearn.envs.pusht import PushTEnv

        return PushTEnv(max_episode_steps=int(task_cfg.get("max_episode_steps", 300)), **view)
    raise ValueError(f"unknown task {name!r} of type {kind!r}; known tasks: {sorted(TASK_TYPES)}")


def make_expert(task_name: str, **kwargs):
    """The scripted expert of a task.

    Raises:
        ValueError: the task has no scripted expert.
    """
    if task_name == "lift":
        from robolearn.envs.experts import LiftExpert

        return LiftExpert(**kwargs)
    if task_name == "can":
        from robolearn.envs.experts import CanExpert

        return CanExpert(**kwargs)
    if task_name == "square":
        from robolearn.envs.experts import SquareExpert

        return SquareExpert(**kwargs)
    if task_name == "insertion":
        from robolearn.envs.insertion import InsertionExpert

        return InsertionExpert(**kwargs)
    if task_name == "pusht":
        from robolearn.envs.pusht import PushTExpert

        return PushTExpert(**kwargs)
    raise ValueError(f"no scripted expert for task {task_name!r}")
