"""Robot configs (hardware/*.yaml) and teleop options are checked at load: every bad value ends in
one ConfigError line naming the file and the key, before any driver is built or connection opened."""

import copy
import multiprocessing
import re

import pytest
import yaml

from robolearn.robots import config as robot_config
from robolearn.robots.config import DRIVER_SCHEMAS, DRIVERS, load_robot_config, validate_robot_config
from robolearn.utils.errors import ConfigError
from robolearn.utils.paths import hardware_dir

SHIPPED = sorted(p.stem for p in hardware_dir().glob("*.yaml"))
DELETE = object()


def shipped(robot: str) -> dict:
    """A shipped config as its YAML says it (not validated)."""
    return yaml.safe_load((hardware_dir() / f"{robot}.yaml").read_text())


def edited(robot: str, key: str, value) -> dict:
    """``robot``'s shipped config with the dotted ``key`` (list entries by index) set to ``value`` or deleted."""
    cfg = copy.deepcopy(shipped(robot))
    *parents, last = [int(k) if k.isdigit() else k for k in key.split(".")]
    node = cfg
    for k in parents:
        node = node[k]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return cfg


def write(tmp_path, cfg) -> str:
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(cfg) if not isinstance(cfg, str) else cfg)
    return str(path)


CAL4 = [{"id": i, "homing_offset": 2048, "direction": 1} for i in range(1, 5)]

# (shipped robot, dotted key, new value or DELETE, what the message says after "<file>: ")
BAD = [
    # unknown keys, per driver: each names the key and the keys known there
    ("so100", "rate_hzz", 100, r"rate_hzz: unknown key; driver 'feetech' takes \[.*'rate_hz'"),
    ("so100", "limits.joint_lowr", [0.0] * 5, r"limits\.joint_lowr: unknown key; limits takes \[.*'joint_lower'"),
    ("so100", "calibration.2.ofset", 3, r"calibration\[2\]\.ofset: unknown key; calibration\[2\] takes "),
    ("so100", "gripper.opn", 2800, r"gripper\.opn: unknown key; gripper takes \[.*'open'"),
    ("so100", "host", "10.0.0.1", r"host: unknown key; driver 'feetech' takes"),
    ("ur5e", "servo.gainn", 300, r"servo\.gainn: unknown key; servo takes \['gain', 'lookahead_time'\]"),
    ("ur5e", "calibration", CAL4, r"calibration: unknown key; driver 'ur_rtde' takes"),
    ("sim", "limits.joint_lower", [0.0] * 7, r"limits\.joint_lower: unknown key; limits takes \[.*'workspace_lower'"),
    ("sim", "link", {"server_realtime": True}, r"link: unknown key; driver 'mujoco_twin' takes"),
    ("sim_socket", "link.stale_after", 0.01, r"link\.stale_after: unknown key; link takes"),
    ("sim_socket", "fault_injection.latency", 0.01, r"fault_injection\.latency: unknown key"),
    ("sim", "cameras", {"wrist": {"source": 0, "fsp": 30}}, r"cameras\.wrist\.fsp: unknown key; cameras\.wrist takes"),
    # lower >= upper
    ("so100", "limits.joint_lower.0", 3.0, r"limits\.joint_lower must be below limits\.joint_upper .*joint_lower\[0\] = 3"),
    ("ur5e", "limits.joint_upper.2", -3.141, r"limits\.joint_lower must be below limits\.joint_upper .*\[2\]"),
    ("ur5e", "limits.workspace_lower.2", 0.9, r"limits\.workspace_lower must be below limits\.workspace_upper .*\[2\] = 0\.9"),
    ("sim", "limits.workspace_upper.0", -0.45, r"limits\.workspace_lower must be below limits\.workspace_upper"),
    ("so100", "gripper.open", 2000, r"gripper\.open: must differ from gripper\.closed"),
    # wrong lengths
    ("so100", "limits.joint_upper", [1.0] * 4, r"limits\.joint_upper: need one entry per joint \(5\), got 4"),
    ("so100", "calibration", CAL4, r"limits\.joint_lower, limits\.joint_upper, limits\.joint_vel_max: need one entry "
                                   r"per joint \(4\)"),
    ("ur5e", "limits.joint_vel_max", [1.0] * 7, r"limits\.joint_vel_max: need one entry per joint \(6\), got 7"),
    ("sim_socket", "limits.workspace_lower", [0.0, 0.0], r"limits\.workspace_lower: must have 3 entries"),
    # non-positive rates, timeouts, speeds, sizes
    ("so100", "rate_hz", 0, r"rate_hz: must be a finite number > 0 \(Hz\), got 0\.0"),
    ("sim", "rate_hz", -500, r"rate_hz: must be a finite number > 0"),
    ("sim", "watchdog_timeout_s", -0.1, r"watchdog_timeout_s: must be a finite number > 0 \(s\)"),
    ("ur5e", "watchdog_timeout_s", 0, r"watchdog_timeout_s: must be a finite number > 0"),
    ("ur5e", "limits.eef_speed_max", 0, r"limits\.eef_speed_max: must be a finite number > 0"),
    ("so100", "limits.joint_vel_max.3", 0.0, r"limits\.joint_vel_max: must be > 0 for every joint, got joint_vel_max\[3\]"),
    ("sim", "limits.gripper_speed_max", -1.0, r"limits\.gripper_speed_max: must be a finite number > 0"),
    ("sim", "limits.eef_rot_speed_max", float("inf"), r"limits\.eef_rot_speed_max: must be a finite number > 0"),
    ("sim_socket", "link.stale_after_s", 0.0, r"link\.stale_after_s: must be a finite number > 0 \(s\)"),
    ("sim", "cameras", {"wrist": {"source": 0, "fps": 0}}, r"cameras\.wrist\.fps: must be a finite number > 0 \(Hz\)"),
    ("sim", "cameras", {"wrist": {"source": 0, "width": 0}}, r"cameras\.wrist\.width: must be a finite number >= 1"),
    ("so100", "baudrate", 0, r"baudrate: must be > 0"),
    # other ranges
    ("ur5e", "servo.gain", 5000, r"servo\.gain: must be a finite number in \[100, 2000\]"),
    ("ur5e", "servo.lookahead_time", 0.5, r"servo\.lookahead_time: must be a finite number in \[0\.03, 0\.2\]"),
    ("sim_socket", "fault_injection.drop_prob", 1.5, r"fault_injection\.drop_prob: must be a finite number in \[0, 1\)"),
    ("sim_socket", "fault_injection.latency_s", -0.01, r"fault_injection\.latency_s: must be a finite number >= 0"),
    ("sim", "task", "pusht", r"task: the twin simulates a robosuite task, one of \['can', 'lift', 'square'\]"),
    # calibration
    ("so100", "calibration", DELETE, r"missing key\(s\) \['calibration'\]"),
    ("so100", "calibration", [], r"calibration: no joints"),
    ("so100", "calibration.1.id", DELETE, r"missing key\(s\) \['calibration\[1\]\.id'\]"),
    ("so100", "calibration.1.homing_offset", DELETE, r"missing key\(s\) \['calibration\[1\]\.homing_offset'\]"),
    ("so100", "calibration.1.homing_offset", 4096, r"calibration\[1\]\.homing_offset: must be an integer in 0\.\.4095"),
    ("so100", "calibration.1.homing_offset", -1, r"calibration\[1\]\.homing_offset: must be an integer in 0\.\.4095"),
    ("so100", "calibration.4.direction", 0, r"calibration\[4\]\.direction: must be \+1 or -1, got 0"),
    ("so100", "calibration.3.id", 1, r"calibration\[3\]\.id: servo id 1 is already calibration\[0\]\.id"),
    ("so100", "gripper.id", 2, r"gripper\.id: servo id 2 is already calibration\[1\]\.id"),
    ("so100", "calibration.0.id", 254, r"calibration\[0\]\.id: must be an integer in 0\.\.253"),
    ("so100", "gripper.closed", DELETE, r"missing key\(s\) \['gripper\.closed'\]"),
    ("so100", "gripper.open", 4200, r"gripper\.open: must be an integer in 0\.\.4095"),
    # wrong types
    ("so100", "rate_hz", "fast", r"rate_hz: Value 'fast' of type 'str' could not be converted to Float"),
    ("so100", "limits.joint_lower.1", "x", r"limits\.joint_lower\[1\]: Value 'x' .*Float"),
    ("so100", "calibration.0.homing_offset", "zero", r"calibration\[0\]\.homing_offset: Value 'zero' .*Integer"),
    ("so100", "calibration.0.homing_offset", 2048.5, r"calibration\[0\]\.homing_offset: Value '2048\.5' .*Integer"),
    ("so100", "torque_off_on_disconnect", "maybe", r"torque_off_on_disconnect: Value 'maybe' is not a valid bool"),
    ("so100", "limits", "tight", r"limits: expected a mapping, got 'tight'"),
    ("so100", "calibration", {"id": 1, "homing_offset": 2048}, r"calibration: expected a list"),
    ("so100", "calibration.0", 7, r"calibration\[0\]: expected a mapping of keys to values, got 7"),
    ("sim", "cameras", [0], r"cameras: expected a mapping"),
    ("sim", "cameras", {"wrist": {"source": -1}}, r"cameras\.wrist\.source: must be a device index >= 0"),
    ("sim", "cameras", {"wrist": {"source": [0]}}, r"cameras\.wrist\.source: must be a device index >= 0"),
    ("sim", "cameras", {"left wrist": {"source": 0}}, r"cameras\.left wrist: a camera name is recorded as '<name>_image'"),
    ("ur5e", "host", "", r"host: empty"),
    ("so100", "port", " ", r"port: empty"),
    # missing keys and drivers
    ("ur5e", "host", DELETE, r"missing key\(s\) \['host'\]"),
    ("ur5e", "limits.joint_lower", DELETE, r"missing key\(s\) \['limits\.joint_lower'\]"),
    ("sim", "limits", DELETE, r"missing key\(s\) \['limits'\]"),
    ("so100", "rate_hz", DELETE, r"missing key\(s\) \['rate_hz'\]"),
    ("sim", "watchdog_timeout_s", None, r"watchdog_timeout_s: .*None"),
    ("sim", "driver", "mujoco", r"unknown driver 'mujoco' \(known: \[.*'mujoco_twin'"),
    ("sim", "driver", DELETE, r"missing key 'driver'"),
]


