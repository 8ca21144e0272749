"""Feetech serial-bus arms (SO-100 / SO-101 class: six STS3215 servos) on the vendor's Python SDK.

The driver talks to the bus through ``scservo_sdk`` (PyPI ``feetech-servo-sdk``, on ``pyserial``):
one SYNC_READ of present position and speed for every servo per :meth:`FeetechArm.read_state`, one
SYNC_WRITE of goal positions per :meth:`FeetechArm.send_command`. Units on the bus are steps
(4096 per turn); calibration maps them to radians per joint::

    q [rad] = direction * (steps - homing_offset) * 2 pi / 4096

and the gripper servo's steps to the normalized opening ``(steps - closed) / (open - closed)``. The
arm is driven in joint space (``JOINT_POSITION``). With ``kinematics="so101"`` the reported
end-effector pose is the forward kinematics of the measured joints on ``sim/so101.xml`` (the
twin's model, :class:`~robolearn.robots.so101_twin.So101Kinematics`; joint order, units and zero
pose as documented there); without a model it is zeros and the identity quaternion. Torque stays
on at disconnect unless ``torque_off_on_disconnect`` is set (an SO-100 without torque falls); a
leader arm connects with ``torque_on_connect=False`` (moved by hand, only read).

Tests run it on :class:`~robolearn.robots.feetech_emulator.EmulatedFeetechBus`, a pty speaking the
same protocol.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from robolearn.robots.types import Capabilities, Command, ControlMode, RobotLimits, RobotState
from robolearn.utils.errors import ConfigError, DeviceError

STEPS_PER_TURN = 4096
MAX_ID = 253  # servo ids 0..253 (254 is the broadcast id)
READ_RETRIES = 2  # extra sync reads after a missed status packet before the arm counts as gone
ADDR_TORQUE_ENABLE, ADDR_GOAL_POSITION, ADDR_PRESENT_POSITION = 40, 42, 56


@dataclass(frozen=True)
class JointCalibration:
    """Bus id and calibration of one joint: ``q = direction * (steps - homing_offset) * 2 pi / 4096``."""

    id: int
    homing_offset: int = 2048
    direction: int = 1


def check_calibration(joints: Sequence[JointCalibration], gripper: dict[str, int] | None) -> None:
    """Check an arm's calibration: at least one joint, every id in ``0..253`` and used once (the
    gripper's too), every ``homing_offset`` and gripper position in ``0..4095`` steps, directions
    ``+1``/``-1``, gripper ``open`` and ``closed`` apart.

    Raises:
        ValueError: the first problem, its message starting with the key at fault as a robot
            config spells it (``calibration[2].homing_offset``, ``gripper.open``).
    """
    if not joints:
        raise ValueError("calibration: no joints (one entry {id, homing_offset, direction} per arm joint)")
    seen: dict[int, str] = {}
    entries = [(f"calibration[{i}]", {"id": j.id, "homing_offset": j.homing_offset}) for i, j in enumerate(joints)]
    if gripper:
        entries.append(("gripper", {k: gripper.get(k) for k in ("id", "closed", "open")}))
    for i, j in enumerate(joints):
        if j.direction not in (1, -1):
            raise ValueError(f"calibration[{i}].direction: must be +1 or -1, got {j.direction!r}")
    for where, values in entries:
        for key, v in values.items():
            hi = MAX_ID if key == "id" else STEPS_PER_TURN - 1
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= hi:
                unit = "" if key == "id" else " steps"
                raise ValueError(f"{where}.{key}: must be an integer in 0..{hi}{unit}, got {v!r}")
        if values["id"] in seen:
            raise ValueError(f"{where}.id: servo id {values['id']} is already {seen[values['id']]}.id "
                             "(each servo on the bus has its own id)")
        seen[values["id"]] = where
    if gripper and gripper["open"] == gripper["closed"]:
        raise ValueError(f"gripper.open: must differ from gripper.closed (both {gripper['open']} steps)")


class FeetechArm:
    """A Feetech-bus arm implementing :class:`~robolearn.robots.types.Robot` (joint positions + gripper).

    Args:
        port: serial port (``/dev/ttyACM0``; a pty path for the emulator).
        joints: calibration of each arm joint, in order.
        gripper: the gripper servo's id and its ``closed``/``open`` positions (steps), or ``None``.
        limits: :class:`RobotLimits` (joint ranges in rad after calibration).
        baudrate: bus speed (the STS3215 default is 1,000,000).
        torque_off_on_disconnect: release the servos when disconnecting.
        torque_on_connect: enable torque at :meth:`connect` (a follower); ``False`` disables it
            instead (a leader arm, moved by hand).
        kinematics: ``"so101"`` for the EEF pose from the SO-101 model's forward kinematics, or ``None``.
        clock: monotonic clock (s).

    Raises:
        DeviceError: ``feetech-servo-sdk`` is not installed.
        ConfigError: a calibration :func:`check_calibration` refuses, or limits for another number
            of joints.
    """

    def __init__(self, port: str, joints: Sequence[JointCalibration], limits: RobotLimits,
                 gripper: dict[str, int] | None = None, baudrate: int = 1_000_000,
                 torque_off_on_disconnect: bool = False, torque_on_connect: bool = True,
                 kinematics: str | None = None, clock: Callable[[], float] = time.monotonic):
        try:
            import scservo_sdk
        except ImportError as exc:
            raise DeviceError("the Feetech driver needs `pip install feetech-servo-sdk`") from exc
        self._sdk = scservo_sdk
        self.port_name, self.baudrate = port, int(baudrate)
        self.joints = list(joints)
        self.gripper = dict(gripper) if gripper else None
        try:
            check_calibration(self.joints, self.gripper)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if len(self.joints) != limits.n_joints:
            raise ConfigError(f"{len(self.joints)} calibrated joints but limits for {limits.n_joints}")
        self.limits = limits
        self.capabilities = Capabilities(control_modes=(ControlMode.JOINT_POSITION,), has_gripper=gripper is not None,
                                         max_rate_hz=200.0)
        self.torque_off_on_disconnect = torque_off_on_disconnect
        self.torque_on_connect = bool(torque_on_connect)
        self.kinematics = None
        if kinematics is not None:
            if kinematics != "so101":
                raise ConfigError(f"kinematics: unknown model {kinematics!r} (known: ['so101'])")
            from robolearn.robots.so101_twin import SO101_JOINTS, So101Kinematics

            self.kinematics = So101Kinematics()
            self.joint_names = SO101_JOINTS
            if len(self.joints) != len(self.kinematics.joint_range):
                raise ConfigError(f"kinematics so101 has {len(self.kinematics.joint_range)} arm joints, "
                                  f"the calibration lists {len(self.joints)}")
        self.clock = clock
        self.ids = [j.id for j in self.joints] + ([self.gripper["id"]] if self.gripper else [])
        self._port = self._packet = None
        self._seq = 0
        self._last: tuple[float, np.ndarray] | None = None

    @classmethod
    def from_config(cls, cfg: dict[str, Any], **overrides) -> "FeetechArm":
        """Build from a ``hardware/*.yaml`` dict (keys ``port``, ``calibration``, ``gripper``, ``limits``,
        ``baudrate``, ``torque_off_on_disconnect``), validated first with
        :func:`~robolearn.robots.config.validate_robot_config` (the ``feetech`` schema).

        Raises:
            ConfigError: an unknown, missing or invalid key (the file and key named), or a config
                of another driver.
        """
        from robolearn.robots.config import validate_robot_config

        cfg = validate_robot_config({"driver": "feetech", **cfg})
        if cfg["driver"] != "feetech":
            raise ConfigError(f"{cfg.get('_path', 'robot config')}: driver: {cfg['driver']!r} is not a Feetech arm")
        joints = [JointCalibration(**j) for j in cfg["calibration"]]
        limits = RobotLimits(**cfg["limits"])
        kw = {k: cfg[k] for k in ("gripper", "baudrate", "torque_off_on_disconnect", "kinematics") if k in cfg}
        kw.update(overrides)
        port = kw.pop("port", cfg.get("port"))
        return cls(port, joints, limits, **kw)

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Open the port, check that every servo answers, enable torque (disable it with
        ``torque_on_connect=False``).

        Raises:
            ConnectionError: the port cannot be opened or a servo does not answer (named).
        """
        sdk = self._sdk
        self._port = sdk.PortHandler(self.port_name)
        try:
            opened = self._port.openPort() and self._port.setBaudRate(self.baudrate)
        except Exception as exc:  # noqa: BLE001 - pyserial raises SerialException (an OSError) or ValueError
            raise ConnectionError(f"cannot open {self.port_name}: {exc}") from exc
        if not opened:
            raise ConnectionError(f"cannot open {self.port_name} at {self.baudrate} baud")
        self._packet = sdk.PacketHandler(0)  # STS series: protocol "end" 0, little-endian words
        for i in self.ids:
            _, result, _ = self._packet.ping(self._port, i)
            if result != sdk.COMM_SUCCESS:
                self._port.closePort()
                self._port = None
                raise ConnectionError(f"servo {i} ({self.servo_label(i)}) on {self.port_name} does not answer "
                                      f"({self._packet.getTxRxResult(result)})")
        for i in self.ids:
            self._packet.write1ByteTxRx(self._port, i, ADDR_TORQUE_ENABLE, int(self.torque_on_connect))

    def disconnect(self) -> None:
        """Close the port (torque off first if configured); idempotent."""
        if self._port is None:
            return
        if self.torque_off_on_disconnect:
            for i in self.ids:
                self._packet.write1ByteTxRx(self._port, i, ADDR_TORQUE_ENABLE, 0)
        self._port.closePort()
        self._port = None

    close = disconnect

    def servo_label(self, servo_id: int) -> str:
        """What a servo id is on this arm, for messages: its joint's name (``joint_names`` when set,
        else ``calibration[k]``) or ``gripper``."""
        if self.gripper and servo_id == self.gripper["id"]:
            return "gripper"
        k = [j.id for j in self.joints].index(servo_id)
        names = getattr(self, "joint_names", None)
        return names[k] if names is not None and k < len(names) else f"calibration[{k}]"

    # ------------------------------------------------------------------ conversions
    def steps_to_rad(self, steps: np.ndarray) -> np.ndarray:
        """Arm joint steps ``(n,)`` → rad ``(n,)`` with the calibration."""
        off = np.array([j.homing_offset for j in self.joints], float)
        sign = np.array([j.direction for j in self.joints], float)
        return sign * (np.asarray(steps, float) - off) * (2 * np.pi / STEPS_PER_TURN)

    def rad_to_steps(self, q: np.ndarray) -> np.ndarray:
        """rad ``(n,)`` → steps ``(n,)``, rounded and clipped to 0..4095."""
        off = np.array([j.homing_offset for j in self.joints], float)
        sign = np.array([j.direction for j in self.joints], float)
        steps = off + sign * np.asarray(q, float) * (STEPS_PER_TURN / (2 * np.pi))
        return np.clip(np.round(steps), 0, STEPS_PER_TURN - 1).astype(int)

    # ------------------------------------------------------------------ Robot interface
    def read_steps(self) -> np.ndarray:
        """One sync read of every servo's present position, uncalibrated: steps ``(len(ids),)``
        (0..4095, float) in :attr:`ids` order (the arm joints, then the gripper). What
        :meth:`read_state` converts, and what calibration (:mod:`robolearn.apps.calibrate`) records.

        Raises:
            ConnectionError: not connected, or a servo did not answer ``1 + READ_RETRIES`` reads in a
                row (the bus or the servo is gone).
        """
        sdk = self._sdk
        if self._port is None:
            raise ConnectionError("Feetech arm is not connected; call connect() first")
        group = sdk.GroupSyncRead(self._port, self._packet, ADDR_PRESENT_POSITION, 2)
        for i in self.ids:
            group.addParam(i)
        for attempt in range(1 + READ_RETRIES):  # a lone missed status packet (line noise) is not a lost arm
            result = group.txRxPacket()
            if result == sdk.COMM_SUCCESS:
                break
            self._port.clearPort()
        else:
            raise ConnectionError(f"sync read on {self.port_name} failed {1 + READ_RETRIES} times: "
                                  f"{self._packet.getTxRxResult(result)}")
        return np.array([group.getData(i, ADDR_PRESENT_POSITION, 2) for i in self.ids], float)

    def read_state(self) -> RobotState:
        """Sync-read present positions (:meth:`read_steps`), calibrated to rad; velocities are
        differences of consecutive reads (rad/s).

        Raises:
            ConnectionError: not connected, or a servo did not answer ``1 + READ_RETRIES`` reads in a
                row (the bus or the servo is gone).
        """
        steps = self.read_steps()
        now = self.clock()
        q = self.steps_to_rad(steps[: len(self.joints)])
        qd = np.zeros_like(q) if self._last is None or now <= self._last[0] else (q - self._last[1]) / (now - self._last[0])
        self._last = (now, q)
        gripper = 0.0
        if self.gripper:
            g = self.gripper
            gripper = float(np.clip((steps[-1] - g["closed"]) / (g["open"] - g["closed"]), 0.0, 1.0))
        self._seq += 1
        pos, quat = self.kinematics.fk(q) if self.kinematics is not None else (np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
        return RobotState(q, qd, pos, quat, gripper, now, now, self._seq)

    def send_command(self, command: Command) -> None:
        """Sync-write goal positions of every joint (and the gripper when given).

        Raises:
            ConnectionError: not connected or the write failed.
            ValueError: a mode other than ``JOINT_POSITION`` (the safety layer refuses those first).
        """
        sdk = self._sdk
        if self._port is None:
            raise ConnectionError("Feetech arm is not connected; call connect() first")
        if command.mode != ControlMode.JOINT_POSITION:
            raise ValueError(f"the Feetech arm takes JOINT_POSITION commands, got {command.mode.value}")
        goals = list(zip([j.id for j in self.joints], self.rad_to_steps(command.joint_pos)))
        if self.gripper and command.gripper is not None:
            g = self.gripper
            goals.append((g["id"], int(round(g["closed"] + float(command.gripper) * (g["open"] - g["closed"])))))
        group = sdk.GroupSyncWrite(self._port, self._packet, ADDR_GOAL_POSITION, 2)
        for i, s in goals:
            group.addParam(i, [int(s) & 0xFF, (int(s) >> 8) & 0xFF])
        result = group.txPacket()
        if result != sdk.COMM_SUCCESS:
            raise ConnectionError(f"sync write on {self.port_name} failed: {self._packet.getTxRxResult(result)}")
