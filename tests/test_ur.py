"""UR driver against a mock of ur_rtde's two interfaces: the right RTDE calls with the right units,
lost links and robot-side stops surface as faults."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robolearn.robots.config import load_robot_config, make_robot
from robolearn.robots.safety import SafetyLayer
from robolearn.robots.session import ControlSession
from robolearn.robots.types import Command, ControlMode, FaultKind, Robot
from robolearn.robots.ur import URDriver


class MockRobot:
    """What the two RTDE interfaces see: a robot that reaches every servo target at once."""

    def __init__(self):
        self.q = np.array([0.0, -1.57, 1.57, -1.57, -1.57, 0.0])
        self.tcp = np.array([0.3, -0.1, 0.4, 0.0, 3.14159, 0.0])
        self.t = 1000.0
        self.connected = True
        self.protective = False
        self.calls = []


ROBOT = MockRobot()


class MockReceive:
    def __init__(self, host):
        self.host = host

    def isConnected(self):
        return ROBOT.connected

    def getActualQ(self):
        return list(ROBOT.q)

    def getActualQd(self):
        return [0.0] * 6

    def getActualTCPPose(self):
        return list(ROBOT.tcp)

    def getTimestamp(self):
        ROBOT.t += 0.002
        return ROBOT.t

    def isProtectiveStopped(self):
        return ROBOT.protective

    def isEmergencyStopped(self):
        return False

    def disconnect(self):
        ROBOT.calls.append(("recv.disconnect",))


class MockControl:
    def __init__(self, host, frequency):
        ROBOT.calls.append(("init", host, frequency))

    def isConnected(self):
        return ROBOT.connected

    def servoJ(self, q, speed, accel, time, lookahead, gain):
        ROBOT.calls.append(("servoJ", q, time, lookahead, gain))
        ROBOT.q = np.array(q)

    def servoL(self, pose, speed, accel, time, lookahead, gain):
        ROBOT.calls.append(("servoL", pose, time, lookahead, gain))
        ROBOT.tcp = np.array(pose)

    def servoStop(self, a=10.0):
        ROBOT.calls.append(("servoStop",))

    def stopScript(self):
        ROBOT.calls.append(("stopScript",))

    def disconnect(self):
        ROBOT.calls.append(("ctrl.disconnect",))


@pytest.fixture
def ur():
    global ROBOT
    ROBOT = MockRobot()
    cfg = load_robot_config("ur5e")
    robot = make_robot(cfg, control_cls=MockControl, receive_cls=MockReceive)
    robot.connect()
    yield robot
    robot.disconnect()


def test_state_and_servo_commands_use_rtde_units(ur):
    assert isinstance(ur, Robot) and ROBOT.calls[0] == ("init", "192.168.1.10", 500.0)
    s = ur.read_state()
    np.testing.assert_allclose(s.eef_pos, [0.3, -0.1, 0.4])
    np.testing.assert_allclose(Rotation.from_quat(s.eef_quat).as_rotvec(), [0.0, 3.14159, 0.0], atol=1e-9)
    assert s.seq == 1 and s.capture_time == s.receive_time  # first sample anchors the robot clock
    quat = Rotation.from_rotvec([0.0, 3.0, 0.0]).as_quat()
    ur.send_command(Command(ControlMode.EEF_POSE, eef_pos=np.array([0.31, -0.1, 0.4]), eef_quat=quat))
    name, pose, dt, lookahead, gain = ROBOT.calls[-1]
    assert name == "servoL" and dt == pytest.approx(0.002) and (lookahead, gain) == (0.1, 300.0)
    np.testing.assert_allclose(pose, [0.31, -0.1, 0.4, 0.0, 3.0, 0.0], atol=1e-12)
    ur.send_command(Command(ControlMode.JOINT_POSITION, joint_pos=np.zeros(6)))
    assert ROBOT.calls[-1][0] == "servoJ" and ROBOT.calls[-1][1] == [0.0] * 6


def test_lost_link_and_protective_stop_are_latched(ur):
    safety = SafetyLayer(ur.limits, ur.capabilities, ur.read_state(), watchdog_timeout=1.0)

    class Hold:
        def command(self, k, deadline, state, slot_start):
            return Command(ControlMode.EEF_POSE, eef_pos=state.eef_pos, eef_quat=state.eef_quat)

    session = ControlSession(ur, safety, Hold())
    session.step(0, 0.0)
    ROBOT.protective = True
    session.step(1, 0.002)
    assert [f.kind for f in safety.faults] == [FaultKind.DRIVER]
    ROBOT.connected = False
    with pytest.raises(ConnectionError, match="RTDE connection lost"):
        ur.read_state()
    session.step(2, 0.004)
    assert session.disconnected and FaultKind.DISCONNECT in [f.kind for f in safety.faults]


def test_disconnect_stops_servoing_and_the_script(ur):
    ur.disconnect()
    names = [c[0] for c in ROBOT.calls]
    assert names[-4:] == ["servoStop", "stopScript", "ctrl.disconnect", "recv.disconnect"]
    with pytest.raises(ConnectionError, match="not connected"):
        ur.read_state()


def test_bad_servo_parameters_are_refused():
    from robolearn.utils.errors import DeviceError

    cfg = load_robot_config("ur5e")
    with pytest.raises(DeviceError, match="gain"):
        URDriver("h", make_robot(cfg, control_cls=MockControl, receive_cls=MockReceive).limits, gain=5000,
                 control_cls=MockControl, receive_cls=MockReceive)
