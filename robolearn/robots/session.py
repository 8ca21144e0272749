"""One control-loop body shared by deployment, teleoperation recording and replay.

Every period :class:`ControlSession.step` reads the robot, lets a command *source* (a policy through
the runner and scheduler, a teleop device, a recorded episode) propose a command, passes it through
the safety layer and sends what comes out. A source that has nothing new returns ``None``: the
robot is sent its hold target and the watchdog keeps counting, so a source that stops (a crashed
device, a starved policy) makes the robot hold once the timeout passes. A driver that raises
``ConnectionError`` latches a ``DISCONNECT`` fault and ends the run; one whose ``fault()`` reports a
robot-side stop (a UR protective stop) gets a ``DRIVER`` fault latched.

Policies act at their own rate (the dataset's, e.g. 20 Hz), the loop at the robot's (e.g. 500 Hz):
a *slot* is one policy step, ``ticks_per_slot`` loop periods. An :class:`ActionAdapter` (the task's
action convention, from :mod:`robolearn.envs.actions`: the HAL itself knows no task) gives the pose
goal, or the joint targets, of each action, which becomes a :class:`~robolearn.robots.types.Command`
in the adapter's control mode.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from robolearn.robots.runner import PolicyRunner
from robolearn.robots.safety import SafetyLayer
from robolearn.robots.scheduler import ActionScheduler
from robolearn.robots.types import Command, ControlMode, FaultKind, Robot, RobotState


class ActionAdapter(Protocol):
    """A task's action convention, as the HAL needs it (implementations:
    :mod:`robolearn.envs.actions`): ``action_dim``; ``mode``, the :class:`ControlMode` value of its
    commands (``"eef_pose"`` when absent); whether the scheduler interpolates its actions (absolute
    poses) or they are held per slot (relative ones, joint targets); ``quat_slice``, the quaternion's
    place in the action for SLERP (or ``None``); and the goal of one action: ``to_goal`` (a pose) for
    ``"eef_pose"``, ``to_joints`` (joint targets) for ``"joint_position"``."""

    action_dim: int
    mode: str
    interpolate: bool
    quat_slice: tuple[int, int] | None

    def to_goal(self, action: np.ndarray, anchor_pos: np.ndarray,
                anchor_quat: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """``(position m (3,), quaternion xyzw (4,), gripper opening [0, 1])`` of ``action``,
        relative to the anchor pose where the convention is relative (``"eef_pose"`` adapters)."""

    def to_joints(self, action: np.ndarray) -> tuple[np.ndarray, float]:
        """``(joint targets rad (n_joints,), gripper opening [0, 1])`` of ``action``; raises
        ``ValueError`` for an action the safety layer would refuse (``"joint_position"`` adapters)."""


def adapter_mode(adapter: ActionAdapter) -> ControlMode:
    """The :class:`ControlMode` of ``adapter``'s commands (``EEF_POSE`` for an adapter without ``mode``).

    Raises:
        ValueError: a ``mode`` that is not a :class:`ControlMode` value.
    """
    return ControlMode(getattr(adapter, "mode", ControlMode.EEF_POSE.value))


def goal_command(adapter: ActionAdapter, action: np.ndarray, anchor: RobotState, now: float) -> Command:
    """The :class:`Command` of ``action`` under ``adapter``, in the adapter's control mode: joint
    targets and gripper opening for a joint-position adapter, else the EEF pose goal anchored on the
    measured ``anchor``.

    Raises:
        ValueError: from a joint-position adapter, an action of the wrong size or not finite (never
            handed on to the safety layer, which would latch a fault and hold).
    """
    if adapter_mode(adapter) == ControlMode.JOINT_POSITION:
        q, opening = adapter.to_joints(action)
        return Command(ControlMode.JOINT_POSITION, joint_pos=q, gripper=opening, timestamp=now)
    pos, quat, opening = adapter.to_goal(action, anchor.eef_pos, anchor.eef_quat)
    return Command(ControlMode.EEF_POSE, eef_pos=pos, eef_quat=quat, gripper=opening, timestamp=now)


class ChunkCommands:
    """Commands from a scheduler's actions through an adapter: a fresh one every period when the
    adapter interpolates (absolute actions), else one per slot, built from the state at the slot's
    start and held for the slot (relative actions). ``None`` until the scheduler has an action.

    Raises:
        ValueError: scheduler and adapter disagree on action size or interpolation.
    """

    def __init__(self, scheduler: ActionScheduler, adapter: ActionAdapter):
        if scheduler.action_dim != adapter.action_dim or scheduler.interpolate != adapter.interpolate:
            raise ValueError("scheduler and adapter disagree on action size or interpolation")
        self.scheduler, self.adapter = scheduler, adapter
        self.held: Command | None = None

    def reset(self) -> None:
        """Forget the scheduler's chunks and the held command."""
        self.scheduler.reset()
        self.held = None

    def command(self, deadline: float, state: RobotState, slot_start: bool) -> Command | None:
        """The command for the period at ``deadline`` (monotonic s)."""
        if self.adapter.interpolate or slot_start:
            action = self.scheduler.get(deadline)
            self.held = None if action is None else goal_command(self.adapter, action, state, deadline)
        return self.held


class CommandSource(Protocol):
    """Proposes a command each loop period (or ``None`` when it has nothing new)."""

    def command(self, k: int, deadline: float, state: RobotState, slot_start: bool) -> Command | None:
        """The command for period ``k`` (deadline in monotonic s); ``slot_start`` marks policy steps."""


class PolicySource:
    """Commands from a policy: observations go to the runner at slot starts, chunks to the scheduler.

    A new chunk is requested when the runner is idle and the newest chunk has no more than the
    expected latency (in slots, from the runner's measured latencies) plus one actions left of its
    first ``n_action_steps`` — so a chunk's actions are executed open loop for about as many steps
    as in ``robolearn eval``, and the next chunk arrives before the current one runs out.

    A *per-step* policy (``per_step=True``; a residual-RL policy, which corrects every action with
    that step's observation: :mod:`robolearn.rl.stepper`) is sent the observation of every slot
    instead, whenever the runner is idle (a slot whose observation finds it busy is skipped, never
    waited for). Its answers keep the chunk protocol: action ``i`` of each is meant for the
    observation's slot plus ``i``, so the scheduler places, drops and holds them exactly as a
    chunked policy's, and the loop runs the newest answer's tail while the next one is computed.

    Cameras: each observation adds ``<name>_image``, the newest frame of each camera
    (:class:`~robolearn.robots.cameras.FrameSource`, ``uint8 (H, W, 3)``), taken without waiting.
    The observation's age, per chunk and camera, is the policy's start on that observation
    (:attr:`ChunkResult.t_start`) minus the frame's capture time, in s: :attr:`obs_ages`. Until
    every camera has a first frame no observation is taken (the robot holds).

    Args:
        runner: a started :class:`PolicyRunner`.
        scheduler: the :class:`ActionScheduler` (its ``action_dim`` and ``interpolate`` must match
            the adapter's).
        adapter: the task's :class:`ActionAdapter` (e.g. :class:`robolearn.envs.actions.DeltaEefAdapter`).
        obs_fn: returns the policy's observation ``{key: (*shape)}`` now (raw units).
        n_obs_steps, n_action_steps: the policy's history length and executed chunk length.
        slot_s: policy period (s), e.g. 0.05 at 20 Hz.
        cameras: ``{name: FrameSource}`` whose frames join the observation as ``<name>_image``.
        per_step: request an answer from every slot's observation (see above), not only when the
            newest chunk runs low.

    Attributes:
        obs_ages: one ``{camera: s}`` per chunk received (capture → policy input), over every
            episode (:meth:`reset` keeps it).
        n_chunks: chunks received.

    Raises:
        ValueError: adapter and scheduler disagree.
    """

    def __init__(self, runner: PolicyRunner, scheduler: ActionScheduler, adapter: ActionAdapter, obs_fn: Callable[[], dict],
                 n_obs_steps: int, n_action_steps: int, slot_s: float, cameras: Mapping[str, Any] | None = None,
                 per_step: bool = False):
        self.commands = ChunkCommands(scheduler, adapter)
        self.per_step = bool(per_step)
        self.runner, self.scheduler, self.adapter, self.obs_fn = runner, scheduler, adapter, obs_fn
        self.n_obs_steps, self.n_action_steps, self.slot_s = n_obs_steps, n_action_steps, slot_s
        self.cameras = dict(cameras or {})
        self.history: deque = deque(maxlen=n_obs_steps)
        self._chunk_t_obs: float | None = None
        self._obs_due: float | None = None  # start time of the slot whose observation is still to take
        self._pending: tuple[int, dict[str, float]] | None = None  # request id, its frames' capture times
        self.obs_ages: list[dict[str, float]] = []
        self.n_chunks = 0
        self.state: RobotState | None = None  # this period's reading, for an obs_fn built on the robot state

    def reset(self) -> None:
        """Forget the episode's history, chunks and held command."""
        self.history.clear()
        self.commands.reset()
        self._chunk_t_obs = None
        self._obs_due = None
        self._pending = None

    def _latency_slots(self) -> int:
        lat = self.runner.latencies[-5:]
        return int(np.ceil(max(lat) / self.slot_s)) if lat else 1

    def _observe(self, t_slot: float) -> None:
        obs = self.obs_fn()
        captured = {}
        for name, cam in self.cameras.items():
            frame, t = cam.read()  # the newest frame, never a wait for the next
            if frame is None:
                return
            obs[f"{name}_image"] = frame
            captured[name] = t
        if not self.history:
            self.history.extend([obs] * self.n_obs_steps)
        else:
            self.history.append(obs)
        if not self.runner.busy:
            used = -1 if self._chunk_t_obs is None else round((t_slot - self._chunk_t_obs) / self.slot_s)
            if self.per_step or self._chunk_t_obs is None or used >= self.n_action_steps - 1 - self._latency_slots():
                stacked = {key: np.stack([h[key] for h in self.history]) for key in obs}
                request = self.runner.submit(stacked, t_slot)
                if request is not None and captured:
                    self._pending = (request, captured)

    def command(self, k: int, deadline: float, state: RobotState, slot_start: bool) -> Command | None:
        """See :class:`CommandSource`; actions are timed on the loop's deadlines (a slot's
        observation is taken in its second period and stamped with the slot's start)."""
        self.state = state
        result = self.runner.poll()
        if result is not None:
            self.scheduler.add_chunk(result.actions, t0=result.t_obs, dt=self.slot_s, now=deadline)
            self._chunk_t_obs = result.t_obs
            self.n_chunks += 1
            if self._pending is not None and self._pending[0] == result.request_id:
                self.obs_ages.append({n: result.t_start - t for n, t in self._pending[1].items()})
                self._pending = None
        if slot_start:
            self._obs_due = deadline
        elif self._obs_due is not None:
            # The slot's observation is taken one period after its start, so the slot's first period
            # (physics, action, safety) and the observation's work do not land in the same period.
            self._observe(self._obs_due)
            self._obs_due = None
        return self.commands.command(deadline, state, slot_start)


