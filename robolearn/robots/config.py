"""Per-robot configs (``hardware/<name>.yaml``) and the driver factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from robolearn.utils.errors import ConfigError

_REQUIRED = ("driver", "rate_hz", "watchdog_timeout_s", "limits")


def load_robot_config(name_or_path: str) -> dict[str, Any]:
    """Read a robot config: a YAML path, or the name of a file in the shipped ``hardware/`` folder.

    Returns:
        The config as a plain dict.

    Raises:
        ConfigError: no such robot (the message lists the known ones), unreadable YAML, or a
            missing required key (named).
    """
    from omegaconf import OmegaConf

    from robolearn.utils.paths import hardware_dir

    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = hardware_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in hardware_dir().glob("*.yaml"))
        raise ConfigError(f"unknown robot {name_or_path!r}: no file {path}; known robots: {known}")
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as exc:  # noqa: BLE001 - any YAML problem becomes one clear error
        raise ConfigError(f"{path}: {exc}") from None
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ConfigError(f"{path}: missing key(s) {missing}")
    cfg["_path"] = str(path)
    return cfg


def _mujoco_twin(cfg: dict[str, Any], limits: dict, **overrides):
    from robolearn.robots.twin import MujocoTwin

    return MujocoTwin(task=cfg.get("task", "lift"), robot=cfg.get("robot", "Panda"), **limits, **overrides)


def _socket_twin(cfg: dict[str, Any], limits: dict, **overrides):
    from robolearn.robots.socket_twin import SocketTwin

    fault = dict(cfg.get("fault_injection") or {}) | dict(cfg.get("link") or {})
    return SocketTwin(task=cfg.get("task", "lift"), robot=cfg.get("robot", "Panda"), rate_hz=float(cfg["rate_hz"]),
                      **fault, **limits, **overrides)


def _ur_rtde(cfg: dict[str, Any], limits: dict, **overrides):
    from robolearn.robots.types import RobotLimits
    from robolearn.robots.ur import URDriver

    try:
        robot_limits = RobotLimits(**limits)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cfg.get('_path')}: limits: {exc}") from None
    servo = dict(cfg.get("servo") or {})
    return URDriver(cfg["host"], robot_limits, rate_hz=float(cfg["rate_hz"]), **servo, **overrides)


def _feetech(cfg: dict[str, Any], limits: dict, **overrides):
    from robolearn.robots.feetech import FeetechArm

    return FeetechArm.from_config(cfg, **overrides)


#: Driver name (a robot config's ``driver``) -> factory ``(cfg, limits, **overrides) -> Robot``;
#: each imports its driver's module only when used, so optional SDKs stay optional.
DRIVERS: dict[str, Callable[..., Any]] = {
    "mujoco_twin": _mujoco_twin,
    "mujoco_twin_socket": _socket_twin,
    "ur_rtde": _ur_rtde,
    "feetech": _feetech,
}


def make_robot(cfg: dict[str, Any], **overrides):
    """Build the driver a robot config names (not yet connected), from :data:`DRIVERS`.

    Raises:
        ConfigError: unknown driver (the message lists the known ones), or bad limits.
    """
    driver = cfg["driver"]
    if driver not in DRIVERS:
        raise ConfigError(f"{cfg.get('_path', 'robot config')}: unknown driver {driver!r} (known: {sorted(DRIVERS)})")
    return DRIVERS[driver](cfg, dict(cfg["limits"]), **overrides)
