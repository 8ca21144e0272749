"""Proximal policy optimization with generalized advantage estimation, for the residual.

Schulman et al. 2017 ("Proximal Policy Optimization Algorithms", eq. 7: the clipped surrogate) and
2016 ("High-Dimensional Continuous Control Using Generalized Advantage Estimation", eq. 16), with
ResiP's choices (Ankile et al. 2024): separate actor and critic learning rates, no entropy bonus,
advantage normalization per minibatch, gradient-norm clipping, and an early stop of the update
before a minibatch whose approximate KL to the rollout policy exceeds 1.5 x a target.
"""

from __future__ import annotations

import torch

from robolearn.utils import config_schema as _schema


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, dones: torch.Tensor,
                gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns of a rollout, ``(T, N)`` each (Schulman et al. 2016, eq. 16).

    Args:
        rewards: ``(T, N)`` reward of step ``t``.
        values: ``(T, N)`` critic value of the state at step ``t``.
        next_values: ``(T, N)`` value of the state *after* step ``t``: 0 where the episode
            terminated (success), the critic's value of the final observation where it was truncated
            at the episode limit (bootstrapping), and the next state's value otherwise (including
            the last step of a rollout that stops mid-episode).
        dones: ``(T, N)`` 1 where an episode ended at step ``t`` (terminated or truncated): the
            advantage recursion does not cross it.
        gamma: discount; lam: GAE's lambda.

    Returns:
        ``(advantages, returns)`` with ``returns = advantages + values``.
    """
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(T)):
        delta = rewards[t] + gamma * next_values[t] - values[t]
        last = delta + gamma * lam * (1.0 - dones[t]) * last
        adv[t] = last
    return adv, adv + values


def ppo_losses(new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
               new_values: torch.Tensor, returns: torch.Tensor, clip: float) -> dict[str, torch.Tensor]:
    """The clipped PPO surrogate and the value loss of a minibatch (Schulman et al. 2017, eq. 7).

    Args:
        new_log_prob, old_log_prob: ``(B,)`` log-probabilities of the taken residuals under the
            current and the rollout policy.
        advantages: ``(B,)`` (already normalized if wanted); new_values, returns: ``(B,)``.
        clip: the ratio's clip range epsilon.

    Returns:
        ``{"policy_loss", "value_loss", "approx_kl", "clip_fraction"}`` scalars; the KL estimate is
        ``E[(r - 1) - log r]`` (always >= 0).
    """
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    surrogate = torch.max(-advantages * ratio, -advantages * ratio.clamp(1.0 - clip, 1.0 + clip))
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clip_fraction = ((ratio - 1.0).abs() > clip).float().mean()
    return {"policy_loss": surrogate.mean(), "value_loss": 0.5 * (new_values - returns).pow(2).mean(),
            "approx_kl": approx_kl, "clip_fraction": clip_fraction}


#: PPO hyperparameters: the ``rl.ppo`` schema (defaults ResiP's, Ankile et al. 2024; epochs and
#: minibatches sized for a 2-core CPU), one source of defaults for configs and code.
PPOConfig = _schema.PPOConfig

#: A minibatch whose approximate KL to the rollout policy exceeds ``KL_STOP_FACTOR * target_kl`` ends
#: the update before its step (Stable-Baselines3's rule): checking only after a whole epoch let one
#: epoch move the policy by 10-20x the target on insertion with a large residual scale.
KL_STOP_FACTOR = 1.5


def ppo_update(model, actor_opt: torch.optim.Optimizer, critic_opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               cfg: PPOConfig, generator: torch.Generator) -> dict[str, float]:
    """Minibatch epochs of PPO on one rollout; stops early, before applying a minibatch whose
    approximate KL to the rollout policy exceeds ``KL_STOP_FACTOR * target_kl``.

    Args:
        model: a :class:`~robolearn.rl.residual.ResidualActorCritic`.
        actor_opt, critic_opt: optimizers of the actor (and log-std) and of the critic.
        batch: flat ``(M, ...)`` tensors ``input``, ``residual``, ``log_prob``, ``advantages``, ``returns``.
        generator: draws the minibatch permutation.

    Returns:
        Means over the minibatches evaluated: ``policy_loss``, ``value_loss``, ``approx_kl``,
        ``clip_fraction``, plus ``epochs`` begun, ``updates`` (optimizer steps taken) and
        ``explained_variance`` of the returns.
    """
    M = batch["input"].shape[0]
    mb = max(1, M // cfg.n_minibatches)
    sums: dict[str, float] = {}
    n, epochs, updates, stop = 0, 0, 0, False
    for _ in range(cfg.update_epochs):
        epochs += 1
        perm = torch.randperm(M, generator=generator)
        for start in range(0, M - mb + 1, mb):
            idx = perm[start:start + mb]
            x = batch["input"][idx]
            dist = model.distribution(x)
            adv = batch["advantages"][idx]
            if cfg.normalize_advantages and adv.numel() > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            losses = ppo_losses(dist.log_prob(batch["residual"][idx]).sum(-1), batch["log_prob"][idx], adv,
                                model.value(x), batch["returns"][idx], cfg.clip)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n += 1
            if cfg.target_kl is not None and float(losses["approx_kl"]) > KL_STOP_FACTOR * cfg.target_kl:
                stop = True  # this minibatch is not applied: the policy already moved far enough
                break
            actor_opt.zero_grad()
            critic_opt.zero_grad()
            (losses["policy_loss"] + losses["value_loss"]).backward()
            torch.nn.utils.clip_grad_norm_([p for g in actor_opt.param_groups for p in g["params"]], cfg.max_grad_norm)
            torch.nn.utils.clip_grad_norm_([p for g in critic_opt.param_groups for p in g["params"]], cfg.max_grad_norm)
            actor_opt.step()
            critic_opt.step()
            updates += 1
        if stop:
            break
    out = {k: v / max(n, 1) for k, v in sums.items()}
    ret = batch["returns"]
    with torch.no_grad():
        var = ret.var()
        out["explained_variance"] = float(1 - (ret - model.value(batch["input"])).var() / var) if var > 0 else 0.0
    out["epochs"], out["updates"] = epochs, updates
    return out
