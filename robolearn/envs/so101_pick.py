"""Pick and place on the SO-101 arm in plain MuJoCo (``task=so101_pick``), in joint space.

The SO-101 follower of ``sim/so101.xml`` (the model of the SO-101 twin, unchanged) stands on a table
(the plane z = 0); a 25 mm cube lies at a seeded pose in front of it and a target area, a flat
green disc of radius 4 cm, is marked at a seeded position at least 8 cm away (``sim/so101_pick.xml``
plus :func:`so101_pick_model`). The arm must put the cube down inside the area and let go. The SO-101
twin shows the same scene (:class:`~robolearn.robots.so101_twin.So101Sim` with ``task="so101_pick"``,
``hardware/so101_sim.yaml``), through :class:`So101PickScene`: one scene, reset, observation and
success check for the environment and the twin.

* Observation (float32): ``joint_pos`` (5,) rad, the arm joints in the SO-101 bus order
  (:data:`ARM_JOINTS`: the twin's and the Feetech driver's order, units and zero pose);
  ``gripper`` (1,) jaw opening in [0, 1] (0 closed, 1 fully open, linear in the jaw angle, as the
  twin reports it); ``eef_pos`` (3,) m and ``eef_quat`` (4,) xyzw: the ``eef`` site (the URDF's
  gripper frame) in the robot's base frame, which is the world frame here; ``object`` (10,): cube
  centre (3,) m, cube orientation (4,) xyzw, target-area centre (3,) m (on the table, z = 0).
  Cameras (optional, ``cameras=("top", "wrist")``): ``top`` fixed over the workspace, ``wrist`` on
  the gripper looking down its jaws; ``"<camera>_image"`` keys, ``uint8 (H, W, 3)``.
* Action (6,): absolute joint-position targets of the five arm joints (rad) and the gripper opening
  target in [0, 1]: the convention of a leader-arm recording (``robolearn record --device leader``,
  action space ``joint_position``), so recorded and scripted demonstrations mix. Values outside the
  joint ranges are clipped to them (as the twin's servos clip goals); a wrong shape or a non-finite
  value raises ``ValueError``. During each physics step every actuator's target moves toward the
  action at no more than the servo speed (4.71 rad/s, the model's ``joint_vel_max``), as
  :class:`~robolearn.robots.so101_twin.So101Sim` steps the twin.
* Control at 20 Hz by default (the rate of LeRobot-style SO-101 policies is 10-30 Hz): 25 physics
  steps of 2 ms per step. Episodes: 200 steps (10 s); the scripted expert needs about 60.
* Success (``info["is_success"]``; ``terminated`` on success): the cube rests in the area: its
  centre is within :data:`SUCCESS_RADIUS` (3 cm) of the area's centre horizontally, it is on the
  table (centre less than 3 mm above its resting height), slower than 5 cm/s, and touches neither
  jaw (released).
* Resets: ``mj_resetData``, the arm at :data:`HOME_Q` with the jaw open, the cube and the area drawn
  from the seed (cube at 14-23 cm from the shoulder's pan axis within ±0.6 rad of straight ahead,
  any yaw; the area in the same region, its centre 8 cm or more from the cube); the area is a mocap
  body, so nothing is recompiled. Deterministic under a seed.

The scripted expert :class:`So101PickExpert` plans in Cartesian space and converts every waypoint
into joint targets by damped least-squares inverse kinematics on the same model (:class:`So101Ik`).
"""

from __future__ import annotations

from typing import Sequence

import gymnasium as gym
import mujoco
import numpy as np

from robolearn.envs.experts import PhaseExpert
from robolearn.envs.rendering import CameraEnvMixin
from robolearn.utils.rotations import wrap_angle

#: The SO-101 arm joints in bus order (servo ids 1..5): the model's actuators 0..4 (checked on load);
#: the same tuple as :data:`robolearn.robots.so101_twin.SO101_JOINTS` (checked by the tests).
ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")

