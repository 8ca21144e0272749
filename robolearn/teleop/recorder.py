"""Teleoperated recording and replay through the control loop: the command sources and the
recorder (the jobs that wire them to a robot are :mod:`robolearn.apps.record` and
:mod:`robolearn.apps.replay`).

:class:`TeleopSource` integrates a device's twist into an end-effector pose target every period and
hands it to the safety layer like any other command source. :class:`Recorder` runs at every policy
step (slot) of the loop and writes what happened to a Zarr episode store:

* keys: the robot's observation (the task's observation on the MuJoCo twin, same keys as the eval
  environment; otherwise ``eef_pos``, ``eef_quat``, ``gripper``, ``joint_pos`` from the robot state);
  from a joint-space source (:class:`JointTeleopSource`, a leader arm) ``action`` is the leader's
  joint target and gripper opening ``(n_joints + 1,)`` (rad, ``[0, 1]``) and there is no ``action_abs``;
  ``action`` in the task's convention (for Lift: the target minus the measured pose, m and an
  axis-angle in rad, and the gripper in ``[-1, 1]``, -1 open, as ``robolearn collect`` writes),
  ``action_abs`` (the absolute target: position m, quaternion xyzw, opening in ``[0, 1]``),
  ``timestamp`` (the loop's deadline, monotonic s) and one ``<camera>_image`` key per camera of the
  robot's config (``uint8 (H, W, 3)``, one frame per chunk);
* events: ``start`` begins an episode (on the twin, from the next seed's scene), ``stop`` commits
  it, ``discard`` throws the episode in progress away, ``quit`` ends the session and discards an
  episode still in progress. Every committed episode is on disk at its commit, so a crash later
  loses nothing that was stopped. The commit (encoding the episode's camera frames: ~1 s for 40
  frames of two cameras) runs in a thread of its own, so the loop keeps commanding the robot
  (otherwise the watchdog latches a fault); an event that arrives before it is done waits for it, and
  so does :meth:`Recorder.close`.

:class:`ReplaySource` plays a recorded episode back through the same loop.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np
from scipy.spatial.transform import Rotation

from robolearn.robots.types import SimulatedRobot
from robolearn.data.store import EpisodeStore
from robolearn.robots.scheduler import ActionScheduler
from robolearn.envs.actions import AbsoluteEefAdapter, DeltaEefAdapter
from robolearn.robots.session import ChunkCommands
from robolearn.robots.types import Command, ControlMode, RobotState
from robolearn.teleop.devices import JointTeleopInput, TeleopInput


class TeleopSource:
    """Command source from a teleop device: the twist integrated into a pose target.

    The target starts at the robot's pose (and restarts there after :meth:`reanchor`); each period
    it moves by ``linear * dt`` and turns by ``angular * dt`` (base frame). Events are queued for
    the :class:`Recorder`.

    Args:
        device: anything with ``read() -> TeleopInput``.
        clock: monotonic clock (s).
    """

    def __init__(self, device, clock: Callable[[], float] = time.monotonic):
        self.device = device
        self.clock = clock
        self.events: list[str] = []
        self.target: tuple[np.ndarray, np.ndarray] | None = None
        self.gripper = 1.0
        self._last_t: float | None = None

    def reanchor(self) -> None:
        """Restart the target from the robot's next measured pose (after a reset or a fault)."""
        self.target = None

    def command(self, k: int, deadline: float, state: RobotState, slot_start: bool) -> Command:
        """See :class:`~robolearn.robots.session.CommandSource`."""
        now = self.clock()
        inp: TeleopInput = self.device.read()
        self.events.extend(inp.events)
        dt = 0.0 if self._last_t is None else min(now - self._last_t, 0.05)
        self._last_t = now
        if self.target is None:
            self.target = (np.array(state.eef_pos, float), np.array(state.eef_quat, float))
            self.gripper = float(state.gripper)
        pos, quat = self.target
        pos = pos + np.asarray(inp.linear, float) * dt
        if np.any(inp.angular):
            quat = (Rotation.from_rotvec(np.asarray(inp.angular, float) * dt) * Rotation.from_quat(quat)).as_quat()
        self.target = (pos, quat)
        if inp.gripper is not None:
            self.gripper = float(inp.gripper)
        return Command(ControlMode.EEF_POSE, eef_pos=pos, eef_quat=quat, gripper=self.gripper, timestamp=deadline)


class JointTeleopSource:
    """Command source from a joint-space device (a leader arm): its joint positions become the
    follower's ``JOINT_POSITION`` target every period (through the safety layer like any command).

    Args:
        device: anything with ``read() -> JointTeleopInput``.

    Attributes:
        target: the newest joint target ``(n_joints,)`` rad (``None`` before the first read).
        gripper: the newest gripper opening ``[0, 1]`` (``None`` until the device gives one).
        events: queued recording events, for the :class:`Recorder`.
    """

    joint_space = True

    def __init__(self, device):
        self.device = device
        self.events: list[str] = []
        self.target: np.ndarray | None = None
        self.gripper: float | None = None

    def reanchor(self) -> None:
        """Forget the target until the next read (after a reset or a fault)."""
        self.target = None

    def command(self, k: int, deadline: float, state: RobotState, slot_start: bool) -> Command:
        """See :class:`~robolearn.robots.session.CommandSource`."""
        inp: JointTeleopInput = self.device.read()
        self.events.extend(inp.events)
        self.target = np.array(inp.joint_pos, float)
        if inp.gripper is not None:
            self.gripper = float(inp.gripper)
        return Command(ControlMode.JOINT_POSITION, joint_pos=self.target, gripper=self.gripper, timestamp=deadline)

    def action(self, state: RobotState) -> np.ndarray:
        """The recorded action ``(n_joints + 1,)`` float32: the joint target (rad) and the gripper
        opening (the measured one while the device gives none)."""
        g = state.gripper if self.gripper is None else self.gripper
        return np.append(self.target, g).astype(np.float32)


class Recorder:
    """Writes teleoperated episodes to a store at every slot of the loop (see the module docstring).

    Args:
        store: an :class:`EpisodeStore` open for appending.
        robot: the driver (its ``task_obs``/``reset`` are used when it has them: the twin).
        source: the :class:`TeleopSource` or :class:`JointTeleopSource` (its events and target).
        safety: the safety layer (re-anchored when the twin resets).
        seed_start: first scene seed on the twin (one per started episode).
        max_steps: an episode is stopped (committed) after this many steps.
        cameras: ``{name: () -> uint8 (H, W, 3)}``, each stored as key ``<name>_image`` (the newest
            frame at the step; a camera must not block, see :mod:`robolearn.teleop.cameras`).
        adapter: the task's action convention; ``action`` is its ``from_goal`` of the target
            (default :class:`~robolearn.envs.actions.DeltaEefAdapter`, Lift's).

    Attributes:
        committed, discarded: episode counts of this session.
        quit: the session should end (the ``quit`` event).
    """

    def __init__(self, store: EpisodeStore, robot, source: TeleopSource, safety, seed_start: int = 0,
                 max_steps: int = 10_000, cameras: dict[str, Callable[[], np.ndarray]] | None = None,
                 adapter=None):
        self.store, self.robot, self.source, self.safety = store, robot, source, safety
        self.adapter = adapter if adapter is not None else DeltaEefAdapter()
        self.cameras = dict(cameras or {})
        self.seed = int(seed_start)
        self.max_steps = int(max_steps)
        self.recording = False
        self.committed = 0
        self.discarded = 0
        self.quit = False
        self._episode_seed: int | None = None
        self._t0 = 0.0
        self._commit: threading.Thread | None = None
        self._commit_error: BaseException | None = None

    def _commit_in_background(self, meta: dict[str, Any]) -> None:
        def run():
            try:
                self.store.commit_episode(meta)
            except BaseException as e:  # re-raised on the loop's thread by _wait_commit
                self._commit_error = e

        self._commit = threading.Thread(target=run, name="recorder-commit", daemon=False)
        self._commit.start()

    def _wait_commit(self) -> None:
        if self._commit is not None:
            self._commit.join()
            self._commit = None
        if self._commit_error is not None:
            err, self._commit_error = self._commit_error, None
            raise err

    def close(self) -> None:
        """Wait for a commit in progress (and raise its error, e.g. StoreError, if it failed)."""
        self._wait_commit()

    def _start(self) -> None:
        if isinstance(self.robot, SimulatedRobot):
            self.robot.reset(self.seed)
            self.safety.clear_faults(self.robot.read_state())
            self.source.reanchor()
            self._episode_seed = self.seed
            self.seed += 1
        self.recording = True
        self._t0 = time.monotonic()

    def _stop(self, keep: bool) -> None:
        if self.store.episode_in_progress == 0:
            self.recording = False
            return
        if keep:
            meta: dict[str, Any] = {"length": self.store.episode_in_progress, "duration_s": time.monotonic() - self._t0}
            if self._episode_seed is not None:
                meta["seed"] = self._episode_seed
            if isinstance(self.robot, SimulatedRobot):
                meta["success"] = bool(self.robot.is_success())
            self._commit_in_background(meta)
            self.committed += 1
        else:
            self.store.discard_episode()
            self.discarded += 1
        self.recording = False

    def abort(self) -> None:
        """Discard the episode in progress, if any (the session is ending without a ``stop``), after
        any commit in progress is written."""
        self._wait_commit()
        if self.recording:
            self._stop(keep=False)

    def on_slot(self, k: int, deadline: float, state: RobotState) -> bool:
        """Handle queued events, then record this step if an episode is in progress.

        Returns:
            ``True`` when the session should end (``quit``).
        """
        if self._commit is not None and (self.source.events or not self._commit.is_alive()):
            # an event right after a stop waits for the commit (the loop pauses: rare with a person at
            # the keys, and it keeps the events' order and effect exactly as without the thread)
            self._wait_commit()
        events, self.source.events = self.source.events, []
        for ev in events:
            if ev == "start" and not self.recording:
                self._start()
                return False  # the scene changed: record from the next step on
            if ev == "stop" and self.recording:
                self._stop(keep=True)
            elif ev == "discard" and self.recording:
                self._stop(keep=False)
            elif ev == "quit":
                if self.recording:
                    self._stop(keep=False)
                self.quit = True
                return True
        if self.recording and self.source.target is not None:
            images = {f"{name}_image": cam() for name, cam in self.cameras.items()}
            if getattr(self.source, "joint_space", False):
                actions = {"action": self.source.action(state)}
            else:
                pos, quat = self.source.target
                g = self.source.gripper
                actions = {"action": self.adapter.from_goal(pos, quat, g, state.eef_pos, state.eef_quat),
                           "action_abs": np.concatenate([pos, quat, [g]]).astype(np.float32)}
            self.store.add_step({**robot_obs(self.robot, state), **images, **actions,
                                 "timestamp": np.array([deadline], np.float64)})
            if self.store.episode_in_progress >= self.max_steps:
                self._stop(keep=True)
        return False


