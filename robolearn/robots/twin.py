"""The MuJoCo twin: a simulated arm behind the :class:`~robolearn.robots.types.Robot` interface.

The twin runs the same robosuite scene as ``robolearn eval`` (Lift with a Panda by default), with its
operational-space controller switched to absolute world-frame pose goals. Physics advances with the
clock, like a real robot's: every call to :meth:`MujocoTwin.read_state` or
:meth:`MujocoTwin.send_command` first steps the simulator through every 2 ms physics step due since
the last call, each one applying the newest command. A control loop at 500 Hz therefore sees about
one physics step per period; a stalled caller sees the robot keep tracking its last target, as a
real arm would. The clock is injectable, so tests run the twin in lockstep with a fake clock; :meth:`MujocoTwin.sync`
puts the physics steps half a period away from a starting loop's deadlines, so jitter does not
make a period run zero or two steps.

Frames and units: the twin's base frame is the scene's world frame (m); orientations are xyzw
quaternions; the gripper is the normalized opening in ``[0, 1]`` (1 open). Besides the Robot
interface the twin offers what only a simulator can: :meth:`reset` to a seeded episode, the task's
observation (:meth:`task_obs`, same keys as the eval environment) and :meth:`is_success`, and
cameras of its model rendered beside the loop (:meth:`MujocoTwin.make_camera`, a
:class:`~robolearn.robots.cameras.RenderedCamera` fed by the twin's
:class:`~robolearn.robots.cameras.StateTap`, served on the loop's thread after each call's physics steps).
"""

from __future__ import annotations

import time
from typing import Callable

import mujoco
import numpy as np

from robolearn.envs.actions import gripper_command
from robolearn.utils.rotations import quat_to_rotvec
from robolearn.robots.types import Capabilities, Command, ControlMode, RobotLimits, RobotState

#: Panda joint speed limits (rad/s) from Franka's datasheet.
PANDA_JOINT_VEL_MAX = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])


