"""The residual actor-critic and the combined base + residual policy (ResiP, Ankile et al. 2024, §IV).

The residual sees the base policy's normalized observation (the current step), optionally
``symlog(obs / fine_scale)`` of the raw observation (fine resolution near zero of relative vectors,
see :class:`ResidualPolicy`), and the base action for this step, and outputs a Gaussian correction
``r`` in the action space normalized to ``[-1, 1]`` by the environment's action bounds; the
executed action is

    action = base_action + scale * dim_scale * half_range * r,        half_range = (high - low) / 2

(``scale`` 0.1 and ``dim_scale`` 1 as in ResiP). The normalized observation is clipped to
``±INPUT_CLIP``: the base's min-max statistics come from demonstrations, where some dimensions
barely move (a peg's tilt), so states the residual explores would otherwise reach thousands and
swamp the critic. The mean's last layer starts at zero, so at step 0 the deterministic combined
action equals the base action bit for bit. A separate critic sees the same input."""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from robolearn.policies.base import Policy


#: Bound of the residual's normalized observation input (the demonstrations' range maps to [-1, 1]).
INPUT_CLIP = 5.0


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``, elementwise (Hafner et al. 2023, DreamerV3, eq. 9)."""
    return torch.sign(x) * torch.log1p(x.abs())


def _mlp(n_in: int, hidden: Sequence[int], n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class ResidualActorCritic(nn.Module):
    """Gaussian residual actor and value critic on the same input ``(B, in_dim)``.

    Args:
        in_dim: input size (flattened normalized observation + normalized base action).
        action_dim: residual size ``A``.
        hidden: hidden layer sizes of both MLPs (ResiP: 256, 256; ReLU).
        log_std_init: initial log standard deviation of the residual (ResiP: -1.0, fixed).
        learn_log_std: whether the log-std is a trained parameter.
    """

    def __init__(self, in_dim: int, action_dim: int, hidden: Sequence[int] = (256, 256), log_std_init: float = -1.0,
                 learn_log_std: bool = False):
        super().__init__()
        self.actor = _mlp(in_dim, hidden, action_dim)
        self.critic = _mlp(in_dim, hidden, 1)
        nn.init.zeros_(self.actor[-1].weight)
        nn.init.zeros_(self.actor[-1].bias)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)), requires_grad=learn_log_std)

    def distribution(self, x: torch.Tensor) -> torch.distributions.Normal:
        """The residual's distribution for input ``x`` ``(B, in_dim)``: Normal of mean ``(B, A)``."""
        mean = self.actor(x)
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """State value ``(B,)`` of input ``x`` ``(B, in_dim)``."""
        return self.critic(x).squeeze(-1)


