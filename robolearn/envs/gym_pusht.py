"""PushT as the peers evaluate it: the ``gym-pusht`` package (pymunk physics, the environment of
Diffusion Policy and LeRobot) behind our task API.

The physics, reset distribution, success test and rendering are gym-pusht's own
(``gym_pusht/envs/pusht.py`` of gym-pusht 0.1.8, ``PushTEnv``); this module only renames and
re-types what it gives.

* Units: gym-pusht has no SI units. Positions are pixels of its 512 × 512 workspace (action space
  ``Box(0, 512)``, ``PushTEnv.__init__``; walls at 5 and 506 px, ``_setup``), the y axis pointing
  down in its images; angles are radians. We keep its units: there is no metric scale in the
  package. For comparison only, our MuJoCo port (:mod:`robolearn.envs.pusht`) has the same T and
  pusher with 1 px = 1 mm, so 1 px here corresponds to 1 mm there (:data:`PX_PER_M` = 1000).
* Observation (float32 unless noted):
  ``agent_pos`` (2,) pusher centre, px;
  ``keypoints`` (18,) the world ``(x, y)`` px of 9 keypoints fixed on the T, the layout of Diffusion
  Policy's low-dimensional PushT (its ``obs_dim: 20 # 9*2 keypoints + 2 state``,
  ``diffusion_policy/config/task/pusht_lowdim.yaml``; DP picks the 9 points by farthest-point
  sampling of the T's pixels, ``PymunkKeypointManager.create_from_pusht_env``). We pick 9 points by
  farthest-point sampling of a 1 px grid of the T (:func:`tee_keypoints`): same construction and
  size, not the same points;
  ``object`` (4,) block pose: gym-pusht's body origin (px; the middle of the bar's edge opposite
  the stem) and ``cos θ, sin θ`` of its angle;
  optional camera ``pixels`` (``cameras=("pixels",)``) as ``pixels_image`` uint8 ``(96, 96, 3)``:
  gym-pusht's own ``pixels`` observation (``obs_type="pixels_agent_pos"``).
* Action (2,): the pusher's absolute target position, px (gym-pusht's PD controller tracks it,
  ``k_p = 100, k_v = 20``, 10 physics steps of 10 ms per control step).
* Control at 10 Hz (``metadata["render_fps"]``, ``dt = 0.01``). Episodes: 300 steps (gym-pusht
  registers ``max_episode_steps=300``, ``gym_pusht/__init__.py``; Diffusion Policy evaluates
  ``max_steps: 300`` at ``fps: 10``).
* Success: gym-pusht's ``info["is_success"]`` (``coverage > success_threshold = 0.95``) and its
  ``info["coverage"]`` (shapely intersection of the block and goal T over the goal's area); the
  episode terminates on success there, as here. Reward: gym-pusht's ``clip(coverage / 0.95, 0, 1)``;
  Diffusion Policy's PushT score is the mean over test seeds of each episode's max of this reward
  (``test/mean_score``, ``diffusion_policy/env_runner/pusht_keypoints_runner.py``), not a success
  rate: ``info["score"]`` carries it, so ``robolearn eval`` reports it as ``mean_max_score``.
* Resets: gym-pusht's own, drawn from the gymnasium seed (``np_random``: agent in [50, 450) px,
  block in [100, 400) px, angle uniform in [-π, π)). These differ from Diffusion Policy's own env
  under the same seed (DP draws with ``np.random.RandomState``), as LeRobot's evaluations do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import gymnasium as gym
import numpy as np

from robolearn.envs.push_planner import PlanarPushPlanner, TeeShape

#: gym-pusht's goal pose of its block body (px, px, rad) (``PushTEnv._setup``).
GOAL = (256.0, 256.0, np.pi / 4)
#: gym-pusht pixels per metre of our MuJoCo port (the same T: bar 120 × 30, stem 30 × 90; pusher radius 15).
PX_PER_M = 1000.0
#: the T and pusher in the planner's block frame (px): bar centred at the origin, stem towards -y.
SHAPE = TeeShape(bar_half=(60.0, 15.0), stem_centre_y=-60.0, stem_half=(15.0, 45.0), pusher_radius=15.0)
#: where the planner's block frame sits in gym-pusht's body frame (px): the bar's centre. The planner's
#: frame is gym-pusht's turned by π (gym-pusht's stem points along its body's +y).
_BAR_CENTRE = np.array([0.0, 15.0])
#: pusher positions the expert uses (px): inside the walls (5 and 506 px) by the pusher radius and more.
WORKSPACE_LOW, WORKSPACE_HIGH = 25.0, 487.0
N_KEYPOINTS = 9
CAMERA = "pixels"


def planner_pose(block_pose: Sequence[float]) -> np.ndarray:
    """gym-pusht's block body pose ``(x, y, θ)`` (px, rad) -> the planner's ``(x, y, yaw)``
    (:mod:`robolearn.envs.push_planner`: bar centre, stem towards -y)."""
    x, y, th = (float(v) for v in block_pose)
    c, s = np.cos(th), np.sin(th)
    bx, by = _BAR_CENTRE
    return np.array([x + c * bx - s * by, y + s * bx + c * by, th + np.pi])


def tee_keypoints(n: int = N_KEYPOINTS, spacing: float = 1.0) -> np.ndarray:
    """``n`` keypoints ``(n, 2)`` on the T, gym-pusht body frame (px): farthest-point sampling of the
    centres of a ``spacing`` px grid over the T (bar: x in [-60, 60], y in [0, 30]; stem: x in
    [-15, 15], y in [30, 120]), starting at the grid point nearest the T's centroid. Deterministic."""
    xs = np.arange(-60 + spacing / 2, 60, spacing)
    ys = np.arange(spacing / 2, 120, spacing)
    pts = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    pts = pts[(pts[:, 1] < 30) | (np.abs(pts[:, 0]) < 15)]
    chosen = [int(np.argmin(np.linalg.norm(pts - pts.mean(0), axis=1)))]
    dist = np.linalg.norm(pts - pts[chosen[0]], axis=1)
    for _ in range(n - 1):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(pts - pts[chosen[-1]], axis=1))
    return pts[chosen]