class TwinSim:
    """A robosuite task stepped one physics step at a time under absolute pose goals (no clock).

    Args:
        task: robosuite task key (``"lift"``).
        robot: robosuite robot name.
        model_seed: seed of the model build (the same default as the eval environment, so a reset
            seed gives the same scene as in ``robolearn eval``).

    Raises:
        ValueError: unknown task (from the adapter).
    """

    def __init__(self, task: str = "lift", robot: str = "Panda", model_seed: int = 0):
        from robolearn.envs.robosuite_env import RobosuiteEnv

        self.env = RobosuiteEnv(task=task, robot=robot, controller_input="absolute", model_seed=model_seed)
        self._rs = self.env.unwrapped_robosuite
        self._robot = self._rs.robots[0]
        ctrl = self._robot.part_controllers["right"]  # rebuilt by every reset: keep only its site
        self._site = self._rs.sim.model.site_name2id(ctrl.ref_name)
        self.dt = float(self._rs.model_timestep)  # s per physics step
        gripper = self._robot.gripper["right"]
        ids = [self._rs.sim.model.joint_name2id(j) for j in gripper.joints]
        self._finger_qpos = [self._rs.sim.model.jnt_qposadr[i] for i in ids]
        self._finger_span = float(sum(abs(r).max() for r in self._rs.sim.model.jnt_range[ids]))
        self._jpos = list(self._robot._ref_joint_pos_indexes)
        self._jvel = list(self._robot._ref_joint_vel_indexes)
        self.joint_range = np.array(self._rs.sim.model.jnt_range[self._robot._ref_joint_indexes], dtype=np.float64)
        self.n_steps = 0
        self._goal: np.ndarray | None = None
        self._new_goal = False
        # The first physics step after the build costs ~20 ms (robosuite's lazy set-up): take it
        # here, not in the first period of a control loop. Episodes start with reset() anyway.
        self.set_goal(*self.eef_pose(), gripper=1.0)
        self.step()
        self.task_obs()
        self.n_steps = 0

    def reset(self, seed: int | None = None) -> None:
        """Start the seeded episode (the same scene as the eval environment's ``reset(seed)``)."""
        self.env.reset(seed=seed)
        self.n_steps = 0
        pos, quat = self.eef_pose()
        self.set_goal(pos, quat, gripper=1.0)

    @property
    def model(self) -> mujoco.MjModel:
        """The scene's raw ``MjModel`` (the eval environment's, cameras included)."""
        return self.env.model

    @property
    def data(self) -> mujoco.MjData:
        """The scene's raw ``MjData``, stepped by :meth:`step`."""
        return self.env.data

    def camera_state(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        """The model and the stepped ``MjData`` that cameras render."""
        return self.model, self.data

    def eef_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The controller's end-effector site pose: position ``(3,)`` m, quaternion ``(4,)`` xyzw."""
        self._rs.sim.forward()  # kinematics of the current joint state, not of the last step's start
        d = self._rs.sim.data
        wxyz = np.empty(4)
        mujoco.mju_mat2Quat(wxyz, np.asarray(d.site_xmat[self._site], dtype=np.float64).ravel())
        return np.array(d.site_xpos[self._site], dtype=np.float64), np.roll(wxyz, -1)

    def set_goal(self, pos: np.ndarray, quat: np.ndarray, gripper: float) -> None:
        """Set the pose goal (m, xyzw, world frame) and gripper opening ``[0, 1]``; applied from the next step."""
        rotvec = quat_to_rotvec(np.asarray(quat, dtype=np.float64))
        self._goal = np.concatenate([pos, rotvec, [gripper_command(gripper)]])
        self._new_goal = True

    def step(self) -> None:
        """Advance the physics by one step of ``dt`` s under the current goal (robosuite's inner loop)."""
        rs = self._rs
        if rs.lite_physics:
            rs.sim.step1()
        else:
            rs.sim.forward()
        rs._pre_action(self._goal, self._new_goal)
        if rs.lite_physics:
            rs.sim.step2()
        else:
            rs.sim.step()
        rs._update_observables()
        self._new_goal = False
        self.n_steps += 1

    def joints(self) -> tuple[np.ndarray, np.ndarray]:
        """Arm joint positions (rad) and velocities (rad/s), ``(n_joints,)`` each."""
        d = self._rs.sim.data
        return np.array(d.qpos[self._jpos], dtype=np.float64), np.array(d.qvel[self._jvel], dtype=np.float64)

    def gripper_opening(self) -> float:
        """Finger opening normalized to ``[0, 1]`` (1 fully open)."""
        q = self._rs.sim.data.qpos[self._finger_qpos]
        return float(np.clip(np.abs(q).sum() / self._finger_span, 0.0, 1.0))

    def task_obs(self) -> dict[str, np.ndarray]:
        """The task's observation, same keys and units as :class:`~robolearn.envs.robosuite_env.RobosuiteEnv`."""
        return self.env._convert(self._rs._get_observations(force_update=True))

    def is_success(self) -> bool:
        """The task's own success check."""
        return bool(self._rs._check_success())

    def close(self) -> None:
        """Release the simulator."""
        self.env.close()


def twin_limits(joint_range: np.ndarray, workspace_lower, workspace_upper, eef_speed_max: float,
                eef_rot_speed_max: float, gripper_speed_max: float, joint_vel_max=None) -> RobotLimits:
    """Limits of the twin: the model's joint ranges ``(n, 2)`` rad and joint speeds (``joint_vel_max``
    ``(n,)`` rad/s; default Panda's), plus the given workspace box (m, world frame) and end-effector
    speeds (m/s, rad/s, opening/s)."""
    joint_range = np.asarray(joint_range, dtype=np.float64)
    n = len(joint_range)
    vel = PANDA_JOINT_VEL_MAX[:n] if n <= len(PANDA_JOINT_VEL_MAX) else np.full(n, 2.0)
    if joint_vel_max is not None:
        vel = np.asarray(joint_vel_max, dtype=np.float64)
    return RobotLimits(joint_lower=joint_range[:, 0], joint_upper=joint_range[:, 1], joint_vel_max=vel,
                       workspace_lower=np.asarray(workspace_lower, float), workspace_upper=np.asarray(workspace_upper, float),
                       eef_speed_max=eef_speed_max, eef_rot_speed_max=eef_rot_speed_max,
                       gripper_speed_max=gripper_speed_max)


class MujocoTwin:
    """In-process MuJoCo twin implementing :class:`~robolearn.robots.types.Robot` (EEF pose control).

    Args:
        task, robot, model_seed: the scene (see :class:`TwinSim`).
        workspace_lower, workspace_upper: workspace box (m, world frame) for the safety layer.
        eef_speed_max, eef_rot_speed_max, gripper_speed_max: speed limits (m/s, rad/s, opening/s).
        max_catch_up_s: when the caller has not called for longer than this, the simulator
            simulates at most this much and counts the rest as ``lag_s`` (a real-time twin cannot
            replay a long stall in one call without stalling its caller in turn).
        clock: monotonic clock (s); injectable for lockstep tests.

    Raises:
        ConnectionError: :meth:`read_state` or :meth:`send_command` before :meth:`connect`.
    """

    _tap = None  # the StateTap of the twin's cameras, made by the first make_camera

    def __init__(self, task: str = "lift", robot: str = "Panda", model_seed: int = 0,
                 workspace_lower=(-0.45, -0.4, 0.8), workspace_upper=(0.35, 0.4, 1.4),
                 eef_speed_max: float = 1.0, eef_rot_speed_max: float = 3.0, gripper_speed_max: float = 10.0,
                 max_catch_up_s: float = 0.05, clock: Callable[[], float] = time.monotonic):
        self.sim = TwinSim(task, robot, model_seed)
        self.limits = twin_limits(self.sim.joint_range, workspace_lower, workspace_upper, eef_speed_max, eef_rot_speed_max,
                                  gripper_speed_max)
        self.capabilities = Capabilities(control_modes=(ControlMode.EEF_POSE,), has_gripper=True,
                                         max_rate_hz=1.0 / self.sim.dt)
        self._init_clock(clock, max_catch_up_s)

    def _init_clock(self, clock: Callable[[], float], max_catch_up_s: float) -> None:
        """Clock state of a twin not yet connected (shared by the twins built on this class)."""
        self.clock = clock
        self.max_catch_up_s = float(max_catch_up_s)
        self.lag_s = 0.0
        self._connected = False
        self._t_origin = 0.0
        self._seq = 0

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Start simulated time now (the twin cannot fail to connect)."""
        self._connected = True
        self._t_origin = self.clock()
        self.sim.n_steps = 0

    def disconnect(self) -> None:
        """Stop (idempotent); later reads and commands raise ``ConnectionError``."""
        self._connected = False

    def reset(self, seed: int | None = None) -> None:
        """Start the seeded episode; simulated time restarts now (``lag_s`` too) and the goal is the
        current pose."""
        self.sim.reset(seed)
        self._t_origin = self.clock()
        self.lag_s = 0.0
        self.publish_state()

    # ------------------------------------------------------------------ Robot interface
    def _advance(self) -> float:
        if not self._connected:
            raise ConnectionError("MujocoTwin is not connected; call connect() first")
        now = self.clock()
        due = int((now - self._t_origin) / self.sim.dt + 1e-9) - self.sim.n_steps
        limit = max(1, int(self.max_catch_up_s / self.sim.dt))
        if due > limit:  # skip what cannot be simulated in time; the scene time falls behind
            self.lag_s += (due - limit) * self.sim.dt
            self._t_origin += (due - limit) * self.sim.dt
            due = limit
        for _ in range(due):
            self.sim.step()
        if self._tap is not None:  # a camera asked for the state: a copy now, between physics steps
            self._tap.serve(t=self._t_origin + self.sim.n_steps * self.sim.dt)
        return now

    def sync(self) -> None:
        """Catch the physics up to now and put the next physics step half a step after now.

        A loop that starts right after this (its first period now, then one every ``dt``) meets
        every physics step in the middle of its period, so wake-up jitter of up to ``dt / 2`` never
        makes a period run zero or two steps. Control loops call it just before their first period.
        """
        now = self._advance()
        self._t_origin = now - (self.sim.n_steps + 0.5) * self.sim.dt

    def read_state(self) -> RobotState:
        """Step the physics up to now and return the state (capture time = the last physics step)."""
        now = self._advance()
        q, qd = self.sim.joints()
        pos, quat = self.sim.eef_pose()
        self._seq += 1
        capture = self._t_origin + self.sim.n_steps * self.sim.dt
        return RobotState(q, qd, pos, quat, self.sim.gripper_opening(), capture, now, self._seq)

    def send_command(self, command: Command) -> None:
        """Make ``command`` (``EEF_POSE``) the goal from the next physics step on.

        Raises:
            ConnectionError: not connected.
            ValueError: a mode other than ``EEF_POSE`` (the safety layer refuses those first).
        """
        self._advance()
        if command.mode != ControlMode.EEF_POSE:
            raise ValueError(f"MujocoTwin takes EEF_POSE commands, got {command.mode.value}")
        gripper = self.sim.gripper_opening() if command.gripper is None else command.gripper
        self.sim.set_goal(np.asarray(command.eef_pos, float), np.asarray(command.eef_quat, float), gripper)

    # ------------------------------------------------------------------ simulator extras
    def task_obs(self) -> dict[str, np.ndarray]:
        """The task observation (same keys as the eval environment), after stepping up to now."""
        self._advance()
        return self.sim.task_obs()

    def is_success(self) -> bool:
        """The task's success check."""
        return self.sim.is_success()

    # ------------------------------------------------------------------ cameras
    def camera_state(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        """The model and the stepped ``MjData`` that cameras render (the simulator's ``camera_state``)."""
        return self.sim.camera_state()

    def state_tap(self):
        """The :class:`~robolearn.robots.cameras.StateTap` of this twin's state (made on first use)."""
        if self._tap is None:
            from robolearn.robots.cameras import StateTap

            self._tap = StateTap(self.camera_state()[1], clock=self.clock)
        return self._tap

    def publish_state(self) -> None:
        """Hand the cameras a copy of the current state now (after a reset, or a state set by
        hand); call it on the thread that steps the twin. Nothing happens without cameras."""
        if self._tap is not None:
            self._tap.serve(force=True)

    def make_camera(self, name: str, camera: str, width: int, height: int, fps: float,
                    wait_s: float = 10.0):
        """A started :class:`~robolearn.robots.cameras.RenderedCamera` of the model's ``camera``
        (``uint8 (height, width, 3)`` frames at ``fps`` Hz, as the eval environment renders that
        camera), its first frame already there. Call it on the thread that steps the twin.

        Raises:
            ValueError: ``camera`` is not in the model (the message lists the model's cameras),
                or a bad size or fps.
            DeviceError: no first frame within ``wait_s`` (the renderer failed: its error is chained).
        """
        from robolearn.robots.cameras import RenderedCamera, start_camera

        model, _ = self.camera_state()
        cam = RenderedCamera(name, model, self.state_tap(), camera, width, height, fps)
        self.publish_state()  # the first frame's state, so the camera starts before the loop does
        return start_camera(cam, wait_s)

    def close(self) -> None:
        """Disconnect and release the simulator."""
        self.disconnect()
        self.sim.close()
