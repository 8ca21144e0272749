"""Evaluation statistics."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson, JASA 1927); 95 % by default.

    Args:
        successes: number of successes, ``0 <= successes <= n``.
        n: number of trials; ``n = 0`` gives ``(0.0, 1.0)``.
        z: normal quantile (1.96 for 95 %).

    Returns:
        ``(low, high)`` bounds in ``[0, 1]``.

    Raises:
        ValueError: ``successes`` outside ``[0, n]``.
    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the edges, no round-off
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi
