"""Normalizer module: dataset statistics as buffers, so they are saved with the policy weights."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

_RANGE_EPS = 1e-4


class Normalizer(nn.Module):
    """Per-key affine normalization ``y = x * scale + offset``.

    Modes:
        ``"minmax"``: maps each dimension's ``[min, max]`` to ``[-1, 1]`` (Diffusion Policy's default).
            A dimension whose range is below 1e-4 (constant in the data) maps its value to 0.
        ``"meanstd"``: ``(x - mean) / max(std, std_floor)``; ACT's default (std floored at 1e-2).

    Args:
        shapes: ``{key: per-step shape}``; buffers are created with these shapes.
        mode: ``"minmax"`` or ``"meanstd"``.
        stats: optional ``{key: {"min","max","mean","std": array}}`` from
            :func:`robolearn.data.normalizer.compute_stats`; without it the buffers are identity
            placeholders meant to be filled by ``load_state_dict``.
        std_floor: lower bound on std in ``"meanstd"`` mode.

    Raises:
        ValueError: unknown mode, or stats missing a key or of the wrong shape.
    """

    def __init__(self, shapes: Mapping[str, tuple], mode: str = "minmax",
                 stats: Mapping[str, Mapping[str, np.ndarray]] | None = None, std_floor: float = 1e-2):
        super().__init__()
        if mode not in ("minmax", "meanstd"):
            raise ValueError(f"normalizer mode must be 'minmax' or 'meanstd', got {mode!r}")
        self.mode = mode
        self.keys = list(shapes)
        for k, shape in shapes.items():
            scale, offset = np.ones(shape, np.float32), np.zeros(shape, np.float32)
            if stats is not None:
                if k not in stats:
                    raise ValueError(f"normalizer stats have no key '{k}'")
                s = {n: np.asarray(v, np.float32) for n, v in stats[k].items()}
                if s["min"].shape != tuple(shape):
                    raise ValueError(f"stats of '{k}' have shape {s['min'].shape}, expected {tuple(shape)}")
                if mode == "minmax":
                    rng = s["max"] - s["min"]
                    ok = rng > _RANGE_EPS
                    scale = np.where(ok, 2.0 / np.where(ok, rng, 1.0), 1.0).astype(np.float32)
                    centre = np.where(ok, s["min"] + rng / 2, s["min"])
                    offset = (-centre * scale).astype(np.float32)
                else:
                    std = np.maximum(s["std"], std_floor)
                    scale = (1.0 / std).astype(np.float32)
                    offset = (-s["mean"] * scale).astype(np.float32)
            self.register_buffer(f"scale__{k}", torch.from_numpy(scale))
            self.register_buffer(f"offset__{k}", torch.from_numpy(offset))

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(..., *shape)`` in raw units → normalized, same shape."""
        return x * getattr(self, f"scale__{key}") + getattr(self, f"offset__{key}")

    def unnormalize(self, key: str, y: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        return (y - getattr(self, f"offset__{key}")) / getattr(self, f"scale__{key}")