@pytest.mark.parametrize("robot,key,value,message", BAD, ids=[f"{r}:{k}={'DELETE' if v is DELETE else v}"
                                                                  for r, k, v, _ in BAD])
def test_a_bad_value_names_the_file_and_the_key(tmp_path, robot, key, value, message):
    path = write(tmp_path, edited(robot, key, value))
    with pytest.raises(ConfigError, match="^" + re.escape(path) + ": " + message):
        load_robot_config(path)


@pytest.mark.parametrize("text,message", [
    ("driver: feetech\nrate_hz: [1, 2\n", r"cannot read YAML"),
    ("- driver: feetech\n", r"expected a mapping of keys to values"),
    ("", r"missing key 'driver'"),
])
def test_unreadable_yaml_is_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="^" + re.escape(path) + ": " + message) as info:
        load_robot_config(path)
    assert "\n" not in str(info.value)


def test_nan_in_yaml_is_refused(tmp_path):
    text = (hardware_dir() / "sim.yaml").read_text().replace("eef_speed_max: 1.0", "eef_speed_max: .nan")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(path) + r": limits\.eef_speed_max: must be a finite number > 0"):
        load_robot_config(path)


@pytest.mark.parametrize("robot", SHIPPED)
def test_every_shipped_config_loads_typed_and_stable(robot):
    cfg = load_robot_config(robot)
    assert cfg["_path"].endswith(f"{robot}.yaml") and cfg["driver"] in DRIVERS
    assert isinstance(cfg["rate_hz"], float) and cfg["rate_hz"] > 0
    assert validate_robot_config(cfg) == cfg  # a loaded config validates to itself (make_robot checks again)
    raw = shipped(robot)
    assert {k for k in raw} <= set(cfg)  # nothing given is dropped


def test_shipped_configs_keep_their_comments():
    for robot in SHIPPED:
        text = (hardware_dir() / f"{robot}.yaml").read_text()
        assert text.startswith("# ") and text.count("#") >= 3, robot


def test_every_driver_has_a_schema():
    assert set(DRIVER_SCHEMAS) == set(DRIVERS) == set(robot_config._CHECKS)


def test_optional_keys_left_out_keep_the_driver_defaults(tmp_path):
    cfg = edited("so100", "baudrate", DELETE)
    del cfg["calibration"][0]["direction"]
    loaded = load_robot_config(write(tmp_path, cfg))
    assert "baudrate" not in loaded and "direction" not in loaded["calibration"][0]
    assert loaded["calibration"][1]["direction"] == 1


def test_feetech_from_config_validates_before_opening_the_bus(tmp_path):
    from robolearn.robots.feetech import FeetechArm

    cfg = edited("so100", "calibration.1.direction", 3)
    cfg["_path"] = "so100_copy.yaml"
    with pytest.raises(ConfigError, match=r"^so100_copy\.yaml: calibration\[1\]\.direction: must be \+1 or -1"):
        FeetechArm.from_config(cfg, port="/nonexistent/tty")
    with pytest.raises(ConfigError, match=r"driver: 'ur_rtde' is not a Feetech arm"):
        FeetechArm.from_config(shipped("ur5e"))


def test_make_robot_validates_a_hand_made_config():
    from robolearn.robots.config import make_robot

    with pytest.raises(ConfigError, match=r"^robot config: limits\.workspace_lower must be below"):
        make_robot(edited("sim", "limits.workspace_lower", [0.5, 0.5, 1.5]))


def test_limit_checks_shared_with_robot_limits_name_the_entry():
    import numpy as np

    from robolearn.robots.types import RobotLimits

    with pytest.raises(ValueError, match=r"joint_lower must be below joint_upper .*joint_lower\[1\] = 2"):
        RobotLimits(np.array([0.0, 2.0]), np.ones(2), np.ones(2), np.zeros(3), np.ones(3), 1.0, 1.0)
    with pytest.raises(ValueError, match=r"joint_lower, joint_upper, joint_vel_max must have the same length"):
        RobotLimits(np.zeros(2), np.ones(3), np.ones(2), np.zeros(3), np.ones(3), 1.0, 1.0)


