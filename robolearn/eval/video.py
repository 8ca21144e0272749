"""MP4 writing for evaluation videos (imageio with its bundled ffmpeg: H.264, yuv420p, plays in browsers)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def write_mp4(path: str | Path, frames: Sequence[np.ndarray], fps: float = 20.0) -> Path:
    """Encode ``frames`` (each ``uint8 (H, W, 3)``, H and W even) to an H.264 MP4 at ``fps``.

    Returns:
        The path written.

    Raises:
        ValueError: no frames, or frames of different shapes or not ``uint8 (H, W, 3)``.
    """
    import imageio.v2 as iio

    if not len(frames):
        raise ValueError(f"{path}: no frames to write")
    shape = frames[0].shape
    if len(shape) != 3 or shape[2] != 3 or frames[0].dtype != np.uint8:
        raise ValueError(f"{path}: frames must be uint8 (H, W, 3), got {frames[0].dtype} {shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = iio.get_writer(path, fps=fps, codec="libx264", quality=7, pixelformat="yuv420p", macro_block_size=2)
    try:
        for f in frames:
            if f.shape != shape:
                raise ValueError(f"{path}: frame of shape {f.shape} in a video of {shape}")
            writer.append_data(f)
    finally:
        writer.close()
    return path
