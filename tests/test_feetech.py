"""Feetech-bus driver through the vendor SDK on an emulated STS bus (a pty speaking the protocol):
calibrated units, sync reads and writes, the safety layer in between, a servo that stops answering."""

import time

import numpy as np
import pytest

pytest.importorskip("scservo_sdk")

from robolearn.robots.config import load_robot_config, make_robot  # noqa: E402
from robolearn.robots.feetech_emulator import EmulatedFeetechBus  # noqa: E402
from robolearn.robots.safety import SafetyLayer  # noqa: E402
from robolearn.robots.session import ControlSession  # noqa: E402
from robolearn.robots.types import Command, ControlMode, FaultKind, Robot, SimulatedRobot  # noqa: E402


@pytest.fixture
def arm():
    bus = EmulatedFeetechBus(start_steps=2048)
    robot = make_robot(load_robot_config("so100"), port=bus.port)
    robot.connect()
    yield robot, bus
    robot.disconnect()
    bus.close()


def test_reads_and_writes_in_calibrated_units(arm):
    robot, bus = arm
    assert isinstance(robot, Robot) and not isinstance(robot, SimulatedRobot)  # a real arm has no task scene
    s = robot.read_state()
    np.testing.assert_allclose(s.joint_pos, 0.0)  # 2048 steps is every joint's zero
    assert s.gripper == pytest.approx(0.06)       # (2048 - 2000) / (2800 - 2000)
    q = np.array([0.5, -0.25, 0.0, 0.1, -1.0])
    robot.send_command(Command(ControlMode.JOINT_POSITION, joint_pos=q, gripper=1.0))
    expected = [2048 + round(v * 4096 / (2 * np.pi)) for v in q] + [2800]
    t0 = time.monotonic()
    while [bus.goal(i) for i in range(1, 7)] != expected and time.monotonic() - t0 < 2.0:
        time.sleep(0.001)  # a sync write has no reply: the emulator applies it asynchronously
    assert [bus.goal(i) for i in range(1, 7)] == expected
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3.0:  # the emulated servos move at 4000 steps/s: ~0.2 s
        s = robot.read_state()
        if np.allclose(s.joint_pos, q, atol=2e-3) and s.gripper == pytest.approx(1.0):
            break
    np.testing.assert_allclose(s.joint_pos, q, atol=2e-3)
    assert s.gripper == pytest.approx(1.0)


def test_safety_layer_limits_what_reaches_the_bus(arm):
    robot, bus = arm
    safety = SafetyLayer(robot.limits, robot.capabilities, robot.read_state(), watchdog_timeout=1.0)
    wild = Command(ControlMode.JOINT_POSITION, joint_pos=np.array([10.0, 0, 0, 0, np.nan]))
    out = safety.filter(wild, 0.01)
    assert out.joint_pos is not None and safety.faults[0].kind == FaultKind.INVALID_COMMAND
    robot.send_command(out)
    robot.read_state()  # a read round trip: the emulator has handled the write before it answers
    assert [bus.goal(i) for i in range(1, 6)] == [2048] * 5  # NaN refused: the arm holds


def test_a_servo_that_stops_answering_is_a_disconnect(arm):
    robot, bus = arm
    safety = SafetyLayer(robot.limits, robot.capabilities, robot.read_state(), watchdog_timeout=1.0)

    class Still:
        def command(self, k, deadline, state, slot_start):
            return Command(ControlMode.JOINT_POSITION, joint_pos=state.joint_pos)

    session = ControlSession(robot, safety, Still())
    session.step(0, 0.0)
    bus.unplug(3)
    session.step(1, 0.01)
    assert session.disconnected and [f.kind for f in safety.faults] == [FaultKind.DISCONNECT]
    assert "sync read" in safety.faults[0].message


def test_missed_status_packets_are_retried_before_the_arm_counts_as_gone(arm):
    from robolearn.robots.feetech import READ_RETRIES

    robot, bus = arm
    before = robot.read_state().joint_pos
    bus.drop_sync_reads(READ_RETRIES)  # a noisy line: the last try answers
    np.testing.assert_allclose(robot.read_state().joint_pos, before, atol=2 * np.pi / 4096)
    bus.drop_sync_reads(READ_RETRIES + 1)
    with pytest.raises(ConnectionError, match=f"sync read on .* failed {READ_RETRIES + 1} times"):
        robot.read_state()


def test_missing_servo_at_connect_is_named():
    bus = EmulatedFeetechBus(ids=(1, 2, 3, 4, 5))  # no gripper servo
    try:
        robot = make_robot(load_robot_config("so100"), port=bus.port)
        with pytest.raises(ConnectionError, match="servo 6"):
            robot.connect()
    finally:
        bus.close()