# ------------------------------------------------------------------ record / deploy fail before connecting
@pytest.fixture
def no_driver_built(monkeypatch):
    """Every driver factory fails the test if called; returns the list of calls."""
    calls = []
    for name in list(DRIVERS):
        monkeypatch.setitem(DRIVERS, name, lambda *a, _n=name, **k: calls.append(_n) or pytest.fail(f"{_n} built"))
    return calls


def bad_socket_yaml(tmp_path):
    return write(tmp_path, edited("sim_socket", "rate_hzz", 500))


def test_record_with_a_bad_robot_config_opens_nothing(tmp_path, no_driver_built):
    from robolearn.apps.record import record_with_device

    before = set(multiprocessing.active_children())
    path = bad_socket_yaml(tmp_path)
    # the keyboard would fail first (stdin is no terminal under pytest) if it were opened before the check
    with pytest.raises(ConfigError, match="^" + re.escape(path) + r": rate_hzz: unknown key"):
        record_with_device(path, "keyboard", tmp_path / "out.zarr")
    assert set(multiprocessing.active_children()) == before  # no twin server process
    assert not (tmp_path / "out.zarr").exists() and no_driver_built == []


@pytest.mark.parametrize("kwargs,message", [
    ({"fps": 0}, r"^--fps: must be a finite number > 0 \(Hz\), got 0"),
    ({"fps": -20.0}, r"^--fps: must be a finite number > 0"),
    ({"fps": float("nan")}, r"^--fps: must be a finite number > 0"),
    ({"fps": 30.0}, r"^--fps: the recording rate 30 Hz must divide the loop rate, .*sim\.yaml: rate_hz: 500 Hz"),
    ({"fps": 1000.0}, r"^--fps: the recording rate 1000 Hz must divide the loop rate"),
    ({"seed_start": -1}, r"^--seed-start: must be an integer >= 0, got -1"),
    ({"max_steps": 0}, r"^max_steps: must be an integer >= 1, got 0"),
    ({"duration_s": 0.0}, r"^duration_s: must be a finite number > 0 \(s\)"),
])
def test_record_options_are_checked_before_anything_opens(tmp_path, no_driver_built, kwargs, message):
    from robolearn.apps.record import record, record_with_device

    with pytest.raises(ConfigError, match=message):
        record_with_device("sim", "keyboard", tmp_path / "out.zarr", **kwargs)
    with pytest.raises(ConfigError, match=message):
        record("sim", object(), tmp_path / "out.zarr", **kwargs)
    assert not (tmp_path / "out.zarr").exists() and no_driver_built == []


def test_record_unknown_device_is_a_config_error(tmp_path, no_driver_built):
    from robolearn.apps.record import record_with_device

    with pytest.raises(ConfigError, match=r"^--device: unknown teleop device 'joystick'; known: \['gamepad', 'keyboard'"):
        record_with_device("sim", "joystick", tmp_path / "out.zarr")


def test_deploy_with_a_bad_robot_config_starts_no_process(tmp_path, no_driver_built):
    from robolearn.apps.deploy import deploy

    before = set(multiprocessing.active_children())
    path = bad_socket_yaml(tmp_path)
    with pytest.raises(ConfigError, match="^" + re.escape(path) + r": rate_hzz: unknown key"):
        deploy(tmp_path / "no_checkpoint", robot=path, episodes=1, realtime=False, progress=False)
    assert set(multiprocessing.active_children()) == before and no_driver_built == []


@pytest.mark.parametrize("command", ["record", "deploy"])
def test_the_cli_prints_one_error_line(tmp_path, capsys, no_driver_built, command):
    from robolearn.cli import main

    path = write(tmp_path, edited("so100", "limits.joint_lower.0", 2.5))
    argv = {"record": ["record", "--robot", path, "--out", str(tmp_path / "o.zarr")],
            "deploy": ["deploy", str(tmp_path / "ckpt"), "--robot", path]}[command]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"robolearn: error: {path}: limits.joint_lower must be below"), err


def test_cameras_are_checked_before_any_opens(tmp_path):
    from robolearn.teleop.cameras import make_cameras

    video = tmp_path / "missing.avi"  # would raise DeviceError if opening were tried first
    with pytest.raises(ConfigError, match=r"^rig\.yaml: cameras\.b\.fps: must be a finite number > 0"):
        make_cameras({"a": {"source": str(video)}, "b": {"source": 0, "fps": -1}}, "rig.yaml")
    assert make_cameras(None) == {} and make_cameras({}) == {}
