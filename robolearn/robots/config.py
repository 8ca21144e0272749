"""Per-robot configs (``hardware/<name>.yaml``): each driver's schema, validation at load, and the
driver factory.

Every driver takes its own keys, declared as a dataclass (an OmegaConf structured config) in
:data:`DRIVER_SCHEMAS`. :func:`load_robot_config` merges the YAML into its driver's schema, so an
unknown key (a typo such as ``rate_hzz`` or ``limits.joint_lowr``), a value of the wrong type (a
string where a number goes) or a missing key is refused with the key's dotted path; then it checks
the values: rates, timeouts and speeds > 0, lower limits below upper ones, one joint limit per
joint (a Feetech arm's calibration entries, a UR's six joints), the calibration itself
(:func:`~robolearn.robots.feetech.check_calibration`), the cameras. All of it happens before any
driver is built or any connection opened, and every problem is one :class:`ConfigError` line
``<file>: <key>: <what is wrong>``.

Optional keys default to ``None`` in the schemas and are left out of the validated config, so the
driver's own default applies (one source of defaults: the driver classes).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Union, get_args, get_origin, get_type_hints

from omegaconf import MISSING

from robolearn.utils.errors import ConfigError


# ---------------------------------------------------------------------------------------- schemas
@dataclass
class CameraConfig:
    """One entry of ``cameras:`` (recorded as, and fed to policies as, ``<name>_image``).

    Exactly one of ``source`` (a real camera, :class:`~robolearn.teleop.cameras.OpenCVCamera`) and
    ``camera`` (a camera of the MuJoCo twin's model, rendered beside the loop:
    :class:`~robolearn.robots.cameras.RenderedCamera`; the MuJoCo twin only, in-process or over its
    socket, with width, height and
    fps given)."""

    source: Any = None                #: OpenCV device index (>= 0), device path or video file
    camera: Optional[str] = None      #: a camera of the twin's MuJoCo model (e.g. ``agentview``)
    width: Optional[int] = None       #: px, >= 1
    height: Optional[int] = None      #: px, >= 1
    fps: Optional[float] = None       #: Hz, > 0
    loop: Optional[bool] = None       #: restart a video file at its end
    #: ``[height, width]`` px: a real camera's frames resized to this (``cv2.INTER_AREA``) in its
    #: grabber thread, before recording stores them or a policy sees them (``source`` only)
    image_size: Optional[List[int]] = None


@dataclass
class RobotConfig:
    """The keys every robot config has."""

    driver: str = MISSING                 #: a key of :data:`DRIVERS`
    rate_hz: float = MISSING              #: control loop frequency (Hz), > 0
    watchdog_timeout_s: float = MISSING   #: hold when no fresh command came for this long (s), > 0
    name: Optional[str] = None
    cameras: Optional[dict[str, CameraConfig]] = None


@dataclass
class TwinLimitsConfig:
    """A twin's ``limits:`` (its joint ranges come from the MuJoCo model): :class:`~robolearn.robots.twin.MujocoTwin`."""

    workspace_lower: Optional[list[float]] = None   #: (3,) m, world frame
    workspace_upper: Optional[list[float]] = None   #: (3,) m
    eef_speed_max: Optional[float] = None           #: m/s
    eef_rot_speed_max: Optional[float] = None       #: rad/s
    gripper_speed_max: Optional[float] = None       #: opening per s


@dataclass
class MujocoTwinConfig(RobotConfig):
    """``driver: mujoco_twin``: the MuJoCo twin in this process."""

    task: Optional[str] = None        #: a robosuite task of :data:`robolearn.envs.TASKS` (so101: one its twin shows, or none)
    robot: Optional[str] = None       #: robosuite robot name, or ``so101`` (sim/so101.xml, joint-position control)
    limits: TwinLimitsConfig = MISSING


@dataclass
class LinkConfig:
    """``link:`` of the socket twin (:class:`~robolearn.robots.socket_twin.SocketTwin`)."""

    stale_after_s: Optional[float] = None     #: s, > 0
    server_realtime: Optional[bool] = None


@dataclass
class FaultInjectionConfig:
    """``fault_injection:`` of the socket twin."""

    latency_s: Optional[float] = None   #: s, >= 0
    drop_prob: Optional[float] = None   #: in [0, 1)
    seed: Optional[int] = None          #: >= 0


@dataclass
class SocketTwinConfig(MujocoTwinConfig):
    """``driver: mujoco_twin_socket``: the twin in its own process, over a local socket."""

    link: Optional[LinkConfig] = None
    fault_injection: Optional[FaultInjectionConfig] = None


