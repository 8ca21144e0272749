"""Teleoperated recording and replay through the control loop.

:class:`TeleopSource` integrates a device's twist into an end-effector pose target every period and
hands it to the safety layer like any other command source. :class:`Recorder` runs at every policy
step (slot) of the loop and writes what happened to a Zarr episode store:

* keys: the robot's observation (the task's observation on the MuJoCo twin, same keys as the eval
  environment; otherwise ``eef_pos``, ``eef_quat``, ``gripper``, ``joint_pos`` from the robot state),
  ``action`` in the task's convention (for Lift: the target minus the measured pose, m and an
  axis-angle in rad, and the gripper in ``[-1, 1]``, -1 open, as ``robolearn collect`` writes),
  ``action_abs`` (the absolute target: position m, quaternion xyzw, opening in ``[0, 1]``),
  ``timestamp`` (the loop's deadline, monotonic s) and one ``<camera>_image`` key per camera of the
  robot's config (``uint8 (H, W, 3)``, one frame per chunk);
* events: ``start`` begins an episode (on the twin, from the next seed's scene), ``stop`` commits
  it, ``discard`` throws the episode in progress away, ``quit`` ends the session and discards an
  episode still in progress. Every committed episode is on disk at its commit, so a crash later
  loses nothing that was stopped.

:class:`ReplaySource` plays a recorded episode back through the same loop.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from scipy.spatial.transform import Rotation

from robolearn.data.store import EpisodeStore, KeyInfo
from robolearn.robots.scheduler import ActionScheduler
from robolearn.robots.session import AbsoluteEefAdapter, ChunkCommands, DeltaEefAdapter
from robolearn.robots.types import Command, ControlMode, RobotState
from robolearn.teleop.devices import TeleopInput

#: Largest goal offset a Lift action may hold (m, rad), as in the eval environment.
MAX_DELTA_POS, MAX_DELTA_ROT = 0.05, 0.5


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


def delta_action(target_pos, target_quat, gripper: float, state: RobotState) -> np.ndarray:
    """The Lift-convention action ``(7,)`` that asks for ``target`` from the measured ``state``:
    position offset (m) and axis-angle (rad), clipped to the eval environment's limits, and the
    gripper in ``[-1, 1]`` (-1 open)."""
    dpos = np.clip(np.asarray(target_pos) - state.eef_pos, -MAX_DELTA_POS, MAX_DELTA_POS)
    drot = (Rotation.from_quat(target_quat) * Rotation.from_quat(state.eef_quat).inv()).as_rotvec()
    drot = np.clip(drot, -MAX_DELTA_ROT, MAX_DELTA_ROT)
    return np.concatenate([dpos, drot, [1.0 - 2.0 * gripper]]).astype(np.float32)


class Recorder:
    """Writes teleoperated episodes to a store at every slot of the loop (see the module docstring).

    Args:
        store: an :class:`EpisodeStore` open for appending.
        robot: the driver (its ``task_obs``/``reset`` are used when it has them: the twin).
        source: the :class:`TeleopSource` (its events and target).
        safety: the safety layer (re-anchored when the twin resets).
        seed_start: first scene seed on the twin (one per started episode).
        max_steps: an episode is stopped (committed) after this many steps.
        cameras: ``{name: () -> uint8 (H, W, 3)}``, each stored as key ``<name>_image`` (the newest
            frame at the step; a camera must not block, see :mod:`robolearn.teleop.cameras`).

    Attributes:
        committed, discarded: episode counts of this session.
        quit: the session should end (the ``quit`` event).
    """

    def __init__(self, store: EpisodeStore, robot, source: TeleopSource, safety, seed_start: int = 0,
                 max_steps: int = 10_000, cameras: dict[str, Callable[[], np.ndarray]] | None = None):
        self.store, self.robot, self.source, self.safety = store, robot, source, safety
        self.cameras = dict(cameras or {})
        self.seed = int(seed_start)
        self.max_steps = int(max_steps)
        self.recording = False
        self.committed = 0
        self.discarded = 0
        self.quit = False
        self._episode_seed: int | None = None
        self._t0 = 0.0

    def _start(self) -> None:
        if hasattr(self.robot, "reset"):
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
            if hasattr(self.robot, "is_success"):
                meta["success"] = bool(self.robot.is_success())
            self.store.commit_episode(meta)
            self.committed += 1
        else:
            self.store.discard_episode()
            self.discarded += 1
        self.recording = False

    def abort(self) -> None:
        """Discard the episode in progress, if any (the session is ending without a ``stop``)."""
        if self.recording:
            self._stop(keep=False)

    def on_slot(self, k: int, deadline: float, state: RobotState) -> bool:
        """Handle queued events, then record this step if an episode is in progress.

        Returns:
            ``True`` when the session should end (``quit``).
        """
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
            pos, quat = self.source.target
            g = self.source.gripper
            images = {f"{name}_image": cam() for name, cam in self.cameras.items()}
            self.store.add_step({**robot_obs(self.robot, state), **images, "action": delta_action(pos, quat, g, state),
                                 "action_abs": np.concatenate([pos, quat, [g]]).astype(np.float32),
                                 "timestamp": np.array([deadline], np.float64)})
            if self.store.episode_in_progress >= self.max_steps:
                self._stop(keep=True)
        return False


def robot_obs(robot, state: RobotState) -> dict[str, np.ndarray]:
    """What a recording stores as the observation: the twin's task observation (the eval
    environment's keys), else the robot state (``eef_pos`` m, ``eef_quat`` xyzw, ``gripper``
    opening, ``joint_pos`` rad), float32."""
    if hasattr(robot, "task_obs"):
        return {k: np.asarray(v, np.float32) for k, v in robot.task_obs().items()}
    return {"eef_pos": state.eef_pos.astype(np.float32), "eef_quat": state.eef_quat.astype(np.float32),
            "gripper": np.array([state.gripper], np.float32), "joint_pos": state.joint_pos.astype(np.float32)}


def open_record_store(path, robot, fps: float, append: bool, task: str | None,
                      cameras: dict[str, Callable[[], np.ndarray]] | None = None) -> EpisodeStore:
    """Open (``append``) or create the store a recording session writes (``robot`` connected: its
    observation keys are declared from a first reading).

    Raises:
        StoreError: the store exists and ``append`` is not set, or it was recorded for another task.
    """
    from pathlib import Path

    from robolearn.utils.errors import StoreError

    path = Path(path)
    if path.exists():
        if not append:
            raise StoreError(f"{path}: already exists (use --append to add episodes)")
        store = EpisodeStore.open(path, mode="a")
        if task is not None and store.attrs.get("task") not in (None, task):
            raise StoreError(f"{path}: recorded for task {store.attrs.get('task')!r}, not {task!r}")
        return store
    layout = ["dx m", "dy m", "dz m", "drx rad", "dry rad", "drz rad", "gripper [-1 open, 1 close]"]
    store = EpisodeStore.create(
        path, fps=fps, robot=type(robot).__name__,
        action_space={"type": "eef_delta_pose_world", "dim": 7, "low": [-MAX_DELTA_POS] * 3 + [-MAX_DELTA_ROT] * 3 + [-1],
                      "high": [MAX_DELTA_POS] * 3 + [MAX_DELTA_ROT] * 3 + [1], "layout": layout},
        attrs={"task": task, "source": "teleop"})
    from robolearn.envs.collect import OBS_DOC

    for k, v in robot_obs(robot, robot.read_state()).items():
        store.define_key(k, OBS_DOC.get(k, KeyInfo(v.shape, "float32", None, f"observation '{k}'")))
    for name, cam in (cameras or {}).items():
        frame = np.asarray(cam())
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise StoreError(f"camera {name!r} gives {frame.dtype} {frame.shape}; expected uint8 (H, W, 3)")
        store.define_key(f"{name}_image", KeyInfo(frame.shape, "uint8", "pixel", f"camera '{name}', RGB"),
                         chunk_steps=1)
    store.define_key("action", KeyInfo((7,), "float32", "m, rad, gripper", "target minus measured EEF pose + gripper"))
    store.define_key("action_abs", KeyInfo((8,), "float32", "m, xyzw, opening 0..1", "absolute EEF target + gripper opening"))
    store.define_key("timestamp", KeyInfo((1,), "float64", "s", "loop deadline of the step, monotonic clock"))
    return store


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


def record(robot_name: str, device, out, fps: float = 20.0, append: bool = False, seed_start: int = 0,
           max_steps: int = 10_000, realtime: bool = True, duration_s: float | None = None) -> dict[str, Any]:
    """``robolearn record``: teleoperate a robot and record episodes until ``quit``.

    Args:
        robot_name: ``hardware/<name>.yaml`` or a YAML path.
        device: a teleop device (``read() -> TeleopInput``).
        out: store path.
        fps: recording rate (Hz); the loop rate must be a multiple of it.
        duration_s: end the session after this long (for scripted sessions; default: until quit).

    Returns:
        ``{"path", "committed", "discarded", "episodes" (in the store), "loop" (timing summary)}``.

    Raises:
        ConfigError: unknown robot, or a loop rate that is not a multiple of ``fps``.
        StoreError: see :func:`open_record_store`.
    """
    from robolearn.robots.config import load_robot_config, make_robot
    from robolearn.robots.loop import ControlLoop
    from robolearn.robots.safety import SafetyLayer
    from robolearn.robots.session import ControlSession
    from robolearn.utils.errors import ConfigError

    rcfg = load_robot_config(robot_name)
    rate = float(rcfg["rate_hz"])
    if abs(rate / fps - round(rate / fps)) > 1e-9:
        raise ConfigError(f"loop rate {rate} Hz is not a multiple of the recording rate {fps} Hz")
    from robolearn.teleop.cameras import make_cameras

    rb = make_robot(rcfg)
    rb.connect()
    store = None
    cameras = {}
    try:
        cameras = make_cameras(rcfg.get("cameras"))
        if hasattr(rb, "reset"):
            rb.reset(seed_start)
        store = open_record_store(out, rb, fps, append, rcfg.get("task"), cameras)
        safety = SafetyLayer(rb.limits, rb.capabilities, rb.read_state(), float(rcfg["watchdog_timeout_s"]))
        source = TeleopSource(device)
        recorder = Recorder(store, rb, source, safety, seed_start=seed_start, max_steps=max_steps, cameras=cameras)
        session = ControlSession(rb, safety, source, int(round(rate / fps)), on_slot=recorder.on_slot)
        stats = ControlLoop(rate, session.step, realtime=realtime).run(
            duration_s=duration_s, stop_when=lambda: session.done, on_start=getattr(rb, "sync", rb.read_state))
        recorder.abort()  # the session ended without quit (duration or disconnect): keep nothing half-done
    finally:
        for cam in cameras.values():
            cam.close()
        if store is not None:
            store.close()
        rb.disconnect()
    return {"path": str(out), "committed": recorder.committed, "discarded": recorder.discarded,
            "episodes": EpisodeStore.open(out).n_episodes, "faults": [f.kind.value for f in safety.faults],
            "loop": stats.summary()}


def replay(store_path, episode: int, robot_name: str = "sim", realtime: bool = True,
           settle_s: float = 0.5) -> dict[str, Any]:
    """``robolearn replay``: play episode ``episode`` of a store back through the loop.

    Uses ``action_abs`` (absolute targets, interpolated) when the store has it, else the store's
    relative Lift-convention ``action`` (held per step). On the twin the scene is reset to the
    episode's seed first, so a scripted demonstration replays into the same scene. After the last
    step the final target is held for ``settle_s`` (success is checked until then).

    Returns:
        ``{"episode", "steps", "absolute", "success" (twin only), "final_target_error_m", "loop"}``.

    Raises:
        StoreError: unreadable store, episode out of range, or no replayable action key.
    """
    from robolearn.robots.config import load_robot_config, make_robot
    from robolearn.robots.loop import ControlLoop
    from robolearn.robots.safety import SafetyLayer
    from robolearn.robots.session import ControlSession
    from robolearn.utils.errors import StoreError

    store = EpisodeStore.open(store_path)
    if not 0 <= episode < store.n_episodes:
        raise StoreError(f"{store_path}: no episode {episode} (the store has {store.n_episodes})")
    absolute = "action_abs" in store.keys
    if not absolute and (store.attrs.get("action_space") or {}).get("type") != "eef_delta_pose_world":
        raise StoreError(f"{store_path}: nothing to replay: no 'action_abs' key and 'action' is not an EEF delta pose")
    ep = store.get_episode(episode, ["action_abs" if absolute else "action"])
    actions = ep["action_abs" if absolute else "action"]
    seed = int(store.episode_meta("seed")[episode]) if "seed" in store.meta_keys else None
    step_s = 1.0 / float(store.fps or 20.0)
    rcfg = load_robot_config(robot_name)
    rate = float(rcfg["rate_hz"])
    rb = make_robot(rcfg)
    rb.connect()
    try:
        if hasattr(rb, "reset"):
            rb.reset(seed)
        safety = SafetyLayer(rb.limits, rb.capabilities, rb.read_state(), float(rcfg["watchdog_timeout_s"]))
        source = ReplaySource(actions, step_s, absolute)
        ticks = int(round(rate * step_s))
        success = {"any": False}

        def on_slot(k, deadline, state):
            if hasattr(rb, "is_success") and k > 0:
                success["any"] = success["any"] or rb.is_success()
            return source.end_time is not None and deadline >= source.end_time + settle_s

        session = ControlSession(rb, safety, source, ticks, on_slot=on_slot)
        stats = ControlLoop(rate, session.step, realtime=realtime).run(
            duration_s=step_s * (len(actions) + 2) + settle_s, stop_when=lambda: session.done, on_start=getattr(rb, "sync", rb.read_state))
        final = rb.read_state()
        err = float(np.linalg.norm(final.eef_pos - actions[-1][:3])) if absolute else None
    finally:
        rb.disconnect()
    return {"store": str(store_path), "episode": episode, "seed": seed, "steps": len(actions), "absolute": absolute,
            "success": success["any"] if hasattr(rb, "is_success") else None, "final_target_error_m": err,
            "faults": [f.kind.value for f in safety.faults], "loop": stats.summary()}
