"""The safety layer: the only path from anything (policy, teleop, replay) to a driver.

Every command passes :meth:`SafetyLayer.filter`, which

1. refuses commands that are not finite, have the wrong shape, or use a mode the robot lacks
   (an ``INVALID_COMMAND`` fault is latched and the robot holds);
2. clamps targets to the joint limits or to the workspace box;
3. limits the change from the previously sent target to what the velocity limits allow in the
   elapsed time (joint-wise for joints; straight-line distance and rotation angle for poses, the
   rotation slerped toward the target);
4. while any fault is latched (e-stop, watchdog, disconnect, invalid command), sends nothing but
   the hold target until :meth:`clear_faults` is called.

:meth:`tick` is called by the control loop every period: when no command has arrived for longer
than ``watchdog_timeout`` it latches a ``WATCHDOG`` fault and returns the hold target, so the robot
holds position within one loop period. There is no option to disable any of this: the limits come
from :class:`~robolearn.robots.types.RobotLimits`, which refuses non-finite or empty ranges.
"""

from __future__ import annotations

import numpy as np

from robolearn.robots.types import Capabilities, Command, ControlMode, Fault, FaultKind, RobotLimits, RobotState
from robolearn.utils.rotations import quat_angle, quat_normalize, slerp


class SafetyLayer:
    """Enforces limits, continuity, the watchdog and the e-stop between callers and a driver.

    Args:
        limits: the robot's static limits.
        capabilities: the driver's capabilities (supported control modes, gripper).
        initial_state: the robot's state when the layer starts; the first hold target.
        watchdog_timeout: seconds without a command after which the robot holds (> 0).

    Raises:
        ValueError: a non-positive or non-finite watchdog timeout, or an initial state outside
            the joint limits.
    """

    def __init__(self, limits: RobotLimits, capabilities: Capabilities, initial_state: RobotState,
                 watchdog_timeout: float = 0.1):
        if not np.isfinite(watchdog_timeout) or watchdog_timeout <= 0:
            raise ValueError(f"watchdog_timeout must be a finite number > 0 s, got {watchdog_timeout}")
        self.limits = limits
        self.capabilities = capabilities
        self.watchdog_timeout = float(watchdog_timeout)
        q = np.asarray(initial_state.joint_pos, dtype=np.float64)
        if q.shape != (limits.n_joints,) or not np.all(np.isfinite(q)):
            raise ValueError(f"initial joint positions {q} do not fit {limits.n_joints} joints")
        self._faults: list[Fault] = []
        self._last_time = float(initial_state.receive_time)
        self._last_command_time = float(initial_state.receive_time)
        self._latest = initial_state
        gripper = float(np.clip(initial_state.gripper, 0.0, 1.0)) if capabilities.has_gripper else None
        self._last_sent = Command(capabilities.control_modes[0], gripper=gripper)
        self._anchor(initial_state)
        self.n_refused = 0
        self.n_clamped = 0

    # ------------------------------------------------------------------ faults
    @property
    def faults(self) -> tuple[Fault, ...]:
        """Latched faults, oldest first (empty when commands pass)."""
        return tuple(self._faults)

    def latch(self, kind: FaultKind, message: str, now: float) -> None:
        """Latch a fault: from now on only the hold target goes out until :meth:`clear_faults`."""
        if not any(f.kind == kind for f in self._faults):
            self._faults.append(Fault(kind, message, float(now)))

    def estop(self, now: float, reason: str = "e-stop") -> Command:
        """Trigger the e-stop: latch ``ESTOP`` and return the hold target to send at once."""
        self.latch(FaultKind.ESTOP, reason, now)
        return self._last_sent

    def clear_faults(self, state: RobotState) -> None:
        """Clear every latched fault and re-anchor on the robot's current state."""
        self._faults.clear()
        self._latest = state
        self._anchor(state)
        self._last_time = self._last_command_time = float(state.receive_time)

    def observe(self, state: RobotState) -> None:
        """Give the layer the newest robot state (the control loop calls this every period)."""
        self._latest = state

    def _anchor(self, state: RobotState) -> None:
        """Make the robot's measured joints and pose the reference of the next step limit and the hold.

        The hold target keeps the mode of the last command when the robot supports it, else the
        robot's first supported mode (an arm driven only by pose targets holds a pose).
        """
        self._last_q = np.clip(np.asarray(state.joint_pos, np.float64), self.limits.joint_lower,
                               self.limits.joint_upper)
        self._last_pose = (np.clip(np.asarray(state.eef_pos, np.float64), self.limits.workspace_lower,
                                   self.limits.workspace_upper),
                           quat_normalize(np.asarray(state.eef_quat, np.float64)))
        mode = self._last_sent.mode
        if mode not in self.capabilities.control_modes:
            mode = self.capabilities.control_modes[0]
        if mode == ControlMode.JOINT_POSITION:
            self._last_sent = Command(mode, joint_pos=self._last_q, gripper=self._last_sent.gripper,
                                      timestamp=state.receive_time)
        else:
            self._last_sent = Command(mode, eef_pos=self._last_pose[0], eef_quat=self._last_pose[1],
                                      gripper=self._last_sent.gripper, timestamp=state.receive_time)

    # ------------------------------------------------------------------ the filter
    def tick(self, now: float) -> Command | None:
        """Watchdog check, once per control period.

        Returns:
            The hold target when the watchdog fired (or a fault is latched), else ``None``.
        """
        if not self._faults and now - self._last_command_time >= self.watchdog_timeout:
            self.latch(FaultKind.WATCHDOG, f"no command for {now - self._last_command_time:.3f} s "
                       f"(timeout {self.watchdog_timeout:.3f} s)", now)
        return self._last_sent if self._faults else None

    def hold(self, now: float) -> Command:
        """The hold target, for a period in which no fresh command came (the watchdog keeps counting).

        The step limit's clock advances too: the next command may move the target only as far as
        the limits allow from this period on, not by the speed limit times the whole silent time.
        """
        self._last_time = max(self._last_time, float(now))
        return self._last_sent

    def filter(self, command: Command, now: float) -> Command:
        """The command to send to the driver for ``command`` received at ``now`` (monotonic s).

        Never raises on bad input: an invalid command latches ``INVALID_COMMAND`` and the hold
        target is returned instead.
        """
        dt = max(0.0, float(now) - self._last_time)
        self._last_time = float(now)
        self._last_command_time = float(now)
        if self._faults:
            self.n_refused += 1
            return self._last_sent
        problem = self._validate(command)
        if problem:
            self.n_refused += 1
            self.latch(FaultKind.INVALID_COMMAND, problem, now)
            return self._last_sent
        L = self.limits
        if command.mode != self._last_sent.mode:
            self._anchor(self._latest)  # step limits count from where the robot is, not a stale target
        gripper = self._gripper(command.gripper, dt)
        if command.mode == ControlMode.JOINT_POSITION:
            prev = self._last_q
            target = np.clip(np.asarray(command.joint_pos, np.float64), L.joint_lower, L.joint_upper)
            step = L.joint_vel_max * dt
            out = np.clip(target, prev - step, prev + step)
            self.n_clamped += int(not np.array_equal(out, command.joint_pos))
            self._last_q = out
            sent = Command(ControlMode.JOINT_POSITION, joint_pos=out, gripper=gripper, timestamp=now)
        else:
            prev_pos, prev_quat = self._last_pose
            target = np.clip(np.asarray(command.eef_pos, np.float64), L.workspace_lower, L.workspace_upper)
            delta = target - prev_pos
            dist = float(np.linalg.norm(delta))
            max_dist = L.eef_speed_max * dt
            pos = prev_pos + delta * (max_dist / dist) if dist > max_dist else target
            quat_t = quat_normalize(np.asarray(command.eef_quat, np.float64))
            angle = quat_angle(prev_quat, quat_t)
            max_angle = L.eef_rot_speed_max * dt
            quat = slerp(prev_quat, quat_t, max_angle / angle) if angle > max_angle else quat_t
            self.n_clamped += int(dist > max_dist or angle > max_angle or not np.array_equal(target, command.eef_pos))
            self._last_pose = (pos, quat)
            sent = Command(ControlMode.EEF_POSE, eef_pos=pos, eef_quat=quat, gripper=gripper, timestamp=now)
        self._last_sent = sent  # also the hold target if a fault latches
        return sent

    def _validate(self, c: Command) -> str | None:
        if not isinstance(c, Command):
            return f"not a Command: {type(c).__name__}"
        if c.mode not in self.capabilities.control_modes:
            return f"control mode {c.mode.value} is not supported by this robot"
        if c.mode == ControlMode.JOINT_POSITION:
            q = None if c.joint_pos is None else np.asarray(c.joint_pos, dtype=np.float64)
            if q is None or q.shape != (self.limits.n_joints,):
                return f"joint_pos must have shape ({self.limits.n_joints},), got {None if q is None else q.shape}"
            if not np.all(np.isfinite(q)):
                return f"joint_pos is not finite: {q}"
        else:
            p = None if c.eef_pos is None else np.asarray(c.eef_pos, dtype=np.float64)
            r = None if c.eef_quat is None else np.asarray(c.eef_quat, dtype=np.float64)
            if p is None or p.shape != (3,) or r is None or r.shape != (4,):
                return "eef_pos must have shape (3,) and eef_quat shape (4,)"
            if not (np.all(np.isfinite(p)) and np.all(np.isfinite(r))):
                return f"eef pose is not finite: {p}, {r}"
            n = float(np.linalg.norm(r))
            if not 1e-6 < n < 1e6:
                return f"eef_quat has norm {n}; expected a unit quaternion"
        if c.gripper is not None and not np.isfinite(c.gripper):
            return f"gripper is not finite: {c.gripper}"
        return None

    def _gripper(self, target: float | None, dt: float) -> float | None:
        prev = self._last_sent.gripper
        if target is None or not self.capabilities.has_gripper:
            return prev
        target = float(np.clip(target, 0.0, 1.0))
        if prev is None:
            return target
        step = self.limits.gripper_speed_max * dt
        return float(np.clip(target, prev - step, prev + step))
