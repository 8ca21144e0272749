"""``robolearn calibrate`` on the emulated Feetech bus: a scripted user moves the emulated servos at
each prompt; the written config's offsets, directions, gripper and limits match, the driver built
from it reads the zero pose as 0 rad and a moved pose as its angle (within one servo step), and
the refusals (a joint that did not move, an existing file, a missing port, a silent servo)."""

import time

import numpy as np
import pytest
import yaml

pytest.importorskip("scservo_sdk")

from robolearn.apps.calibrate import CalibrationError, calibrate  # noqa: E402
from robolearn.robots.config import load_robot_config, make_robot  # noqa: E402
from robolearn.robots.feetech_emulator import EmulatedFeetechBus  # noqa: E402
from robolearn.robots.so101_twin import SO101_JOINTS, So101Kinematics  # noqa: E402
from robolearn.utils.errors import DeviceError  # noqa: E402

STEP = 2 * np.pi / 4096
ZERO = {1: 2100, 2: 1900, 3: 3000, 4: 1000, 5: 2048}       # steps in the twin's zero pose
DIRECTION = {1: 1, 2: -1, 3: -1, 4: 1, 5: -1}
STOPS = {1: (800, 3400), 2: (700, 3100), 3: (2100, 3800), 4: (300, 1700), 5: (300, 3800)}  # end stops, steps
CLOSED, OPEN = 1500, 2600


class User:
    """A scripted owner: at each prompt, moves the emulated servos (torque off: by hand) as asked.

    ``skip``: a joint name that is not moved when asked to move positive; ``instead``: the servo id
    moved in its place."""

    def __init__(self, bus, skip=None, instead=None):
        self.bus, self.skip, self.instead = bus, skip, instead
        self.pose = {i: 2048 for i in range(1, 7)}
        self.trajectory: list[tuple[int, int]] = []
        self.prompts: list[str] = []
        bus.hand = self._hand

    def _hand(self):
        if self.trajectory:
            i, steps = self.trajectory.pop(0)
            self.pose[i] = steps
        return dict(self.pose)

    def __call__(self, text):
        self.prompts.append(text)
        joint = next((k + 1 for k, n in enumerate(SO101_JOINTS) if text.split(":")[1].strip().startswith(n)), None) \
            if ":" in text else None
        if "zero pose" in text:
            self.pose.update(ZERO)
            self.pose[6] = 2000
        elif "positive direction" in text:
            moved = self.instead if (self.skip and SO101_JOINTS[joint - 1] == self.skip) else joint
            if moved is not None:
                self.pose[moved] += DIRECTION.get(moved, 1) * 300
        elif "sweep it" in text:
            lo, hi = STOPS[joint]
            z = ZERO[joint]
            path = list(np.linspace(self.pose[joint], lo, 10)) + list(np.linspace(lo, hi, 20)) + list(np.linspace(hi, z, 10))
            self.trajectory = [(joint, int(round(s))) for s in path]
            t0 = time.monotonic()
            while self.trajectory and time.monotonic() - t0 < 5.0:  # each sync read serves one waypoint
                time.sleep(0.002)
            assert not self.trajectory, "the sampler did not read the sweep"
            time.sleep(0.01)
        elif "close the gripper" in text:
            self.pose[6] = CLOSED
        elif "open the gripper" in text:
            self.pose[6] = OPEN
        return ""


@pytest.fixture
def bus():
    b = EmulatedFeetechBus(start_steps=2048)
    yield b
    b.close()


def run(bus, out, user=None, **kw):
    user = user or User(bus)
    return calibrate(kw.pop("robot", "so101"), port=bus.port, out=out, prompt=user, say=lambda s: None,
                     sample_period_s=0.002, **kw), user


def test_written_config_has_the_measured_calibration(bus, tmp_path):
    out = tmp_path / "my_so101.yaml"
    result, user = run(bus, out)
    cfg = yaml.safe_load(out.read_text())
    assert cfg["port"] == bus.port and cfg["name"] == "so101" and cfg["kinematics"] == "so101"
    assert cfg["calibration"] == [{"id": i, "homing_offset": ZERO[i], "direction": DIRECTION[i]} for i in range(1, 6)]
    assert cfg["gripper"] == {"id": 6, "closed": CLOSED, "open": OPEN}
    # limits: the swept stops (in rad, by direction) less the margin, within the twin's ranges
    twin = So101Kinematics().joint_range
    for k, i in enumerate(range(1, 6)):
        q = sorted(DIRECTION[i] * (s - ZERO[i]) * STEP for s in STOPS[i])
        assert cfg["limits"]["joint_lower"][k] == pytest.approx(max(twin[k, 0], q[0] + 0.05), abs=1e-5)
        assert cfg["limits"]["joint_upper"][k] == pytest.approx(min(twin[k, 1], q[1] - 0.05), abs=1e-5)
    assert cfg["limits"]["joint_vel_max"] == [4.71] * 5  # the base's other limits kept
    text = out.read_text()
    assert text.startswith("# Calibrated ") and "robolearn calibrate --robot so101" in text
    assert "torque_off_on_disconnect: false   # without torque the arm falls" in text  # base comments kept
    assert any("zero pose" in p for p in user.prompts) and any("swing the arm to your right, clockwise" in p for p in user.prompts)
    load_robot_config(str(out))  # a valid robot config