@dataclass
class _View:
    """What recorders read of an env's cameras: names and ``(height, width)``."""

    cameras: list[str] = field(default_factory=list)
    image_size: tuple[int, int] = (96, 96)


class GymPushTEnv(gym.Env):
    """gym-pusht's PushT with our observation keys (see the module docstring).

    Args:
        max_episode_steps: truncation (control steps at 10 Hz; 300 as DP and gym-pusht).
        terminate_on_success: end the episode once gym-pusht reports success (as gym-pusht does).
        cameras: ``()`` or ``("pixels",)``: gym-pusht's image observation as ``pixels_image``.
        image_size: ``(height, width)`` of that image, pixels (96 × 96 as DP's image PushT).
        render_mode: ``None`` or ``"rgb_array"`` (:meth:`render`: gym-pusht's view with the action marker).
        render_camera: ignored except ``"pixels"`` (the only view); kept for the common task API.
        render_size: ``(height, width)`` of :meth:`render` frames.

    Raises:
        ValueError: an unknown camera, render mode or render camera.
        ImportError: gym-pusht is not installed (one line saying how to install it).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    action_type = "pusher_target_position_px"
    action_layout = ("x px", "y px")
    action_units = "px (gym-pusht's 512 x 512 workspace)"
    #: observation key -> (units, description), for the store's key documentation.
    obs_units = {
        "agent_pos": ("px", "gym-pusht pusher centre (x, y), its 512 x 512 workspace"),
        "keypoints": ("px", "gym-pusht block: 9 keypoints fixed on the T (x, y), world frame"),
        "object": ("px, cos, sin", "gym-pusht block body origin (x, y) and cos, sin of its angle"),
    }

    def __init__(self, max_episode_steps: int = 300, terminate_on_success: bool = True,
                 cameras: Sequence[str] = (), image_size: Sequence[int] = (96, 96), render_mode: str | None = None,
                 render_camera: str | None = CAMERA, render_size: Sequence[int] = (240, 240)):
        import os

        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame's banner on import
        try:
            from gym_pusht.envs.pusht import PushTEnv
        except ImportError as exc:
            raise ImportError(f"task gym_pusht needs the gym-pusht package ({exc}): pip install 'gym-pusht>=0.1.8,<0.2'") from None
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        cameras = list(cameras)
        if any(c != CAMERA for c in cameras) or render_camera not in (None, CAMERA):
            raise ValueError(f"unknown camera(s) {[c for c in cameras + [render_camera] if c not in (None, CAMERA)]}; "
                             f"gym_pusht has {[CAMERA]}")
        self.render_mode = render_mode
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = terminate_on_success
        self.cameras = _View(cameras, (int(image_size[0]), int(image_size[1])))
        self.env = PushTEnv(obs_type="pixels_agent_pos" if cameras else "state", render_mode="rgb_array",
                            observation_height=self.cameras.image_size[0], observation_width=self.cameras.image_size[1],
                            visualization_height=int(render_size[0]), visualization_width=int(render_size[1]))
        self.control_dt = 1.0 / self.env.metadata["render_fps"]
        self._keypoints = tee_keypoints()
        spaces = {
            "agent_pos": gym.spaces.Box(0.0, 512.0, (2,), np.float32),
            "keypoints": gym.spaces.Box(-np.inf, np.inf, (2 * N_KEYPOINTS,), np.float32),
            "object": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
        }
        if cameras:
            spaces[f"{CAMERA}_image"] = gym.spaces.Box(0, 255, (*self.cameras.image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(0.0, 512.0, (2,), np.float32)
        self._t = 0

    def block_pose(self) -> np.ndarray:
        """gym-pusht's block body pose ``(x, y, θ)`` (px, px, rad), θ unwrapped."""
        b = self.env.block
        return np.array([b.position[0], b.position[1], b.angle])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """gym-pusht's reset drawn from ``seed``. Returns ``(obs, info)`` with ``is_success`` and ``coverage``."""
        super().reset(seed=seed)
        inner, _ = self.env.reset(seed=seed, options=options)
        self._t = 0
        return self._obs(inner), {"is_success": False, "coverage": float(self.env._get_coverage())}

    def step(self, action):
        """Move the pusher's target to ``action`` (px) for one control period (100 ms).

        Returns:
            ``(obs, reward, terminated, truncated, info)``: gym-pusht's reward
            ``clip(coverage / 0.95, 0, 1)``; ``info`` has its ``is_success`` and ``coverage``, and
            ``score`` (the reward again: evaluation reports its episode max as ``max_score``, whose
            mean over seeds is Diffusion Policy's ``test/mean_score``).

        Raises:
            ValueError: wrong shape or non-finite action.
        """
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 2 finite numbers (pusher target x, y in px of 0..512), got {a!r}")
        inner, reward, terminated, _, info = self.env.step(a)
        self._t += 1
        success = bool(info["is_success"])
        truncated = self._t >= self.max_episode_steps
        return (self._obs(inner), float(reward), bool(terminated) and self.terminate_on_success, truncated,
                {"is_success": success, "coverage": float(info["coverage"]), "score": float(reward)})

    def _obs(self, inner) -> dict[str, np.ndarray]:
        x, y, th = self.block_pose()
        c, s = np.cos(th), np.sin(th)
        kp = self._keypoints @ np.array([[c, s], [-s, c]]) + (x, y)
        obs = {"agent_pos": np.asarray(self.env.agent.position, np.float32),
               "keypoints": kp.astype(np.float32).ravel(),
               "object": np.array([x, y, c, s], np.float32)}
        if self.cameras.cameras:
            obs[f"{CAMERA}_image"] = np.ascontiguousarray(inner["pixels"], dtype=np.uint8)
        return obs

    def render(self):
        """A ``uint8 (H, W, 3)`` frame (gym-pusht's view, action marked) with ``render_mode="rgb_array"``, else None."""
        if self.render_mode != "rgb_array":
            return None
        return self.env.render()

    def close(self):
        """Close gym-pusht's env."""
        self.env.close()