@dataclass
class ArmLimitsConfig:
    """A real arm's ``limits:`` (:class:`~robolearn.robots.types.RobotLimits`)."""

    joint_lower: list[float] = MISSING       #: (n_joints,) rad
    joint_upper: list[float] = MISSING       #: (n_joints,) rad
    joint_vel_max: list[float] = MISSING     #: (n_joints,) rad/s
    workspace_lower: list[float] = MISSING   #: (3,) m, base frame
    workspace_upper: list[float] = MISSING   #: (3,) m
    eef_speed_max: float = MISSING           #: m/s
    eef_rot_speed_max: float = MISSING       #: rad/s
    gripper_speed_max: Optional[float] = None   #: opening per s


@dataclass
class ServoConfig:
    """``servo:`` of a UR (``servoJ``/``servoL`` parameters, :class:`~robolearn.robots.ur.URDriver`)."""

    lookahead_time: Optional[float] = None   #: s, in ur.LOOKAHEAD_RANGE_S
    gain: Optional[float] = None             #: in ur.GAIN_RANGE


@dataclass
class URConfig(RobotConfig):
    """``driver: ur_rtde``: a Universal Robots arm over RTDE."""

    host: str = MISSING
    servo: Optional[ServoConfig] = None
    limits: ArmLimitsConfig = MISSING


@dataclass
class JointCalibrationConfig:
    """One entry of a Feetech arm's ``calibration:`` (:class:`~robolearn.robots.feetech.JointCalibration`)."""

    id: int = MISSING               #: servo id, 0..253
    homing_offset: int = MISSING    #: steps (0..4095) at the joint's zero
    direction: Optional[int] = None  #: +1 or -1


@dataclass
class GripperConfig:
    """A Feetech arm's ``gripper:`` servo."""

    id: int = MISSING
    closed: int = MISSING   #: steps
    open: int = MISSING     #: steps


@dataclass
class FeetechConfig(RobotConfig):
    """``driver: feetech``: an SO-100 class arm on a Feetech serial bus (:class:`~robolearn.robots.feetech.FeetechArm`)."""

    port: str = MISSING
    baudrate: Optional[int] = None
    torque_off_on_disconnect: Optional[bool] = None
    #: one :class:`JointCalibrationConfig` per arm joint (merged one by one, so errors name the entry)
    calibration: list[Any] = MISSING
    gripper: Optional[GripperConfig] = None
    limits: ArmLimitsConfig = MISSING
    #: kinematic model of the EEF pose (``so101``: sim/so101.xml's forward kinematics); unset: zeros
    kinematics: Optional[str] = None


#: Driver name -> the schema of its robot config.
DRIVER_SCHEMAS: dict[str, type] = {
    "mujoco_twin": MujocoTwinConfig,
    "mujoco_twin_socket": SocketTwinConfig,
    "ur_rtde": URConfig,
    "feetech": FeetechConfig,
}