CUBE_HALF = 0.0125          # half edge of the cube (m)
TARGET_RADIUS = 0.04        # radius of the drawn target disc (m)
SUCCESS_RADIUS = 0.03       # cube centre to area centre, horizontally, for success (m)
LIFTED_TOL = 0.003          # a cube centre more than this above its resting height is not resting (m)
RESTING_SPEED = 0.05        # a cube faster than this is not resting (m/s)
REGION_R = (0.14, 0.23)     # distance of cube and area from the shoulder's pan axis (m)
REGION_AZIMUTH = 0.6        # half-width of the region's azimuth about straight ahead (-y) (rad)
MIN_SEPARATION = 0.08       # cube to area centre at reset (m)

#: Arm joints (rad) of every reset: the jaws point straight down, their tips 11 cm above the table,
#: 18 cm in front of the shoulder (found by :class:`So101Ik`; ``tests/test_so101_pick.py`` checks the pose).
HOME_Q = np.array([0.0, -0.209, 0.214, 1.566, 0.0])
HOME_OPENING = 0.45         # jaw opening at reset (about 4.5 cm between the pads)

# The jaw pads, the grasp site and the wrist camera, in the frames of the gripper and moving-jaw
# bodies of so101.xml (m). The fixed jaw is the capsule at x = -0.0079 from z = -0.03 to -0.098 (its
# tip is the eef site); the jaws close along the gripper's +x; the gripper's -z points out of them.
_FIXED_PAD = dict(pos=[-0.0039, 0.0, -0.082], size=[0.002, 0.009, 0.016])   # inner face at x = -0.0019
# The moving pad lies along the moving jaw, turned -0.21 rad about the jaw's axis so that it is parallel
# to the fixed pad when the two hold the cube (opening ~0.19; the bare jaw would meet it 10 degrees off).
_MOVING_PAD = dict(pos=[-0.0054, -0.055, 0.019], size=[0.002, 0.016, 0.009], quat=[0.99449, 0.0, 0.0, -0.10481])
_PAD_FACE_X = -0.0019
_JAW_TIP_Z = -0.098
#: Where the cube's centre sits when held: against the fixed pad, the jaw tips 3 mm above its bottom.
GRASP_SITE = (_PAD_FACE_X + CUBE_HALF, 0.0, _JAW_TIP_Z + CUBE_HALF - 0.003)
#: The wrist camera: beside the jaws (gripper -y), looking at the point between the jaw tips.
_WRIST_CAM = dict(pos=[0.006, -0.04, -0.025], look_at=[0.006, 0.0, -0.095], fovy=75.0)


def _look_at_quat(pos, target, right) -> np.ndarray:
    """wxyz quaternion of a MuJoCo camera at ``pos`` looking at ``target`` (it looks along its -z)
    with its image x axis along ``right`` (made orthogonal to the view direction)."""
    back = np.asarray(pos, float) - np.asarray(target, float)
    z = back / np.linalg.norm(back)
    x = np.asarray(right, float) - np.dot(right, z) * z
    x /= np.linalg.norm(x)
    mat = np.stack([x, np.cross(z, x), z], axis=1)
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, mat.reshape(-1))
    return quat


