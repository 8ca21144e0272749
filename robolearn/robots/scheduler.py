"""Action scheduler: turns timestamped action chunks from an asynchronous policy into one action per
control-loop period.

A chunk is ``(T, D)`` actions meant for times ``t0, t0 + dt, ...`` (monotonic s). The scheduler

* drops, when a chunk arrives, its actions timed before ``now + latency_s`` (they are already in the
  past by the time they could be executed; Diffusion Policy's real-robot runner drops those earlier
  than now + 10 ms) and counts them;
* blends overlapping chunks, either **receding horizon** (the newest chunk wins from its first kept
  action on) or **temporal ensembling** (Zhao et al., ACT, RSS 2023, Sec. IV-B: every chunk covering
  the query time contributes, weighted ``exp(-k * i)`` with ``i = 0`` the oldest chunk);
* interpolates between a chunk's actions to the query time: linearly, except the dimensions named
  by ``quat_slice`` (a unit quaternion, xyzw) which are slerped (and normalized after ensembling);
  or, with ``interpolate=False``, returns the action whose time is the latest not after the query
  (zero-order hold: what relative actions, each an offset from the pose at its own step, need);
* holds the last action it produced when no chunk covers the query time, and counts those periods.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from robolearn.utils.rotations import slerp


#: Times closer than this (s) count as equal: chunk times and loop deadlines are sums of floats.
_EPS_S = 1e-6


@dataclass
class _Chunk:
    times: np.ndarray    # (T,)
    actions: np.ndarray  # (T, D)


class ActionScheduler:
    """Blend and interpolate timestamped action chunks to the control rate.

    Args:
        action_dim: ``D``.
        mode: ``"receding"`` or ``"ensemble"``.
        ensemble_k: temporal-ensembling coefficient ``k`` (0.01 in ACT).
        latency_s: actions timed earlier than ``now + latency_s`` when their chunk arrives are dropped.
        quat_slice: ``(start, stop)`` of a quaternion inside the action vector, or ``None``.
        max_chunks: chunks kept for ensembling (older ones are forgotten).
        interpolate: interpolate between actions (``True``) or hold each until the next (``False``).

    Raises:
        ValueError: unknown mode, negative ``ensemble_k``/``latency_s``, or a quaternion slice that is
            not 4 wide inside the action.
    """

    def __init__(self, action_dim: int, mode: str = "receding", ensemble_k: float = 0.01, latency_s: float = 0.0,
                 quat_slice: tuple[int, int] | None = None, max_chunks: int = 32, interpolate: bool = True):
        if mode not in ("receding", "ensemble"):
            raise ValueError(f"mode must be 'receding' or 'ensemble', got {mode!r}")
        if ensemble_k < 0 or latency_s < 0:
            raise ValueError("ensemble_k and latency_s must be >= 0")
        if quat_slice is not None and (quat_slice[1] - quat_slice[0] != 4 or quat_slice[0] < 0 or quat_slice[1] > action_dim):
            raise ValueError(f"quat_slice {quat_slice} must select 4 dimensions inside an action of size {action_dim}")
        self.action_dim = action_dim
        self.mode = mode
        self.k = ensemble_k
        self.latency_s = latency_s
        self.quat = slice(*quat_slice) if quat_slice else None
        self.interpolate = bool(interpolate)
        self._chunks: deque[_Chunk] = deque(maxlen=max_chunks)
        self._last: np.ndarray | None = None
        self.n_stale_dropped = 0    #: actions dropped because their time had passed when their chunk arrived
        self.n_chunks = 0           #: chunks handed over
        self.n_chunks_stale = 0     #: chunks whose first action had already passed when they arrived
        #: chunks whose second action had already passed when they arrived. A chunk that starts at its
        #: observation's own step (as a policy's chunks do: ``t0`` the observation's time) always has its
        #: first action past by then; a *late* chunk is one the policy took more than a step ``dt`` to make.
        self.n_chunks_late = 0
        self.n_dry = 0

    def reset(self) -> None:
        """Forget every chunk and the held action (keeps the counters)."""
        self._chunks.clear()
        self._last = None

    def add_chunk(self, actions: np.ndarray, t0: float, dt: float, now: float) -> int:
        """Hand over a chunk ``(T, D)`` whose action ``i`` is meant for ``t0 + i * dt``.

        Returns:
            The number of actions kept (the rest were stale).

        Raises:
            ValueError: wrong shape, non-finite values, or ``dt <= 0``.
        """
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != self.action_dim:
            raise ValueError(f"chunk must have shape (T, {self.action_dim}), got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValueError("chunk contains NaN or Inf")
        if not dt > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        times = t0 + dt * np.arange(len(actions))
        keep = times >= now + self.latency_s
        # Keep one stale action before the first fresh one so the query time can be interpolated.
        first = int(np.argmax(keep)) if keep.any() else len(actions)
        lo = max(0, first - 1)
        self.n_stale_dropped += first
        self.n_chunks += 1
        self.n_chunks_stale += first > 0
        self.n_chunks_late += first > 1
        if first == len(actions):
            return 0
        chunk = _Chunk(times[lo:], actions[lo:].copy())
        if self.mode == "receding":
            self._chunks.clear()
        self._chunks.append(chunk)
        return len(actions) - first

    def _sample(self, c: _Chunk, t: float) -> np.ndarray | None:
        if t + _EPS_S < c.times[0] or t - _EPS_S > c.times[-1]:
            return None
        # A query at an action's time (up to rounding) selects that action.
        j = int(np.searchsorted(c.times, t + _EPS_S, side="right")) - 1
        if j >= len(c.times) - 1 or not self.interpolate:
            return c.actions[j].copy()
        u = min(1.0, max(0.0, (t - c.times[j]) / (c.times[j + 1] - c.times[j])))
        out = (1 - u) * c.actions[j] + u * c.actions[j + 1]
        if self.quat is not None:
            out[self.quat] = slerp(c.actions[j][self.quat], c.actions[j + 1][self.quat], u)
        return out

    def remaining(self, now: float) -> int:
        """Actions of the newest chunk timed at or after ``now`` (0 before any chunk)."""
        if not self._chunks:
            return 0
        return int(np.count_nonzero(self._chunks[-1].times >= now))

    def get(self, now: float) -> np.ndarray | None:
        """The action for time ``now``; the last one again when dry (``None`` before any chunk)."""
        samples = []
        for i, c in enumerate(self._chunks):  # oldest first
            s = self._sample(c, now)
            if s is not None:
                samples.append((i, s))
        if not samples:
            if self._last is not None:
                self.n_dry += 1
            return None if self._last is None else self._last.copy()
        if self.mode == "receding" or len(samples) == 1:
            out = samples[-1][1]
        else:
            # ACT: w_i = exp(-k * i), i = 0 the oldest prediction for this time step.
            w = np.exp(-self.k * np.arange(len(samples)))
            w /= w.sum()
            stack = np.stack([s for _, s in samples])
            out = (w[:, None] * stack).sum(axis=0)
            if self.quat is not None:
                ref = stack[0][self.quat]
                qs = np.stack([q if np.dot(q, ref) >= 0 else -q for q in stack[:, self.quat]])
                q = (w[:, None] * qs).sum(axis=0)
                out[self.quat] = q / np.linalg.norm(q)
        # Forget chunks that ended before now.
        while len(self._chunks) > 1 and self._chunks[0].times[-1] < now:
            self._chunks.popleft()
        self._last = out
        return out.copy()