# ------------------------------------------------------------------------------------- validation
def _key(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key and not key.startswith("[") else f"{prefix}{key}"


def _merge(schema: type, raw: Any, where: str, prefix: str = "", label: str = "") -> dict[str, Any]:
    """``raw`` merged into the structured config ``schema``, as a plain dict (unset optional keys ``None``).

    Raises:
        ConfigError: ``raw`` is not a mapping, an unknown key, a value of the wrong type, or
            missing keys; named as ``<where>: <prefix>.<key>: ...``.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: {prefix or 'top level'}: expected a mapping of keys to values, got {raw!r}")
    for name, hint in get_type_hints(schema).items():  # OmegaConf names no key for these
        value = raw.get(name)
        inner = [a for a in get_args(hint) if a is not type(None)]
        kind = inner[0] if get_origin(hint) is Union and len(inner) == 1 else hint
        want = list if get_origin(kind) is list else Mapping if is_dataclass(kind) or get_origin(kind) is dict else None
        if value is not None and want is not None and not isinstance(value, want):
            raise ConfigError(f"{where}: {_key(prefix, name)}: expected a {'list' if want is list else 'mapping'}, "
                              f"got {value!r}")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), dict(raw))
    except ConfigKeyError as exc:
        full = _key(prefix, exc.full_key)
        parent = full.rpartition(".")[0] or label or prefix
        known = sorted(f.name for f in fields(exc.object_type)) if is_dataclass(exc.object_type) else []
        raise ConfigError(f"{where}: {full}: unknown key; {parent} takes {known}") from None
    except OmegaConfBaseException as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{where}: {_key(prefix, exc.full_key) or 'top level'}: {msg}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{where}: missing key(s) {[_key(prefix, m) for m in missing]}")
    return OmegaConf.to_container(cfg)


def _number(where: str, key: str, value: Any, lo: float = 0.0, lo_ok: bool = False,
            hi: float = math.inf, hi_ok: bool = True, unit: str = "") -> None:
    """Refuse ``value`` outside ``lo < value <= hi`` (``<=`` at ``lo`` where ``lo_ok``, ``<`` at ``hi`` unless ``hi_ok``)."""
    if value is None:
        return
    ok = math.isfinite(value) and (value >= lo if lo_ok else value > lo) and (value <= hi if hi_ok else value < hi)
    if not ok:
        span = (f"{'>=' if lo_ok else '>'} {lo:g}" if hi == math.inf else
                f"in {'[' if lo_ok else '('}{lo:g}, {hi:g}{']' if hi_ok else ')'}")
        raise ConfigError(f"{where}: {key}: must be a finite number {span}{f' ({unit})' if unit else ''}, got {value!r}")


def _check_cameras(where: str, cameras: dict[str, Any] | None, driver: str | None = None) -> None:
    """Value checks of a ``cameras:`` section; ``driver`` (when known) decides whether rendered
    (``camera:``) entries are allowed: only on the MuJoCo twin (in-process or over its socket),
    whose state they render."""
    for name, cam in (cameras or {}).items():
        key = f"cameras.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_]+", str(name)):
            raise ConfigError(f"{where}: {key}: a camera name is recorded as '<name>_image': use letters, digits, _")
        src, rendered = cam.get("source"), cam.get("camera")
        if (src is None) == (rendered is None):
            raise ConfigError(f"{where}: {key}: give exactly one of 'source' (a real camera: device index, path or "
                              f"video file) and 'camera' (a camera of the twin's MuJoCo model), got "
                              f"{'both' if src is not None else 'neither'}")
        for dim in ("width", "height"):
            _number(where, f"{key}.{dim}", cam.get(dim), lo=1, lo_ok=True, unit="px")
        _number(where, f"{key}.fps", cam.get("fps"), unit="Hz")
        if rendered is not None:
            if driver is not None and driver not in ("mujoco_twin", "mujoco_twin_socket"):
                raise ConfigError(f"{where}: {key}.camera: rendered cameras need the MuJoCo twin (driver: "
                                  f"mujoco_twin or mujoco_twin_socket), whose state they render; driver "
                                  f"{driver!r} has none (give a real camera's 'source' instead)")
            if not str(rendered).strip():
                raise ConfigError(f"{where}: {key}.camera: empty (a camera name of the twin's model)")
            unset = [k for k in ("width", "height", "fps") if cam.get(k) is None]
            if unset:
                raise ConfigError(f"{where}: {key}: a rendered camera needs {unset} (the size and rate the "
                                  "policy was trained on, e.g. width: 84, height: 84, fps: 20)")
            if cam.get("loop") is not None:
                raise ConfigError(f"{where}: {key}.loop: only a video file 'source' loops")
            if cam.get("image_size") is not None:
                raise ConfigError(f"{where}: {key}.image_size: a rendered camera renders at width x height; "
                                  "image_size resizes a real camera's ('source') frames")
            continue
        size = cam.get("image_size")
        if size is not None and (len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                            for v in size)):
            raise ConfigError(f"{where}: {key}.image_size: must be [height, width] in px, each an integer >= 1, "
                              f"got {list(size)!r}")
        if isinstance(src, bool) or not (isinstance(src, int) and src >= 0 or isinstance(src, str) and src):
            raise ConfigError(f"{where}: {key}.source: must be a device index >= 0, a device path or a video file, "
                              f"got {src!r}")


def _check_limits(where: str, limits: dict[str, Any], n_joints: int | None = None) -> None:
    from robolearn.robots.types import check_limits

    try:
        check_limits({k: v for k, v in limits.items() if v is not None}, prefix="limits.", n_joints=n_joints)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_twin(where: str, cfg: dict[str, Any]) -> None:
    from robolearn.envs import TASKS

    tasks = sorted(k for k, spec in TASKS.items() if spec.kind == "robosuite")
    if str(cfg["robot"]).lower() == "so101":
        so101_tasks = sorted(k for k, spec in TASKS.items() if spec.twin_robot == "so101")
        if cfg["task"] is not None and cfg["task"] not in so101_tasks:
            raise ConfigError(f"{where}: task: the so101 twin shows one of {so101_tasks} (or none: the arm alone); "
                              f"got {cfg['task']!r}")
    elif cfg["task"] is not None and cfg["task"] not in tasks:
        raise ConfigError(f"{where}: task: the twin simulates a robosuite task, one of {tasks}; got {cfg['task']!r}")
    _check_limits(where, cfg["limits"])
    link, fault = cfg.get("link") or {}, cfg.get("fault_injection") or {}
    _number(where, "link.stale_after_s", link.get("stale_after_s"), unit="s")
    _number(where, "fault_injection.latency_s", fault.get("latency_s"), lo_ok=True, unit="s")
    _number(where, "fault_injection.drop_prob", fault.get("drop_prob"), lo_ok=True, hi=1.0, hi_ok=False)
    if fault.get("seed") is not None and fault["seed"] < 0:
        raise ConfigError(f"{where}: fault_injection.seed: must be >= 0, got {fault['seed']}")


def _check_ur(where: str, cfg: dict[str, Any]) -> None:
    from robolearn.robots import ur

    if not cfg["host"].strip():
        raise ConfigError(f"{where}: host: empty (the robot's IP address)")
    servo = cfg.get("servo") or {}
    _number(where, "servo.lookahead_time", servo.get("lookahead_time"), lo=ur.LOOKAHEAD_RANGE_S[0], lo_ok=True,
            hi=ur.LOOKAHEAD_RANGE_S[1], unit="s")
    _number(where, "servo.gain", servo.get("gain"), lo=ur.GAIN_RANGE[0], lo_ok=True, hi=ur.GAIN_RANGE[1])
    _check_limits(where, cfg["limits"], n_joints=ur.N_JOINTS)


def _check_feetech(where: str, cfg: dict[str, Any]) -> None:
    from robolearn.robots.feetech import JointCalibration, check_calibration

    if not cfg["port"].strip():
        raise ConfigError(f"{where}: port: empty (the serial port, e.g. /dev/ttyACM0)")
    if cfg["baudrate"] is not None and cfg["baudrate"] <= 0:
        raise ConfigError(f"{where}: baudrate: must be > 0, got {cfg['baudrate']}")
    cfg["calibration"] = [_drop_none(_merge(JointCalibrationConfig, c, where, f"calibration[{i}]"))
                          for i, c in enumerate(cfg["calibration"])]
    try:
        check_calibration([JointCalibration(**c) for c in cfg["calibration"]], cfg.get("gripper"))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    _check_limits(where, cfg["limits"], n_joints=len(cfg["calibration"]))
    if cfg.get("kinematics") is not None and cfg["kinematics"] not in ("so101",):
        raise ConfigError(f"{where}: kinematics: unknown model {cfg['kinematics']!r} (known: ['so101'])")
    if cfg.get("kinematics") == "so101" and len(cfg["calibration"]) != 5:
        raise ConfigError(f"{where}: kinematics: so101 has 5 arm joints, the calibration lists {len(cfg['calibration'])}")


_CHECKS: dict[str, Callable[[str, dict], None]] = {
    "mujoco_twin": _check_twin,
    "mujoco_twin_socket": _check_twin,
    "ur_rtde": _check_ur,
    "feetech": _check_feetech,
}


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def validate_robot_config(raw: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
    """Check a robot config against its driver's schema (:data:`DRIVER_SCHEMAS`) and value rules.

    Args:
        raw: the config as read from YAML (a ``_path`` key, as :func:`load_robot_config` adds, is
            kept and used in messages).
        where: the file to name in messages (default: ``raw["_path"]``, else ``"robot config"``).

    Returns:
        A plain dict: the given keys, typed (ints, floats, lists); unset optional keys left out.
        Validating it again gives it back unchanged.

    Raises:
        ConfigError: one line ``<file>: <key>: <problem>``: unknown driver, unknown key (with the
            keys that are known there), wrong type, missing key, a rate, timeout, speed or size
            that is not > 0, lower >= upper limits, limits for another number of joints, a bad
            calibration or camera.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where or 'robot config'}: expected a mapping of keys to values, got {raw!r}")
    where = where or raw.get("_path") or "robot config"
    raw = {k: v for k, v in raw.items() if k != "_path"}
    driver = raw.get("driver")
    if driver is None:
        raise ConfigError(f"{where}: missing key 'driver' (one of {sorted(DRIVER_SCHEMAS)})")
    if driver not in DRIVER_SCHEMAS:
        raise ConfigError(f"{where}: unknown driver {driver!r} (known: {sorted(DRIVER_SCHEMAS)})")
    cfg = _merge(DRIVER_SCHEMAS[driver], raw, where, label=f"driver {driver!r}")
    _number(where, "rate_hz", cfg["rate_hz"], unit="Hz")
    _number(where, "watchdog_timeout_s", cfg["watchdog_timeout_s"], unit="s")
    _check_cameras(where, cfg.get("cameras"), driver)
    _CHECKS[driver](where, cfg)
    out = _drop_none(cfg)
    if where != "robot config":
        out["_path"] = where
    return out


