"""``robolearn record``: teleoperate a robot (the MuJoCo twin or a real arm) through the control
loop and record episodes into a Zarr store (keys: :mod:`robolearn.data.schema`; the loop's parts:
:mod:`robolearn.teleop.recorder`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from robolearn.data.schema import TELEOP_KEYS, create_episode_store, open_for_append
from robolearn.data.store import EpisodeStore, KeyInfo
from robolearn.envs.actions import DeltaEefAdapter
from robolearn.robots.types import SimulatedRobot
from robolearn.teleop.recorder import JointTeleopSource, Recorder, TeleopSource, robot_obs


def open_record_store(path, robot, fps: float, append: bool, task: str | None,
                      cameras: dict[str, Callable[[], np.ndarray]] | None = None,
                      joint_space: bool = False) -> EpisodeStore:
    """Open (``append``) or create the store a recording session writes (``robot`` connected: its
    observation keys are declared from a first reading, the camera keys from a first frame).
    ``joint_space``: the actions are a leader arm's joint targets and gripper opening
    ``(n_joints + 1,)`` (rad, ``[0, 1]``; action space ``joint_position``) instead of Lift's EEF deltas.

    Raises:
        StoreError: the store exists and ``append`` is not set, it was recorded for another task,
            or a camera gives frames that are not ``uint8 (H, W, 3)``.
    """
    path = Path(path)
    if path.exists():
        return open_for_append(path, task, append)
    adapter = DeltaEefAdapter()
    obs = {**robot_obs(robot, robot.read_state()),
           **{f"{name}_image": np.asarray(cam()) for name, cam in (cameras or {}).items()}}
    if joint_space:
        lim = robot.limits
        names = [f"{n} rad" for n in getattr(robot, "joint_names", [f"joint{i}" for i in range(lim.n_joints)])]
        return create_episode_store(
            path, obs=obs, fps=fps, robot=type(robot).__name__, task=task, source="teleop_leader",
            action=KeyInfo((lim.n_joints + 1,), "float32", "rad, opening 0..1", "leader joint targets + gripper opening"),
            action_space={"type": "joint_position", "dim": lim.n_joints + 1, "low": [*map(float, lim.joint_lower), 0.0],
                          "high": [*map(float, lim.joint_upper), 1.0], "layout": [*names, "gripper opening [0 closed, 1 open]"]},
            extra_keys={"timestamp": TELEOP_KEYS["timestamp"]})
    return create_episode_store(
        path, obs=obs, fps=fps, robot=type(robot).__name__, task=task, source="teleop",
        action=KeyInfo((adapter.action_dim,), "float32", "m, rad, gripper", "target minus measured EEF pose + gripper"),
        action_space={"type": adapter.space_type, "dim": adapter.action_dim, "low": list(adapter.low),
                      "high": list(adapter.high), "layout": list(adapter.layout)},
        extra_keys=TELEOP_KEYS)


def check_record_options(robot_name: str, fps: float = 20.0, seed_start: int = 0, max_steps: int = 10_000,
                         duration_s: float | None = None, device_name: str | None = None,
                         leader_port: str | None = None) -> dict[str, Any]:
    """Check ``robolearn record``'s options and read the robot config, before anything is opened.

    Args:
        robot_name: ``--robot``: ``hardware/<name>.yaml`` or a YAML path.
        fps: ``--fps``: recording rate (Hz), > 0, dividing the robot's ``rate_hz``.
        seed_start: ``--seed-start``: first scene seed, an integer >= 0.
        max_steps: steps per episode at most, an integer >= 1.
        duration_s: session length (s), > 0, or ``None``.
        device_name: ``--device``: a key of :data:`robolearn.teleop.devices.DEVICES`, or ``None``
            (not checked). ``leader`` needs ``leader_port`` and a joint-position robot.
        leader_port: ``--leader-port``: the leader arm's serial port.

    Returns:
        The validated robot config (:func:`~robolearn.robots.config.load_robot_config`).

    Raises:
        ConfigError: one line naming the option (or the robot config's file and key) at fault.
    """
    import math

    from robolearn.robots.config import load_robot_config
    from robolearn.teleop.devices import DEVICES
    from robolearn.utils.errors import ConfigError

    if device_name is not None and device_name not in DEVICES:
        raise ConfigError(f"--device: unknown teleop device {device_name!r}; known: {sorted(DEVICES)}")
    for flag, value, unit in (("--fps", fps, "Hz"), ("duration_s", duration_s, "s")):
        positive = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if not positive and not (value is None and flag == "duration_s"):
            raise ConfigError(f"{flag}: must be a finite number > 0 ({unit}), got {value!r}")
    for flag, value, lo in (("--seed-start", seed_start, 0), ("max_steps", max_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"{flag}: must be an integer >= {lo}, got {value!r}")
    if device_name == "leader" and not leader_port:
        raise ConfigError("--leader-port: required with --device leader (the leader arm's serial port, e.g. /dev/ttyACM1)")
    rcfg = load_robot_config(robot_name)
    joint_robot = rcfg["driver"] == "feetech" or str(rcfg.get("robot", "")).lower() == "so101"
    if device_name == "leader" and not joint_robot:
        raise ConfigError(f"--robot: {rcfg['_path']} is not driven in joint space; the leader arm drives an "
                          "SO-100/101 follower (so101_sim, so101_sim_socket, so101, so100)")
    rate = float(rcfg["rate_hz"])
    if abs(rate / fps - round(rate / fps)) > 1e-9 or round(rate / fps) < 1:
        raise ConfigError(f"--fps: the recording rate {fps:g} Hz must divide the loop rate, {rcfg['_path']}: "
                          f"rate_hz: {rate:g} Hz")
    return rcfg


def record(robot_name: str, device, out, fps: float = 20.0, append: bool = False, seed_start: int = 0,
           max_steps: int = 10_000, realtime: bool = True, duration_s: float | None = None) -> dict[str, Any]:
    """``robolearn record``: teleoperate a robot and record episodes until ``quit``.

    Args:
        robot_name: ``hardware/<name>.yaml`` or a YAML path.
        device: a teleop device (``read() -> TeleopInput``; a joint-space one, ``joint_space`` true,
            ``read() -> JointTeleopInput``, drives the follower in joint space).
        out: store path.
        fps: recording rate (Hz); the loop rate must be a multiple of it.
        duration_s: end the session after this long (for scripted sessions; default: until quit).

    Returns:
        ``{"path", "committed", "discarded", "episodes" (in the store), "loop" (timing summary)}``.

    Raises:
        ConfigError: a bad option or robot config (:func:`check_record_options`), before the
            robot is built or the store touched.
        StoreError: see :func:`open_record_store`.
    """
    from robolearn.robots.config import make_robot
    from robolearn.robots.loop import ControlLoop
    from robolearn.robots.safety import SafetyLayer
    from robolearn.robots.session import ControlSession
    from robolearn.teleop.cameras import make_cameras

    rcfg = check_record_options(robot_name, fps=fps, seed_start=seed_start, max_steps=max_steps, duration_s=duration_s)
    rate = float(rcfg["rate_hz"])
    rb = make_robot(rcfg)
    rb.connect()
    store = recorder = None
    cameras = {}
    try:
        cameras = make_cameras(rcfg.get("cameras"), rcfg["_path"], robot=rb)  # rendered ones need the twin
        if isinstance(rb, SimulatedRobot):
            rb.reset(seed_start)
        joint_space = bool(getattr(device, "joint_space", False))
        store = open_record_store(out, rb, fps, append, rcfg.get("task"), cameras, joint_space=joint_space)
        safety = SafetyLayer(rb.limits, rb.capabilities, rb.read_state(), float(rcfg["watchdog_timeout_s"]))
        source = JointTeleopSource(device) if joint_space else TeleopSource(device)
        recorder = Recorder(store, rb, source, safety, seed_start=seed_start, max_steps=max_steps, cameras=cameras)
        session = ControlSession(rb, safety, source, int(round(rate / fps)), on_slot=recorder.on_slot)
        stats = ControlLoop(rate, session.step, realtime=realtime).run(
            duration_s=duration_s, stop_when=lambda: session.done, on_start=getattr(rb, "sync", rb.read_state))
        recorder.abort()  # the session ended without quit (duration or disconnect): keep nothing half-done
    finally:
        for cam in cameras.values():
            cam.close()
        try:
            if recorder is not None:
                recorder.close()  # an episode still being committed is written before the store closes
        finally:
            if store is not None:
                store.close()
            rb.disconnect()
    return {"path": str(out), "committed": recorder.committed, "discarded": recorder.discarded,
            "episodes": EpisodeStore.open(out).n_episodes, "faults": [f.kind.value for f in safety.faults],
            "loop": stats.summary()}


def record_with_device(robot_name: str, device_name: str, out, leader_port: str | None = None,
                       device_kwargs: dict[str, Any] | None = None, **kwargs) -> dict[str, Any]:
    """``robolearn record``: check the options and the robot config (:func:`check_record_options`),
    open teleop device ``device_name`` (``keyboard``, ``spacemouse``, ``gamepad``, ``leader`` on
    ``leader_port``; ``device_kwargs`` go to the device), :func:`record` with it, and close it
    whatever happens.

    Raises:
        ConfigError, StoreError: see :func:`record` (a bad option or robot config is reported
            before the device is opened); the device's own errors when it cannot open.
    """
    from robolearn.teleop.devices import make_device

    check_record_options(robot_name, device_name=device_name, leader_port=leader_port,
                         **{k: kwargs[k] for k in ("fps", "seed_start", "max_steps", "duration_s") if k in kwargs})
    device_kwargs = dict(device_kwargs or {})
    if device_name == "leader":
        device_kwargs.setdefault("port", leader_port)
    device = make_device(device_name, **device_kwargs)
    try:
        return record(robot_name, device, out, **kwargs)
    finally:
        device.close()
