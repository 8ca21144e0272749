"""Rewards of residual RL: the task's sparse success reward (the default), or that plus an opt-in,
potential-based shaping term.

Shaping (``rl.reward=shaped``) adds ``F = gamma * phi(s') - phi(s)`` to the sparse reward, with a
task-specific potential ``phi`` of the observation. Shaping of this form leaves the optimal policy
of the task unchanged (Ng, Harada and Russell 1999, "Policy invariance under reward
transformations", Theorem 1): it only tells the learner sooner which way is better.

Insertion's potential, :func:`insertion_alignment_potential`, is one minus the horizontal distance
between the peg's bottom and the hole's axis, capped at 5 cm and scaled so that its range, [0, 1],
equals the success reward: far from the hole (the base's transport) it is 0 and shapes nothing;
within 5 cm it pays for moving the peg over the hole, the base's most common failure (a peg set
down 12-50 mm beside the axis). Its floor is 0, not -1: with ``gamma < 1`` every step in a state
of potential ``phi`` carries ``(gamma - 1) * phi``, which for a potential of -1 far from the hole
paid 0.001 per step for staying away (an ACT-based residual on insertion settled there: 0 %
success, mean reward 0.001 per step); with the floor at 0 staying away earns nothing and hovering
at the hole without finishing costs a little.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

#: Distance beyond which insertion's potential is flat (m), and the potential's scale (1/m).
INSERTION_CAP_M = 0.05
INSERTION_SCALE = 1.0 / INSERTION_CAP_M


def insertion_alignment_potential(obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """``phi(s)`` of insertion, ``(N,)`` in [0, 1]: ``1 - min(|(hole - peg_bottom)_xy|, 5 cm) / 5 cm``.

    Args:
        obs: the vector env's observation ``{key: (N, ...)}``; uses ``object[:, 10:13]``, the
            peg-bottom-to-hole-floor vector (m).
    """
    d = np.asarray(obs["object"], dtype=np.float64)[:, 10:12]
    return 1.0 - INSERTION_SCALE * np.minimum(np.linalg.norm(d, axis=1), INSERTION_CAP_M)


#: task name -> potential of its observation
POTENTIALS: dict[str, Callable[[Mapping[str, np.ndarray]], np.ndarray]] = {"insertion": insertion_alignment_potential}


def make_reward_fn(kind: str, task: str, gamma: float) -> Callable | None:
    """The reward function :func:`~robolearn.rl.collect.collect_rollout` takes.

    Args:
        kind: ``"sparse"`` (None: the task's reward as it is) or ``"shaped"``.
        task: the task's name (``task.name``); gamma: the PPO discount.

    Returns:
        None, or ``fn(reward (N,), obs, next_obs, terminated (N,)) -> reward (N,)`` adding
        ``gamma * phi(next_obs) - phi(obs)``.

    Raises:
        ValueError: an unknown kind, or ``shaped`` for a task without a potential (names the known ones).
    """
    if kind == "sparse":
        return None
    if kind != "shaped":
        raise ValueError(f"rl.reward must be 'sparse' or 'shaped', got {kind!r}")
    if task not in POTENTIALS:
        raise ValueError(f"rl.reward=shaped: no shaping potential for task {task!r} (tasks with one: "
                         f"{sorted(POTENTIALS)}); use rl.reward=sparse")
    phi = POTENTIALS[task]

    def fn(reward, obs, next_obs, terminated):
        return np.asarray(reward, np.float64) + gamma * phi(next_obs) - phi(obs)

    return fn