class ResidualPolicy(Policy):
    """A frozen chunked base policy plus a per-step residual; a policy type of its own (``residual``).

    Its state dict holds the base's weights (normalizer included) and the residual's, so a combined
    checkpoint is self-contained: it does not depend on the base run still existing.

    Args:
        base_type: the base's policy type (``"diffusion"``, ``"act"``).
        base_kwargs: the base's constructor arguments (its ``get_config()``).
        action_low, action_high: the environment's action bounds ``(A,)`` (raw units), which
            define the residual's normalized action space.
        hidden, log_std_init, learn_log_std: see :class:`ResidualActorCritic`.
        scale: residual scale in the normalized action space (ResiP: 0.1).
        dim_scale: per action dimension factors ``(A,)`` on ``scale`` (default: 1 for every
            dimension), e.g. a smaller one for a gripper command whose exploration noise would
            loosen a grasp.
        fine_scale: when set (raw units, e.g. 0.01 m), the input also holds ``symlog(obs / fine_scale)``
            of every observation value (``symlog(x) = sign(x) log(1 + |x|)``, Hafner et al. 2023,
            DreamerV3): the base's min-max normalization maps a 3 mm offset of a peg from a hole to
            ~0.02 of the demos' range, so a residual correcting it needs a gain of ~70 on its input
            (measured on insertion: after 400k steps it had reached ~1 % of that); on the symlog
            feature of a relative vector, millimetres near zero are ~0.1-1 apart.
        base_inference_steps: denoising steps of a diffusion base while acting (ResiP: 4);
            ``None`` keeps the base's.
        base_noise: ``"random"`` (a diffusion base samples from Gaussian noise, as it does alone) or
            ``"zero"`` (it starts from ``x_T = 0``, so with DDIM its chunk is a deterministic
            function of the observation: the base's own sampling then adds no variance to the
            returns the residual learns from; on insertion at 4 DDIM steps it also succeeded more
            often, 16/64 vs 8/64 validation seeds). Ignored for ACT (no sampling); refused for a
            distilled consistency base, which cannot start from zeros.
        stats: unused (the base's statistics come with its weights); accepted for the registry.

    Raises:
        ValueError: the base sees an image observation (residual RL takes state observations),
            action bounds of the wrong size, an unknown ``base_noise`` (or ``"zero"`` for a
            consistency base), ``dim_scale`` of the wrong size or not positive, or ``fine_scale <= 0``.
    """

    per_step = True  # acts every step: needs the observation of each step (see make_actor)

    def __init__(self, base_type: str, base_kwargs: Mapping[str, Any], action_low: Sequence[float],
                 action_high: Sequence[float], hidden: Sequence[int] = (256, 256), log_std_init: float = -1.0,
                 learn_log_std: bool = False, scale: float = 0.1, base_inference_steps: int | None = 4,
                 base_noise: str = "random",
                 dim_scale: Sequence[float] | None = None, fine_scale: float | None = None, stats=None):
        super().__init__()
        from robolearn.policies import build_policy_from_kwargs

        self.base_type, self.base_kwargs = base_type, dict(base_kwargs)
        self.base = build_policy_from_kwargs(base_type, self.base_kwargs)
        images = [k for k, s in self.base.obs_shapes.items() if len(s) == 3]
        if images:
            raise ValueError(f"residual RL takes state observations only; the base policy sees image key(s) {images}")
        self.base.requires_grad_(False)
        self.base_inference_steps = base_inference_steps
        if base_inference_steps is not None and hasattr(self.base, "num_inference_steps"):
            self.base.num_inference_steps = int(base_inference_steps)
        if base_noise not in ("random", "zero"):
            raise ValueError(f"base_noise must be 'random' or 'zero', got {base_noise!r}")
        self.base_noise = base_noise
        if hasattr(self.base, "zero_initial_noise"):
            self.base.zero_initial_noise = base_noise == "zero"
        elif base_noise == "zero" and hasattr(self.base, "num_inference_steps"):
            raise ValueError(f"base_noise='zero' is for diffusion bases; a {base_type} base samples its own "
                             "noise (use base_noise='random')")
        self.horizon, self.n_obs_steps = self.base.horizon, self.base.n_obs_steps
        self.n_action_steps = self.base.n_action_steps
        self.obs_shapes, self.action_dim = dict(self.base.obs_shapes), self.base.action_dim
        low, high = np.asarray(action_low, np.float32), np.asarray(action_high, np.float32)
        if low.shape != (self.action_dim,) or high.shape != (self.action_dim,) or not np.all(high > low):
            raise ValueError(f"action bounds must be ({self.action_dim},) with high > low, got {low} and {high}")
        self.register_buffer("action_mid", torch.from_numpy((high + low) / 2))
        self.register_buffer("action_half", torch.from_numpy((high - low) / 2))
        self.obs_keys = sorted(self.obs_shapes)
        if fine_scale is not None and not float(fine_scale) > 0:
            raise ValueError(f"fine_scale must be > 0 (or None), got {fine_scale}")
        self.fine_scale = None if fine_scale is None else float(fine_scale)
        n_obs = sum(int(np.prod(self.obs_shapes[k])) for k in self.obs_keys)
        self.in_dim = n_obs * (1 if self.fine_scale is None else 2) + self.action_dim
        self.hidden, self.log_std_init, self.learn_log_std = tuple(hidden), log_std_init, learn_log_std
        self.scale = float(scale)
        dims = np.ones(self.action_dim, np.float32) if dim_scale is None else np.asarray(dim_scale, np.float32)
        if dims.shape != (self.action_dim,) or not np.all(dims > 0):
            raise ValueError(f"dim_scale must hold {self.action_dim} positive factors, got {list(dim_scale)}")
        self.dim_scale = None if dim_scale is None else [float(v) for v in dims]
        # derived from the config, so not saved: checkpoints written before dim_scale existed still load
        self.register_buffer("step_scale", torch.from_numpy(self.scale * dims * ((high - low) / 2)), persistent=False)
        self.residual = ResidualActorCritic(self.in_dim, self.action_dim, self.hidden, log_std_init, learn_log_std)

    # ------------------------------------------------------------------ the residual's input and output

    def residual_input(self, obs: Mapping[str, torch.Tensor], base_action: torch.Tensor) -> torch.Tensor:
        """Residual input ``(B, in_dim)`` from the current observation ``{key: (B, *shape)}`` (raw) and
        the base action ``(B, A)`` (raw): the base's normalized observation (clipped to ``±INPUT_CLIP``),
        then, with ``fine_scale``, ``symlog(obs / fine_scale)`` of the raw observation, then the base
        action in the ``[-1, 1]``-normalized action space."""
        norm = self.base.normalizer
        parts = [norm.normalize(k, obs[k].float()).flatten(1).clamp(-INPUT_CLIP, INPUT_CLIP) for k in self.obs_keys]
        if self.fine_scale is not None:  # symlog(x / fine_scale): millimetre resolution near zero of relative vectors
            parts += [symlog(obs[k].float().flatten(1) / self.fine_scale) for k in self.obs_keys]
        parts.append((base_action.float() - self.action_mid) / self.action_half)
        return torch.cat(parts, dim=1)

    def combine(self, base_action: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Executed action ``(B, A)`` (raw): ``base_action + scale * dim_scale * half_range * residual``."""
        return base_action + self.step_scale * residual

    # ------------------------------------------------------------------ Policy interface

    def compute_loss(self, batch):
        """Not trained by supervision: use ``robolearn rl`` (PPO).

        Raises:
            NotImplementedError: always.
        """
        raise NotImplementedError("a residual policy is trained with `robolearn rl`, not `robolearn train`")

    def predict_action_chunk(self, obs, **kwargs):
        """A residual acts every step on that step's observation, so it has no chunk to give.

        Raises:
            NotImplementedError: always; roll it out through :meth:`make_actor` (``robolearn eval``).
        """
        raise NotImplementedError("a residual policy acts every step on the current observation: it has no "
                                  "action chunk (evaluate it with `robolearn eval`, which steps it per action)")

    def reset(self) -> None:
        """Clear the base's state between episodes."""
        self.base.reset()

    def get_config(self) -> dict[str, Any]:
        """JSON-able constructor arguments, base included."""
        return {"base_type": self.base_type, "base_kwargs": self.base_kwargs,
                "action_low": (self.action_mid - self.action_half).tolist(),
                "action_high": (self.action_mid + self.action_half).tolist(),
                "hidden": list(self.hidden), "log_std_init": self.log_std_init, "learn_log_std": self.learn_log_std,
                "scale": self.scale, "dim_scale": self.dim_scale, "fine_scale": self.fine_scale,
                "base_inference_steps": self.base_inference_steps, "base_noise": self.base_noise}

    def make_actor(self, n_envs: int, action_dim: int, obs_keys: Sequence[str], device: str = "cpu",
                   deterministic: bool = True, generator: torch.Generator | None = None):
        """The per-step actor used by :func:`robolearn.eval.rollout.rollout`: the base's open-loop
        chunks (one batched forward for all environments whose chunk ran out) plus the residual's
        mean (``deterministic``) or a sample, every step."""
        return ResidualActor(self, n_envs, action_dim, obs_keys, device, deterministic, generator)


class ResidualActor:
    """Acts with a :class:`ResidualPolicy` in ``n_envs`` environments (see :meth:`ResidualPolicy.make_actor`).

    After each :meth:`act`, :attr:`last` holds the step's tensors: ``input`` ``(n_envs, in_dim)``,
    ``residual`` and ``base`` ``(n_envs, A)``, ``log_prob`` ``(n_envs,)`` (rows of inactive
    environments are zeros), which residual RL records.
    """

    def __init__(self, policy: ResidualPolicy, n_envs: int, action_dim: int, obs_keys: Sequence[str],
                 device: str = "cpu", deterministic: bool = True, generator: torch.Generator | None = None):
        from robolearn.eval.rollout import ChunkActor

        sampled = policy.base_type in ("diffusion", "consistency")  # ACT takes no sampling arguments
        kwargs = {"generator": generator} if generator is not None and sampled else {}
        self.policy, self.n_envs, self.device = policy, n_envs, device
        self.deterministic, self.generator = deterministic, generator
        self.base = ChunkActor(policy.base, n_envs, action_dim, obs_keys, device, **kwargs)
        self.last: dict[str, torch.Tensor] = {}

    def reset(self, i: int) -> None:
        """A new episode starts in environment ``i``."""
        self.base.reset(i)

    @torch.no_grad()
    def act(self, active: Sequence[bool], history: Sequence[deque]) -> np.ndarray:
        """Actions ``(n_envs, A)`` float32 (zeros where inactive); see :meth:`ChunkActor.act`."""
        base = torch.from_numpy(self.base.act(active, history))
        idx = [i for i in range(self.n_envs) if active[i]]
        p = self.policy
        out = base.clone()
        x = torch.zeros(self.n_envs, p.in_dim)
        res = torch.zeros_like(base)
        logp = torch.zeros(self.n_envs)
        if idx:
            obs = {k: torch.from_numpy(np.stack([history[i][-1][k] for i in idx])) for k in p.obs_keys}
            x_a = p.residual_input(obs, base[idx])
            dist = p.residual.distribution(x_a)
            if self.deterministic:
                r = dist.mean
            else:
                r = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=self.generator)
            x[idx], res[idx], logp[idx] = x_a, r, dist.log_prob(r).sum(-1)
            out[idx] = p.combine(base[idx], r)
        self.last = {"input": x, "residual": res, "base": base, "log_prob": logp}
        return out.numpy().astype(np.float32)
