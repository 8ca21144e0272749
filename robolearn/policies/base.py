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
    policy. Subclasses set ``horizon``, ``n_obs_steps``, then ``n_action_steps`` (checked against
    them), ``obs_shapes`` and ``action_dim``, and return in :meth:`get_config` everything needed to
    rebuild them.

    The chunk: of the ``horizon`` actions a policy predicts, the first ``n_obs_steps - 1`` belong to
    the past observation steps; :meth:`predict_action_chunk` returns the rest, the
    ``chunk_length = horizon - n_obs_steps + 1`` actions from the current step on (what a controller
    with latency draws from), and :meth:`predict_action` the first ``n_action_steps`` of them (what
    a closed-loop rollout executes before querying again).
    """

    horizon: int
    n_obs_steps: int
    obs_shapes: dict[str, tuple[int, ...]]
    action_dim: int

    @property
    def chunk_length(self) -> int:
        """Actions predicted from the current step on: ``horizon - n_obs_steps + 1``."""
        return self.horizon - self.n_obs_steps + 1

    @property
    def n_action_steps(self) -> int:
        """Actions executed per chunk by :meth:`predict_action`, in ``[1, chunk_length]``.

        Settable (evaluation at fewer actions per chunk: more closed-loop); the setter raises
        ``ValueError`` for a value outside ``[1, horizon - n_obs_steps + 1]``.
        """
        return self._n_action_steps

    @n_action_steps.setter
    def n_action_steps(self, steps: int) -> None:
        most = self.chunk_length
        if isinstance(steps, bool) or int(steps) != steps or not 1 <= steps <= most:
            raise ValueError(f"n_action_steps must be in [1, {most}] (horizon {self.horizon} - n_obs_steps "
                             f"{self.n_obs_steps} + 1: the chunk from the current step on), got {steps}")
        self._n_action_steps = int(steps)

    @abc.abstractmethod
    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss of a batch (keys ``obs.<key>`` and ``action``).

        Returns:
            ``(loss, info)``: the scalar loss to back-propagate, and its terms ``{name: detached
            scalar tensor}`` for logging (the trainer writes them as ``train/<name>``).
        """

    @abc.abstractmethod
    def predict_action_chunk(self, obs: Mapping[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """Every action predicted from the current step on, ``(B, chunk_length, action_dim)`` in raw
        units, from ``obs = {key: (B, n_obs_steps, *shape)}`` in raw units (``kwargs``: sampling
        options of the policy, e.g. a ``generator``)."""

    @torch.no_grad()
    def predict_action(self, obs: Mapping[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """The actions to execute, ``(B, n_action_steps, action_dim)`` in raw units: the first
        ``n_action_steps`` of :meth:`predict_action_chunk` (same arguments)."""
        return self.predict_action_chunk(obs, **kwargs)[:, : self.n_action_steps]

    def reset(self) -> None:
        """Clear any state kept between calls (e.g. temporal-ensembling history)."""

    @abc.abstractmethod
    def get_config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (without dataset statistics, which are buffers)."""