def check_cameras(cameras: Mapping[str, Any] | None, where: str = "cameras") -> dict[str, dict[str, Any]]:
    """Check a ``cameras:`` section (``{name: {source | camera, width, height, fps, loop}}``) on its own
    (rendered ``camera:`` entries allowed: the driver is not known here).

    Returns:
        ``{name: {key: value}}`` with unset keys left out.

    Raises:
        ConfigError: as :func:`validate_robot_config`, naming ``where`` and ``cameras.<name>.<key>``.
    """
    if cameras is not None and not isinstance(cameras, Mapping):
        raise ConfigError(f"{where}: cameras: expected a mapping of camera names to settings, got {cameras!r}")
    out = {name: _merge(CameraConfig, cam, where, f"cameras.{name}") for name, cam in (cameras or {}).items()}
    _check_cameras(where, out)
    return _drop_none(out)


def load_robot_config(name_or_path: str) -> dict[str, Any]:
    """Read and validate a robot config: a YAML path, or the name of a file in the shipped ``hardware/`` folder.

    Returns:
        The validated config (see :func:`validate_robot_config`) with its file as ``_path``.

    Raises:
        ConfigError: no such robot (the message lists the known ones), unreadable YAML, or any
            problem :func:`validate_robot_config` finds (file and key named). Nothing is built or
            connected before.
    """
    from omegaconf import OmegaConf

    from robolearn.utils.paths import hardware_dir

    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):  # a name; a YAML path that is not there is named as it is
        path = hardware_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in hardware_dir().glob("*.yaml"))
        raise ConfigError(f"unknown robot {name_or_path!r}: no file {path}; known robots: {known}")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as exc:  # noqa: BLE001 - any YAML problem becomes one clear error
        msg = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise ConfigError(f"{path}: cannot read YAML: {msg}") from None
    return validate_robot_config(raw, str(path))


