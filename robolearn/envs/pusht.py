"""PushT in plain MuJoCo, after Diffusion Policy's 2-D PushT task (Chi et al. 2023, Sec. V-A).

A round pusher (radius 15 mm) pushes a T-shaped block (bar 120 × 30 mm, stem 30 × 90 mm; the 2-D
task's 512 px scaled to 1 px = 1 mm) over a table until it covers a fixed target T at the origin,
turned by π/4 (``sim/pusht.xml``). The block slides with Coulomb friction on the table.

* Observation (float32): ``agent_pos`` (2,) pusher position m; ``object`` (4,): block position m
  (the bar's centre) and ``cos θ, sin θ`` of its yaw (continuous, unlike a wrapped angle);
  ``keypoints`` (16,): the world ``(x, y)`` of the T's 8 corners (m), the block's state the way
  Diffusion Policy's low-dimensional PushT gives it (keypoints, not a pose): where the block's
  edges are is then linear in the observation, which a policy learns more easily than rotating
  its own copy of the T by ``θ``.
  Optional camera images (``cameras=("top",)``) as ``"<camera>_image"`` uint8 ``(H, W, 3)``.
* Action (2,): the pusher's target position m (absolute, world frame, inside the 0.5 m square
  workspace), as in the 2-D task; stiff damped actuators track it.
* Control at 10 Hz: 10 physics steps of 10 ms per step (5 ms steps gave the same expert success
  at 3,200 instead of 4,300 env steps/s). Episodes: 300 steps (30 s).
* Success: the block covers at least 95 % of the target T's area (``info["coverage"]``: the exact
  area of the intersection of the two T polygons, computed with shapely as the 2-D task does; the
  2-D task's threshold).
* Resets: ``mj_resetData`` and new joint positions drawn from the seed (block within ±0.15 m at
  any yaw, not already near the goal; pusher within ±0.2 m, clear of the block). No recompiling.
"""

from __future__ import annotations

from typing import Sequence

import gymnasium as gym
import mujoco
import numpy as np

from robolearn.envs.push_planner import PlanarPushPlanner, TeeShape
from robolearn.envs.rendering import CameraEnvMixin

WORKSPACE = 0.25            # half-size of the square workspace (m)
PUSHER_RADIUS = 0.015
BAR_HALF = (0.06, 0.015)    # bar half-extents (x, y) in the block frame (m)
STEM_CENTRE_Y = -0.06
STEM_HALF = (0.015, 0.045)
GOAL = (0.0, 0.0, np.pi / 4)  # target x, y (m), yaw (rad)
SUCCESS_COVERAGE = 0.95


def in_tee(points: np.ndarray) -> np.ndarray:
    """Whether block-frame points ``(N, 2)`` (m) lie inside the T. Returns ``bool (N,)``."""
    x, y = points[:, 0], points[:, 1]
    in_bar = (np.abs(x) <= BAR_HALF[0]) & (np.abs(y) <= BAR_HALF[1])
    in_stem = (np.abs(x) <= STEM_HALF[0]) & (np.abs(y - STEM_CENTRE_Y) <= STEM_HALF[1])
    return in_bar | in_stem


def tee_grid(spacing: float = 0.0025) -> np.ndarray:
    """Cell centres ``(N, 2)`` of a ``spacing`` grid over the T's area, in the block frame (m)."""
    xs = np.arange(-BAR_HALF[0] + spacing / 2, BAR_HALF[0], spacing)
    ys = np.arange(STEM_CENTRE_Y - STEM_HALF[1] + spacing / 2, BAR_HALF[1], spacing)
    pts = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    return pts[in_tee(pts)]


