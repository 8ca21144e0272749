"""Experiment configs: composable YAML under ``configs/``, read with Hydra's compose API.

``load_config(["task=lift", "train.steps=500"])`` returns an OmegaConf ``DictConfig`` in struct mode,
typed and checked by the schema of :mod:`robolearn.utils.config_schema`: reading or overriding a key
that does not exist, adding one that no schema knows, a value of the wrong type or out of its range
are errors (:class:`~robolearn.utils.errors.ConfigError`, one line naming the key, the value and what
is allowed).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from robolearn.utils.config_schema import (check_config, describe, field_schema, is_schema, register_schemas, show,
                                           unknown_key)
from robolearn.utils.errors import ConfigError
from robolearn.utils.paths import config_dir


def load_config(overrides: Sequence[str] = (), config_name: str = "config", schema: type | None = None) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with its defaults and command-line overrides.

    Args:
        overrides: Hydra override strings: ``group=option`` picks a group file (``task=lift``),
            ``a.b=value`` sets a value. (``+a.b=value``, adding a key, is always refused: every key a
            schema has is already there.)
        config_name: the primary config, e.g. ``"rl/default"`` for a residual-RL config.
        schema: the schema of the composed config (default: the experiment's,
            :class:`~robolearn.utils.config_schema.ExperimentConfig`; ``rl/*``:
            :class:`~robolearn.utils.config_schema.RLFileConfig`).

    Returns:
        The composed config, resolved, checked (:func:`robolearn.utils.config_schema.check_config`),
        in struct mode.

    Raises:
        ConfigError: an unknown key or group option, a key added with ``+`` that no schema has, a
            malformed override, an unresolvable interpolation, a value of the wrong type or outside
            its allowed range (the message names the key, the value and the allowed values; several
            problems are joined with ``"; "`` on one line).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = compose(config_name=config_name, overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except Exception as exc:  # Hydra raises several exception types; all mean "bad config input"
        raise ConfigError(_schema_error_line(exc, schema) or _one_line(exc)) from None
    finally:
        GlobalHydra.instance().clear()
    problems = check_config(cfg, schema)
    if problems:
        raise ConfigError("; ".join(problems))
    OmegaConf.set_struct(cfg, True)
    return cfg


def _one_line(exc: BaseException) -> str:
    """Hydra's message on one line, without its config search path listing (no help to a user)."""
    text = str(exc).strip().split("Config search path:")[0]
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__


def _schema_error_line(exc: BaseException, schema: type | None = None) -> str | None:
    """The line for what the schema refused while Hydra composed (the OmegaConf error behind Hydra's
    exception names the key): ``"<key>=<value>: must be <allowed>"`` for a value of the wrong type,
    ``"<key>: unknown key ..."`` for an override of a key the schema does not have; ``None`` for
    any other error."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = exc.__cause__
    key = getattr(cause, "full_key", None)
    if not key:
        return None
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        cls = getattr(cause, "object_type", None)
        return unknown_key(key, cls) if is_schema(cls) else None
    if not isinstance(cause, ValidationError):
        return None
    return _refused_value_line(key, getattr(cause, "value", None), schema)


def _refused_value_line(key: str, value, schema: type | None = None) -> str | None:
    """``"<key>=<value>: must be <allowed>"`` for a value of dotted ``key`` the schema refused
    (``None`` if no schema has the key)."""
    found = field_schema(key, schema)
    return None if found is None else f"{key}={show(value)}: must be {describe(*found)}"


def override_saved_task(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """A run's saved config (:func:`config_from_yaml`) with ``task.<key>=<value>`` overrides applied and
    the task checked as :func:`load_config` checks it: against the task schema whose keys the saved
    task has (e.g. :class:`~robolearn.utils.config_schema.So101PickTaskConfig`), so a value of the
    wrong type or outside its range is refused like a composed one. A task saved by another version
    (keys no schema has as a set) is only checked for unknown keys.

    Args:
        cfg: the saved config (e.g. :func:`~robolearn.train.checkpoint.read_checkpoint_config`'s).
        overrides: ``task.<key>=<value>`` strings (OmegaConf dotlist syntax); a key the saved task
            lacks is refused, not added.

    Returns:
        The merged config, in struct mode (``cfg`` is left as it was).

    Raises:
        ConfigError: an override outside ``task.``, an unknown key, a value of the wrong type or out
            of range (one line naming the key, the value and what is allowed).
    """
    from omegaconf.errors import ValidationError

    from robolearn.utils.config_schema import SCHEMAS, TaskConfig, _fields

    bad = [o for o in overrides if not o.startswith("task.")]
    if bad:
        raise ConfigError(f"only task.* overrides apply to a run's task, got {bad}")
    task = cfg.task
    kinds = [c for c in SCHEMAS.values() if issubclass(c, TaskConfig) and set(_fields(c)) == set(task.keys())
             and (b := _fields(c)["type"][1].metadata.get("bounds")) is not None and b.ok(task.get("type"))]
    base = copy.deepcopy(cfg)
    OmegaConf.set_struct(base, True)  # a misspelt key is refused, not added
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
    except Exception as exc:  # omegaconf's ConfigKeyError for a key the saved task lacks
        key = getattr(exc, "full_key", None)
        raise ConfigError(unknown_key(key, kinds[0]) if key and len(kinds) == 1
                          else f"bad override ({_one_line(exc)})") from None
    task = merged.task
    if len(kinds) == 1:
        try:
            typed = OmegaConf.merge(OmegaConf.structured(kinds[0]), task)
        except ValidationError as exc:
            raise ConfigError(_refused_value_line(f"task.{exc.full_key}", exc.value)
                              or f"task: {_one_line(exc)}") from None
        problems = [f"task.{p}" for p in check_config(typed, kinds[0])]
        if problems:
            raise ConfigError("; ".join(problems))
    return merged


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML."""
    Path(path).write_text(OmegaConf.to_yaml(cfg))


def config_from_yaml(path: str | Path) -> DictConfig:
    """Read a YAML config written by :func:`save_config`, as saved: not checked against today's schema,
    so the configs of checkpoints made by older versions (other keys, no ranges) keep loading.

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
