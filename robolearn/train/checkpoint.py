"""Checkpoints: safetensors weights + YAML/JSON config; loading never unpickles.

A checkpoint is a directory::

    model.safetensors        policy weights, normalizer statistics included (as buffers)
    ema.safetensors          EMA weights of the same policy (used for evaluation when present)
    policy.json              {"type": "diffusion", "kwargs": {...}}: how to rebuild the policy
    config.yaml              the full experiment config
    stats.json               dataset statistics, human-readable copy
    train_state.safetensors  optimizer / scheduler / EMA / RNG tensors   (resume only)
    train_state.json         their non-tensor structure and the step     (resume only)

Directories are written next to their final place (``<name>.tmp``), flushed to disk, and renamed
into it; the previous checkpoint is kept as ``<name>.old`` until the new one is in place, so a kill
at any instant leaves a complete checkpoint in ``<name>`` or ``<name>.old`` (readers fall back to
``.old``: :func:`resolve_checkpoint_dir`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from robolearn.utils.errors import CheckpointError

# ------------------------------------------------------------------ nested state <-> tensors + JSON


def pack_state(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested structure (dicts, lists, tuples, tensors, numbers, strings) into a flat
    ``{name: tensor}`` dict and a JSON-able skeleton referencing them. Dict keys keep their type
    (int or str), so optimizer state dicts round-trip exactly.

    Raises:
        TypeError: an object that is neither a tensor nor JSON-able.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(x):
        if isinstance(x, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = x.detach().cpu().contiguous()
            return {"__tensor__": name}
        if isinstance(x, np.ndarray):
            return walk(torch.from_numpy(x))
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, dict):
            return {"__dict__": [[k, walk(v)] for k, v in x.items()]}
        if isinstance(x, (list, tuple)):
            return {"__list__": [walk(v) for v in x], "tuple": isinstance(x, tuple)}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot checkpoint object of type {type(x).__name__}")

    return tensors, walk(obj)


def unpack_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`pack_state`."""

    def walk(x):
        if isinstance(x, dict):
            if "__tensor__" in x:
                return tensors[x["__tensor__"]]
            if "__dict__" in x:
                return {k: walk(v) for k, v in x["__dict__"]}
            if "__list__" in x:
                items = [walk(v) for v in x["__list__"]]
                return tuple(items) if x.get("tuple") else items
        return x

    return walk(skeleton)


# ------------------------------------------------------------------ atomic directory writes


_REQUIRED = ("policy.json", "model.safetensors", "config.yaml")


def _is_complete(path: Path) -> bool:
    """Whether ``path`` holds every file a checkpoint needs (a directory is only ever renamed into
    place once complete, so a partial one is a stale ``.tmp`` or a half-deleted ``.old``)."""
    return all((path / name).is_file() for name in _REQUIRED)


def _fsync_tree(path: Path) -> None:
    """Flush the files of ``path`` and the directory itself to disk (survives a power cut, not only a kill)."""
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the complete directory ``tmp`` to ``final`` so that, at every instant, ``final`` or
    ``final.old`` holds a complete checkpoint (the newest one that was complete).

    The previous ``final`` is first renamed to ``final.old`` (deleting an older ``.old`` only while
    ``final`` is complete, so the last good copy is never the one removed), then ``tmp`` becomes
    ``final``, then ``.old`` goes. A kill between any two of these steps leaves a state that
    :func:`resolve_checkpoint_dir` reads and the next save repairs.
    """
    old = final.with_name(final.name + ".old")
    if _is_complete(final):
        if old.exists():
            shutil.rmtree(old)  # ``final`` is complete: the older copy is not needed
        os.replace(final, old)
    elif final.exists():
        shutil.rmtree(final)  # not a checkpoint (never renamed into place complete): ``.old`` is the good one
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint directory to read for ``path``: ``path`` itself when complete or, after a run
    was killed between the two renames of a checkpoint swap, ``path.old``. Returns ``path``
    unchanged when neither holds a complete checkpoint."""
    path = Path(path)
    if _is_complete(path):
        return path
    old = path.with_name(path.name + ".old")
    if _is_complete(old):
        return old
    return path


