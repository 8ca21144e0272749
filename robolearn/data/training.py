"""Training data: the windows of a Zarr episode store in memory, split by episode into train and
validation samplers, with the normalizer statistics of the train episodes (DESIGN.md, "Data")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from robolearn.data.normalizer import compute_stats
from robolearn.data.sampler import SequenceSampler, split_episodes
from robolearn.data.store import EpisodeStore, is_image_key
from robolearn.utils.errors import StoreError


class TrainingData:
    """Windows of a Zarr episode store in memory, split by episode into train and validation.

    Args:
        cfg: experiment config (``data``, ``task``, ``policy``, ``seed`` sections).

    Attributes:
        arrays: ``{key: (N, D)}`` committed steps of the observation keys and the action.
        train, val: :class:`SequenceSampler` over the train / validation episodes.
        stats: normalizer statistics of the train episodes.

    Raises:
        StoreError: the store is missing, corrupt, lacks a configured key, or holds NaN/Inf in a
            float key used here (any episode: the message names the key and the episodes).
    """

    def __init__(self, cfg: DictConfig):
        if not Path(cfg.data.path).exists():
            raise StoreError(f"{cfg.data.path}: no such store (record one first, e.g. `robolearn collect "
                             f"--task {cfg.task.name} --episodes 100 --out {cfg.data.path}`, or set data.path=...)")
        store = EpisodeStore.open(cfg.data.path)
        self.obs_keys = list(cfg.task.obs_keys)
        self.action_key = cfg.task.action_key
        for k in [*self.obs_keys, self.action_key]:
            if k not in store.keys:
                raise StoreError(f"{store.path}: missing key 'data/{k}' required by task '{cfg.task.name}' "
                                 f"(store has {store.keys})")
        ends = store.episode_ends
        if cfg.data.max_episodes is not None:
            ends = ends[: int(cfg.data.max_episodes)]
        if len(ends) == 0:
            raise StoreError(f"{store.path}: no committed episodes to train on")
        n = int(ends[-1])
        # Images stay uint8 (the encoder scales them); everything else becomes float32.
        self.arrays = {k: v[:n] if is_image_key(v.shape[1:], v.dtype) else v[:n].astype(np.float32)
                       for k, v in store.load([*self.obs_keys, self.action_key]).items()}
        for k, v in self.arrays.items():  # every episode: the statistics see only the train ones, the val loss the rest
            bad_rows = np.flatnonzero(~np.isfinite(v.reshape(n, -1)).all(axis=1)) if v.dtype != np.uint8 else []
            if len(bad_rows):
                episodes = np.unique(np.searchsorted(ends, bad_rows, side="right")).tolist()
                raise StoreError(f"{store.path}: key 'data/{k}' holds NaN or Inf (at {len(bad_rows)} step(s), in episodes "
                                 f"{episodes[:10]}{' ...' if len(episodes) > 10 else ''}); training refuses it "
                                 "(`robolearn inspect` shows every such key)")
        if self.action_key != "action":
            self.arrays["action"] = self.arrays.pop(self.action_key)
        self.n_episodes = len(ends)
        self.train_episodes, self.val_episodes = split_episodes(len(ends), cfg.data.val_ratio, cfg.seed)
        p = cfg.policy
        self.train = SequenceSampler(ends, p.horizon, p.n_obs_steps, p.n_action_steps, self.train_episodes)
        self.val = SequenceSampler(ends, p.horizon, p.n_obs_steps, p.n_action_steps, self.val_episodes)
        starts = np.concatenate([[0], ends[:-1]])
        rows = np.concatenate([np.arange(starts[e], ends[e]) for e in self.train_episodes])
        self.stats = compute_stats({k: v[rows] for k, v in self.arrays.items() if v.dtype != np.uint8})
        self.obs_shapes = {k: self.arrays[k].shape[1:] for k in self.obs_keys}
        self.action_dim = int(self.arrays["action"].shape[1])

    def batch(self, sampler: SequenceSampler, idx: np.ndarray, device: str = "cpu") -> dict[str, torch.Tensor]:
        """Training batch ``{"obs.<key>": (B, To, D), "action": (B, T, A)}`` of windows ``idx``."""
        win = sampler.sample(self.arrays, idx, obs_keys=self.obs_keys)
        out = {f"obs.{k}": torch.from_numpy(win[k]) for k in self.obs_keys}
        out["action"] = torch.from_numpy(win["action"])
        return {k: v.to(device) for k, v in out.items()}