def to_world(points: np.ndarray, pose: Sequence[float]) -> np.ndarray:
    """Block-frame points ``(N, 2)`` → world frame, for a block pose ``(x, y, yaw)``."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    return points @ np.array([[c, s], [-s, c]]) + np.asarray(pose[:2])


def tee_outline() -> np.ndarray:
    """The T's 8 corners ``(8, 2)`` in the block frame (m), counter-clockwise from the bar's top left."""
    bx, by = BAR_HALF
    sx, sy = STEM_HALF[0], STEM_CENTRE_Y - STEM_HALF[1]
    return np.array([[-bx, by], [-bx, -by], [-sx, -by], [-sx, sy], [sx, sy], [sx, -by], [bx, -by], [bx, by]])


_GOAL_POLYGON = None


def coverage(pose: Sequence[float]) -> float:
    """Fraction of the target T's area covered by a block at ``pose = (x, y, yaw)`` (m, rad): the
    exact area of the intersection of the two T polygons over the T's area."""
    import shapely

    global _GOAL_POLYGON
    if _GOAL_POLYGON is None:
        _GOAL_POLYGON = shapely.Polygon(to_world(tee_outline(), GOAL))
        shapely.prepare(_GOAL_POLYGON)
    block = shapely.Polygon(to_world(tee_outline(), pose))
    return float(shapely.intersection(_GOAL_POLYGON, block).area / _GOAL_POLYGON.area)


