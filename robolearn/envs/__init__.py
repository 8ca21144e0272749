"""Simulation tasks (gymnasium API) and their scripted experts."""

from __future__ import annotations

from typing import Any, Mapping

TASK_TYPES = {"lift": "robosuite", "insertion": "mujoco"}


def make_env(task_cfg: Mapping[str, Any]):
    """Build the gymnasium environment described by a task config (``configs/task/*.yaml``).

    Raises:
        ValueError: unknown task name or type.
    """
    name = task_cfg["name"]
    kind = task_cfg.get("type", TASK_TYPES.get(name))
    if kind == "robosuite":
        from robolearn.envs.robosuite_env import RobosuiteEnv

        return RobosuiteEnv(task=name, robot=task_cfg.get("robot", "Panda"),
                            max_episode_steps=int(task_cfg.get("max_episode_steps", 160)),
                            control_freq=float(task_cfg.get("control_freq", 20)))
    if kind == "mujoco" and name == "insertion":
        from robolearn.envs.insertion import InsertionEnv

        return InsertionEnv(max_episode_steps=int(task_cfg.get("max_episode_steps", 200)),
                            hold_steps=int(task_cfg.get("hold_steps", 5)))
    raise ValueError(f"unknown task {name!r} of type {kind!r}; known tasks: {sorted(TASK_TYPES)}")


def make_expert(task_name: str, **kwargs):
    """The scripted expert of a task.

    Raises:
        ValueError: the task has no scripted expert.
    """
    if task_name == "lift":
        from robolearn.envs.experts import LiftExpert

        return LiftExpert(**kwargs)
    if task_name == "insertion":
        from robolearn.envs.insertion import InsertionExpert

        return InsertionExpert(**kwargs)
    raise ValueError(f"no scripted expert for task {task_name!r}")
