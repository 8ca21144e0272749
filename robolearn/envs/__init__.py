"""Simulation tasks (gymnasium API) and their scripted experts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from robolearn.utils.imports import load_object


@dataclass(frozen=True)
class TaskSpec:
    """One registered environment: its kind (``"robosuite"``, ``"mujoco"`` or ``"gym_pusht"``), the
    ``"module:Class"`` of its scripted expert, the env's default episode limit (steps), and, for a
    task a robot's MuJoCo twin shows besides the robosuite tasks on the Panda twin, that robot and
    the ``"module:Class"`` of the scene the twin loads (``twin_robot``, ``twin_scene``)."""

    kind: str
    expert: str
    max_episode_steps: int
    twin_robot: str | None = None
    twin_scene: str | None = None


#: Environment name -> :class:`TaskSpec`. Modules are imported only when a task is built, so
#: importing ``robolearn.envs`` does not import robosuite (nor gym-pusht's pygame).
TASKS: dict[str, TaskSpec] = {
    "lift": TaskSpec("robosuite", "robolearn.envs.experts:LiftExpert", 160),
    "can": TaskSpec("robosuite", "robolearn.envs.experts:CanExpert", 160),
    "square": TaskSpec("robosuite", "robolearn.envs.experts:SquareExpert", 160),
    "insertion": TaskSpec("mujoco", "robolearn.envs.insertion:InsertionExpert", 200),
    "pusht": TaskSpec("mujoco", "robolearn.envs.pusht:PushTExpert", 300),
    "gym_pusht": TaskSpec("gym_pusht", "robolearn.envs.gym_pusht:GymPushTExpert", 300),
    "so101_pick": TaskSpec("mujoco", "robolearn.envs.so101_pick:So101PickExpert", 200, twin_robot="so101",
                           twin_scene="robolearn.envs.so101_pick:So101PickScene"),
}
TASK_TYPES = {name: spec.kind for name, spec in TASKS.items()}


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
    env_name = task_cfg.get("env", name)
    spec = TASKS.get(env_name)
    kind = task_cfg.get("type", spec.kind if spec else None)
    if spec is None or kind != spec.kind:
        raise ValueError(f"unknown task {name!r} of type {kind!r}; known tasks: {sorted(TASKS)}")
    view = {"cameras": list(task_cfg.get("cameras") or []), "render_mode": render_mode}
    if task_cfg.get("image_size"):  # otherwise the environment's own default size
        view["image_size"] = tuple(task_cfg["image_size"])
    if task_cfg.get("render_camera"):
        view["render_camera"] = task_cfg["render_camera"]
    steps = int(task_cfg.get("max_episode_steps", spec.max_episode_steps))
    if kind == "robosuite":
        from robolearn.envs.robosuite_env import RobosuiteEnv

        return RobosuiteEnv(task=env_name, robot=task_cfg.get("robot", "Panda"), max_episode_steps=steps,
                            control_freq=float(task_cfg.get("control_freq", 20)), **view)
    if kind == "gym_pusht":
        from robolearn.envs.gym_pusht import GymPushTEnv

        return GymPushTEnv(max_episode_steps=steps, **view)
    if env_name == "insertion":
        from robolearn.envs.insertion import InsertionEnv

        return InsertionEnv(max_episode_steps=steps, hold_steps=int(task_cfg.get("hold_steps", 5)), **view)
    if env_name == "so101_pick":
        from robolearn.envs.so101_pick import So101PickEnv

        return So101PickEnv(max_episode_steps=steps, control_freq=float(task_cfg.get("control_freq", 20)), **view)
    from robolearn.envs.pusht import PushTEnv

    return PushTEnv(max_episode_steps=steps, **view)


def make_expert(task_name: str, **kwargs):
    """The scripted expert of a task (from :data:`TASKS`).

    Raises:
        ValueError: the task has no scripted expert.
    """
    if task_name not in TASKS:
        raise ValueError(f"no scripted expert for task {task_name!r} (known: {sorted(TASKS)})")
    return load_object(TASKS[task_name].expert)(**kwargs)
