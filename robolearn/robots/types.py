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
        check_limits({name: getattr(self, name) for name in LIMIT_FIELDS})
        for name in LIMIT_FIELDS[:5]:
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))

    @property
    def n_joints(self) -> int:
        """Number of joints."""
        return len(self.joint_lower)


#: The fields of :class:`RobotLimits`, vectors first.
LIMIT_FIELDS = ("joint_lower", "joint_upper", "joint_vel_max", "workspace_lower", "workspace_upper",
                "eef_speed_max", "eef_rot_speed_max", "gripper_speed_max")


def check_limits(values: dict, prefix: str = "", n_joints: int | None = None) -> None:
    """Check the limits in ``values`` (any subset of :data:`LIMIT_FIELDS`, as :class:`RobotLimits`
    takes them); pairs and lengths are checked where both sides are given.

    Args:
        values: ``{field: value}``; vectors as sequences of numbers (rad, rad/s, m), speeds as numbers.
        prefix: put before every field name in messages (``"limits."`` for a robot config).
        n_joints: the number of joints the vectors must have, where the caller knows it (e.g. the
            calibration entries of an arm); ``None``: the three joint vectors agree with each other.

    Raises:
        ValueError: the first bad limit, named with ``prefix`` (and the index of the entry at fault):
            a vector that is not a finite 1-D list of numbers, wrong lengths, an empty or inverted
            range (lower >= upper), or a speed that is not a finite number > 0.
    """
    arr = {}
    for name in LIMIT_FIELDS[:5]:
        if name not in values:
            continue
        try:
            a = np.asarray(values[name], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{prefix}{name}: must be a list of finite numbers, got {values[name]!r}") from None
        if a.ndim != 1 or not np.all(np.isfinite(a)):
            raise ValueError(f"{prefix}{name}: must be a list of finite numbers, got {a}")
        arr[name] = a
    joint = [n for n in ("joint_lower", "joint_upper", "joint_vel_max") if n in arr]
    lengths = {n: len(arr[n]) for n in joint}
    if n_joints is not None:
        wrong = {n: k for n, k in lengths.items() if k != n_joints}
        if wrong:
            raise ValueError(f"{', '.join(prefix + n for n in wrong)}: need one entry per joint ({n_joints}), "
                             f"got {', '.join(str(k) for k in wrong.values())}")
    elif len(set(lengths.values())) > 1:
        raise ValueError(f"{', '.join(prefix + n for n in joint)} must have the same length, got "
                         f"{', '.join(str(k) for k in lengths.values())}")
    for name in ("workspace_lower", "workspace_upper"):
        if name in arr and len(arr[name]) != 3:
            raise ValueError(f"{prefix}{name}: must have 3 entries (x, y, z in m), got {len(arr[name])}")
    for lower, upper in (("joint_lower", "joint_upper"), ("workspace_lower", "workspace_upper")):
        if lower in arr and upper in arr:
            bad = np.flatnonzero(arr[lower] >= arr[upper])
            if len(bad):
                i = int(bad[0])
                raise ValueError(f"{prefix}{lower} must be below {prefix}{upper} in every entry: "
                                 f"{lower}[{i}] = {arr[lower][i]:g} >= {upper}[{i}] = {arr[upper][i]:g}")
    if "joint_vel_max" in arr and np.any(arr["joint_vel_max"] <= 0):
        i = int(np.flatnonzero(arr["joint_vel_max"] <= 0)[0])
        raise ValueError(f"{prefix}joint_vel_max: must be > 0 for every joint, got joint_vel_max[{i}] = "
                         f"{arr['joint_vel_max'][i]:g}")
    for name in LIMIT_FIELDS[5:]:
        if name not in values:
            continue
        try:
            v = float(values[name])
        except (TypeError, ValueError):
            v = float("nan")
        if not np.isfinite(v) or v <= 0:
            raise ValueError(f"{prefix}{name}: must be a finite number > 0, got {values[name]!r}")


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
