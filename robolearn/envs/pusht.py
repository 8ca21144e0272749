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

from robolearn.envs.rendering import CameraEnvMixin
from robolearn.utils.rotations import wrap_angle

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


def to_block(points: np.ndarray, pose: Sequence[float]) -> np.ndarray:
    """World points ``(N, 2)`` → the frame of a block at ``(x, y, yaw)``."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    return (points - np.asarray(pose[:2])) @ np.array([[c, -s], [s, c]])


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
_COM = np.array([0.0, STEM_CENTRE_Y * (2 * STEM_HALF[0] * 2 * STEM_HALF[1])
                 / (4 * BAR_HALF[0] * BAR_HALF[1] + 4 * STEM_HALF[0] * STEM_HALF[1])])  # block frame (m)


def tee_sdf(points: np.ndarray) -> np.ndarray:
    """Signed distance (m) of block-frame points ``(N, 2)`` to the T (negative inside)."""
    def box(p, centre, half):
        q = np.abs(p - centre) - half
        return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(np.max(q, axis=1), 0.0)

    return np.minimum(box(points, np.zeros(2), np.array(BAR_HALF)),
                      box(points, np.array([0.0, STEM_CENTRE_Y]), np.array(STEM_HALF)))


def _contact_candidates(spacing: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Points on the T's outline ``(N, 2)`` and their outward normals, block frame, where the
    pusher (a disc) can touch the block at that point only."""
    bx, by = BAR_HALF
    sx, sy0, sy1 = STEM_HALF[0], STEM_CENTRE_Y - STEM_HALF[1], STEM_CENTRE_Y + STEM_HALF[1]
    edges = [  # (start, end, normal)
        ((-bx, by), (bx, by), (0, 1)), ((-bx, -by), (-bx, by), (-1, 0)), ((bx, -by), (bx, by), (1, 0)),
        ((-bx, -by), (-sx, -by), (0, -1)), ((sx, -by), (bx, -by), (0, -1)),
        ((-sx, sy0), (-sx, sy1), (-1, 0)), ((sx, sy0), (sx, sy1), (1, 0)), ((-sx, sy0), (sx, sy0), (0, -1)),
    ]
    pts, normals = [], []
    for a, b, n in edges:
        a, b, n = np.array(a), np.array(b), np.array(n, float)
        k = max(2, int(np.ceil(np.linalg.norm(b - a) / spacing)) + 1)
        for t in np.linspace(0.1, 0.9, k):
            p = a + t * (b - a)
            centre = p + n * PUSHER_RADIUS
            if tee_sdf(centre[None])[0] > PUSHER_RADIUS - 1e-4:  # the disc touches here and nowhere closer
                pts.append(p)
                normals.append(n)
    return np.array(pts), np.array(normals)


