"""Leader-arm teleoperation on an emulated Feetech bus: a scripted leader joint trajectory (a hand
moving the torque-off servos of a leader calibrated differently from the follower) drives the
SO-101 twin through the session, safety layer and recorder; the committed episode's actions
reproduce the trajectory within one servo step (2 pi / 4096 rad), the issue's bar."""

import time

import numpy as np
import pytest
import yaml

pytest.importorskip("scservo_sdk")

from robolearn.apps.record import check_record_options, open_record_store, record_with_device  # noqa: E402
from robolearn.data.store import EpisodeStore  # noqa: E402
from robolearn.robots.feetech_emulator import EmulatedFeetechBus  # noqa: E402
from robolearn.robots.loop import ControlLoop, ManualClock  # noqa: E402
from robolearn.robots.safety import SafetyLayer  # noqa: E402
from robolearn.robots.session import ControlSession  # noqa: E402
from robolearn.robots.so101_twin import So101Twin  # noqa: E402
from robolearn.teleop.devices import LeaderArmDevice  # noqa: E402
from robolearn.teleop.recorder import JointTeleopSource, Recorder  # noqa: E402
from robolearn.utils.errors import ConfigError  # noqa: E402
from robolearn.utils.paths import hardware_dir  # noqa: E402

STEP = 2 * np.pi / 4096  # one servo step (rad)
# The leader's own calibration: other offsets, two servos mounted the other way, its handle
# closing toward higher readings.
OFFSETS, DIRECTIONS = np.array([1000, 3000, 2047, 1500, 2600]), np.array([1, -1, 1, -1, 1])
CLOSED, OPEN = 2500, 1900


@pytest.fixture
def leader_yaml(tmp_path):
    cfg = yaml.safe_load((hardware_dir() / "so101_leader.yaml").read_text())
    cfg["calibration"] = [{"id": i + 1, "homing_offset": int(o), "direction": int(d)}
                          for i, (o, d) in enumerate(zip(OFFSETS, DIRECTIONS))]
    cfg["gripper"] = {"id": 6, "closed": CLOSED, "open": OPEN}
    path = tmp_path / "leader.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def trajectory(t):
    """The leader's scripted pose at time ``t`` (s): joints (5,) rad inside the follower's ranges, opening."""
    phase = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    q = np.array([0.8, 0.6, 0.9, 0.7, 1.5]) * np.sin(2 * np.pi * 0.4 * t + phase)
    return q, 0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t)


def hand(clock):
    """The hand on the leader: servo readings (steps) of the trajectory at ``clock()``."""
    def positions():
        q, g = trajectory(clock())
        steps = OFFSETS + DIRECTIONS * q / STEP
        return {**{i + 1: s for i, s in enumerate(steps)}, 6: CLOSED + g * (OPEN - CLOSED)}
    return positions


def keys_at(clock, schedule):
    """Key backend: the characters of ``schedule`` ``[(t, chars)]`` whose time has come."""
    pending = list(schedule)

    def typed():
        due = [c for t, c in pending if t <= clock()]
        del pending[:len(due)]
        return "".join(due)
    return typed


