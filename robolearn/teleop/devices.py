"""Teleop devices: keyboard, SpaceMouse, gamepad and leader arm, each read once per control period.

A device turns its raw input into a :class:`TeleopInput`: an end-effector twist in the robot's base
frame (linear m/s, angular rad/s), an optional gripper target (normalized opening, 1 open) and the
recording events it saw (``"start"``, ``"stop"``, ``"discard"``, ``"quit"``). The
:class:`~robolearn.teleop.recorder.TeleopSource` integrates the twist into a pose target, so every
device drives the robot through the same safety layer and loop as a policy.

The leader arm (:class:`LeaderArmDevice`) is a joint-space device instead: it reads an SO-100/101
leader arm's joints on its Feetech bus (a :class:`JointTeleopInput`), and its follower is driven in
joint space (:class:`~robolearn.teleop.recorder.JointTeleopSource`).

Each device reads its hardware through a small *backend* callable, so tests drive them headless with
scripted events and the real backends (a terminal in raw mode, ``pyspacemouse``, ``pygame``) stay
optional: they are imported only when a device is opened without a backend.
"""

from __future__ import annotations

import os
import select
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from robolearn.utils.errors import DeviceError

EVENTS = ("start", "stop", "discard", "quit")


@dataclass(frozen=True)
class TeleopInput:
    """One reading of a device.

    Attributes:
        linear: ``(3,)`` m/s, base frame.
        angular: ``(3,)`` rad/s, base frame (axis times rate).
        gripper: target opening in ``[0, 1]``, or ``None`` to leave it.
        events: recording events since the last read, in order.
    """

    linear: np.ndarray
    angular: np.ndarray
    gripper: float | None = None
    events: tuple[str, ...] = field(default_factory=tuple)


class TerminalKeys:
    """Keyboard backend: keys typed in this terminal (cbreak mode, no echo), no display needed.

    Returns the characters typed since the last call. Terminals report presses (and auto-repeat),
    not releases, so :class:`KeyboardDevice` keeps a key active for a short time after each press.

    Raises:
        DeviceError: standard input is not a terminal.
    """

    def __init__(self):
        import termios
        import tty

        if not sys.stdin.isatty():
            raise DeviceError("the keyboard device needs an interactive terminal (stdin is not a TTY)")
        self._fd = sys.stdin.fileno()
        self._saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)

    def __call__(self) -> str:
        out = []
        while select.select([self._fd], [], [], 0)[0]:
            out.append(os.read(self._fd, 1).decode(errors="ignore"))
        return "".join(out)

    def close(self) -> None:
        """Restore the terminal."""
        import termios

        termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)


class KeyboardDevice:
    """Keyboard teleop.

    Keys: ``i``/``k`` +x/-x, ``j``/``l`` +y/-y, ``u``/``o`` +z/-z, ``y``/``h`` yaw +/-,
    space toggles the gripper; recording: ``c`` start, ``s`` stop (and keep), Backspace discard,
    ``q`` quit (Diffusion Policy's real-robot keys).

    Args:
        speed: linear speed (m/s) while a translation key is active.
        rot_speed: yaw rate (rad/s) while a rotation key is active.
        hold_s: how long a key stays active after its last press (terminal auto-repeat ~30 Hz).
        backend: ``() -> str`` of characters typed since the last call (default :class:`TerminalKeys`).
        clock: monotonic clock (s).
    """

    MOVES = {"i": (0, 1.0), "k": (0, -1.0), "j": (1, 1.0), "l": (1, -1.0), "u": (2, 1.0), "o": (2, -1.0)}
    TURNS = {"y": (2, 1.0), "h": (2, -1.0)}
    KEY_EVENTS = {"c": "start", "s": "stop", "\x7f": "discard", "\b": "discard", "q": "quit"}

    def __init__(self, speed: float = 0.1, rot_speed: float = 0.5, hold_s: float = 0.1,
                 backend: Callable[[], str] | None = None, clock: Callable[[], float] | None = None):
        import time

        self.speed, self.rot_speed, self.hold_s = speed, rot_speed, hold_s
        self.backend = backend if backend is not None else TerminalKeys()
        self.clock = clock or time.monotonic
        self._active: dict[str, float] = {}
        self._gripper = 1.0

    def read(self) -> TeleopInput:
        """The current twist, gripper target and events (see the class docstring)."""
        now = self.clock()
        events = []
        for ch in self.backend():
            if ch in self.KEY_EVENTS:
                events.append(self.KEY_EVENTS[ch])
            elif ch == " ":
                self._gripper = 0.0 if self._gripper > 0.5 else 1.0
            elif ch in self.MOVES or ch in self.TURNS:
                self._active[ch] = now
        linear, angular = np.zeros(3), np.zeros(3)
        for ch, t in list(self._active.items()):
            if now - t > self.hold_s:
                del self._active[ch]
                continue
            if ch in self.MOVES:
                axis, sign = self.MOVES[ch]
                linear[axis] += sign * self.speed
            else:
                axis, sign = self.TURNS[ch]
                angular[axis] += sign * self.rot_speed
        return TeleopInput(linear, angular, self._gripper, tuple(events))

    def close(self) -> None:
        """Release the backend."""
        getattr(self.backend, "close", lambda: None)()


