"""Types of the hardware abstraction layer: robot state, commands, limits, faults, the Robot protocol.

Units are SI throughout: joint positions in rad, velocities in rad/s, positions in m, orientations
as unit quaternions in xyzw order, times in seconds on the monotonic clock (``time.monotonic()``).
The gripper is a normalized opening in ``[0, 1]`` (0 closed, 1 open) so every driver speaks the same
language; drivers convert to their own units.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


class ControlMode(enum.Enum):
    """What a :class:`Command` asks for."""

    JOINT_POSITION = "joint_position"   #: target joint positions (rad)
    EEF_POSE = "eef_pose"               #: target end-effector pose (m, xyzw) in the robot base frame


@dataclass(frozen=True)
class RobotState:
    """One reading of the robot.

    Attributes:
        joint_pos: ``(n_joints,)`` rad.
        joint_vel: ``(n_joints,)`` rad/s.
        eef_pos: ``(3,)`` m, base frame.
        eef_quat: ``(4,)`` unit quaternion, xyzw, base frame.
        gripper: normalized opening in ``[0, 1]``.
        capture_time: monotonic time (s) at which the robot measured this state.
        receive_time: monotonic time (s) at which this process received it.
        seq: sequence number, increasing by one per reading.
    """

    joint_pos: np.ndarray
    joint_vel: np.ndarray
    eef_pos: np.ndarray
    eef_quat: np.ndarray
    gripper: float
    capture_time: float
    receive_time: float
    seq: int


@dataclass(frozen=True)
class Command:
    """A command in one control mode, plus an optional gripper target.

    Attributes:
        mode: :class:`ControlMode`.
        joint_pos: ``(n_joints,)`` rad, for ``JOINT_POSITION``.
        eef_pos: ``(3,)`` m, for ``EEF_POSE``.
        eef_quat: ``(4,)`` xyzw, for ``EEF_POSE``.
        gripper: target opening in ``[0, 1]``, or ``None`` to leave the gripper alone.
        timestamp: monotonic time (s) the command is meant for.
    """

    mode: ControlMode
    joint_pos: np.ndarray | None = None
    eef_pos: np.ndarray | None = None
    eef_quat: np.ndarray | None = None
    gripper: float | None = None
    timestamp: float = 0.0


@dataclass(frozen=True)
class RobotLimits:
    """Static limits of a robot; the safety layer enforces every one of them.

    Attributes:
        joint_lower, joint_upper: ``(n_joints,)`` rad.
        joint_vel_max: ``(n_joints,)`` rad/s, > 0.
        workspace_lower, workspace_upper: ``(3,)`` m, axis-aligned box in the base frame.
        eef_speed_max: m/s, > 0.
        eef_rot_speed_max: rad/s, > 0.
        gripper_speed_max: normalized opening per second, > 0.

    Raises:
        ValueError: a limit that is not finite, an empty range, or a non-positive speed (the
            message names the field).
    """

    joint_lower: np.ndarray
    joint_upper: np.ndarray
    joint_vel_max: np.ndarray
    workspace_lower: np.ndarray
    workspace_upper: np.ndarray
    eef_speed_max: float
    eef_rot_speed_max: float
    gripper_speed_max: float = 2.0

    def __post_init__(self):
        for name in ("joint_lower", "joint_upper", "joint_vel_max", "workspace_lower", "workspace_upper"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.ndim != 1 or not np.all(np.isfinite(arr)):
                raise ValueError(f"limit '{name}' must be a finite 1-D array, got {arr}")
            object.__setattr__(self, name, arr)
        n = len(self.joint_lower)
        if len(self.joint_upper) != n or len(self.joint_vel_max) != n:
            raise ValueError("joint_lower, joint_upper and joint_vel_max must have the same length")
        if np.any(self.joint_lower >= self.joint_upper):
            raise ValueError(f"joint_lower must be below joint_upper: {self.joint_lower} vs {self.joint_upper}")
        if len(self.workspace_lower) != 3 or len(self.workspace_upper) != 3:
            raise ValueError("workspace_lower and workspace_upper must have 3 entries (m)")
        if np.any(self.workspace_lower >= self.workspace_upper):
            raise ValueError(f"workspace_lower must be below workspace_upper: {self.workspace_lower} vs {self.workspace_upper}")
        if np.any(self.joint_vel_max <= 0):
            raise ValueError(f"limit 'joint_vel_max' must be > 0, got {self.joint_vel_max}")
        for name in ("eef_speed_max", "eef_rot_speed_max", "gripper_speed_max"):
            v = float(getattr(self, name))
            if not np.isfinite(v) or v <= 0:
                raise ValueError(f"limit '{name}' must be a finite number > 0, got {v}")

    @property
    def n_joints(self) -> int:
        """Number of joints."""
        return len(self.joint_lower)


class FaultKind(enum.Enum):
    """Why the safety layer stopped passing commands through."""

    INVALID_COMMAND = "invalid_command"   #: NaN/Inf, wrong shape or unsupported mode
    WATCHDOG = "watchdog"                 #: commands stopped arriving for longer than the timeout
    ESTOP = "estop"                       #: the e-stop was triggered
    DISCONNECT = "disconnect"             #: the driver lost the robot
    DRIVER = "driver"                     #: the driver reported an error


@dataclass(frozen=True)
class Fault:
    """A fault, latched until explicitly cleared.

    Attributes:
        kind: :class:`FaultKind`.
        message: what happened, for humans.
        time: monotonic time (s) it was raised.
    """

    kind: FaultKind
    message: str
    time: float


@dataclass(frozen=True)
class Capabilities:
    """What a driver supports."""

    control_modes: tuple[ControlMode, ...] = (ControlMode.JOINT_POSITION,)
    has_gripper: bool = True
    max_rate_hz: float = 500.0
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Robot(Protocol):
    """The interface every driver (MuJoCo twin, UR, Feetech/Dynamixel arms, ...) implements."""

    limits: RobotLimits
    capabilities: Capabilities

    def connect(self) -> None:
        """Open the connection; raises ``ConnectionError`` on failure."""

    def disconnect(self) -> None:
        """Close the connection (idempotent)."""

    def read_state(self) -> RobotState:
        """The newest state; raises ``ConnectionError`` if the robot is gone."""

    def send_command(self, command: Command) -> None:
        """Send one command that already passed the safety layer."""


@runtime_checkable
class SimulatedRobot(Robot, Protocol):
    """What a simulated robot (the MuJoCo twin, in-process or over its socket) adds to :class:`Robot`:
    the task's scene around the arm. Deployment feeds state policies from :meth:`task_obs` and
    counts success from :meth:`is_success`; recording and replay start each episode from a seeded
    scene with :meth:`reset`. A real arm has none of these (``isinstance(robot, SimulatedRobot)``
    is false) and is observed through its state and cameras instead."""

    def task_obs(self) -> dict:
        """The task's observation now, with the eval environment's keys ``{key: (*shape)}`` (SI units)."""

    def reset(self, seed: int | None = None) -> None:
        """Start the seeded episode's scene (the arm at its start pose)."""

    def is_success(self) -> bool:
        """Whether the task is solved now."""
