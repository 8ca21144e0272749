"""The SO-101 arm in MuJoCo: its kinematic model (forward kinematics for the twin and the Feetech
driver) and a joint-position twin behind the :class:`~robolearn.robots.types.Robot` protocol.

The model is ``sim/so101.xml``: five revolute arm joints (:data:`SO101_JOINTS`) and the gripper
jaw, each driven by a position actuator (the STS3215's own position loop: stiffness 50 N m/rad,
torque limited to the 2.9 N m stall torque). Joint frames, axes and ranges are those of the
SO-ARM100 project's ``so101_new_calib.urdf`` (see ``sim/README.md``).

Convention shared by the twin and :class:`~robolearn.robots.feetech.FeetechArm` (SO-100/101):

* joint order :data:`SO101_JOINTS`, the gripper apart (``RobotState.gripper``);
* joint positions in rad, ``q = 0`` the model's zero pose (upper arm vertical, forearm and gripper
  horizontal, pointing along the base's -y); on the bus ``q = direction * (steps - homing_offset)
  * 2 pi / 4096``, so a servo's ``homing_offset`` is its reading with the arm in that pose and
  ``direction`` is +1 where the servo turns positive about the model's joint axis;
* gripper: normalized opening in ``[0, 1]`` (0 at the jaw's lower limit, closed);
* end-effector pose: the ``eef`` site (the URDF's ``gripperframe``, between the jaw tips) in the
  base frame, from forward kinematics of the joint positions (``mj_kinematics``).

The twin advances with the clock like :class:`~robolearn.robots.twin.MujocoTwin` (it reuses its
stepping): each physics step the actuator targets move toward the commanded joints at no more than
the servo speed (``joint_vel_max`` of the model: the STS3215's 45 rpm no-load speed at 12 V), as a
servo's speed profile does.
"""

from __future__ import annotations

import time
from typing import Callable

import mujoco
import numpy as np

from robolearn.robots.twin import MujocoTwin, twin_limits
from robolearn.robots.types import Capabilities, Command, ControlMode

#: The SO-100/101 arm joints, in bus order (servo ids 1..5); the gripper (id 6) is apart.
SO101_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
GRIPPER_JOINT = "gripper"


def so101_xml() -> str:
    """Path of the shipped SO-101 MJCF (``sim/so101.xml``)."""
    from robolearn.utils.paths import sim_dir

    return str(sim_dir() / "so101.xml")