def _mujoco_twin(cfg: dict[str, Any], limits: dict, **overrides):
    from robolearn.robots.twin import MujocoTwin

    if str(cfg.get("robot", "")).lower() == "so101":
        from robolearn.robots.so101_twin import So101Twin

        return So101Twin(task=cfg.get("task"), **limits, **overrides)
    return MujocoTwin(task=cfg.get("task", "lift"), robot=cfg.get("robot", "Panda"), **limits, **overrides)


def _socket_twin(cfg: dict[str, Any], limits: dict, **overrides):
    from robolearn.robots.socket_twin import SocketTwin

    fault = dict(cfg.get("fault_injection") or {}) | dict(cfg.get("link") or {})
    so101 = str(cfg.get("robot", "")).lower() == "so101"  # the so101 twin: no task is the arm alone
    return SocketTwin(task=cfg.get("task", None if so101 else "lift"), robot=cfg.get("robot", "Panda"),
                      rate_hz=float(cfg["rate_hz"]), **fault, **limits, **overrides)


def _ur_rtde(cfg: dict[str, Any], limits: dict, **overrides):
    from robolearn.robots.types import RobotLimits
    from robolearn.robots.ur import URDriver

    servo = dict(cfg.get("servo") or {})
    return URDriver(cfg["host"], RobotLimits(**limits), rate_hz=float(cfg["rate_hz"]), **servo, **overrides)


def _feetech(cfg: dict[str, Any], limits: dict, **overrides):
    from robolearn.robots.feetech import FeetechArm

    return FeetechArm.from_config(cfg, **overrides)


#: Driver name (a robot config's ``driver``) -> factory ``(cfg, limits, **overrides) -> Robot``;
#: each imports its driver's module only when used, so optional SDKs stay optional. A driver has
#: its schema in :data:`DRIVER_SCHEMAS` and its value checks in ``_CHECKS`` too.
DRIVERS: dict[str, Callable[..., Any]] = {
    "mujoco_twin": _mujoco_twin,
    "mujoco_twin_socket": _socket_twin,
    "ur_rtde": _ur_rtde,
    "feetech": _feetech,
}


def make_robot(cfg: dict[str, Any], **overrides):
    """Build the driver a robot config names (not yet connected), from :data:`DRIVERS`; the config
    is validated first (:func:`validate_robot_config`; a loaded one passes unchanged).

    Raises:
        ConfigError: unknown driver (the message lists the known ones), or any invalid key.
    """
    cfg = validate_robot_config(cfg)
    return DRIVERS[cfg["driver"]](cfg, dict(cfg["limits"]), **overrides)