def robot_obs(robot, state: RobotState) -> dict[str, np.ndarray]:
    """What a recording stores as the observation: the twin's task observation (the eval
    environment's keys), else the robot state (``eef_pos`` m, ``eef_quat`` xyzw, ``gripper``
    opening, ``joint_pos`` rad), float32."""
    if isinstance(robot, SimulatedRobot):
        return {k: np.asarray(v, np.float32) for k, v in robot.task_obs().items()}
    return {"eef_pos": state.eef_pos.astype(np.float32), "eef_quat": state.eef_quat.astype(np.float32),
            "gripper": np.array([state.gripper], np.float32), "joint_pos": state.joint_pos.astype(np.float32)}


class ReplaySource:
    """Plays a recorded episode back: absolute targets (``action_abs``) interpolated to the loop
    rate, or Lift-convention relative actions held per step and anchored on the measured pose
    (as the eval environment applies them), on the loop's clock from the first period on.

    Args:
        actions: ``(T, 8)`` absolute or ``(T, 7)`` relative actions.
        step_s: recording period (s).
        absolute: which of the two.

    Attributes:
        end_time: loop time after which the recording is over (set at the first period); after
            it the last command is repeated, so the robot settles on the final target.
    """

    def __init__(self, actions: np.ndarray, step_s: float, absolute: bool):
        adapter = AbsoluteEefAdapter() if absolute else DeltaEefAdapter()
        self.scheduler = ActionScheduler(adapter.action_dim, interpolate=adapter.interpolate,
                                         quat_slice=adapter.quat_slice)
        self.commands = ChunkCommands(self.scheduler, adapter)
        self.actions = np.asarray(actions, np.float64)
        self.step_s = float(step_s)
        self.end_time: float | None = None

    def command(self, k: int, deadline: float, state: RobotState, slot_start: bool) -> Command | None:
        """See :class:`~robolearn.robots.session.CommandSource`."""
        if self.end_time is None:
            self.scheduler.add_chunk(self.actions, t0=deadline, dt=self.step_s, now=deadline)
            self.end_time = deadline + self.step_s * len(self.actions)
        if deadline >= self.end_time:  # past the recording: keep the final target (settling)
            return self.commands.held
        return self.commands.command(deadline, state, slot_start)