class ControlSession:
    """The loop body: read, propose, filter, send; see the module docstring.

    Args:
        robot: the driver.
        safety: the :class:`SafetyLayer` for this robot (every command passes it).
        source: the :class:`CommandSource`.
        ticks_per_slot: loop periods per policy step (``slot_start`` every this many periods).
        on_slot: optional ``f(k, deadline, state) -> bool`` called at every slot start after the
            command went out (recording, success checks); returning ``True`` ends the run.
        clock: monotonic clock (s).

    Attributes:
        done: set when the run should end (``on_slot`` said so, or the robot disconnected).
        disconnected: the driver raised ``ConnectionError``; a ``DISCONNECT`` fault is latched.
        n_sent, n_hold: commands sent, and how many of them were hold targets.
    """

    def __init__(self, robot: Robot, safety: SafetyLayer, source: CommandSource, ticks_per_slot: int = 1,
                 on_slot: Callable[[int, float, RobotState], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.robot, self.safety, self.source = robot, safety, source
        self.ticks_per_slot = max(1, int(ticks_per_slot))
        self.on_slot = on_slot
        self.clock = clock
        self._robot_fault = getattr(robot, "fault", None)  # drivers that report robot-side stops
        self.done = False
        self._armed = False
        self._slot = -1
        self.disconnected = False
        self.last_state: RobotState | None = None
        self.n_sent = 0
        self.n_hold = 0
        self.sent: list[Command] = []  # filled only when record_sent is set
        self.record_sent = False

    def step(self, k: int, deadline: float) -> dict[str, float]:
        """One period; returns section durations (s) for the loop's statistics."""
        t0 = self.clock()
        try:
            state = self.robot.read_state()
        except ConnectionError as exc:
            self._disconnect(str(exc), t0)
            return {}
        self.last_state = state
        self.safety.observe(state)
        fault = self._robot_fault() if self._robot_fault is not None else None
        if fault:
            self.safety.latch(FaultKind.DRIVER, fault, t0)
        t1 = self.clock()
        # A slot starts at the first period of it that runs (its first period may have been skipped
        # after an overrun: the slot must still get its observation and action).
        slot = k // self.ticks_per_slot
        slot_start = slot != self._slot
        self._slot = slot
        command = self.source.command(k, deadline, state, slot_start)
        t2 = self.clock()
        # The watchdog guards a source that stopped; before its first command the robot just holds
        # (and the first command itself resets the watchdog, however long it took to come).
        hold = self.safety.tick(t2) if self._armed else None
        self._armed = self._armed or command is not None
        if hold is None and command is not None:
            out = self.safety.filter(command, t2)
        else:
            out = self.safety.hold(t2)
            self.n_hold += 1
        try:
            self.robot.send_command(out)
        except ConnectionError as exc:
            self._disconnect(str(exc), t2)
            return {}
        self.n_sent += 1
        if self.record_sent:
            self.sent.append(out)
        t3 = self.clock()
        if slot_start and self.on_slot is not None and self.on_slot(k, deadline, state):
            self.done = True
        return {"read": t1 - t0, "source": t2 - t1, "safety_send": t3 - t2}

    def _disconnect(self, message: str, now: float) -> None:
        self.safety.latch(FaultKind.DISCONNECT, message or "robot disconnected", now)
        self.disconnected = True
        self.done = True
