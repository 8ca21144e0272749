"""The store's key schema: what each observation and action key of a recording means, and the one
function that creates a store for a task (scripted demonstrations) or a robot (teleoperation).

Keys written by every recorder (``robolearn collect`` and ``robolearn record``):

* observation keys, documented by :data:`OBS_DOC` (units and frame) where they are standard, e.g.
  ``robot0_eef_pos`` (m, world frame); others are described as the task's object state;
* ``<camera>_image`` keys, ``uint8 (H, W, 3)`` RGB, top row first, one frame per chunk, compressed
  with the configured image codec;
* ``action`` in the task's action convention (:mod:`robolearn.envs.actions`), with the action
  space (type, dimension, bounds, layout) in the root attributes;
* teleoperation adds ``action_abs`` (the absolute target) and ``timestamp`` (loop deadline,
  monotonic s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from robolearn.data.store import EpisodeStore, KeyInfo, is_image_key
from robolearn.utils.errors import StoreError

#: Standard observation keys: per-step shape, dtype, units, description.
OBS_DOC = {
    "robot0_eef_pos": KeyInfo((3,), "float32", "m", "end-effector position, world frame"),
    "robot0_eef_quat": KeyInfo((4,), "float32", "xyzw", "end-effector orientation quaternion, world frame"),
    "robot0_gripper_qpos": KeyInfo((2,), "float32", "m", "gripper finger joint positions"),
    "agent_pos": KeyInfo((2,), "float32", "m", "pusher position, world frame"),
    "keypoints": KeyInfo((16,), "float32", "m", "PushT block's 8 corners (x, y), world frame"),
    # A real robot's state, as a teleop recording stores it (robolearn.teleop.recorder.robot_obs).
    "eef_pos": KeyInfo((3,), "float32", "m", "end-effector position, robot base frame"),
    "eef_quat": KeyInfo((4,), "float32", "xyzw", "end-effector orientation quaternion, robot base frame"),
    "gripper": KeyInfo((1,), "float32", "opening 0..1", "gripper opening (1 open)"),
}

#: Keys a teleoperation recording adds beside the observation and ``action``.
TELEOP_KEYS = {
    "action_abs": KeyInfo((8,), "float32", "m, xyzw, opening 0..1", "absolute EEF target + gripper opening"),
    "timestamp": KeyInfo((1,), "float64", "s", "loop deadline of the step, monotonic clock"),
}


def obs_key_info(key: str, value: np.ndarray, owner: str, image_codec: str | None = None) -> KeyInfo:
    """The :class:`KeyInfo` of observation ``key`` from one step's ``value``.

    Images (``uint8 (H, W, C)``) get ``image_codec``; standard keys their :data:`OBS_DOC` entry
    (when the shape matches); anything else is float32 described as ``owner``'s state.
    """
    value = np.asarray(value)
    if is_image_key(value.shape, value.dtype):
        camera = key[: -len("_image")] if key.endswith("_image") else key
        return KeyInfo(value.shape, "uint8", "pixel", f"RGB image of camera {camera}, top row first", codec=image_codec)
    doc = OBS_DOC.get(key)
    if doc is not None and tuple(doc.shape) == tuple(value.shape):
        return doc
    return KeyInfo(value.shape, "float32", None, f"{owner} state '{key}'")


def open_for_append(path: str | Path, task: str | None, append: bool, can_overwrite: bool = False) -> EpisodeStore:
    """Open the existing store ``path`` to add episodes of ``task``.

    Raises:
        StoreError: ``append`` is not set (the message names ``--append``, and ``--overwrite`` when
            ``can_overwrite``), or the store was recorded for another task.
    """
    path = Path(path)
    if not append:
        hint = " or --overwrite to replace it" if can_overwrite else ""
        raise StoreError(f"{path}: already exists (use --append to add episodes{hint})")
    store = EpisodeStore.open(path, mode="a")
    if task is not None and store.attrs.get("task") not in (None, task):
        raise StoreError(f"{path}: recorded for task {store.attrs.get('task')!r}, not {task!r}")
    return store


def create_episode_store(
    path: str | Path,
    *,
    obs: Mapping[str, np.ndarray],
    action: KeyInfo,
    action_space: Mapping[str, Any],
    fps: float,
    task: str | None,
    source: str,
    robot: str | None = None,
    image_codec: str | None = None,
    extra_keys: Mapping[str, KeyInfo] | None = None,
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    obs_units: Mapping[str, tuple[str, str]] | None = None,
) -> EpisodeStore:
    """Create the store a recorder writes: every key of one step's observation ``obs`` (its shapes
    and dtypes define the keys, :func:`obs_key_info` their units), ``action``, and ``extra_keys``.

    Args:
        path: store directory (conventionally ``*.zarr``).
        obs: one observation ``{key: array}``: low-dim keys and ``uint8 (H, W, 3)`` images.
        action: the ``action`` key's description.
        action_space: ``{"type", "dim", "low", "high", "layout"}`` of the action convention.
        fps: control frequency (Hz).
        task: task name (``None`` for a robot without a task).
        source: who made the episodes (``"scripted_expert"``, ``"teleop"``).
        robot: robot name.
        image_codec: codec of the image keys (default: the store's).
        extra_keys: further keys beside observation and action (e.g. :data:`TELEOP_KEYS`).
        attrs: further root attributes (e.g. ``cameras``).
        overwrite: replace an existing store.
        obs_units: ``{key: (units, description)}`` of low-dim observation keys whose units are the
            environment's own rather than :data:`OBS_DOC`'s (gym-pusht's pixels).

    Raises:
        StoreError: the store exists and ``overwrite`` is not set, or a camera frame that is not
            ``uint8 (H, W, 3)``.
    """
    for k, v in obs.items():
        v = np.asarray(v)
        if k.endswith("_image") and not (v.dtype == np.uint8 and v.ndim == 3 and v.shape[2] == 3):
            raise StoreError(f"camera key {k!r} gives {v.dtype} {v.shape}; expected uint8 (H, W, 3)")
    store = EpisodeStore.create(path, fps=fps, robot=robot, overwrite=overwrite, action_space=dict(action_space),
                                attrs={"task": task, "source": source, **dict(attrs or {})})
    for k, v in obs.items():
        info = obs_key_info(k, v, task or "robot", image_codec)
        if k in (obs_units or {}) and not info.is_image:
            info = KeyInfo(info.shape, "float32", *obs_units[k])
        store.define_key(k, info)
    store.define_key("action", action)
    for k, info in (extra_keys or {}).items():
        store.define_key(k, info)
    return store
