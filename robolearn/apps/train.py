"""``robolearn train``: train (or resume) the policy of an experiment config."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def train_from_overrides(overrides: Sequence[str] = (), progress: bool = True) -> Path:
    """Compose the config from ``configs/`` with Hydra-style ``overrides`` and train it; a run
    directory that already holds a checkpoint of the same config is resumed.

    Returns:
        The final checkpoint directory.

    Raises:
        ConfigError: a bad override, or a run directory holding a run with another config.
        StoreError: a missing or bad dataset.
    """
    from robolearn.train.trainer import train
    from robolearn.utils.config import load_config

    return train(load_config(list(overrides)), progress=progress)
