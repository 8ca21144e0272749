"""Residual RL (ResiP, Ankile et al. 2024, "From Imitation to Refinement"): PPO trains a small
per-step Gaussian residual on top of a frozen chunked base policy (diffusion or ACT).

* :mod:`robolearn.rl.residual`: the residual actor-critic and the combined policy (a checkpoint
  of its own type, ``residual``, that loads wherever a policy does);
* :mod:`robolearn.rl.ppo`: GAE and the clipped PPO update;
* :mod:`robolearn.rl.collect`: vectorized rollouts with one batched base forward per chunk.

This stage imports policies, envs and eval; only the apps layer and checkpoint loading (through
the policy registry) import it.
"""
