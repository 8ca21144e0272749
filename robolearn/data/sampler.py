"""Sequence windows over concatenated episodes, and the train/val split by episode.

Window semantics follow Diffusion Policy (Chi et al., RSS 2023, Sec. IV-C and its replay-buffer
sampler): a window has ``horizon`` steps; the first ``n_obs_steps`` are observation history and the
policy later executes ``n_action_steps`` actions starting at index ``n_obs_steps - 1``. To train on
the first and last steps of every episode, windows may start up to ``n_obs_steps - 1`` steps before
an episode and end up to ``n_action_steps - 1`` steps after it; the missing steps repeat the
episode's first / last frame. No window ever mixes two episodes.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def split_episodes(n_episodes: int, val_ratio: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split episode indices into train and validation sets.

    Args:
        n_episodes: number of episodes.
        val_ratio: fraction held out for validation, in ``[0, 1)``. With at least two episodes and a
            positive ratio, at least one episode is held out and at least one is kept for training.
        seed: seed of the random permutation.

    Returns:
        ``(train_idx, val_idx)``, sorted int64 arrays that partition ``range(n_episodes)``.

    Raises:
        ValueError: ``val_ratio`` outside ``[0, 1)`` or ``n_episodes < 1``.
    """
    if not 0 <= val_ratio < 1:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    if n_episodes < 1:
        raise ValueError(f"need at least one episode, got {n_episodes}")
    n_val = int(round(n_episodes * val_ratio))
    if val_ratio > 0 and n_episodes >= 2:
        n_val = min(max(n_val, 1), n_episodes - 1)
    perm = np.random.default_rng(seed).permutation(n_episodes)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


class SequenceSampler:
    """Index of every padded window of ``horizon`` steps inside the selected episodes.

    Args:
        episode_ends: ``(n_episodes,)`` cumulative end indices (as in ``meta/episode_ends``).
        horizon: steps per window.
        n_obs_steps: observation history; allows ``n_obs_steps - 1`` padded steps before an episode.
        n_action_steps: executed actions; allows ``n_action_steps - 1`` padded steps after it.
        episodes: indices of the episodes to sample from (default: all).

    Raises:
        ValueError: non-positive sizes, or ``n_obs_steps - 1 + n_action_steps > horizon``.
    """

    def __init__(self, episode_ends: np.ndarray, horizon: int, n_obs_steps: int, n_action_steps: int,
                 episodes: np.ndarray | None = None):
        if min(horizon, n_obs_steps, n_action_steps) < 1:
            raise ValueError("horizon, n_obs_steps and n_action_steps must be >= 1")
        if n_obs_steps - 1 + n_action_steps > horizon:
            raise ValueError(
                f"n_obs_steps - 1 + n_action_steps ({n_obs_steps - 1 + n_action_steps}) exceeds horizon ({horizon})"
            )
        ends = np.asarray(episode_ends, dtype=np.int64)
        starts = np.concatenate([[0], ends[:-1]])
        episodes = np.arange(len(ends)) if episodes is None else np.asarray(episodes, dtype=np.int64)
        self.horizon = horizon
        self.n_obs_steps = n_obs_steps
        pad_before, pad_after = n_obs_steps - 1, n_action_steps - 1
        win_start, ep_lo, ep_hi = [], [], []
        for e in episodes:
            s, t = int(starts[e]), int(ends[e])
            first, last = s - pad_before, t - horizon + pad_after  # inclusive range of window starts
            if last < first:  # episode shorter than a window: one window, padded at the end
                last = first
            n = last - first + 1
            win_start.append(np.arange(first, last + 1))
            ep_lo.append(np.full(n, s))
            ep_hi.append(np.full(n, t - 1))
        cat = (lambda xs: np.concatenate(xs).astype(np.int64)) if win_start else (lambda xs: np.zeros(0, np.int64))
        self.window_start, self.episode_first, self.episode_last = cat(win_start), cat(ep_lo), cat(ep_hi)

    def __len__(self) -> int:
        return len(self.window_start)

    def rows(self, idx: np.ndarray | int, length: int | None = None) -> np.ndarray:
        """Row indices into the concatenated arrays for windows ``idx``: ``(B, length)``
        (``length`` defaults to ``horizon``), clamped to each window's episode (edge repetition)."""
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        length = self.horizon if length is None else length
        r = self.window_start[idx, None] + np.arange(length)[None, :]
        return np.clip(r, self.episode_first[idx, None], self.episode_last[idx, None])

    def sample(self, data: Mapping[str, np.ndarray], idx, obs_keys=(), ) -> dict[str, np.ndarray]:
        """Gather windows ``idx`` from ``data`` (``{key: (N, ...)}``).

        Keys in ``obs_keys`` get only their first ``n_obs_steps`` steps; others the full horizon.

        Returns:
            ``{key: (B, T, ...)}`` with ``T = n_obs_steps`` or ``horizon``.
        """
        full = self.rows(idx)
        hist = full[:, : self.n_obs_steps]
        return {k: v[hist] if k in obs_keys else v[full] for k, v in data.items()}
