"""The SO-101 twin (sim/so101.xml): reset and stepping under joint goals at the servo speed, forward
kinematics against the SO-ARM100 URDF's joint frames, the safety layer's joint limits, the socket
twin, and the Feetech driver reporting the same FK pose as the twin."""

import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robolearn.robots.config import load_robot_config, make_robot
from robolearn.robots.loop import ControlLoop, ManualClock
from robolearn.robots.safety import SafetyLayer
from robolearn.robots.session import ControlSession
from robolearn.robots.so101_twin import So101Kinematics, So101Twin
from robolearn.robots.types import Command, ControlMode, FaultKind, Robot, SimulatedRobot

# Joint origins (xyz m, rpy rad) of so101_new_calib.urdf (TheRobotStudio/SO-ARM100), base to
# gripperframe: the expected kinematics, computed here independently of MuJoCo.
URDF_CHAIN = [((0.0207909, -0.0230745, 0.0948817), (-3.14159, 0, 1.5708)),
              ((-0.0303992, -0.0182778, -0.0542), (-1.5708, -1.5708, 0)),
              ((-0.11257, -0.028, 0), (0, 0, 1.5708)),
              ((-0.1349, 0.0052, 0), (0, 0, -1.5708)),
              ((0, -0.0611, 0.0181), (1.5708, 0, 3.14159))]
URDF_TIP = ((-0.0079, -0.000218121, -0.0981274), (1.5708, 0, 1.5708))


def urdf_fk(q):
    """4x4 pose of the URDF's gripperframe for arm joints ``q`` (5,), each joint about its frame's z."""
    def tf(xyz, rpy, yaw=0.0):
        m = np.eye(4)
        m[:3, :3] = Rotation.from_euler("xyz", rpy).as_matrix() @ Rotation.from_euler("z", yaw).as_matrix()
        m[:3, 3] = xyz
        return m
    pose = np.eye(4)
    for (xyz, rpy), qi in zip(URDF_CHAIN, q):
        pose = pose @ tf(xyz, rpy, qi)
    return pose @ tf(*URDF_TIP)


def test_fk_of_known_joint_configs_matches_the_urdf():
    kin = So101Kinematics()
    pos, quat = kin.fk(np.zeros(5))
    np.testing.assert_allclose(pos, [0.0204, -0.3756, 0.2590], atol=1e-4)  # zero pose: arm along -y
    for q in [np.zeros(5), np.array([0.5, -0.8, 1.2, -0.4, 2.0]), np.array([-1.5, 1.0, -1.0, 1.5, -2.5])]:
        pos, quat = kin.fk(q)
        want = urdf_fk(q)
        np.testing.assert_allclose(pos, want[:3, 3], atol=1e-9)
        np.testing.assert_allclose(Rotation.from_quat(quat).as_matrix(), want[:3, :3], atol=1e-9)
    with pytest.raises(ValueError, match="5 finite joint positions"):
        kin.fk(np.zeros(4))


@pytest.fixture
def twin():
    clock = ManualClock()
    tw = So101Twin(clock=clock)
    tw.connect()
    tw.reset(0)
    yield tw, clock
    tw.close()


def test_twin_resets_and_tracks_joint_goals_at_the_servo_speed(twin):
    tw, clock = twin
    assert isinstance(tw, Robot) and isinstance(tw, SimulatedRobot)
    assert tw.capabilities.control_modes == (ControlMode.JOINT_POSITION,)
    np.testing.assert_allclose(tw.limits.joint_upper, [1.91986, 1.74533, 1.69, 1.65806, 2.79253])
    s0 = tw.read_state()
    np.testing.assert_allclose(s0.joint_pos, 0.0, atol=1e-9)
    np.testing.assert_allclose(s0.eef_pos, tw.sim.fk(np.zeros(5))[0])
    goal = np.array([0.5, -0.5, 0.8, 0.3, 1.0])
    tw.send_command(Command(ControlMode.JOINT_POSITION, joint_pos=goal, gripper=1.0))
    peak = 0.0
    for _ in range(300):  # 0.6 s
        clock.sleep(0.002)
        s = tw.read_state()
        peak = max(peak, float(np.abs(s.joint_vel).max()))
    assert peak <= 4.71 * 1.02  # the servos' 45 rpm profile
    np.testing.assert_allclose(s.joint_pos, goal, atol=0.01)  # gravity sag of the 50 N m/rad servos
    assert s.gripper == pytest.approx(1.0, abs=0.01)
    pos, quat = tw.sim.fk(s.joint_pos)
    np.testing.assert_allclose(s.eef_pos, pos, atol=1e-12)   # the state's pose is FK of its joints
    assert tw.task_obs()["joint_pos"].shape == (5,)
    tw.reset(1)  # back to the start pose at rest, goal there
    s = tw.read_state()
    np.testing.assert_allclose(s.joint_pos, 0.0, atol=1e-9)
    np.testing.assert_allclose(s.joint_vel, 0.0, atol=1e-9)
    with pytest.raises(ValueError, match="JOINT_POSITION"):
        tw.send_command(Command(ControlMode.EEF_POSE, eef_pos=np.zeros(3), eef_quat=np.array([0, 0, 0, 1.0])))


