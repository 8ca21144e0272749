"""Consistency policy: a diffusion policy distilled into a one- to few-step sampler.

What it is (sources):

* Consistency models (Song, Dhariwal, Chen & Sutskever, "Consistency Models", ICML 2023): a function
  ``f(x_t, t)`` that maps every point of a probability-flow ODE trajectory to the trajectory's origin,
  with the boundary condition ``f(x, t_min) = x`` built in through skip/out scalings
  (Sec. 3, Eq. 5: ``f = c_skip(t) x + c_out(t) F(x, t)``, ``c_skip(t_min) = 1``, ``c_out(t_min) = 0``),
  and multistep consistency sampling (Alg. 1): denoise in one evaluation, re-noise to a smaller
  time, denoise again.
* Consistency Policy (Prasad, Lin, Wu, Zhou & Bohg, RSS 2024): distil a trained Diffusion Policy
  into such a model; 1-3 evaluations at preset chaining steps.
* The discrete-time (DDPM / DDIM) form used here is that of Latent Consistency Models (Luo et al.,
  "Latent Consistency Models", 2023, Sec. 4.2 and Eq. 9): the teacher is an epsilon-prediction DDPM,
  the student keeps the teacher's network and parametrisation, ``F`` is the teacher-style ``x0``
  prediction ``(x_t - sqrt(1 - abar_t) eps(x_t, t)) / sqrt(abar_t)``, and the scalings are
  ``c_skip = sigma_data^2 / ((s tau)^2 + sigma_data^2)``, ``c_out = s tau / sqrt((s tau)^2 + sigma_data^2)``
  (LCM's ``sigma_data = 0.5``, timestep scaling ``s = 10``). ``tau = t + 1`` counts DDPM steps from
  the clean end: ``tau = 0`` (``t = -1``, ``abar = 1``) is the boundary, where ``f(x) = x`` exactly.
  We use this form rather than the EDM/Karras one of Consistency Policy because our teacher is a
  DDPM (epsilon prediction on the ``squaredcos_cap_v2`` chain), not an EDM model: it keeps the
  teacher's network, so the student starts from the teacher's weights unchanged.

The discretisation is the teacher's own DDIM chain of ``teacher_steps`` steps (diffusers' timesteps
for that count, e.g. 90, 80, ..., 0 for 10 of 100, then the clean end): the student learns the map
from the teacher's initial noise at the first of these timesteps to the end of the teacher's
deterministic (eta = 0) DDIM trajectory (:mod:`robolearn.train.distill`).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from robolearn.policies.base import Policy

#: ``t`` of the clean end of the chain (``abar = 1``): the consistency boundary.
BOUNDARY = -1


class ConsistencyPolicy(Policy):
    """A consistency model over action chunks, with the teacher's U-Net, observation encoder and
    normalizer (the same state-dict keys as :class:`~robolearn.policies.diffusion.policy.DiffusionPolicy`,
    so the teacher's weights load into it unchanged).

    Args:
        teacher: the teacher's constructor arguments (its ``policy.json`` ``kwargs``: obs shapes,
            action size, horizon, U-Net size, DDPM chain).
        num_inference_steps: consistency evaluations per chunk (multistep sampling, Song et al. 2023
            Alg. 1), in ``[1, teacher_steps]``; 1-3 is the intended range.
        teacher_steps: DDIM steps of the teacher chain the student was distilled on (default: the
            teacher's ``num_inference_steps``); its timesteps are the student's discretisation.
        sigma_data, timestep_scaling: boundary scalings (module docstring; LCM's 0.5 and 10).
        stats: dataset statistics for the normalizer (omit when loading a checkpoint).

    Raises:
        ValueError: ``num_inference_steps`` outside ``[1, teacher_steps]``, ``teacher_steps`` outside
            ``[1, num_train_timesteps]``, or a bad teacher configuration (see DiffusionPolicy).
    """

    def __init__(self, teacher: Mapping[str, Any], num_inference_steps: int = 1, teacher_steps: int | None = None,
                 sigma_data: float = 0.5, timestep_scaling: float = 10.0, stats=None):
        super().__init__()
        from robolearn.policies.diffusion.policy import DiffusionPolicy

        self.teacher_kwargs = dict(teacher)
        arch = DiffusionPolicy(**self.teacher_kwargs, stats=stats)  # the teacher's modules, reused as ours
        self.obs_encoder, self.normalizer, self.model = arch.obs_encoder, arch.normalizer, arch.model
        self.obs_shapes, self.action_dim = arch.obs_shapes, arch.action_dim
        self.horizon, self.n_obs_steps, self.n_action_steps = arch.horizon, arch.n_obs_steps, arch.n_action_steps
        T = int(arch.train_scheduler.config.num_train_timesteps)
        self.teacher_steps = int(teacher_steps if teacher_steps is not None else arch.num_inference_steps)
        if not 1 <= self.teacher_steps <= T:
            raise ValueError(f"teacher_steps must be in [1, {T}] (num_train_timesteps), got {self.teacher_steps}")
        sched = arch.sample_scheduler
        sched.set_timesteps(self.teacher_steps)
        #: the discretisation, noisiest first, ending at the boundary: ``(teacher_steps + 1,)`` int64
        self.grid = torch.cat([sched.timesteps.long(), torch.tensor([BOUNDARY])])
        self.register_buffer("alphas_cumprod", arch.train_scheduler.alphas_cumprod.float().clone(), persistent=False)
        self.sigma_data, self.timestep_scaling = float(sigma_data), float(timestep_scaling)
        self.num_inference_steps = num_inference_steps

    @property
    def num_inference_steps(self) -> int:
        """Consistency evaluations per chunk, in ``[1, teacher_steps]`` (settable; ``ValueError`` outside)."""
        return self._num_inference_steps

    @num_inference_steps.setter
    def num_inference_steps(self, steps: int) -> None:
        if isinstance(steps, bool) or int(steps) != steps or not 1 <= steps <= self.teacher_steps:
            raise ValueError(f"a consistency policy takes 1 to {self.teacher_steps} inference steps (its teacher "
                             f"chain), got {steps}")
        self._num_inference_steps = int(steps)

    def get_config(self) -> dict[str, Any]:
        return {"teacher": dict(self.teacher_kwargs), "num_inference_steps": self.num_inference_steps,
                "teacher_steps": self.teacher_steps, "sigma_data": self.sigma_data,
                "timestep_scaling": self.timestep_scaling}

    # ------------------------------------------------------------------ the consistency function
    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """``abar_t`` of DDPM timesteps ``t`` ``(B,)`` (``BOUNDARY`` -> 1), as ``(B, 1, 1)``."""
        ab = self.alphas_cumprod.to(t.device)[t.clamp(min=0)]
        return torch.where(t == BOUNDARY, torch.ones_like(ab), ab)[:, None, None]

    def scalings(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c_skip, c_out)``, each ``(B, 1, 1)``, of timesteps ``t`` ``(B,)``: LCM's discrete
        boundary scalings (Luo et al. 2023, Eq. 9) at ``tau = t + 1``; ``(1, 0)`` at the boundary."""
        st = self.timestep_scaling * (t.float() + 1.0)
        denom = st**2 + self.sigma_data**2
        return (self.sigma_data**2 / denom)[:, None, None], (st / denom.sqrt())[:, None, None]

    def consistency(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``f(x_t, t) = c_skip x_t + c_out x0_hat(x_t, t)`` (Song et al. 2023, Eq. 5), in the
        normalized action space.

        Args:
            x: ``(B, T, A)`` noisy action sequences at DDPM timesteps ``t`` ``(B,)`` (int64;
                ``BOUNDARY`` for clean ones).
            cond: ``(B, To * feature_dim)`` encoded observations (:meth:`encode_obs`).

        Returns:
            ``(B, T, A)`` estimates of the clean sequence (not clipped).
        """
        ab = self.alpha_bar(t)
        eps = self.model(x, t.clamp(min=0), cond)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        c_skip, c_out = self.scalings(t)
        return c_skip * x + c_out * x0

    def encode_obs(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Encoded observation history ``(B, To * feature_dim)`` from ``{key: (B, To, ...)}`` (raw units).

        Raises:
            KeyError, ValueError: a missing key or too few observation steps.
        """
        from robolearn.policies.diffusion.policy import DiffusionPolicy

        return DiffusionPolicy._encode_obs(self, obs)  # the same encoding as the teacher's

    def chain(self, steps: int | None = None) -> list[int]:
        """Preset chaining timesteps (Prasad et al. 2024) of ``steps`` evaluations: evenly spaced
        points of the discretisation, starting at its noisiest (e.g. ``[90]``, ``[90, 40]``,
        ``[90, 60, 30]`` for 1-3 steps on the 10-step chain of 100)."""
        n = int(steps or self.num_inference_steps)
        return [int(self.grid[round(i * self.teacher_steps / n)]) for i in range(n)]

    # ------------------------------------------------------------------ Policy API
    def compute_loss(self, batch):
        """Not trained by supervision: ``robolearn distill`` trains it (:mod:`robolearn.train.distill`).

        Raises:
            NotImplementedError: always.
        """
        raise NotImplementedError("a consistency policy is distilled from a diffusion policy with `robolearn distill`, "
                                  "not trained with `robolearn train`")

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, generator: torch.Generator | None = None,
               steps: int | None = None) -> torch.Tensor:
        """Multistep consistency sampling (Song et al. 2023, Alg. 1) in the normalized action space.

        The initial noise is the first draw from ``generator`` (as the teacher's DDIM sampler draws
        it), so both start from the same noise under the same seed.

        Returns:
            ``(B, T, A)`` clean sequences, clipped to ``[-1, 1]`` like the teacher's ``clip_sample``.
        """
        B = cond.shape[0]
        x = torch.randn((B, self.horizon, self.action_dim), generator=generator, device=cond.device)
        x0 = x
        for i, t in enumerate(self.chain(steps)):
            tt = torch.full((B,), t, dtype=torch.long, device=cond.device)
            if i:
                ab = self.alpha_bar(tt)
                z = torch.randn(x.shape, generator=generator, device=cond.device)
                x = ab.sqrt() * x0 + (1 - ab).sqrt() * z
            x0 = self.consistency(x, tt, cond).clamp(-1.0, 1.0)
        return x0

    @torch.no_grad()
    def predict_action_chunk(self, obs: Mapping[str, torch.Tensor],
                             generator: torch.Generator | None = None) -> torch.Tensor:
        """``num_inference_steps`` consistency evaluations; the chunk from the current step on.
        :meth:`predict_action` (same arguments) gives its first ``n_action_steps``.

        Args:
            obs: ``{key: (B, To, D_key)}`` in raw units.
            generator: optional torch generator for reproducible sampling.

        Returns:
            ``(B, T - To + 1, A)`` actions in raw units.
        """
        action = self.normalizer.unnormalize("action", self.sample(self.encode_obs(obs), generator))
        return action[:, self.n_obs_steps - 1 :]