class GymPushTExpert:
    """Scripted pusher for :class:`GymPushTEnv`: the planar push planner of our MuJoCo PushT expert
    (:class:`robolearn.envs.push_planner.PlanarPushPlanner`), in gym-pusht's pixels
    (``scale`` = :data:`PX_PER_M`), on gym-pusht's block pose converted by :func:`planner_pose`.

    Args:
        max_step: largest pusher target step per control step (m of the MuJoCo port; × 1000 px).
        seed: unused (deterministic); kept for the common expert interface.
        **planner: further :class:`PlanarPushPlanner` settings (in m of the MuJoCo port).
    """

    def __init__(self, max_step: float = 0.03, seed: int | None = None, **planner):
        self.planner = PlanarPushPlanner(SHAPE, planner_pose(GOAL), WORKSPACE_LOW, WORKSPACE_HIGH, scale=PX_PER_M,
                                         max_step=max_step, **{"wall_routing": True, **planner})

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode."""
        self.planner.reset()

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Pusher target ``(2,)`` float32 (px) for an observation of :class:`GymPushTEnv`."""
        o = obs["object"].astype(np.float64)
        pose = planner_pose((o[0], o[1], np.arctan2(o[3], o[2])))
        return self.planner(obs["agent_pos"].astype(np.float64), pose).astype(np.float32)
