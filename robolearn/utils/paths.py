"""Locations of files shipped with robolearn (configs, MuJoCo assets), installed or from source."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent.parent


def _shipped(name: str) -> Path:
    # An installed wheel carries the folder inside the package (robolearn/_<name>); a source
    # checkout (or an editable install) has it at the repository root.
    for candidate in (_PKG / f"_{name}", _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"robolearn's '{name}' folder is missing from {_PKG} (broken install?)")


def config_dir() -> Path:
    """Directory of the shipped experiment configs (``configs/``)."""
    return _shipped("configs")


def sim_dir() -> Path:
    """Directory of the shipped MuJoCo assets (``sim/``)."""
    return _shipped("sim")


def hardware_dir() -> Path:
    """Directory of the shipped per-robot configs (``hardware/``)."""
    return _shipped("hardware")
