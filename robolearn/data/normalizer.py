"""Per-key statistics of a dataset, the input of every policy's normalizer.

Statistics are plain numpy here (``data/`` imports no torch model); policies turn them into buffers
of a normalizer module so that they travel inside the checkpoint.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def compute_stats(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Per-dimension ``min``, ``max``, ``mean`` and ``std`` over axis 0 of each array.

    Args:
        arrays: ``{key: (N, *shape)}``.

    Returns:
        ``{key: {"min"|"max"|"mean"|"std": float32 (*shape)}}``.

    Raises:
        ValueError: an array is empty or holds NaN/Inf (the message names the key).
    """
    stats = {}
    for k, v in arrays.items():
        v = np.asarray(v, dtype=np.float64)
        if len(v) == 0:
            raise ValueError(f"cannot compute statistics of empty key '{k}'")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"key '{k}' contains NaN or Inf")
        stats[k] = {
            "min": v.min(axis=0).astype(np.float32),
            "max": v.max(axis=0).astype(np.float32),
            "mean": v.mean(axis=0).astype(np.float32),
            "std": v.std(axis=0).astype(np.float32),
        }
    return stats
