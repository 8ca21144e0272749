"""Policies and their registry: every policy implements :class:`robolearn.policies.base.Policy`."""

from __future__ import annotations

from typing import Any, Mapping


def _policy_class(name: str):
    if name == "diffusion":
        from robolearn.policies.diffusion.policy import DiffusionPolicy

        return DiffusionPolicy
    if name == "act":
        from robolearn.policies.act.policy import ACTPolicy

        return ACTPolicy
    raise ValueError(f"unknown policy type {name!r}; known: ['act', 'diffusion']")


def build_policy_from_kwargs(name: str, kwargs: Mapping[str, Any], stats=None):
    """Instantiate policy ``name`` with constructor ``kwargs`` (as in ``policy.json``).

    Raises:
        ValueError: unknown policy type.
        TypeError: kwargs that the policy does not take.
    """
    return _policy_class(name)(**dict(kwargs), stats=stats)


def build_policy(policy_cfg: Mapping[str, Any], obs_shapes: Mapping[str, tuple], action_dim: int, stats=None):
    """Instantiate a policy from its config group (``configs/policy/*.yaml``).

    Args:
        policy_cfg: the ``policy`` section; ``name`` selects the class, the rest are its arguments.
        obs_shapes: ``{obs key: per-step shape}``.
        action_dim: action size.
        stats: dataset statistics for the normalizer.

    Raises:
        ValueError: unknown policy name.
        TypeError: a config key the policy does not take.
    """
    kwargs = {k: v for k, v in dict(policy_cfg).items() if k != "name"}
    return build_policy_from_kwargs(policy_cfg["name"], {**kwargs, "obs_shapes": obs_shapes, "action_dim": action_dim},
                                    stats=stats)