class Fixed:
    """A command source asking for one command every period."""

    def __init__(self, command):
        self.cmd = command

    def command(self, k, deadline, state, slot_start):
        return self.cmd


def test_safety_layer_holds_the_twin_inside_its_joint_limits(twin):
    tw, clock = twin
    safety = SafetyLayer(tw.limits, tw.capabilities, tw.read_state(), watchdog_timeout=0.5)
    beyond = np.array([3.0, -3.0, 2.5, 2.0, 4.0])  # every joint past its range
    session = ControlSession(tw, safety, Fixed(Command(ControlMode.JOINT_POSITION, joint_pos=beyond)), clock=clock)
    ControlLoop(100, session.step, spin_s=0, clock=clock, sleep=clock.sleep).run(duration_s=1.5)
    q = tw.read_state().joint_pos
    lo, hi = tw.limits.joint_lower, tw.limits.joint_upper
    assert np.all(q <= hi + 0.02) and np.all(q >= lo - 0.02)
    np.testing.assert_allclose(q, np.clip(beyond, lo, hi), atol=0.02)  # clamped to the limits, reached
    assert not safety.faults and safety.n_clamped > 0
    # A pose command (not a mode of this arm) and a NaN are refused: a fault latches, the arm holds.
    held = q.copy()
    pose = Command(ControlMode.EEF_POSE, eef_pos=np.zeros(3), eef_quat=np.array([0, 0, 0, 1.0]))
    session.source = Fixed(pose)
    ControlLoop(100, session.step, spin_s=0, clock=clock, sleep=clock.sleep).run(duration_s=0.2)
    assert safety.faults[0].kind == FaultKind.INVALID_COMMAND and "not supported" in safety.faults[0].message
    np.testing.assert_allclose(tw.read_state().joint_pos, held, atol=0.01)
    safety.clear_faults(tw.read_state())
    nan = Command(ControlMode.JOINT_POSITION, joint_pos=np.array([0.0, np.nan, 0, 0, 0]))
    assert np.all(np.isfinite(safety.filter(nan, clock() + 0.01).joint_pos))
    assert safety.faults[0].kind == FaultKind.INVALID_COMMAND


def test_socket_twin_of_the_so101_takes_joint_commands():
    tw = make_robot(load_robot_config("so101_sim_socket"))
    tw.connect()
    try:
        assert tw.capabilities.control_modes == (ControlMode.JOINT_POSITION,)
        np.testing.assert_allclose(tw.limits.joint_vel_max, 4.71)
        goal = np.array([-0.4, 0.3, -0.5, 0.6, -1.0])
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10.0:
            tw.send_command(Command(ControlMode.JOINT_POSITION, joint_pos=goal, gripper=0.2))
            try:
                s = tw.read_state()
            except ConnectionError:  # a descheduled client may see a stale state; keep polling
                time.sleep(0.005)
                continue
            if np.allclose(s.joint_pos, goal, atol=0.01):
                break
            time.sleep(0.005)
        np.testing.assert_allclose(s.joint_pos, goal, atol=0.01)
        np.testing.assert_allclose(s.eef_pos, So101Kinematics().fk(s.joint_pos)[0], atol=1e-6)
        assert set(tw.task_obs()) == {"joint_pos", "gripper", "eef_pos", "eef_quat"}
    finally:
        tw.disconnect()


def test_feetech_so101_reports_the_twins_fk_pose():
    pytest.importorskip("scservo_sdk")
    from robolearn.robots.feetech_emulator import EmulatedFeetechBus

    bus = EmulatedFeetechBus(start_steps=2048)
    arm = make_robot(load_robot_config("so101"), port=bus.port)
    arm.connect()
    try:
        q = np.array([0.3, -0.6, 0.9, -0.2, 1.1])
        arm.send_command(Command(ControlMode.JOINT_POSITION, joint_pos=q))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            s = arm.read_state()
            if np.allclose(s.joint_pos, q, atol=2e-3):
                break
        np.testing.assert_allclose(s.joint_pos, q, atol=2e-3)  # steps: 2 pi / 4096 = 1.5 mrad
        pos, quat = So101Kinematics().fk(s.joint_pos)
        np.testing.assert_allclose(s.eef_pos, pos)
        np.testing.assert_allclose(s.eef_quat, quat)
        np.testing.assert_allclose(s.eef_pos, urdf_fk(s.joint_pos)[:3, 3], atol=1e-9)
        assert arm.joint_names == ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
    finally:
        arm.disconnect()
        bus.close()
