"""Experiment configs: composable YAML under ``configs/``, read with Hydra's compose API.

``load_config(["task=lift", "train.steps=500"])`` returns an OmegaConf ``DictConfig`` in struct mode:
reading or overriding a key that does not exist is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from robolearn.utils.errors import ConfigError
from robolearn.utils.paths import config_dir


def load_config(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with its defaults and command-line overrides.

    Args:
        overrides: Hydra override strings: ``group=option`` picks a group file (``task=lift``),
            ``a.b=value`` sets a value, ``+a.b=value`` adds a new key.

    Returns:
        The composed config, resolved, in struct mode.

    Raises:
        ConfigError: an unknown key or group option, a malformed override, or an unresolvable
            interpolation; the message names the override at fault.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = compose(config_name=config_name, overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except Exception as exc:  # Hydra raises several exception types; all mean "bad config input"
        msg = str(exc).strip().splitlines()
        raise ConfigError(" ".join(line.strip() for line in msg if line.strip()) or type(exc).__name__) from None
    finally:
        GlobalHydra.instance().clear()
    OmegaConf.set_struct(cfg, True)
    return cfg


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML."""
    Path(path).write_text(OmegaConf.to_yaml(cfg))


def config_from_yaml(path: str | Path) -> DictConfig:
    """Read a YAML config written by :func:`save_config`.

    Raises:
        ConfigError: missing or unparsable file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:
        raise ConfigError(f"{path}: cannot parse YAML ({exc})") from None
    OmegaConf.set_struct(cfg, True)
    return cfg