class PushTEnv(CameraEnvMixin, gym.Env):
    """PushT (see the module docstring).

    Args:
        max_episode_steps: truncation (steps at 10 Hz; 300 as in the 2-D task).
        terminate_on_success: end the episode once coverage reaches 95 %.
        cameras: cameras whose images join the observation (``"top"``).
        image_size: ``(height, width)`` of camera observations, pixels (96 × 96 in the 2-D task).
        render_mode: ``None`` or ``"rgb_array"``.
        render_camera, render_size: camera and ``(height, width)`` of :meth:`render`.

    Raises:
        ValueError: an unknown camera or render mode.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    action_type = "pusher_target_position_world"
    action_layout = ("x m", "y m")
    SUBSTEPS = 10

    def __init__(self, max_episode_steps: int = 300, terminate_on_success: bool = True,
                 cameras: Sequence[str] = (), image_size: Sequence[int] = (96, 96), render_mode: str | None = None,
                 render_camera: str = "top", render_size: Sequence[int] = (240, 240)):
        from robolearn.envs.rendering import EnvCameras
        from robolearn.utils.paths import sim_dir

        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.model = m = mujoco.MjModel.from_xml_path(str(sim_dir() / "pusht.xml"))
        self.data = mujoco.MjData(m)
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = terminate_on_success
        self._tee = [m.joint(n).qposadr[0] for n in ("tee_x", "tee_y", "tee_yaw")]
        self._tee_z = m.joint("tee_z").qposadr[0]
        self._pusher = [m.joint(n).qposadr[0] for n in ("pusher_x", "pusher_y")]
        self._outline = tee_outline()  # the keypoints, block frame (built once: obs are made every step)
        self.control_dt = self.SUBSTEPS * m.opt.timestep
        self.cameras = EnvCameras(cameras, image_size, render_camera, render_size)
        self.cameras.check(m)
        self.observation_space = gym.spaces.Dict({
            "agent_pos": gym.spaces.Box(-WORKSPACE, WORKSPACE, (2,), np.float32),
            "object": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
            "keypoints": gym.spaces.Box(-np.inf, np.inf, (2 * len(self._outline),), np.float32),
            **self.cameras.spaces(),
        })
        self.action_space = gym.spaces.Box(-WORKSPACE, WORKSPACE, (2,), np.float32)
        self._t = 0

    # ------------------------------------------------------------------ state
    def block_pose(self) -> np.ndarray:
        """Block ``(x, y, yaw)`` (m, m, rad), yaw unwrapped."""
        return self.data.qpos[self._tee].copy()

    def pusher_pos(self) -> np.ndarray:
        """Pusher ``(x, y)`` (m)."""
        return self.data.qpos[self._pusher].copy()

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """New episode drawn from ``seed``. Returns ``(obs, info)`` with ``info["coverage"]``."""
        super().reset(seed=seed)
        rng = np.random.default_rng(seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        while True:  # the block anywhere but already (almost) on the target
            pose = np.array([rng.uniform(-0.15, 0.15), rng.uniform(-0.15, 0.15), rng.uniform(-np.pi, np.pi)])
            if coverage(pose) < 0.5:
                break
        outline = to_world(tee_grid(0.01), pose)
        while True:  # the pusher clear of the block
            agent = rng.uniform(-0.2, 0.2, 2)
            if np.min(np.linalg.norm(outline - agent, axis=1)) > PUSHER_RADIUS + 0.02:
                break
        d.qpos[self._tee] = pose
        d.qpos[self._tee_z] = 0.0
        d.qpos[self._pusher] = agent
        d.ctrl[:] = agent
        mujoco.mj_forward(m, d)
        self._t = 0
        return self._obs(), {"is_success": False, "coverage": coverage(pose)}

    def step(self, action):
        """Move the pusher's target to ``action`` (m, clipped to the workspace) for one control period.

        Returns:
            ``(obs, reward, terminated, truncated, info)``; reward 1.0 on success, ``info`` has
            ``is_success`` and ``coverage``.

        Raises:
            ValueError: wrong shape or non-finite action.
        """
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 2 finite numbers (pusher target x, y in m), got {a!r}")
        self.data.ctrl[:] = np.clip(a, -WORKSPACE, WORKSPACE)
        mujoco.mj_step(self.model, self.data, nstep=self.SUBSTEPS)
        self._t += 1
        cov = coverage(self.data.qpos[self._tee])
        success = cov >= SUCCESS_COVERAGE
        terminated = success and self.terminate_on_success
        truncated = self._t >= self.max_episode_steps
        return self._obs(), float(success), terminated, truncated, {"is_success": success, "coverage": cov}

    def _obs(self) -> dict[str, np.ndarray]:
        x, y, yaw = self.data.qpos[self._tee]
        return {"agent_pos": self.data.qpos[self._pusher].astype(np.float32),
                "object": np.array([x, y, np.cos(yaw), np.sin(yaw)], np.float32),
                "keypoints": to_world(self._outline, (x, y, yaw)).astype(np.float32).ravel(),
                **self.cameras.obs(self.model, self.data)}


# ---------------------------------------------------------------------------------------------- expert
#: The block and pusher of this task for the planar push planner (m; block frame as here).
SHAPE = TeeShape(BAR_HALF, STEM_CENTRE_Y, STEM_HALF, PUSHER_RADIUS)


def tee_sdf(points: np.ndarray) -> np.ndarray:
    """Signed distance (m) of block-frame points ``(N, 2)`` to the T (negative inside)."""
    return SHAPE.sdf(points)


class PushTExpert:
    """Scripted PushT pusher: :class:`robolearn.envs.push_planner.PlanarPushPlanner` (greedy
    quasi-static pushes, re-planned every step) in this task's metres.

    Args:
        max_step: largest pusher move per step (m, at 10 Hz).
        gain: push distance per metre of projected error.
        yaw_weight: metres of position error one radian of yaw error counts as.
        switch: move to another contact only when the current one scores below this fraction of the best.
        standoff: the pusher lines up this far (m) behind a contact before it pushes.
        clearance: smallest gap (m) between pusher and block on the way to a contact (no closer than
            the standoff point itself), so a policy that copies the route a few mm off does not
            bump the block. (With 1 mm, the policies we trained were seen knocking the block while
            routing; 10 mm costs the expert ~8 steps per episode.)
        seed: unused (the expert is deterministic); kept for the common expert interface.
    """

    def __init__(self, max_step: float = 0.03, gain: float = 1.0, yaw_weight: float = 0.06, switch: float = 0.8,
                 standoff: float = 0.01, clearance: float = 0.01, seed: int | None = None):
        self.planner = PlanarPushPlanner(SHAPE, GOAL, -WORKSPACE, WORKSPACE, scale=1.0, max_step=max_step, gain=gain,
                                         yaw_weight=yaw_weight, switch=switch, standoff=standoff, clearance=clearance)

    @property
    def pushing(self) -> bool:
        """Whether the last action pushed (else it moved towards a contact)."""
        return self.planner.pushing

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode."""
        self.planner.reset()

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Pusher target ``(2,)`` float32 (m) for an observation of :class:`PushTEnv`."""
        o = obs["object"].astype(np.float64)
        pose = np.array([o[0], o[1], np.arctan2(o[3], o[2])])
        return self.planner(obs["agent_pos"].astype(np.float64), pose).astype(np.float32)
