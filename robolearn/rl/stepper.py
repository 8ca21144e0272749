"""A residual-RL policy served per step behind the HAL's chunk protocol (``robolearn deploy``).

A :class:`~robolearn.rl.residual.ResidualPolicy` acts on every step's observation, while the HAL's
policy runner (:mod:`robolearn.robots.runner`) answers requests with timestamped action chunks. The
HAL stays as it is, task-agnostic and never waiting on the policy: the policy source submits every
policy step's observation (``PolicySource(per_step=True)``), and :class:`ResidualStepper`, the
``predict`` of the runner's worker, keeps the frozen base's state between calls:

* the base's current chunk, predicted open loop from the observation history of the step that
  queried it, as :class:`robolearn.eval.rollout.ChunkActor` does in ``robolearn eval`` and in
  residual RL's rollouts; it is queried again when an observation falls ``n_action_steps`` or more
  steps after that one (or after :meth:`ResidualStepper.reset`);
* each observation is placed in that chunk by its time (``t_obs``, which the runner forwards: see
  :data:`robolearn.robots.runner.PolicyFactory`), not by counting calls, so an observation the loop
  could not submit (the worker was busy, e.g. with a base query) does not shift later steps.

Its answer is a chunk again, action ``i`` meant for the observation's step plus ``i``: the base's
actions from the current step to the end of its predicted chunk (``chunk_length``, beyond
``n_action_steps``, so a late answer still covers the steps after its latency), **each** corrected
by the residual's deterministic mean on this observation and that step's base action. Action 0 is
exactly what the eval actor (:class:`~robolearn.rl.residual.ResidualActor`, ``deterministic=True``)
executes at this step. The later ones cannot see their own step's observation yet, so they use the
newest one: correcting only action 0 would make the residual a no-op in deploy, since the loop takes
a slot's observation after the slot's command went out (relative actions are held for their whole
slot) and so always executes action 1 or later of each answer.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch


class ResidualStepper:
    """``predict(obs, t_obs) -> (T, A)`` of a residual-RL policy for the runner's worker (see the module docstring).

    Args:
        policy: a :class:`~robolearn.rl.residual.ResidualPolicy` in eval mode (its public
            ``base``, ``residual``, ``residual_input``, ``combine``, ``n_action_steps``,
            ``n_obs_steps`` and ``obs_keys`` are used).
        step_s: the policy's period (s), e.g. 0.05 at 20 Hz: observation times ``t_obs`` are placed
            in the base's chunk as ``round((t_obs - t_query) / step_s)`` steps after the query's.
        base: the model that predicts the base's chunks, ``policy.base`` by default; e.g. the base
            run by another backend (:func:`robolearn.policies.fast.accelerate`). Its
            ``predict_action_chunk(obs) -> (1, chunk_length, A)`` is called, never temporally
            ensembled (as ``robolearn deploy`` runs a plain ACT policy).

    Attributes:
        takes_obs_time: ``True``: the runner calls ``predict(obs, t_obs)``.
        n_base_queries: base chunks predicted since construction (warm-up included).
        step: the current step's index in the base's chunk (``-1`` before the first call).

    Raises:
        ValueError: ``step_s <= 0``.
    """

    takes_obs_time = True

    def __init__(self, policy, step_s: float, base=None):
        if not step_s > 0:
            raise ValueError(f"step_s must be > 0 s, got {step_s}")
        self.policy, self.step_s = policy, float(step_s)
        self.base = policy.base if base is None else base
        self.n_action_steps = int(policy.n_action_steps)
        self.n_base_queries = 0
        self.step = -1
        self._chunk: torch.Tensor | None = None  # (chunk_length, A) raw base actions from the query's step on
        self._t_query: float | None = None

    def reset(self) -> None:
        """A new episode: forget the base's chunk (the next call queries it) and reset the base."""
        self._chunk, self._t_query, self.step = None, None, -1
        self.base.reset()

    def _steps_since_query(self, t_obs: float | None) -> int:
        if t_obs is None or self._t_query is None:
            return self.step + 1  # untimed calls: one step each
        return int(round((float(t_obs) - self._t_query) / self.step_s))

    @torch.no_grad()
    def __call__(self, obs: Mapping[str, np.ndarray], t_obs: float | None = None) -> np.ndarray:
        """The answer for one observation: ``(T, A)`` float32 raw actions, action ``i`` for this step
        plus ``i``, ``T = chunk_length - step`` (``step`` in ``[0, n_action_steps)``, the index of this
        step in the base's chunk).

        Args:
            obs: ``{key: (n_obs_steps, *shape)}`` raw units, the newest last (the base sees the whole
                history when it is queried, the residual the newest observation).
            t_obs: the observation's monotonic time (s); ``None``: each call is the step after the
                previous one.

        Raises:
            KeyError: an observation key the policy needs is missing (named).
            ValueError: an observation with fewer than ``n_obs_steps`` steps or of another shape
                than the policy's (key named).
        """
        p = self.policy
        batch = {}
        for k, shape in p.obs_shapes.items():
            if k not in obs:
                raise KeyError(f"observation key {k!r} missing (got {sorted(obs)}); the residual policy needs "
                               f"{sorted(p.obs_shapes)}")
            x = np.asarray(obs[k], dtype=np.float32)
            if x.ndim != 1 + len(shape) or tuple(x.shape[1:]) != tuple(shape) or len(x) < p.n_obs_steps:
                raise ValueError(f"observation {k!r} has shape {x.shape}, the residual policy needs "
                                 f"(>= {p.n_obs_steps}, {', '.join(map(str, shape))})")
            batch[k] = torch.from_numpy(x[-p.n_obs_steps:])[None]
        i = self._steps_since_query(t_obs) if self._chunk is not None else -1
        if not 0 <= i < self.n_action_steps:
            self._chunk = self.base.predict_action_chunk(batch)[0].float()
            self._t_query = None if t_obs is None else float(t_obs)
            self.n_base_queries += 1
            i = 0
        self.step = i
        base = self._chunk[i:]  # (T, A)
        now = {k: batch[k][:, -1].expand(len(base), *batch[k].shape[2:]) for k in p.obs_keys}
        mean = p.residual.distribution(p.residual_input(now, base)).mean
        return p.combine(base, mean).numpy().astype(np.float32)


def warm_up(stepper: ResidualStepper) -> None:
    """Run ``stepper`` once on an all-zero observation of its policy's shapes, then reset it, so the
    first real call is not slower than the rest and starts a fresh episode."""
    p = stepper.policy
    stepper({k: np.zeros((p.n_obs_steps, *shape), np.float32) for k, shape in p.obs_shapes.items()}, 0.0)
    stepper.reset()