def test_driver_from_the_written_file_reads_the_zero_pose_as_zero(bus, tmp_path):
    out = tmp_path / "my_so101.yaml"
    _, user = run(bus, out)
    arm = make_robot(load_robot_config(str(out)), port=bus.port, torque_on_connect=False)  # moved by hand
    arm.connect()
    try:
        user.pose.update(ZERO)
        user.pose[6] = CLOSED
        s = arm.read_state()
        np.testing.assert_allclose(s.joint_pos, 0.0, atol=STEP)
        assert s.gripper == pytest.approx(0.0)
        moved = {2: 400, 3: -250}  # steps away from zero on servos 2 and 3
        bus.hand = lambda: {**ZERO, **{i: ZERO[i] + d for i, d in moved.items()}, 6: OPEN}
        expected = np.zeros(5)
        for i, d in moved.items():
            expected[i - 1] = DIRECTION[i] * d * STEP
        s = arm.read_state()
        np.testing.assert_allclose(s.joint_pos, expected, atol=STEP)
        assert s.gripper == pytest.approx(1.0)
    finally:
        arm.disconnect()


def test_leader_is_calibrated_from_its_own_base_config(bus, tmp_path):
    out = tmp_path / "leader.yaml"
    run(bus, out, robot="so101_leader")
    cfg = load_robot_config(str(out))
    assert cfg["name"] == "so101_leader" and [c["direction"] for c in cfg["calibration"]] == [DIRECTION[i] for i in range(1, 6)]
    assert cfg["limits"]["joint_vel_max"] == [10.0] * 5
    assert "rate_hz: 100                  # unused" in out.read_text()


def test_a_joint_that_does_not_move_is_refused_by_name(bus, tmp_path):
    out = tmp_path / "x.yaml"
    with pytest.raises(CalibrationError, match=r"elbow_flex \(servo 3\) did not move"):
        run(bus, out, user=User(bus, skip="elbow_flex"))
    assert not out.exists()
    with pytest.raises(CalibrationError, match=r"elbow_flex .*servo 4 \(wrist_flex\) moved \+300 steps instead"):
        run(bus, out, user=User(bus, skip="elbow_flex", instead=4))
    assert not out.exists()


def test_an_existing_file_is_kept_without_force(bus, tmp_path):
    out = tmp_path / "mine.yaml"
    out.write_text("keep me\n")
    user = User(bus)
    with pytest.raises(CalibrationError, match="already exists; pass --force"):
        run(bus, out, user=user)
    assert out.read_text() == "keep me\n" and user.prompts == []  # refused before the bus is touched
    run(bus, out, force=True)
    assert load_robot_config(str(out))["calibration"][0]["homing_offset"] == ZERO[1]


def test_missing_port_and_silent_servo_are_named(bus, tmp_path):
    with pytest.raises(DeviceError, match="/dev/ttyNOPE: no such serial port"):
        calibrate("so101", port="/dev/ttyNOPE", out=tmp_path / "a.yaml", prompt=lambda s: "", say=lambda s: None)
    bus.unplug(3)
    with pytest.raises(DeviceError, match=r"servo 3 \(elbow_flex\) .* does not answer"):
        calibrate("so101", port=bus.port, out=tmp_path / "a.yaml", prompt=lambda s: "", say=lambda s: None)
    with pytest.raises(Exception, match="calibrate needs a Feetech arm"):
        calibrate("so101_sim", port=bus.port, out=tmp_path / "a.yaml", prompt=lambda s: "", say=lambda s: None)


def test_cli_calibrate(bus, tmp_path, monkeypatch, capsys):
    from robolearn.cli import main

    user = User(bus)
    monkeypatch.setattr("builtins.input", user)
    out = tmp_path / "cli.yaml"
    assert main(["calibrate", "--robot", "so101", "--port", bus.port, "--out", str(out)]) == 0
    assert f"calibration written to {out}" in capsys.readouterr().out
    assert main(["calibrate", "--robot", "so101", "--port", bus.port, "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