def so101_pick_model() -> mujoco.MjModel:
    """Compile the pick-and-place scene: ``sim/so101_pick.xml`` (arm, table, cube, target area, top
    camera) plus what the gripper body needs, added here with ``MjSpec`` because so101.xml is
    included unchanged: a box pad on each jaw (the only arm geoms that collide: with the cube and
    the table), the ``grasp`` site and the ``wrist`` camera; the table gets a wood tone. Pads and cube have stiff
    contacts (4 ms time constant); contacts use an elliptic friction cone with ``impratio`` 10,
    which holds a pinched object without slip creep.

    Raises:
        FileNotFoundError: the shipped MJCF is missing (broken install).
    """
    from robolearn.utils.paths import sim_dir

    path = sim_dir() / "so101_pick.xml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the SO-101 pick scene is missing (broken install?)")
    spec = mujoco.MjSpec.from_file(str(path))
    # Stiff contacts, as the cube's: the 2.9 N m pinch sinks the pads < 0.5 mm into it (10 mm at the defaults).
    pad = dict(type=mujoco.mjtGeom.mjGEOM_BOX, contype=1, conaffinity=1, condim=4,
               friction=[1.5, 0.02, 0.002], rgba=[0.12, 0.12, 0.12, 1.0], mass=0.002,
               solref=[0.004, 1.0], solimp=[0.95, 0.99, 0.001, 0.5, 2.0])
    spec.geom("floor").rgba = [0.55, 0.5, 0.45, 1.0]  # the table top: a light wood tone, not so101.xml's grey
    gripper, jaw = spec.body("gripper"), spec.body("moving_jaw")
    gripper.add_geom(name="fixed_pad", **pad, **_FIXED_PAD)
    jaw.add_geom(name="moving_pad", **pad, **_MOVING_PAD)
    gripper.add_site(name="grasp", pos=list(GRASP_SITE), size=[0.003, 0.003, 0.003], rgba=[0, 0, 0, 0])
    cam = _WRIST_CAM
    gripper.add_camera(name="wrist", pos=cam["pos"], quat=_look_at_quat(cam["pos"], cam["look_at"], [1, 0, 0]),
                       fovy=cam["fovy"])
    model = spec.compile()
    model.opt.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    model.opt.impratio = 10.0
    return model


