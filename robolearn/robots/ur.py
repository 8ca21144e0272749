"""Universal Robots (CB3 / e-Series) driver on ``ur_rtde`` (SDU Robotics' RTDE client library).

State comes from ``RTDEReceiveInterface`` (actual joint positions and speeds, the TCP pose as
position + rotation vector in the base frame, protective/emergency stop flags); commands go to
``RTDEControlInterface.servoJ`` (joint positions) or ``servoL`` (TCP pose), the streaming commands
meant to be called once per control period (500 Hz on e-Series, 125 Hz on CB3). The robot's own
controller interpolates with ``lookahead_time`` and ``gain``; our safety layer has already limited
every target. The gripper is not driven here (``has_gripper`` is false).

``ur_rtde`` is an optional dependency (``pip install ur_rtde``); tests pass mock interface classes.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from scipy.spatial.transform import Rotation

from robolearn.robots.types import Capabilities, Command, ControlMode, RobotLimits, RobotState
from robolearn.utils.errors import DeviceError

#: Joints of every UR arm (CB3, e-Series): base, shoulder, elbow, wrist 1..3.
N_JOINTS = 6
#: What ``servoJ``/``servoL`` accept: look-ahead time (s) and proportional gain.
LOOKAHEAD_RANGE_S = (0.03, 0.2)
GAIN_RANGE = (100.0, 2000.0)


class URDriver:
    """A UR arm over RTDE, implementing :class:`~robolearn.robots.types.Robot`.

    Args:
        host: robot IP address.
        limits: :class:`RobotLimits` (joint ranges, speeds, workspace box in the base frame).
        rate_hz: control frequency (Hz); servo commands last ``1 / rate_hz`` s.
        lookahead_time: servo look-ahead (s, 0.03 to 0.2), smoothing vs. delay.
        gain: servo proportional gain (100 to 2000).
        control_cls, receive_cls: the RTDE interface classes (default: ``rtde_control`` and
            ``rtde_receive`` from ``ur_rtde``); injectable for tests.
        clock: monotonic clock (s).

    Raises:
        DeviceError: ``ur_rtde`` is not installed, or out-of-range servo parameters.
    """

    def __init__(self, host: str, limits: RobotLimits, rate_hz: float = 500.0, lookahead_time: float = 0.1,
                 gain: float = 300.0, control_cls: Callable[..., Any] | None = None,
                 receive_cls: Callable[..., Any] | None = None, clock: Callable[[], float] = time.monotonic):
        if not LOOKAHEAD_RANGE_S[0] <= lookahead_time <= LOOKAHEAD_RANGE_S[1]:
            raise DeviceError(f"lookahead_time must be in [{LOOKAHEAD_RANGE_S[0]}, {LOOKAHEAD_RANGE_S[1]}] s, "
                              f"got {lookahead_time}")
        if not GAIN_RANGE[0] <= gain <= GAIN_RANGE[1]:
            raise DeviceError(f"gain must be in [{GAIN_RANGE[0]:g}, {GAIN_RANGE[1]:g}], got {gain}")
        if control_cls is None or receive_cls is None:
            try:
                import rtde_control
                import rtde_receive
            except ImportError as exc:
                raise DeviceError("the UR driver needs `pip install ur_rtde`") from exc
            control_cls = control_cls or rtde_control.RTDEControlInterface
            receive_cls = receive_cls or rtde_receive.RTDEReceiveInterface
        self.host, self.limits, self.rate_hz = host, limits, float(rate_hz)
        self.lookahead_time, self.gain = float(lookahead_time), float(gain)
        self._control_cls, self._receive_cls = control_cls, receive_cls
        self.clock = clock
        self.capabilities = Capabilities(control_modes=(ControlMode.JOINT_POSITION, ControlMode.EEF_POSE),
                                         has_gripper=False, max_rate_hz=self.rate_hz)
        self._ctrl = self._recv = None
        self._seq = 0
        self._t_robot0: float | None = None
        self._t_local0 = 0.0

    def connect(self) -> None:
        """Open both RTDE connections (uploads the control script to the robot).

        Raises:
            ConnectionError: the robot does not answer.
        """
        try:
            self._recv = self._receive_cls(self.host)
            self._ctrl = self._control_cls(self.host, self.rate_hz)
        except RuntimeError as exc:  # ur_rtde raises RuntimeError when it cannot connect
            raise ConnectionError(f"UR at {self.host}: {exc}") from exc

    def disconnect(self) -> None:
        """Stop servoing, stop the control script and close (idempotent)."""
        if self._ctrl is not None:
            try:
                self._ctrl.servoStop()
                self._ctrl.stopScript()
                self._ctrl.disconnect()
            except RuntimeError:
                pass
        if self._recv is not None:
            try:
                self._recv.disconnect()
            except RuntimeError:
                pass
        self._ctrl = self._recv = None

    close = disconnect

    def _check(self) -> None:
        if self._recv is None or self._ctrl is None:
            raise ConnectionError(f"UR at {self.host} is not connected; call connect() first")
        if not (self._recv.isConnected() and self._ctrl.isConnected()):
            raise ConnectionError(f"UR at {self.host}: RTDE connection lost")

    def fault(self) -> str | None:
        """A robot-side stop (protective or emergency), or ``None``; the session latches it."""
        if self._recv is None:
            return None
        if self._recv.isEmergencyStopped():
            return "emergency stop pressed on the robot"
        if self._recv.isProtectiveStopped():
            return "protective stop on the robot"
        return None

    def read_state(self) -> RobotState:
        """The newest RTDE sample. Capture time is the robot's timestamp mapped to our clock.

        Raises:
            ConnectionError: not connected or the connection dropped.
        """
        self._check()
        now = self.clock()
        q = np.asarray(self._recv.getActualQ(), dtype=np.float64)
        qd = np.asarray(self._recv.getActualQd(), dtype=np.float64)
        tcp = np.asarray(self._recv.getActualTCPPose(), dtype=np.float64)
        t_robot = float(self._recv.getTimestamp())
        if self._t_robot0 is None:
            self._t_robot0, self._t_local0 = t_robot, now
        self._seq += 1
        return RobotState(q, qd, tcp[:3], Rotation.from_rotvec(tcp[3:6]).as_quat(), 0.0,
                          self._t_local0 + (t_robot - self._t_robot0), now, self._seq)

    def send_command(self, command: Command) -> None:
        """Stream one servo target (``servoJ`` for joints, ``servoL`` for a TCP pose).

        Raises:
            ConnectionError: not connected or the connection dropped.
        """
        self._check()
        dt = 1.0 / self.rate_hz
        if command.mode == ControlMode.JOINT_POSITION:
            self._ctrl.servoJ(list(map(float, command.joint_pos)), 0.0, 0.0, dt, self.lookahead_time, self.gain)
        else:
            rotvec = Rotation.from_quat(np.asarray(command.eef_quat, float)).as_rotvec()
            pose = [*map(float, command.eef_pos), *map(float, rotvec)]
            self._ctrl.servoL(pose, 0.0, 0.0, dt, self.lookahead_time, self.gain)