def _deadzone(x: np.ndarray, dz: float) -> np.ndarray:
    return np.where(np.abs(x) < dz, 0.0, (np.abs(x) - dz) / (1 - dz) * np.sign(x))


class SpaceMouseDevice:
    """3Dconnexion SpaceMouse teleop (6-DoF puck, two buttons) through ``pyspacemouse`` (hidapi).

    The puck's axes (each in ``[-1, 1]``) map to the twist: ``x, y, z`` → linear, ``roll, pitch,
    yaw`` → angular, after a dead zone. Left button toggles the gripper; right button starts a
    recording, or stops (and keeps) the one in progress.

    Args:
        speed, rot_speed: full-deflection linear (m/s) and angular (rad/s) speed.
        deadzone: fraction of the range ignored around zero.
        backend: ``() -> object`` with attributes ``x, y, z, roll, pitch, yaw`` and ``buttons``
            (a sequence of 0/1), as ``pyspacemouse.read()`` returns; default opens the device.

    Raises:
        DeviceError: ``pyspacemouse`` is not installed and no backend was given (the message says
            what to install), or no SpaceMouse is found.
    """

    def __init__(self, speed: float = 0.15, rot_speed: float = 0.8, deadzone: float = 0.05,
                 backend: Callable[[], object] | None = None):
        self.speed, self.rot_speed, self.deadzone = speed, rot_speed, deadzone
        if backend is None:
            try:
                import pyspacemouse
            except ImportError as exc:
                raise DeviceError("the SpaceMouse device needs `pip install pyspacemouse` (and the hidapi "
                                  "system library)") from exc
            if not pyspacemouse.open():
                raise DeviceError("no SpaceMouse found (check the USB connection and udev permissions)")
            backend = pyspacemouse.read
        self.backend = backend
        self._buttons = (0, 0)
        self._gripper = 1.0
        self._recording = False

    def read(self) -> TeleopInput:
        """The current twist, gripper target and events."""
        s = self.backend()
        linear = self.speed * _deadzone(np.array([s.x, s.y, s.z], float), self.deadzone)
        angular = self.rot_speed * _deadzone(np.array([s.roll, s.pitch, s.yaw], float), self.deadzone)
        buttons = tuple(int(b) for b in list(s.buttons)[:2]) + (0,) * max(0, 2 - len(s.buttons))
        events = []
        if buttons[0] and not self._buttons[0]:
            self._gripper = 0.0 if self._gripper > 0.5 else 1.0
        if buttons[1] and not self._buttons[1]:
            events.append("stop" if self._recording else "start")
            self._recording = not self._recording
        self._buttons = buttons
        return TeleopInput(linear, angular, self._gripper, tuple(events))

    def close(self) -> None:
        """Nothing to release (``pyspacemouse`` closes with the process)."""


class GamepadDevice:
    """Gamepad teleop (Xbox-style layout) through ``pygame``'s joystick module.

    Left stick: x/y; right stick vertical: z, horizontal: yaw. Buttons: A toggles the gripper,
    Start starts or stops (and keeps) a recording, B discards it, Back quits.

    Args:
        speed, rot_speed: full-deflection linear (m/s) and yaw (rad/s) speed.
        deadzone: fraction of the stick range ignored around zero.
        axes: indices of (left x, left y, right x, right y) in the backend's axes.
        buttons: indices of (A, B, Back, Start).
        backend: ``() -> (axes, buttons)`` sequences; default opens the first joystick with pygame.

    Raises:
        DeviceError: ``pygame`` is not installed and no backend was given, or no gamepad is found.
    """

    def __init__(self, speed: float = 0.15, rot_speed: float = 0.8, deadzone: float = 0.1,
                 axes: Sequence[int] = (0, 1, 3, 4), buttons: Sequence[int] = (0, 1, 6, 7),
                 backend: Callable[[], tuple[Sequence[float], Sequence[int]]] | None = None):
        self.speed, self.rot_speed, self.deadzone = speed, rot_speed, deadzone
        self.axes, self.buttons = tuple(axes), tuple(buttons)
        self.backend = backend if backend is not None else self._pygame_backend()
        self._pressed = (0, 0, 0, 0)
        self._gripper = 1.0
        self._recording = False

    @staticmethod
    def _pygame_backend():
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        try:
            import pygame
        except ImportError as exc:
            raise DeviceError("the gamepad device needs `pip install pygame`") from exc
        pygame.init()
        pygame.joystick.init()
        if pygame.joystick.get_count() == 0:
            raise DeviceError("no gamepad found")
        js = pygame.joystick.Joystick(0)

        def read():
            pygame.event.pump()
            return ([js.get_axis(i) for i in range(js.get_numaxes())],
                    [js.get_button(i) for i in range(js.get_numbuttons())])

        return read

    def read(self) -> TeleopInput:
        """The current twist, gripper target and events."""
        axes, buttons = self.backend()
        lx, ly, rx, ry = (float(axes[i]) for i in self.axes)
        # Sticks report "up" as negative; pushing the left stick up moves +x (away from the base).
        stick = _deadzone(np.array([-ly, -lx, -ry, -rx]), self.deadzone)
        linear = self.speed * stick[:3]
        angular = np.array([0.0, 0.0, self.rot_speed * stick[3]])
        pressed = tuple(int(buttons[i]) for i in self.buttons)
        edges = [p and not q for p, q in zip(pressed, self._pressed)]
        self._pressed = pressed
        events = []
        if edges[0]:
            self._gripper = 0.0 if self._gripper > 0.5 else 1.0
        if edges[3]:
            events.append("stop" if self._recording else "start")
            self._recording = not self._recording
        if edges[1]:
            events.append("discard")
            self._recording = False
        if edges[2]:
            events.append("quit")
        return TeleopInput(linear, angular, self._gripper, tuple(events))

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class JointTeleopInput:
    """One reading of a joint-space device (a leader arm).

    Attributes:
        joint_pos: ``(n_joints,)`` rad, in the follower's joint order and calibration convention.
        gripper: target opening in ``[0, 1]`` (1 open), or ``None`` to leave it.
        events: recording events since the last read, in order.
    """

    joint_pos: np.ndarray
    gripper: float | None = None
    events: tuple[str, ...] = field(default_factory=tuple)


