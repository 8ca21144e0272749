"""robosuite tasks behind the gymnasium API.

One adapter turns a robosuite manipulation task into a :class:`gymnasium.Env` with

* a ``Dict`` observation space of low-dim keys named as robomimic names them
  (``robot0_eef_pos`` (3,) m, ``robot0_eef_quat`` (4,) xyzw, ``robot0_gripper_qpos`` (2,) m,
  ``object`` (D,) task-specific object state);
* a ``Box`` action space in SI units: a pose offset in the world frame, ``[dx, dy, dz]`` in metres
  and ``[drx, dry, drz]`` as an axis-angle vector in radians, then the gripper command in ``[-1, 1]``
  (-1 open, +1 close). Each step the operational-space controller's goal is set to the *achieved*
  end-effector pose plus this offset, and the impedance controller tracks it for one control period,
  so the achieved motion per step is a fraction of the offset (about a quarter for Lift's Panda at
  20 Hz). The controller's input scaling equals its output scaling: no hidden factor sits between
  the number a policy emits and the goal offset it asks for;
* seeded resets that reuse the compiled model (``hard_reset=False``): ``reset(seed=s)`` reseeds the
  object placement and the robot's initial-joint noise, so the same seed gives the same episode;
* optional camera observations: ``cameras=("agentview", "robot0_eye_in_hand")`` adds
  ``"<camera>_image"`` keys, ``uint8 (H, W, 3)`` top row first, rendered by our own MuJoCo renderer
  (:mod:`robolearn.envs.rendering`; robosuite's camera pipeline took ~4× longer per frame here);
  ``render_mode="rgb_array"`` makes :meth:`RobosuiteEnv.render` return frames for videos;
* ``info["is_success"]`` from the task's own success check, and ``terminated=True`` on success
  when ``terminate_on_success`` is set (the default).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from typing import Sequence

import gymnasium as gym
import numpy as np

from robolearn.envs.actions import MAX_DELTA_POS, MAX_DELTA_ROT  # largest change per control step (m, rad)
from robolearn.envs.rendering import CameraEnvMixin

_ROBOSUITE = None


def import_robosuite():
    """Import robosuite once, with its import-time notices about optional robots silenced.

    Returns:
        The ``robosuite`` module.
    """
    global _ROBOSUITE
    if _ROBOSUITE is None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import robosuite
        logger = logging.getLogger("robosuite_logs")
        logger.setLevel(logging.ERROR)
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setStream(sys.stderr)
        _ROBOSUITE = robosuite
    return _ROBOSUITE


def _controller_config(robot: str, input_type: str = "delta") -> dict:
    """Operational-space pose controller whose inputs are SI values in the world frame: deltas
    (``input_type="delta"``) or absolute poses, position (m) + axis-angle (rad) (``"absolute"``)."""
    from robosuite.controllers import load_composite_controller_config

    cfg = load_composite_controller_config(controller="BASIC", robot=robot)
    arm = cfg["body_parts"]["right"]
    arm["input_type"] = input_type
    limits = [MAX_DELTA_POS] * 3 + [MAX_DELTA_ROT] * 3
    arm["input_max"] = limits
    arm["input_min"] = [-v for v in limits]
    arm["output_max"] = limits
    arm["output_min"] = [-v for v in limits]
    arm["input_ref_frame"] = "world"
    cfg["body_parts"] = {"right": arm}
    return cfg


# Per task: robosuite environment name and the observation keys forming the "object" vector.
ROBOSUITE_TASKS = {
    "lift": {"env_name": "Lift", "object_keys": ("cube_pos", "cube_quat", "gripper_to_cube_pos")},
    # robomimic's object state of these tasks: object position, quaternion, and both relative to the gripper.
    "can": {"env_name": "PickPlaceCan",
            "object_keys": ("Can_pos", "Can_quat", "Can_to_robot0_eef_pos", "Can_to_robot0_eef_quat")},
    "square": {"env_name": "NutAssemblySquare",
               "object_keys": ("SquareNut_pos", "SquareNut_quat", "SquareNut_to_robot0_eef_pos",
                               "SquareNut_to_robot0_eef_quat")},
}

ROBOT_OBS_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")


class RobosuiteEnv(CameraEnvMixin, gym.Env):
    """A robosuite task as a gymnasium environment with SI-unit delta-pose actions.

    Args:
        task: key of :data:`ROBOSUITE_TASKS` (e.g. ``"lift"``).
        robot: robosuite robot name.
        max_episode_steps: episode is truncated after this many control steps.
        control_freq: control frequency in Hz (one ``step`` lasts ``1/control_freq`` s).
        terminate_on_success: end the episode (``terminated=True``) on the first successful step.
        model_seed: seed of the randomness robosuite draws once, when it builds the model (Lift's
            cube size, for one). Fixed by default so every process, eval workers included, builds
            the same scene and a reset seed means the same episode everywhere.
        controller_input: ``"delta"`` (the actions above) or ``"absolute"``: the controller's goal is
            the pose given, world-frame position (m) and axis-angle (rad). The MuJoCo twin of the
            HAL (:mod:`robolearn.robots.twin`) uses the absolute form and steps the simulator itself.
        cameras: cameras whose images join the observation (e.g. ``"agentview"``).
        image_size: ``(height, width)`` of camera observations, pixels.
        render_mode: ``None`` or ``"rgb_array"`` (then :meth:`render` returns a frame).
        render_camera, render_size: camera and ``(height, width)`` of :meth:`render`.

    Observation: dict of float32 arrays (and uint8 images), see the module docstring. Action:
    float32 ``(7,)``.

    Raises:
        ValueError: unknown task, camera or render mode.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    #: What the action means (stored with demonstrations) and its layout, one entry per dimension.
    action_type = "eef_delta_pose_world"
    action_layout = ("dx m", "dy m", "dz m", "drx rad", "dry rad", "drz rad", "gripper [-1 open, 1 close]")

    def __init__(
        self,
        task: str = "lift",
        robot: str = "Panda",
        max_episode_steps: int = 160,
        control_freq: float = 20.0,
        terminate_on_success: bool = True,
        model_seed: int = 0,
        controller_input: str = "delta",
        cameras: Sequence[str] = (),
        image_size: Sequence[int] = (84, 84),
        render_mode: str | None = None,
        render_camera: str = "agentview",
        render_size: Sequence[int] = (240, 320),
    ):
        from robolearn.envs.rendering import EnvCameras

        if task not in ROBOSUITE_TASKS:
            raise ValueError(f"unknown robosuite task {task!r}; known: {sorted(ROBOSUITE_TASKS)}")
        if controller_input not in ("delta", "absolute"):
            raise ValueError(f"controller_input must be 'delta' or 'absolute', got {controller_input!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.cameras = EnvCameras(cameras, image_size, render_camera, render_size)
        suite = import_robosuite()
        spec = ROBOSUITE_TASKS[task]
        self.task = task
        self.control_freq = float(control_freq)
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = terminate_on_success
        self._object_keys = spec["object_keys"]
        self._env = suite.make(
            spec["env_name"],
            robots=robot,
            controller_configs=_controller_config(robot, controller_input),
            has_renderer=False,
            has_offscreen_renderer=False,
            use_camera_obs=False,
            control_freq=control_freq,
            horizon=10**9,  # we truncate ourselves
            ignore_done=True,
            hard_reset=False,
            reward_shaping=False,
            seed=model_seed,
        )
        self.model, self.data = self._env.sim.model._model, self._env.sim.data._data  # raw MuJoCo
        self.cameras.check(self.model)
        raw = self._env.reset()
        obs = self._convert(raw)
        images = self.cameras.spaces()  # uint8 (H, W, 3) per camera, as in every other env
        self.observation_space = gym.spaces.Dict({
            **{k: gym.spaces.Box(-np.inf, np.inf, shape=v.shape, dtype=np.float32)
               for k, v in obs.items() if k not in images},
            **images,
        })
        high = np.array([MAX_DELTA_POS] * 3 + [MAX_DELTA_ROT] * 3 + [1.0], dtype=np.float32)
        self.action_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self._t = 0

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode; ``seed`` fixes object placement and initial joint noise.

        Returns:
            ``(obs, info)`` with ``info["is_success"] = False``.
        """
        super().reset(seed=seed)
        rng = np.random.default_rng(seed)
        self._env.rng = rng
        if getattr(self._env, "placement_initializer", None) is not None:
            self._env.placement_initializer.rng = rng
        raw = self._env.reset()
        self._t = 0
        return self._convert(raw), {"is_success": False}

    def step(self, action):
        """Apply one delta-pose action for one control period.

        Args:
            action: ``(7,)`` array, units as in the module docstring; clipped to the action space.

        Returns:
            ``(obs, reward, terminated, truncated, info)``; reward is 1.0 on success, else 0.0.

        Raises:
            ValueError: the action has the wrong shape or is not finite.
        """
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action is not finite: {action}")
        action = np.clip(action, self.action_space.low, self.action_space.high)
        raw, _, _, _ = self._env.step(action)
        self._t += 1
        success = bool(self._env._check_success())
        terminated = success and self.terminate_on_success
        truncated = self._t >= self.max_episode_steps
        return self._convert(raw), float(success), terminated, truncated, {"is_success": success}

    def close(self):
        """Release the renderers and the simulator."""
        super().close()
        self._env.close()

    # ------------------------------------------------------------------ helpers
    def _convert(self, raw: dict) -> dict[str, np.ndarray]:
        obs = {k: np.asarray(raw[k], dtype=np.float32) for k in ROBOT_OBS_KEYS}
        obs["object"] = np.concatenate([np.asarray(raw[k], dtype=np.float32).ravel() for k in self._object_keys])
        obs.update(self.cameras.obs(self.model, self.data))
        return obs

    @property
    def unwrapped_robosuite(self):
        """The underlying robosuite environment (for experts that need privileged state)."""
        return self._env