class So101Kinematics:
    """Forward kinematics of the SO-101 model (no dynamics): joint positions to the ``eef`` site pose.

    Attributes:
        joint_range: ``(5, 2)`` rad, the arm joints' ranges.
        gripper_range: ``(2,)`` rad, the jaw's range (closed, open).
        joint_vel_max: ``(5,)`` rad/s, the servos' speed; ``gripper_vel_max`` the jaw servo's.
    """

    def __init__(self, xml_path: str | None = None, model: mujoco.MjModel | None = None):
        self.model = model if model is not None else mujoco.MjModel.from_xml_path(xml_path or so101_xml())
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.qadr = np.array([m.jnt_qposadr[m.joint(j).id] for j in SO101_JOINTS])
        self.dadr = np.array([m.jnt_dofadr[m.joint(j).id] for j in SO101_JOINTS])
        self.gripper_qadr = int(m.jnt_qposadr[m.joint(GRIPPER_JOINT).id])
        self.joint_range = np.array([m.jnt_range[m.joint(j).id] for j in SO101_JOINTS], dtype=np.float64)
        self.gripper_range = np.array(m.jnt_range[m.joint(GRIPPER_JOINT).id], dtype=np.float64)
        vel = np.asarray(m.numeric("joint_vel_max").data, dtype=np.float64)
        self.joint_vel_max, self.gripper_vel_max = vel[:len(SO101_JOINTS)], float(vel[len(SO101_JOINTS)])
        self.site = m.site("eef").id

    def site_pose(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        """The ``eef`` site pose in ``data`` (kinematics already computed): position ``(3,)`` m, xyzw ``(4,)``."""
        wxyz = np.empty(4)
        mujoco.mju_mat2Quat(wxyz, np.asarray(data.site_xmat[self.site], dtype=np.float64))
        return np.array(data.site_xpos[self.site], dtype=np.float64), np.roll(wxyz, -1)

    def fk(self, joint_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """End-effector pose for arm joint positions ``(5,)`` rad: position ``(3,)`` m and quaternion
        ``(4,)`` xyzw in the base frame (``mj_kinematics`` of the model, then the ``eef`` site).

        Raises:
            ValueError: ``joint_pos`` is not 5 finite numbers.
        """
        q = np.asarray(joint_pos, dtype=np.float64)
        if q.shape != (len(SO101_JOINTS),) or not np.all(np.isfinite(q)):
            raise ValueError(f"SO-101 forward kinematics needs {len(SO101_JOINTS)} finite joint positions (rad), got {q}")
        self.data.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.site_pose(self.data)

    def opening(self, gripper_q: float) -> float:
        """Jaw angle (rad) -> normalized opening in ``[0, 1]`` (0 at the lower limit)."""
        lo, hi = self.gripper_range
        return float(np.clip((gripper_q - lo) / (hi - lo), 0.0, 1.0))

    def jaw_angle(self, opening: float) -> float:
        """Normalized opening ``[0, 1]`` (clipped) -> jaw angle (rad); inverse of :meth:`opening`."""
        lo, hi = self.gripper_range
        return float(lo + np.clip(opening, 0.0, 1.0) * (hi - lo))


def so101_tasks() -> list[str]:
    """The tasks of :data:`robolearn.envs.TASKS` whose scene the SO-101 twin shows."""
    from robolearn.envs import TASKS

    return sorted(name for name, spec in TASKS.items() if spec.twin_robot == "so101")


def _task_scene(task: str | None):
    """The scene object of ``task`` (its ``TaskSpec.twin_scene``), or ``None`` for no task.

    Raises:
        ValueError: ``task`` is not shown by the SO-101 twin (the message lists those that are).
    """
    if task is None:
        return None
    if task not in so101_tasks():
        raise ValueError(f"the SO-101 twin shows the tasks {so101_tasks()} (or none: the arm alone), not {task!r}")
    from robolearn.envs import TASKS
    from robolearn.utils.imports import load_object

    return load_object(TASKS[task].twin_scene)()


class So101Sim(So101Kinematics):
    """The SO-101 model stepped one physics step at a time under joint-position goals (no clock);
    the same interface as :class:`~robolearn.robots.twin.TwinSim` so :class:`MujocoTwin`'s stepping
    and the socket twin's server run it.

    Args:
        xml_path: the MJCF (default: the shipped ``sim/so101.xml``).
        start_pos: arm joint positions ``(5,)`` rad of every reset (default the zero pose, or the
            task's start pose), and ``start_opening`` the gripper's.
        task: a task of :data:`robolearn.envs.TASKS` whose scene this twin shows (``"so101_pick"``):
            the model is then the task's scene (arm, table, objects, cameras), resets draw the scene
            from their seed as the task's environment does, :meth:`task_obs` adds the task's object
            observation and :meth:`is_success` is the task's check. ``None``: the arm alone.

    Raises:
        ValueError: ``task`` is not a task the SO-101 twin shows.
    """

    def __init__(self, xml_path: str | None = None, start_pos=None, start_opening: float = 0.5,
                 task: str | None = None):
        self.scene = _task_scene(task)
        super().__init__(xml_path, model=self.scene.model if self.scene is not None else None)
        self.sim_data = mujoco.MjData(self.model)
        self.dt = float(self.model.opt.timestep)
        if self.scene is not None and start_pos is None:
            start_pos, start_opening = self.scene.home_q, self.scene.home_opening
        self.start_pos = np.zeros(len(SO101_JOINTS)) if start_pos is None else np.asarray(start_pos, np.float64)
        self.start_opening = float(start_opening)
        self._vmax = np.append(self.joint_vel_max, self.gripper_vel_max)
        self.n_steps = 0
        self.reset(None)

    def reset(self, seed: int | None = None) -> None:
        """Put the arm at its start pose, at rest, with the goal there; with a task, its scene drawn
        from ``seed`` as the task's environment draws it (the arm alone ignores ``seed``)."""
        d = self.sim_data
        if self.scene is not None:
            self.scene.reset(d, seed)
        else:
            mujoco.mj_resetData(self.model, d)
        d.qpos[self.qadr] = self.start_pos
        d.qpos[self.gripper_qadr] = self.jaw_angle(self.start_opening)
        self._goal = np.append(self.start_pos, self.jaw_angle(self.start_opening))
        d.ctrl[:] = self._goal
        mujoco.mj_forward(self.model, d)
        self.n_steps = 0

    def set_joint_goal(self, joint_pos: np.ndarray, opening: float | None) -> None:
        """Joint goal ``(5,)`` rad (and gripper opening ``[0, 1]``, or ``None`` to keep it), clipped
        to the actuators' ranges; the servos move toward it from the next physics step on."""
        goal = self._goal.copy()
        goal[:len(SO101_JOINTS)] = np.asarray(joint_pos, np.float64)
        if opening is not None:
            goal[-1] = self.jaw_angle(opening)
        lo, hi = self.model.actuator_ctrlrange[:, 0], self.model.actuator_ctrlrange[:, 1]
        self._goal = np.clip(goal, lo, hi)

    def step(self) -> None:
        """One physics step of ``dt`` s: the actuator targets move toward the goal at the servo
        speed at most, then ``mj_step``."""
        d = self.sim_data
        step = self._vmax * self.dt
        d.ctrl[:] = d.ctrl + np.clip(self._goal - d.ctrl, -step, step)
        mujoco.mj_step(self.model, d)
        self.n_steps += 1

    def joints(self) -> tuple[np.ndarray, np.ndarray]:
        """Arm joint positions (rad) and velocities (rad/s), ``(5,)`` each, in :data:`SO101_JOINTS` order."""
        d = self.sim_data
        return np.array(d.qpos[self.qadr], dtype=np.float64), np.array(d.qvel[self.dadr], dtype=np.float64)

    def eef_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The ``eef`` site pose of the current joint state: position ``(3,)`` m, xyzw ``(4,)``."""
        mujoco.mj_kinematics(self.model, self.sim_data)
        return self.site_pose(self.sim_data)

    def gripper_opening(self) -> float:
        """The jaw's normalized opening in ``[0, 1]``."""
        return self.opening(float(self.sim_data.qpos[self.gripper_qadr]))

    def task_obs(self) -> dict[str, np.ndarray]:
        """The arm's observation, with the keys a real arm records (``robot_obs``): ``joint_pos``
        ``(5,)`` rad, ``gripper`` ``(1,)`` opening, ``eef_pos`` ``(3,)`` m, ``eef_quat`` ``(4,)`` xyzw;
        with a task, also its scene's keys (so101_pick: ``object``), as the task's environment has them."""
        q, _ = self.joints()
        pos, quat = self.eef_pose()
        obs = {"eef_pos": pos.astype(np.float32), "eef_quat": quat.astype(np.float32),
               "gripper": np.array([self.gripper_opening()], np.float32), "joint_pos": q.astype(np.float32)}
        if self.scene is not None:
            obs.update(self.scene.scene_obs(self.sim_data))
        return obs

    def is_success(self) -> bool:
        """The task's success check (the arm alone has no task: never solved)."""
        return self.scene is not None and self.scene.is_success(self.sim_data)

    def camera_state(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        """The model and the stepped ``MjData`` that cameras render (:attr:`sim_data`; ``data``
        serves forward kinematics only)."""
        return self.model, self.sim_data

    def close(self) -> None:
        """Nothing to release."""


class So101Twin(MujocoTwin):
    """In-process SO-101 twin implementing :class:`~robolearn.robots.types.Robot` (``JOINT_POSITION``
    commands, gripper opening), stepped with the clock as :class:`MujocoTwin` is.

    Args:
        workspace_lower, workspace_upper, eef_speed_max, eef_rot_speed_max, gripper_speed_max: the
            safety layer's workspace box (m, base frame) and end-effector/gripper speeds (m/s, rad/s,
            opening/s); joint ranges and servo speeds come from the model (:func:`~robolearn.robots.twin.twin_limits`).
        max_catch_up_s, clock: see :class:`MujocoTwin`.
        task: the task whose scene the twin shows (see :class:`So101Sim`; ``None``: the arm alone).

    Raises:
        ConnectionError: :meth:`read_state` or :meth:`send_command` before :meth:`connect`.
        ValueError: ``task`` is not a task the SO-101 twin shows.
    """

    joint_names = SO101_JOINTS

    def __init__(self, workspace_lower=(-0.5, -0.5, 0.0), workspace_upper=(0.5, 0.5, 0.6), eef_speed_max: float = 0.5,
                 eef_rot_speed_max: float = 3.0, gripper_speed_max: float = 2.0, max_catch_up_s: float = 0.05,
                 clock: Callable[[], float] = time.monotonic, task: str | None = None):
        self.sim = So101Sim(task=task)
        self.limits = twin_limits(self.sim.joint_range, workspace_lower, workspace_upper, eef_speed_max,
                                  eef_rot_speed_max, gripper_speed_max, joint_vel_max=self.sim.joint_vel_max)
        self.capabilities = Capabilities(control_modes=(ControlMode.JOINT_POSITION,), has_gripper=True,
                                         max_rate_hz=1.0 / self.sim.dt)
        self._init_clock(clock, max_catch_up_s)

    def send_command(self, command: Command) -> None:
        """Make ``command`` the joint goal (rad; gripper opening, ``None`` keeps it) from the next
        physics step on. Raises ``ConnectionError`` when not connected, ``ValueError`` for a mode
        other than ``JOINT_POSITION`` (the safety layer refuses those first)."""
        self._advance()
        if command.mode != ControlMode.JOINT_POSITION:
            raise ValueError(f"So101Twin takes JOINT_POSITION commands, got {command.mode.value}")
        self.sim.set_joint_goal(np.asarray(command.joint_pos, float), command.gripper)

