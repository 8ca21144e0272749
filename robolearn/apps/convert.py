"""``robolearn convert SRC DST``: datasets between our Zarr store, LeRobot v3 and robomimic HDF5.

Supported directions: LeRobot v3 → Zarr, Zarr → LeRobot v3, robomimic HDF5 → Zarr (the converters
are in :mod:`robolearn.data.convert`). The destination is written to a staging path and moved into
place only when the conversion succeeded: a failed conversion leaves no destination behind.

The LeRobot directions need lerobot 0.4.4, which pins torch < 2.11 and so lives in its own
environment (``make lerobot-env`` builds ``.venv-lerobot``). Where lerobot cannot be imported, the
command re-runs itself with that environment's Python when it exists (``$ROBOLEARN_LEROBOT_VENV``,
default ``.venv-lerobot`` at the repository root), and otherwise ends with one line saying to build it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from robolearn.data.convert import FORMATS, detect_format, parse_renames, staged_output
from robolearn.utils.errors import RobolearnError, StoreError

SUPPORTED = {("lerobot", "zarr"), ("zarr", "lerobot"), ("robomimic", "zarr")}


class MissingLerobotError(RobolearnError):
    """A LeRobot conversion was asked for where lerobot is not installed and no lerobot env exists."""


def lerobot_venv() -> Path:
    """The lerobot environment's directory: ``$ROBOLEARN_LEROBOT_VENV`` or ``<repo>/.venv-lerobot``."""
    env = os.environ.get("ROBOLEARN_LEROBOT_VENV")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".venv-lerobot"


def lerobot_importable() -> bool:
    """Whether lerobot's dataset module can be imported in this interpreter (a folder named
    ``lerobot`` on ``sys.path`` is not enough)."""
    try:
        return importlib.util.find_spec("lerobot.datasets.lerobot_dataset") is not None
    except (ImportError, ValueError):
        return False


def resolve_formats(src: str | Path, dst: str | Path, src_format: str | None = None,
                    dst_format: str | None = None) -> tuple[str, str]:
    """``(source format, destination format)``: as given, else from the paths
    (:func:`robolearn.data.convert.detect_format`); a destination that tells nothing is Zarr unless
    the source is Zarr (then LeRobot).

    Raises:
        StoreError: the source does not exist or is no known format.
        ValueError: an unknown or unsupported pair of formats.
    """
    for f in (src_format, dst_format):
        if f is not None and f not in FORMATS:
            raise ValueError(f"unknown format {f!r}; known: {', '.join(FORMATS)}")
    if src_format is None:
        src_format = detect_format(src, must_exist=True)
    elif not Path(src).exists():
        raise StoreError(f"{src}: no such file or directory")
    if dst_format is None:
        dst_format = detect_format(dst, must_exist=False) or ("lerobot" if src_format == "zarr" else "zarr")
    if (src_format, dst_format) not in SUPPORTED:
        pairs = ", ".join(f"{a} -> {b}" for a, b in sorted(SUPPORTED))
        raise ValueError(f"converting {src_format} ({src}) to {dst_format} ({dst}) is not supported; supported: {pairs}")
    return src_format, dst_format


def _delegate(argv: Sequence[str]) -> int:
    """Run ``robolearn convert`` with ``argv`` in the lerobot environment; its exit code.

    Raises:
        MissingLerobotError: no such environment (one line: how to build it).
    """
    venv = lerobot_venv()
    python = venv / "bin" / "python"
    if not python.exists() or Path(sys.prefix).resolve() == venv.resolve():
        raise MissingLerobotError(
            "LeRobot datasets need lerobot 0.4.4 (it pins torch < 2.11), which this environment does not have "
            f"and {venv} does not exist: run `make lerobot-env`, then this command again")
    return subprocess.run([str(python), "-m", "robolearn.cli", "convert", *argv]).returncode


def convert(src: str | Path, dst: str | Path, *, src_format: str | None = None, dst_format: str | None = None,
            overwrite: bool = False, rename: Sequence[str] = (), image_codec: str | None = None,
            vcodec: str = "libsvtav1", progress: bool = True) -> dict[str, Any]:
    """Convert the dataset ``src`` into a new dataset ``dst``.

    Args:
        src, dst: dataset paths (see :func:`resolve_formats`).
        src_format, dst_format: ``"zarr"``, ``"lerobot"`` or ``"robomimic"`` (default: from the paths).
        overwrite: replace an existing ``dst`` (only once the conversion succeeded).
        rename: ``OLD=NEW`` key renames: LeRobot name → our key when reading LeRobot, our key →
            LeRobot name when writing it.
        image_codec: store codec of image keys (Zarr destinations; default lossless WebP).
        vcodec: lerobot's video codec (LeRobot destinations).
        progress: progress bar.

    Returns:
        ``{"src", "dst", "from", "to", "episodes", "steps", ...}``; when the work ran in the lerobot
        environment, ``{"delegated": venv, "returncode": code}`` instead (that process printed its own result).

    Raises:
        StoreError: a bad source (one line naming the file), or ``dst`` exists without ``overwrite``.
        MissingLerobotError: a LeRobot direction with no lerobot here and no lerobot environment.
        ValueError: unsupported formats or a malformed rename.
    """
    src_format, dst_format = resolve_formats(src, dst, src_format, dst_format)
    renames = parse_renames(list(rename))
    if Path(dst).exists() and not overwrite:
        raise StoreError(f"{dst}: already exists (pass --overwrite to replace it)")
    if "lerobot" in (src_format, dst_format) and not lerobot_importable():
        argv = [str(src), str(dst), "--from", src_format, "--to", dst_format, "--vcodec", vcodec,
                *(["--overwrite"] if overwrite else []), *(["--image-codec", image_codec] if image_codec else []),
                *[a for r in rename for a in ("--rename", r)], *([] if progress else ["--no-progress"])]
        return {"delegated": str(lerobot_venv()), "returncode": _delegate(argv)}
    with staged_output(dst, overwrite=overwrite) as tmp:
        if src_format == "robomimic":
            from robolearn.data.convert.robomimic import robomimic_to_zarr

            result = robomimic_to_zarr(src, tmp, image_codec=image_codec, progress=progress)
        elif src_format == "lerobot":
            from robolearn.data.convert.lerobot import lerobot_to_zarr

            result = lerobot_to_zarr(src, tmp, rename=renames, image_codec=image_codec, progress=progress)
        else:
            from robolearn.data.convert.lerobot import zarr_to_lerobot

            result = zarr_to_lerobot(src, tmp, rename=renames, vcodec=vcodec,
                                     repo_id=f"robolearn/{Path(dst).name}", progress=progress)
    return {"src": str(src), "dst": str(dst), "from": src_format, "to": dst_format, **result}