def test_leader_trajectory_is_recorded_within_one_servo_step(tmp_path, leader_yaml):
    bus = EmulatedFeetechBus(start_steps=2048)
    clock = ManualClock()
    bus.hand = hand(clock)
    leader = LeaderArmDevice(bus.port, config=leader_yaml, keys=keys_at(clock, [(0.1, "c"), (2.6, "s"), (2.8, "q")]))
    tw = So101Twin(clock=clock)
    tw.connect()
    try:
        assert all(bus.tables[i][40] == 0 for i in range(1, 7))  # the leader's torque is off
        tw.reset(0)
        store = open_record_store(tmp_path / "leader.zarr", tw, fps=20, append=False, task=None, joint_space=True)
        safety = SafetyLayer(tw.limits, tw.capabilities, tw.read_state(), watchdog_timeout=0.2)
        source = JointTeleopSource(leader)
        recorder = Recorder(store, tw, source, safety)
        session = ControlSession(tw, safety, source, ticks_per_slot=5, on_slot=recorder.on_slot, clock=clock)
        ControlLoop(100, session.step, spin_s=0, clock=clock, sleep=clock.sleep).run(
            duration_s=4.0, stop_when=lambda: session.done)
        store.close()
    finally:
        leader.close()
        tw.close()
        bus.close()
    assert recorder.quit and (recorder.committed, recorder.discarded) == (1, 0) and not safety.faults
    s = EpisodeStore.open(tmp_path / "leader.zarr")
    ep = s.get_episode(0)
    assert 48 <= len(ep["action"]) <= 50 and ep["action"].shape[1] == 6  # 0.1 .. 2.6 s at 20 Hz
    assert s.attrs["action_space"]["type"] == "joint_position"
    want = np.array([np.append(*trajectory(t)) for t in ep["timestamp"][:, 0]])
    err = np.abs(ep["action"][:, :5] - want[:, :5])
    assert err.max() <= STEP, f"max joint error {err.max() / STEP:.2f} steps"  # the bar
    assert np.abs(ep["action"][:, 5] - want[:, 5]).max() <= 1.0 / abs(OPEN - CLOSED)  # one gripper step
    # The follower went where the leader went (it lags by its servo profile and one period).
    lag = np.abs(ep["joint_pos"][10:] - want[9:-1, :5]).max()
    assert lag < 0.1, lag


@pytest.mark.parametrize("robot", ["so101_sim", "so101_sim_socket"])
def test_record_app_with_the_leader_device(tmp_path, leader_yaml, robot):
    """`robolearn record --robot so101_sim --device leader --leader-port PORT` as the CLI calls it,
    in real time (in-process twin and twin over its socket), with the leader held still (so any
    read of it gives the same pose)."""
    bus = EmulatedFeetechBus(start_steps=2048)
    q, g = np.array([0.4, -0.3, 0.5, -0.2, 1.0]), 0.25
    still = {**{i + 1: s for i, s in enumerate(OFFSETS + DIRECTIONS * q / STEP)}, 6: CLOSED + g * (OPEN - CLOSED)}
    bus.hand = lambda: still
    t0 = []  # the keys' time starts at their first poll: the loop's first period, after the twin is up

    def since_first_poll():
        t0.append(time.monotonic())
        return t0[-1] - t0[0]
    keys = keys_at(since_first_poll, [(0.3, "c"), (1.3, "s"), (1.5, "q")])
    try:
        result = record_with_device(robot, "leader", tmp_path / "rec.zarr", leader_port=bus.port,
                                    device_kwargs={"config": leader_yaml, "keys": keys}, fps=20,
                                    realtime=False, duration_s=5.0)
    finally:
        bus.close()
    assert result["committed"] == 1 and result["episodes"] == 1 and not result["faults"]
    ep = EpisodeStore.open(tmp_path / "rec.zarr").get_episode(0)
    assert len(ep["action"]) >= 10
    assert np.abs(ep["action"][:, :5] - q).max() <= STEP
    assert np.abs(ep["action"][:, 5] - g).max() <= 1.0 / abs(OPEN - CLOSED)
    np.testing.assert_allclose(ep["joint_pos"][-1], q, atol=0.02)  # the follower reached the leader's pose


def test_leader_options_are_checked_before_anything_opens():
    with pytest.raises(ConfigError, match="--leader-port: required"):
        check_record_options("so101_sim", device_name="leader")
    with pytest.raises(ConfigError, match="--robot: .*sim.yaml is not driven in joint space"):
        check_record_options("sim", device_name="leader", leader_port="/dev/null")
    assert check_record_options("so101_sim", device_name="leader", leader_port="/dev/null")["robot"] == "so101"