def save_checkpoint(
    path: str | Path,
    policy: torch.nn.Module,
    cfg: DictConfig,
    policy_type: str,
    ema_policy: torch.nn.Module | None = None,
    train_state: dict | None = None,
    stats: dict | None = None,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (see module docstring).

    Args:
        path: checkpoint directory (replaced if it exists).
        policy: the policy; ``policy.get_config()`` gives its constructor arguments.
        cfg: the experiment config.
        policy_type: registry name (e.g. ``"diffusion"``).
        ema_policy: policy holding EMA weights, if any.
        train_state: resume state (optimizer, scheduler, step, RNG...), tensors allowed anywhere.
        stats: dataset statistics ``{key: {stat: array}}`` for ``stats.json``.
        extra_files: ``{file name: text}`` written into the directory with the rest (atomically with
            the weights), e.g. a residual-RL run's ``best.json``.

    Returns:
        The checkpoint directory.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in policy.state_dict().items()}, str(tmp / "model.safetensors"))
    if ema_policy is not None:
        save_file({k: v.contiguous() for k, v in ema_policy.state_dict().items()}, str(tmp / "ema.safetensors"))
    (tmp / "policy.json").write_text(json.dumps({"type": policy_type, "kwargs": policy.get_config()}, indent=2))
    (tmp / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    if stats is not None:
        readable = {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}
        (tmp / "stats.json").write_text(json.dumps(readable, indent=1))
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    if train_state is not None:
        tensors, skeleton = pack_state(train_state)
        save_file(tensors, str(tmp / "train_state.safetensors"))
        (tmp / "train_state.json").write_text(json.dumps(skeleton))
    _fsync_tree(tmp)
    _replace_dir(tmp, path)
    return path


def remove_checkpoint(path: str | Path) -> None:
    """Delete the checkpoint at ``path`` with its swap leftovers (``.old``, ``.tmp``); nothing where
    there is none."""
    path = Path(path)
    for suffix in ("", ".old", ".tmp"):
        shutil.rmtree(path.with_name(path.name + suffix), ignore_errors=True)


def has_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` (or its ``.old`` twin) holds a complete checkpoint."""
    return _is_complete(resolve_checkpoint_dir(path))


def _checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint directory of ``path`` (a checkpoint or a run directory: its ``checkpoints/best``
    where the run keeps one, as a residual-RL run does, else ``checkpoints/latest``), checked for its files."""
    path = Path(path)
    if not (path / "policy.json").exists():  # a run directory
        for name in ("best", "latest"):
            if has_checkpoint(path / "checkpoints" / name):
                path = path / "checkpoints" / name
                break
    path = resolve_checkpoint_dir(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    for name in ("policy.json", "model.safetensors", "config.yaml"):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: not a checkpoint (missing {name})")
    return path


def read_checkpoint_config(path: str | Path):
    """The experiment config saved with a checkpoint (or a run directory's: see :func:`_checkpoint_dir`).

    Raises:
        CheckpointError: not a checkpoint, or a ``config.yaml`` that is not a YAML mapping.
    """
    file = _checkpoint_dir(path) / "config.yaml"
    try:
        cfg = OmegaConf.load(file)
    except Exception as exc:  # noqa: BLE001 - any YAML problem becomes one clear error
        msg = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise CheckpointError(f"{file}: cannot read YAML: {msg}") from None
    if not isinstance(cfg, DictConfig):
        raise CheckpointError(f"{file}: not a config (a YAML mapping), got {type(cfg).__name__}")
    return cfg


def read_policy_type(path: str | Path) -> str:
    """The registry name of a checkpoint's policy (``policy.json``'s ``type``).

    Raises:
        CheckpointError: not a checkpoint, or an unreadable ``policy.json``.
    """
    path = _checkpoint_dir(path)
    try:
        return str(json.loads((path / "policy.json").read_text())["type"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}/policy.json: {exc}") from None


def load_policy(path: str | Path, use_ema: bool = True, device: str = "cpu"):
    """Rebuild a policy from a checkpoint directory (or a run directory: its best checkpoint where it keeps one, else ``checkpoints/latest``).

    Args:
        path: checkpoint or run directory.
        use_ema: load the EMA weights when the checkpoint has them.

    Returns:
        ``(policy in eval mode, config)``.

    Raises:
        CheckpointError: missing files, unknown policy type, weights that do not fit, or an
            unreadable ``config.yaml``.
    """
    from robolearn.policies import build_policy_from_kwargs

    path = _checkpoint_dir(path)
    try:
        meta = json.loads((path / "policy.json").read_text())
        policy = build_policy_from_kwargs(meta["type"], meta["kwargs"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}/policy.json: {exc}") from None
    weights = path / ("ema.safetensors" if use_ema and (path / "ema.safetensors").is_file() else "model.safetensors")
    try:
        policy.load_state_dict(load_file(str(weights), device=device), strict=True)
    except (RuntimeError, Exception) as exc:
        raise CheckpointError(f"{weights}: weights do not fit the policy config ({str(exc).splitlines()[0]})") from None
    cfg = read_checkpoint_config(path)
    return policy.to(device).eval(), cfg


def load_train_state(path: str | Path) -> dict | None:
    """The resume state saved by :func:`save_checkpoint`, or ``None`` if there is none."""
    path = resolve_checkpoint_dir(Path(path))
    if not (path / "train_state.json").is_file():
        return None
    skeleton = json.loads((path / "train_state.json").read_text())
    return unpack_state(load_file(str(path / "train_state.safetensors")), skeleton)
