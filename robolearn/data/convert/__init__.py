"""Dataset converters between our Zarr episode store and the ecosystem's formats.

=================  ===========================================  ============================
direction          module                                       needs
=================  ===========================================  ============================
LeRobot v3 → Zarr  :mod:`robolearn.data.convert.lerobot`        lerobot 0.4.4 (its own venv)
Zarr → LeRobot v3  :mod:`robolearn.data.convert.lerobot`        lerobot 0.4.4 (its own venv)
robomimic → Zarr   :mod:`robolearn.data.convert.robomimic`      h5py (core install)
=================  ===========================================  ============================

Every converter writes into a staging path beside the destination (:func:`staged_output`) that is
moved onto the destination only when the whole conversion succeeded, so a failure (a corrupt source,
Ctrl-C) never leaves a half-written destination behind.

Formats are told apart by :func:`detect_format`: ``*.hdf5`` / ``*.h5`` is robomimic, a ``*.zarr``
(``*.zarr.zip``) path or a directory holding ``.zgroup`` / ``zarr.json`` is our store, a directory
holding ``meta/info.json`` is LeRobot v3.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from robolearn.utils.errors import StoreError

FORMATS = ("zarr", "lerobot", "robomimic")


def detect_format(path: str | os.PathLike, *, must_exist: bool) -> str | None:
    """The format of ``path``: ``"zarr"``, ``"lerobot"`` or ``"robomimic"``; ``None`` when it cannot
    be told (a destination that does not exist yet and has no telling suffix).

    Args:
        path: a dataset path.
        must_exist: a source: it must exist, and an existing path that is none of the formats is an error.

    Raises:
        StoreError: a source that does not exist, or is none of the formats.
    """
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".hdf5", ".h5")):
        fmt = "robomimic"
    elif name.endswith((".zarr", ".zarr.zip")) or (p / ".zgroup").exists() or (p / "zarr.json").exists():
        fmt = "zarr"
    elif (p / "meta" / "info.json").exists():
        fmt = "lerobot"
    else:
        fmt = None
    if must_exist:
        if not p.exists():
            raise StoreError(f"{p}: no such file or directory")
        if fmt is None:
            raise StoreError(f"{p}: not a dataset robolearn can read (expected a robomimic .hdf5 file, a Zarr "
                             "store, or a LeRobot v3 directory with meta/info.json); name the format with --from")
    return fmt


@contextlib.contextmanager
def staged_output(dst: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging path (``.<name>.partial-<pid>`` beside ``dst``, not yet created) to write the
    converted dataset into; on success it replaces ``dst``, on any error it is deleted and ``dst``
    is left as it was.

    Raises:
        StoreError: ``dst`` exists and ``overwrite`` is false (before anything is written).
    """
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise StoreError(f"{dst}: already exists (pass --overwrite to replace it)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.partial-{os.getpid()}"
    _remove(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise StoreError(f"{dst}: the conversion wrote nothing")
        if dst.exists():
            _remove(dst)
        os.replace(tmp, dst)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def lerobot_key_to_ours(key: str, rename: dict[str, str] | None = None) -> str:
    """Our store key of LeRobot feature ``key``; ``rename`` (LeRobot name → ours) wins.

    The rule (inverted by :func:`our_key_to_lerobot`): ``observation.state`` → ``agent_pos``,
    ``observation.images.<cam>`` → ``<cam>_image``, ``observation.<name>`` → ``<name>``,
    ``action`` → ``action``, ``next.reward`` → ``reward``, ``next.done`` → ``done``; any other ``.`` becomes ``_``.
    """
    if rename and key in rename:
        return rename[key]
    if key == "observation.state":
        return "agent_pos"
    if key.startswith("observation.images."):
        return key[len("observation.images."):].replace(".", "_") + "_image"
    if key.startswith("observation."):
        return key[len("observation."):].replace(".", "_")
    if key.startswith("next."):
        return key[len("next."):].replace(".", "_")
    return key.replace(".", "_")


def our_key_to_lerobot(key: str, is_image: bool, rename: dict[str, str] | None = None) -> str:
    """LeRobot feature name of our store key ``key`` (the inverse of :func:`lerobot_key_to_ours`);
    ``rename`` (ours → LeRobot name) wins: ``agent_pos`` → ``observation.state``, ``<cam>_image``
    (an image key) → ``observation.images.<cam>``, ``action`` → ``action``, ``reward`` → ``next.reward``,
    ``done`` → ``next.done``, any other key ``k`` → ``observation.k``."""
    if rename and key in rename:
        return rename[key]
    if key == "agent_pos":
        return "observation.state"
    if is_image:
        return "observation.images." + (key[: -len("_image")] if key.endswith("_image") else key)
    if key == "action":
        return "action"
    if key in ("reward", "done"):
        return "next." + key
    return "observation." + key


def parse_renames(pairs: list[str] | None) -> dict[str, str]:
    """``["old=new", ...]`` → ``{old: new}``.

    Raises:
        ValueError: an item without ``=`` or with an empty side.
    """
    out = {}
    for item in pairs or []:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise ValueError(f"--rename {item!r}: expected OLD=NEW")
        out[old] = new
    return out
