"""Policies and their registry: every policy implements :class:`robolearn.policies.base.Policy`."""

from __future__ import annotations

from typing import Any, Mapping

from robolearn.utils.imports import load_object

#: Policy name (``policy.name`` in the config, ``type`` in a checkpoint's ``policy.json``) ->
#: ``"module:Class"``, imported on first use, so importing ``robolearn.policies`` loads no model code.
POLICIES: dict[str, str] = {
    "diffusion": "robolearn.policies.diffusion.policy:DiffusionPolicy",
    "act": "robolearn.policies.act.policy:ACTPolicy",
    "consistency": "robolearn.policies.consistency:ConsistencyPolicy",  # distilled from a diffusion policy by `robolearn distill`
    "residual": "robolearn.rl.residual:ResidualPolicy",  # a frozen base + a residual trained by `robolearn rl`
}


def register_policy(name: str, target: str) -> None:
    """Add policy ``name``, the class at ``target = "module:Class"`` (a :class:`~robolearn.policies.base.Policy`).

    Raises:
        ValueError: ``target`` not of the form ``"module:Class"``, or ``name`` already registered
            for another class (checkpoints name their policy type: one name, one class).
    """
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise ValueError(f"policy target must be 'module:Class', got {target!r}")
    if POLICIES.get(name, target) != target:
        raise ValueError(f"policy {name!r} is already registered as {POLICIES[name]!r}")
    POLICIES[name] = target


def policy_class(name: str) -> type:
    """The class registered as policy ``name`` (its module is imported now).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in POLICIES:
        raise ValueError(f"unknown policy type {name!r}; known: {sorted(POLICIES)}")
    return load_object(POLICIES[name])


def build_policy_from_kwargs(name: str, kwargs: Mapping[str, Any], stats=None):
    """Instantiate policy ``name`` with constructor ``kwargs`` (as in ``policy.json``).

    Raises:
        ValueError: unknown policy type.
        TypeError: kwargs that the policy does not take.
    """
    return policy_class(name)(**dict(kwargs), stats=stats)


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