class LeaderArmDevice:
    """An SO-100/101 leader arm on a Feetech bus: torque off (moved by hand), read each period.

    Its servos are calibrated like the follower's (:class:`~robolearn.robots.feetech.FeetechArm`,
    ``q = direction * (steps - homing_offset) * 2 pi / 4096`` per joint, the gripper's steps mapped to
    the opening by its ``closed``/``open`` positions), with the leader's own offsets and directions
    (``hardware/so101_leader.yaml``): the homing offset of each leader servo is its reading with the
    leader in the follower's zero pose, so equal poses read equal joint positions. Recording events
    come from keys (``c`` start, ``s`` stop and keep, Backspace discard, ``q`` quit), typed in this
    terminal by default.

    Args:
        port: the leader's serial port (``--leader-port``).
        config: the leader's Feetech config (name in ``hardware/`` or a YAML path), validated as a
            ``feetech`` robot config (its ``port`` is replaced by ``port``).
        keys: ``() -> str`` of characters typed since the last call (default :class:`TerminalKeys`).
        arm: an already built (not connected) Feetech arm to read instead of ``config`` (tests).

    Raises:
        ConfigError: a bad leader config (file and key named).
        DeviceError: ``feetech-servo-sdk`` missing, or no terminal for the keys.
        ConnectionError: the port cannot be opened or a leader servo does not answer.
    """

    joint_space = True

    def __init__(self, port: str | None = None, config: str = "so101_leader", keys: Callable[[], str] | None = None,
                 arm=None):
        if arm is None:
            from robolearn.robots.config import load_robot_config
            from robolearn.robots.feetech import FeetechArm

            cfg = load_robot_config(config)
            arm = FeetechArm.from_config(cfg, **({"port": port} if port else {}), torque_on_connect=False,
                                         torque_off_on_disconnect=True)
        self.keys = keys if keys is not None else TerminalKeys()
        self.arm = arm
        self.arm.connect()

    def read(self) -> JointTeleopInput:
        """The leader's calibrated joint positions (rad), gripper opening and the key events.

        Raises:
            ConnectionError: the leader's bus or a servo is gone.
        """
        state = self.arm.read_state()
        events = tuple(KeyboardDevice.KEY_EVENTS[ch] for ch in self.keys() if ch in KeyboardDevice.KEY_EVENTS)
        gripper = float(state.gripper) if self.arm.capabilities.has_gripper else None
        return JointTeleopInput(np.asarray(state.joint_pos, float), gripper, events)

    def close(self) -> None:
        """Release the bus (torque stays off) and the keys."""
        self.arm.disconnect()
        getattr(self.keys, "close", lambda: None)()


#: Device name (``robolearn record --device``) -> device class.
DEVICES: dict[str, type] = {"keyboard": KeyboardDevice, "spacemouse": SpaceMouseDevice, "gamepad": GamepadDevice,
                            "leader": LeaderArmDevice}


def make_device(name: str, **kwargs):
    """Open the device :data:`DEVICES` names: ``"keyboard"``, ``"spacemouse"``, ``"gamepad"`` or
    ``"leader"`` (``port=`` the leader's serial port).

    Raises:
        ValueError: unknown device name (the known ones listed).
        DeviceError: the device or its library is missing.
    """
    if name not in DEVICES:
        raise ValueError(f"unknown teleop device {name!r}; known: {sorted(DEVICES)}")
    return DEVICES[name](**kwargs)