class So101PickScene:
    """The task's scene on one compiled model, shared by :class:`So101PickEnv` and the SO-101 twin:
    seeded resets, the cube/target observation, the success check and the servo stepping.

    Args:
        model: the compiled scene (default: a new :func:`so101_pick_model`).

    Attributes:
        model: the MuJoCo model.
        joint_range: ``(5, 2)`` rad, the arm joints' ranges; ``gripper_range`` ``(2,)`` the jaw's.
        vel_max: ``(6,)`` rad/s, the servo speed of each actuator (arm joints, then the jaw).
        home_q, home_opening: the arm's joints ``(5,)`` rad and jaw opening at every reset.

    Raises:
        ValueError: the model's actuators are not the SO-101 joints in bus order.
    """

    def __init__(self, model: mujoco.MjModel | None = None):
        self.model = m = model if model is not None else so101_pick_model()
        acts = tuple(m.joint(int(m.actuator_trnid[i, 0])).name for i in range(m.nu))
        if acts != (*ARM_JOINTS, "gripper"):
            raise ValueError(f"so101_pick: the model's actuators drive {acts}, expected {(*ARM_JOINTS, 'gripper')}")
        self.qadr = np.array([m.joint(j).qposadr[0] for j in ARM_JOINTS])
        self.dadr = np.array([m.joint(j).dofadr[0] for j in ARM_JOINTS])
        self.gripper_qadr = int(m.joint("gripper").qposadr[0])
        self.joint_range = np.array([m.jnt_range[m.joint(j).id] for j in ARM_JOINTS], dtype=np.float64)
        self.gripper_range = np.array(m.jnt_range[m.joint("gripper").id], dtype=np.float64)
        self.vel_max = np.asarray(m.numeric("joint_vel_max").data, dtype=np.float64)
        self.ctrl_range = np.array(m.actuator_ctrlrange, dtype=np.float64)
        self.cube_qadr = int(m.joint("cube").qposadr[0])
        self.cube_dadr = int(m.joint("cube").dofadr[0])
        self.cube_geom = m.geom("cube").id
        self.pad_geoms = (m.geom("fixed_pad").id, m.geom("moving_pad").id)
        self.target_mocap = int(m.body("target").mocapid[0])
        self.eef_site = m.site("eef").id
        self.pan_xy = np.array(m.body("shoulder").pos[:2], dtype=np.float64)  # the base is at the origin
        self.home_q, self.home_opening = HOME_Q.copy(), HOME_OPENING  # the arm at every reset

    # ------------------------------------------------------------------ conventions
    def jaw_angle(self, opening: float) -> float:
        """Gripper opening ``[0, 1]`` (clipped) -> jaw angle (rad), linear over the jaw's range."""
        lo, hi = self.gripper_range
        return float(lo + np.clip(opening, 0.0, 1.0) * (hi - lo))

    def opening(self, jaw: float) -> float:
        """Jaw angle (rad) -> opening in ``[0, 1]``; inverse of :meth:`jaw_angle`."""
        lo, hi = self.gripper_range
        return float(np.clip((jaw - lo) / (hi - lo), 0.0, 1.0))

    # ------------------------------------------------------------------ episodes
    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
        """Cube position ``(2,)`` m, cube yaw (rad) and target-area centre ``(2,)`` m from ``rng``."""
        def point():
            r, az = rng.uniform(*REGION_R), rng.uniform(-REGION_AZIMUTH, REGION_AZIMUTH)
            return self.pan_xy + r * np.array([np.sin(az), -np.cos(az)])  # azimuth 0: straight ahead (-y)
        cube, yaw = point(), float(rng.uniform(-np.pi / 4, np.pi / 4))
        target = point()
        while np.linalg.norm(target - cube) < MIN_SEPARATION:
            target = point()
        return cube, yaw, target

    def reset(self, data: mujoco.MjData, seed: int | None = None) -> None:
        """Reset ``data`` to a new episode drawn from ``seed``: arm at :data:`HOME_Q` at rest with its
        actuator targets there, jaw at :data:`HOME_OPENING`, cube resting flat, target area placed."""
        m, d = self.model, data
        rng = np.random.default_rng(seed)
        mujoco.mj_resetData(m, d)
        d.qpos[self.qadr] = HOME_Q
        d.qpos[self.gripper_qadr] = self.jaw_angle(HOME_OPENING)
        d.ctrl[:] = np.append(HOME_Q, self.jaw_angle(HOME_OPENING))
        cube, yaw, target = self.sample(rng)
        c = self.cube_qadr
        d.qpos[c:c + 3] = [cube[0], cube[1], CUBE_HALF]
        d.qpos[c + 3:c + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        d.mocap_pos[self.target_mocap] = [target[0], target[1], 0.0]
        mujoco.mj_forward(m, d)

    def servo_step(self, data: mujoco.MjData, goal: np.ndarray, nstep: int = 1) -> None:
        """``nstep`` physics steps toward actuator targets ``goal`` ``(6,)`` (rad; clipped to the
        actuators' ranges): before each step every target moves toward ``goal`` by at most
        ``vel_max * dt``, the servos' speed profile (as the SO-101 twin steps)."""
        m, d = self.model, data
        goal = np.clip(np.asarray(goal, np.float64), self.ctrl_range[:, 0], self.ctrl_range[:, 1])
        step = self.vel_max * m.opt.timestep
        for _ in range(nstep):
            d.ctrl[:] = d.ctrl + np.clip(goal - d.ctrl, -step, step)
            mujoco.mj_step(m, d)

    # ------------------------------------------------------------------ observation and success
    def arm_obs(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        """``joint_pos`` (5,) rad, ``gripper`` (1,) opening, ``eef_pos`` (3,) m, ``eef_quat`` (4,) xyzw,
        from ``data`` with its kinematics computed (the twin's ``task_obs`` keys)."""
        wxyz = np.empty(4)
        mujoco.mju_mat2Quat(wxyz, np.asarray(data.site_xmat[self.eef_site], dtype=np.float64))
        return {"joint_pos": data.qpos[self.qadr].astype(np.float32),
                "gripper": np.array([self.opening(data.qpos[self.gripper_qadr])], np.float32),
                "eef_pos": data.site_xpos[self.eef_site].astype(np.float32),
                "eef_quat": np.roll(wxyz, -1).astype(np.float32)}

    def scene_obs(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        """``object`` (10,): cube centre m, cube xyzw, target-area centre m."""
        c = self.cube_qadr
        wxyz = data.qpos[c + 3:c + 7]
        obj = np.concatenate([data.qpos[c:c + 3], wxyz[1:], wxyz[:1], data.mocap_pos[self.target_mocap]])
        return {"object": obj.astype(np.float32)}

    def cube_held(self, data: mujoco.MjData) -> bool:
        """Whether a jaw pad touches the cube (in the contacts of the last physics step)."""
        pairs = data.contact.geom[:data.ncon]
        cube = (pairs == self.cube_geom).any(axis=1)
        pads = np.isin(pairs, self.pad_geoms).any(axis=1)
        return bool((cube & pads).any())

    def is_success(self, data: mujoco.MjData) -> bool:
        """The cube rests inside the target area (see the module docstring)."""
        c, v = self.cube_qadr, self.cube_dadr
        cube = data.qpos[c:c + 3]
        inside = np.linalg.norm(cube[:2] - data.mocap_pos[self.target_mocap][:2]) <= SUCCESS_RADIUS
        on_table = cube[2] <= CUBE_HALF + LIFTED_TOL
        still = np.linalg.norm(data.qvel[v:v + 3]) <= RESTING_SPEED
        return bool(inside and on_table and still and not self.cube_held(data))


class So101PickEnv(CameraEnvMixin, gym.Env):
    """Pick the cube and place it in the marked area with the SO-101 arm (see the module docstring).

    Args:
        max_episode_steps: truncation (control steps).
        control_freq: control steps per second (Hz); a whole number of 2 ms physics steps each.
        terminate_on_success: end the episode on success.
        cameras: cameras whose images join the observation (``"top"``, ``"wrist"``).
        image_size: ``(height, width)`` of camera observations, pixels.
        render_mode: ``None`` or ``"rgb_array"`` (then :meth:`render` returns a frame).
        render_camera, render_size: camera and ``(height, width)`` of :meth:`render`.

    Raises:
        FileNotFoundError: the shipped MJCF is missing (broken install).
        ValueError: an unknown camera or render mode, or a control period that is not a whole
            number of physics steps.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    #: What the action means (stored with demonstrations), its units and layout: a leader arm's.
    action_type = "joint_position"
    action_units = "rad, opening 0..1"
    action_layout = (*(f"{j} rad" for j in ARM_JOINTS), "gripper opening [0 closed, 1 open]")
    #: Units and descriptions of the observation keys the store's standard ones do not cover.
    obs_units = {
        "joint_pos": ("rad", "SO-101 arm joint positions: " + ", ".join(ARM_JOINTS)),
        "object": ("m, xyzw, m", "cube centre (3), cube orientation xyzw (4), target-area centre (3); base frame"),
    }

    def __init__(self, max_episode_steps: int = 200, control_freq: float = 20.0, terminate_on_success: bool = True,
                 cameras: Sequence[str] = (), image_size: Sequence[int] = (96, 96), render_mode: str | None = None,
                 render_camera: str = "top", render_size: Sequence[int] = (240, 320)):
        from robolearn.envs.rendering import EnvCameras

        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.scene = So101PickScene()
        self.model = m = self.scene.model
        self.data = mujoco.MjData(m)
        substeps = 1.0 / (float(control_freq) * m.opt.timestep)
        if control_freq <= 0 or abs(substeps - round(substeps)) > 1e-6:
            raise ValueError(f"control_freq {control_freq} Hz is not a whole number of "
                             f"{m.opt.timestep * 1e3:g} ms physics steps")
        self.substeps = int(round(substeps))
        self.control_dt = self.substeps * m.opt.timestep
        self.metadata = {**self.metadata, "render_fps": float(control_freq)}
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = terminate_on_success
        self.cameras = EnvCameras(cameras, image_size, render_camera, render_size)
        self.cameras.check(m)
        box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)  # noqa: E731
        self.observation_space = gym.spaces.Dict({
            "joint_pos": box(5),  # within the joint ranges, up to the limits' softness
            "gripper": gym.spaces.Box(0.0, 1.0, (1,), np.float32),
            "eef_pos": box(3), "eef_quat": box(4), "object": box(10),
            **self.cameras.spaces(),
        })
        low = np.append(self.scene.joint_range[:, 0], 0.0).astype(np.float32)
        high = np.append(self.scene.joint_range[:, 1], 1.0).astype(np.float32)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """New episode drawn from ``seed`` (see :meth:`So101PickScene.reset`). Returns ``(obs, info)``."""
        super().reset(seed=seed)
        self.scene.reset(self.data, seed)
        self._t = 0
        return self._obs(), {"is_success": False}

    def step(self, action):
        """Command the joint targets ``action[:5]`` (rad) and the gripper opening ``action[5]``,
        clipped to their ranges, for one control period.

        Raises:
            ValueError: wrong shape or non-finite action.
        """
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (6,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 6 finite numbers (5 joint targets rad, gripper opening), got {a!r}")
        a = np.clip(a, self.action_space.low, self.action_space.high)
        self.scene.servo_step(self.data, np.append(a[:5], self.scene.jaw_angle(a[5])), self.substeps)
        mujoco.mj_forward(self.model, self.data)  # poses, cameras and contacts of the new state
        self._t += 1
        success = self.scene.is_success(self.data)
        terminated = success and self.terminate_on_success
        truncated = self._t >= self.max_episode_steps
        return self._obs(), float(success), terminated, truncated, {"is_success": success}

    def _obs(self) -> dict[str, np.ndarray]:
        d = self.data
        return {**self.scene.arm_obs(d), **self.scene.scene_obs(d), **self.cameras.obs(self.model, d)}


class So101Ik:
    """Damped least-squares inverse kinematics of a site of the SO-101 model over the arm joints
    (Wampler 1986; Buss, "Introduction to inverse kinematics with Jacobian transpose, pseudoinverse
    and damped least squares methods", 2004, Sec. 5): ``dq = J^T (J J^T + lambda^2 I)^-1 e``, with
    ``J`` from ``mj_jacSite``, iterated from a warm start and clipped to the joint ranges.

    Args:
        model: a model with the SO-101 arm (kinematics only are used: its own ``MjData``).
        site: the site to place.
        damping: ``lambda`` (m).
        rot_weight: metres per radian of orientation error in the task vector.
        iters: at most this many iterations per :meth:`solve`.
    """

    def __init__(self, model: mujoco.MjModel, site: str = "grasp", damping: float = 0.02,
                 rot_weight: float = 0.2, iters: int = 100):
        self.model, self.data = model, mujoco.MjData(model)
        self.qadr = np.array([model.joint(j).qposadr[0] for j in ARM_JOINTS])
        self.dadr = np.array([model.joint(j).dofadr[0] for j in ARM_JOINTS])
        self.lo = np.array([model.jnt_range[model.joint(j).id][0] for j in ARM_JOINTS])
        self.hi = np.array([model.jnt_range[model.joint(j).id][1] for j in ARM_JOINTS])
        self.site = model.site(site).id
        self.damping, self.rot_weight, self.iters = damping, rot_weight, iters
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The site's position ``(3,)`` m and rotation matrix ``(3, 3)`` for arm joints ``q`` ``(5,)`` rad."""
        self.data.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def solve(self, q0: np.ndarray, pos: np.ndarray, rot: np.ndarray | None = None, axis: np.ndarray | None = None,
              active: Sequence[bool] = (True,) * 5, tol: float = 1e-4) -> tuple[np.ndarray, float]:
        """Arm joints ``(5,)`` rad that put the site at ``pos`` ``(3,)`` m with rotation ``rot``
        ``(3, 3)``, or (``rot`` None) with its z axis along ``axis`` ``(3,)`` and its turn about that
        axis free; only ``active`` joints move. Returns the joints and the remaining position error (m)."""
        q = np.clip(np.asarray(q0, np.float64), self.lo, self.hi)
        proj = np.eye(3) if rot is not None else np.eye(3) - np.outer(axis, axis)
        mask = np.asarray(active, bool)
        for _ in range(self.iters):
            p, r = self.fk(q)
            e_pos = pos - p
            e_rot = (0.5 * sum(np.cross(r[:, i], rot[:, i]) for i in range(3)) if rot is not None
                     else np.cross(r[:, 2], axis))
            if np.linalg.norm(e_pos) < tol and np.linalg.norm(e_rot) < 10 * tol:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site)
            jac = np.vstack([self._jacp[:, self.dadr], self.rot_weight * (proj @ self._jacr[:, self.dadr])])
            jac[:, ~mask] = 0.0
            err = np.concatenate([e_pos, self.rot_weight * e_rot])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + self.damping ** 2 * np.eye(6), err)
            norm = np.linalg.norm(dq)
            if norm > 0.3:
                dq *= 0.3 / norm
            q = np.clip(q + dq, self.lo, self.hi)
        return q, float(np.linalg.norm(pos - self.fk(q)[0]))


def _down(yaw: float) -> np.ndarray:
    """Rotation of the gripper frame pointing its jaws straight down (its z axis up), jaws closing
    along the world direction ``yaw`` (rad)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _yaw(xyzw: np.ndarray) -> float:
    x, y, z, w = (float(v) for v in xyzw)
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


class So101PickExpert(PhaseExpert):
    """Scripted pick and place for :class:`So101PickEnv`, in joint space through IK on the model.

    The expert moves a Cartesian waypoint of the ``grasp`` site (where the cube's centre sits when
    held) through the phases approach (above the cube, the jaws turned to the cube's nearest face,
    the fixed jaw standing 3 mm off it), descend, close, lift, carry (over the area), place (cube
    2 mm above the table), release and retreat, at most :attr:`max_step` m per step (slower going
    down), and turns each waypoint into absolute joint targets with :class:`So101Ik` warm-started
    from the previous targets. Jaws point straight down throughout; from the lift on, the wrist
    roll is held and only the other four joints solve. It reads only the observation.

    Args:
        gain: proportional gain from waypoint error (m) to step (m).
        noise_std: std (m) of Gaussian noise on the waypoint steps while moving freely (approach,
            lift, carry); 0 (the default) makes the expert deterministic.
        seed: seed of that noise.
    """

    initial_phase = "approach"
    noisy_phases = ("approach", "lift", "carry")
    max_step = 0.0125           # m per control step (0.25 m/s at 20 Hz)
    SLOW_STEP = 0.006           # m per step going down to the table
    HOVER = 0.06                # above the cube centre before descending (m)
    CARRY_Z = 0.075             # height of the held cube's centre while carrying (m)
    CLEARANCE = 0.003           # the fixed jaw's stand-off from the cube face before closing (m)
    PLACE_GAP = 0.002           # cube bottom above the table when released (m)
    OPEN, CLOSED = HOME_OPENING, 0.0
    CLOSE_STEPS, RELEASE_STEPS = 8, 5
    SETTLED = 0.03              # measured joints within this of the targets: the arm is there (rad)

    def __init__(self, gain: float = 1.0, noise_std: float = 0.0, seed: int | None = None):
        self.ik = So101Ik(so101_pick_model(), "grasp")
        super().__init__(gain, noise_std, seed)

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode (and reseed the waypoint noise if ``seed`` is given)."""
        super().reset(seed)
        self._q = self._wp = self._rot = self._offset = self._place_z = None
        self._grip = self.OPEN

    def _grasp_rotation(self, cube: np.ndarray, cube_quat: np.ndarray, hover: np.ndarray) -> np.ndarray:
        """Jaws down, closing across the cube face nearest to the arm's own heading over the cube (so
        the wrist turns by at most 45 degrees)."""
        q, _ = self.ik.solve(self._q, hover, axis=np.array([0.0, 0.0, 1.0]), active=(True,) * 4 + (False,))
        _, r = self.ik.fk(q)
        heading = float(np.arctan2(r[1, 0], r[0, 0]))
        return _down(heading + wrap_angle(_yaw(cube_quat) - heading, np.pi / 2))

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The action ``(6,)`` (joint targets rad, gripper opening) for ``obs``."""
        joints = obs["joint_pos"].astype(np.float64)
        obj = obs["object"].astype(np.float64)
        cube, cube_quat, target = obj[:3], obj[3:7], obj[7:10]
        if self._q is None:  # first step of the episode: start from where the arm is
            self._q = joints.copy()
            self._wp = self.ik.fk(self._q)[0]
        settled = np.abs(joints - self._q).max() < self.SETTLED
        slow = False
        if self.phase in ("approach", "descend"):
            hover = cube + [0.0, 0.0, self.HOVER]
            if self._rot is None:
                self._rot = self._grasp_rotation(cube, cube_quat, hover)
            grasp = cube - self.CLEARANCE * self._rot[:, 0]
            goal = grasp + [0.0, 0.0, self.HOVER] if self.phase == "approach" else grasp
            slow = self.phase == "descend"
            if self._reached(goal, settled):
                self.enter("descend" if self.phase == "approach" else "close")
        elif self.phase == "close":
            goal, self._grip = self._wp, self.CLOSED
            if self.waited(self.CLOSE_STEPS):
                self.enter("lift")
        elif self.phase == "lift":
            goal = np.array([self._wp[0], self._wp[1], self.CARRY_Z])
            if self._reached(goal, settled):
                self.enter("carry")
                self._offset = self._wp[:2] - cube[:2]  # where the held cube sits off the waypoint
        elif self.phase == "carry":
            goal = np.array([*(target[:2] + self._offset), self.CARRY_Z])
            if self._reached(goal, settled):
                self.enter("place")
                self._place_z = self._wp[2] - (cube[2] - (CUBE_HALF + self.PLACE_GAP))
        elif self.phase == "place":
            goal, slow = np.array([self._wp[0], self._wp[1], self._place_z]), True
            if self._reached(goal, settled):
                self.enter("release")
        elif self.phase == "release":
            goal, self._grip = self._wp, self.OPEN
            if self.waited(self.RELEASE_STEPS):
                self.enter("retreat")
        else:  # retreat, then stay
            goal = np.array([self._wp[0], self._wp[1], self.CARRY_Z])
        step = self.position_step(goal, self._wp)
        if slow:
            step = np.clip(step, -self.SLOW_STEP, self.SLOW_STEP)
        self._wp = self._wp + step
        if self.phase in ("approach", "descend", "close", "lift"):
            self._q, _ = self.ik.solve(self._q, self._wp, rot=self._rot)
        else:  # the wrist roll stays as it grasped; the jaws keep pointing down
            self._q, _ = self.ik.solve(self._q, self._wp, axis=np.array([0.0, 0.0, 1.0]), active=(True,) * 4 + (False,))
        return np.append(self._q, self._grip).astype(np.float32)

    def _reached(self, goal: np.ndarray, settled: bool) -> bool:
        """The waypoint is at ``goal`` (within the noise) and the arm has followed it."""
        return bool(np.linalg.norm(goal - self._wp) < max(5e-4, 3 * self.noise_std) and settled)
