"""The Policy interface shared by every policy (DESIGN.md, "Policies")."""

from __future__ import annotations

import abc
from typing import Any, Mapping

import torch
from torch import nn


class Policy(nn.Module, abc.ABC):
    """A visuomotor policy that predicts action chunks from an observation history.

    Batches for training hold ``obs.<key>: (B, n_obs_steps, *shape)`` and
    ``action: (B, horizon, action_dim)``, in the dataset's raw units; normalization lives inside the
    policy. Subclasses set ``horizon``, ``n_obs_steps``, ``n_action_steps``, ``obs_shapes`` and
    ``action_dim``, and return in :meth:`get_config` everything needed to rebuild them.
    """

    horizon: int
    n_obs_steps: int
    n_action_steps: int
    obs_shapes: dict[str, tuple[int, ...]]
    action_dim: int

    @abc.abstractmethod
    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Scalar training loss of a batch (keys ``obs.<key>`` and ``action``)."""

    @abc.abstractmethod
    def predict_action(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Action chunk ``(B, n_action_steps, action_dim)`` in raw units from
        ``obs = {key: (B, n_obs_steps, *shape)}`` in raw units."""

    def reset(self) -> None:
        """Clear any state kept between calls (e.g. temporal-ensembling history)."""

    @abc.abstractmethod
    def get_config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (without dataset statistics, which are buffers)."""