class PushTExpert:
    """Scripted PushT pusher: greedy quasi-static pushes, re-planned every step.

    Each step it scores every contact point on the T's outline by how well a push there (along the
    inward normal) would reduce the pose error, using the quasi-static approximation that a push
    ``d`` at lever arm ``r`` from the centre of mass translates the block along ``d`` and turns it
    by ``(r × d) / ρ²``. Position and yaw errors are weighed by ``yaw_weight`` metres per radian.
    It then drives the pusher to that contact around the block (along a circle that clears it)
    and pushes a distance proportional to the remaining error. A new contact is taken only when it
    scores clearly better than the current one, so demonstrations are not jittery.

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

    RHO2 = 0.04 ** 2  # squared radius of the quasi-static rotation model (m^2)

    def __init__(self, max_step: float = 0.03, gain: float = 1.0, yaw_weight: float = 0.06, switch: float = 0.8,
                 standoff: float = 0.01, clearance: float = 0.01, seed: int | None = None):
        self.max_step, self.gain, self.yaw_weight, self.switch = max_step, gain, yaw_weight, switch
        self.standoff, self.clearance = standoff, clearance
        self.points, self.normals = _contact_candidates()
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode."""
        self.contact: int | None = None
        self.pushing = False  # whether the last action pushed (else it moved towards a contact)

    def _scores(self, pose: np.ndarray) -> np.ndarray:
        c, s = np.cos(pose[2]), np.sin(pose[2])
        rot = np.array([[c, -s], [s, c]])
        com_world = pose[:2] + rot @ _COM
        goal_rot = np.array([[np.cos(GOAL[2]), -np.sin(GOAL[2])], [np.sin(GOAL[2]), np.cos(GOAL[2])]])
        goal_com = np.array(GOAL[:2]) + goal_rot @ _COM
        err = np.array([*(goal_com - com_world), self.yaw_weight * wrap_angle(GOAL[2] - pose[2])])
        d = -(self.normals @ rot.T)                    # push directions, world
        r = (self.points - _COM) @ rot.T               # lever arms, world
        turn = (r[:, 0] * d[:, 1] - r[:, 1] * d[:, 0]) / self.RHO2
        motion = np.column_stack([d, self.yaw_weight * turn])
        scores = motion @ err / np.linalg.norm(motion, axis=1)
        # A contact whose approach point lies outside the workspace cannot be reached.
        approach = pose[:2] + (self.points + self.normals * (PUSHER_RADIUS + 0.01)) @ rot.T
        scores[np.any(np.abs(approach) > WORKSPACE - 0.005, axis=1)] = -np.inf
        return scores, err

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Pusher target ``(2,)`` (m) for an observation of :class:`PushTEnv`."""
        pusher = obs["agent_pos"].astype(np.float64)
        o = obs["object"].astype(np.float64)
        pose = np.array([o[0], o[1], np.arctan2(o[3], o[2])])
        scores, err = self._scores(pose)
        best = int(np.argmax(scores))
        if self.contact is None or scores[self.contact] < self.switch * scores[best]:
            self.contact = best
        i = self.contact
        push = -self.normals[i]
        contact_centre = to_world((self.points[i] + self.normals[i] * PUSHER_RADIUS)[None], pose)[0]
        push_world = to_world(push[None], (0.0, 0.0, pose[2]))[0]
        # Relative to the contact: along the push direction (negative: outside) and across it.
        rel = pusher - contact_centre
        along, across = rel @ push_world, rel @ np.array([-push_world[1], push_world[0]])
        self.pushing = bool(-max(0.03, self.standoff + 0.005) < along < 0.004 and abs(across) < 0.004)
        if self.pushing:  # lined up behind the contact: push
            dist = float(np.clip(self.gain * max(scores[i], 0.0), 0.002, self.max_step))
            target = contact_centre + push_world * dist
        else:
            target = self._approach(pusher, contact_centre - push_world * self.standoff, pose)
        step = target - pusher
        n = np.linalg.norm(step)
        if n > self.max_step:
            target = pusher + step * (self.max_step / n)
        return np.clip(target, -WORKSPACE + 0.005, WORKSPACE - 0.005).astype(np.float32)

    def _approach(self, pusher: np.ndarray, pre: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Next waypoint towards ``pre`` that keeps the pusher clear of the block."""
        path = pusher + np.linspace(0, 1, 12)[:, None] * (pre - pusher)
        sdf = tee_sdf(to_block(path, pose)) - PUSHER_RADIUS  # gap between the disc and the block
        if np.all(sdf > min(self.clearance, sdf[-1] - 0.001)):  # as close as ``pre`` itself at most
            return pre
        com = to_world(_COM[None], pose)[0]
        radius = 0.08 + PUSHER_RADIUS + max(0.015, self.clearance + 0.005)
        off = pusher - com
        dist = np.linalg.norm(off)
        if dist < radius - 0.005:  # first straight out, away from the block
            return com + off / max(dist, 1e-6) * radius
        a_now, a_pre = np.arctan2(off[1], off[0]), np.arctan2(*(pre - com)[::-1])
        delta = wrap_angle(a_pre - a_now)
        if abs(delta) < 1e-3:  # on the circle, at the contact's bearing: go in (the only way there)
            return pre
        a_next = a_now + np.sign(delta) * min(abs(delta), self.max_step / radius)
        return com + radius * np.array([np.cos(a_next), np.sin(a_next)])
