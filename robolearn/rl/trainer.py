"""The residual-RL run: rollouts, PPO updates, periodic evaluation, checkpoints, resume.

A run directory holds ``checkpoints/latest`` (a regular checkpoint of policy type ``residual``:
the base's weights copied in, so it does not depend on the base run, plus the residual's, the
config, and the resume state), ``checkpoints/best`` (the same without resume state, with
``best.json``: its iteration, env steps and validation score; written each time the validation
success rate beats the best checkpoint's: the checkpoint a run directory stands for in
``robolearn eval`` and ``deploy``, and the one the final comparison evaluates; the validation seeds
are disjoint from the held-out ones, so choosing on them does not bias the held-out figure; as
robomimic and Diffusion Policy keep their best checkpoints by rollout success), ``metrics.jsonl``
(one row per PPO iteration, rewritten from the checkpoint on resume so a killed session leaves no
duplicate rows), TensorBoard scalars and
``rl_summary.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from robolearn.utils.errors import CheckpointError, ConfigError

#: RL seeds are drawn from ``[rl.seed_start, rl.seed_start + SEED_RANGE)``.
SEED_RANGE = 10_000_000


def validation_seeds(cfg: DictConfig) -> list[int]:
    """The seeds of the periodic evaluation during RL (``rl.eval_seed_start`` on; disjoint from
    training and held-out seeds: checked by :func:`check_seed_sets`)."""
    return list(range(int(cfg.rl.eval_seed_start), int(cfg.rl.eval_seed_start) + int(cfg.rl.eval_episodes)))


def check_seed_sets(cfg: DictConfig) -> dict[str, set[int]]:
    """Assert that RL's training seeds, its validation seeds, the demonstration seeds (read from the
    base's store) and the held-out evaluation seeds (the ``rl.final_eval_episodes`` seeds ``robolearn
    eval`` would use) are pairwise disjoint.

    Returns:
        The seed sets RL must never train on, by name (``demonstration``, ``held-out evaluation``,
        ``RL validation``).

    Raises:
        ConfigError: two of the sets meet (the message names them and a shared seed).
    """
    from robolearn.eval.rollout import _demo_seeds, held_out_seeds

    train = range(int(cfg.rl.seed_start), int(cfg.rl.seed_start) + SEED_RANGE)
    sets = {"demonstration": _demo_seeds(cfg), "held-out evaluation": set(held_out_seeds(cfg, int(cfg.rl.final_eval_episodes))),
            "RL validation": set(validation_seeds(cfg))}
    for name, seeds in sets.items():
        hit = sorted(s for s in seeds if s in train)
        if hit:
            raise ConfigError(f"rl.seed_start={cfg.rl.seed_start}: the RL training seed range meets the {name} "
                              f"seeds (e.g. {hit[0]}); move rl.seed_start")
    names = list(sets)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            hit = sets[names[a]] & sets[names[b]]
            if hit:
                raise ConfigError(f"the {names[a]} and {names[b]} seeds meet (e.g. {min(hit)}); "
                                  f"move rl.eval_seed_start or eval.seed_start")
    return sets


def build_residual(base, base_type: str, env_action_space, rl_cfg: Mapping[str, Any], env_obs_space=None):
    """A :class:`~robolearn.rl.residual.ResidualPolicy` around a trained ``base`` (weights copied in).

    Raises:
        ConfigError: the environment's action space is unbounded or of another size than the base's
            actions, the environment lacks an observation the base needs (or gives it another shape),
            or the base sees images.
    """
    from robolearn.rl.residual import ResidualPolicy

    if env_action_space.shape != (base.action_dim,):
        raise ConfigError(f"the base policy acts in {base.action_dim} dimensions but the task's actions are "
                          f"{tuple(env_action_space.shape)}: a base trained on another task?")
    if env_obs_space is not None:
        for k, shape in base.obs_shapes.items():
            if k not in env_obs_space.spaces or tuple(env_obs_space[k].shape) != tuple(shape):
                got = tuple(env_obs_space[k].shape) if k in env_obs_space.spaces else "missing"
                raise ConfigError(f"the base policy needs observation {k!r} of shape {tuple(shape)}; the task "
                                  f"gives {got}: a base trained on another task?")
    low, high = np.asarray(env_action_space.low, np.float64), np.asarray(env_action_space.high, np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ConfigError(f"residual RL needs a bounded action space; the task's is [{low}, {high}]")
    r = rl_cfg["residual"]
    try:
        policy = ResidualPolicy(base_type, base.get_config(), low.tolist(), high.tolist(), hidden=list(r["hidden"]),
                                log_std_init=float(r["log_std_init"]), learn_log_std=bool(r["learn_log_std"]),
                                scale=float(r["scale"]), base_inference_steps=rl_cfg.get("base_inference_steps"),
                                base_noise=str(rl_cfg.get("base_noise", "zero")),  # the schema default
                                dim_scale=None if r.get("dim_scale") is None else [float(v) for v in r["dim_scale"]],
                                fine_scale=r.get("fine_scale"))
    except ValueError as exc:
        raise ConfigError(f"cannot refine this base: {exc}") from None
    policy.base.load_state_dict(base.state_dict(), strict=True)
    return policy.eval()


def _optimizers(policy, ppo):
    actor_params = list(policy.residual.actor.parameters()) + (
        [policy.residual.log_std] if policy.residual.log_std.requires_grad else [])
    return (torch.optim.Adam(actor_params, lr=ppo.actor_lr),
            torch.optim.Adam(policy.residual.critic.parameters(), lr=ppo.critic_lr))


def train_residual(cfg: DictConfig, base_dir: str | Path, progress: bool = True) -> Path:
    """Refine the base checkpoint at ``base_dir`` with PPO on a residual; resume if ``cfg.run_dir``
    holds a checkpoint of this run.

    Args:
        cfg: the base's experiment config with an ``rl`` section (``configs/rl/*.yaml``) and
            ``run_dir`` set to the RL run directory.
        base_dir: the base checkpoint or run directory.

    Returns:
        The checkpoint to evaluate: ``checkpoints/best`` when a validation ran, else ``checkpoints/latest``.

    Raises:
        CheckpointError: unreadable base, or a run directory holding an RL run of another base or config.
        ConfigError: bad RL settings, overlapping seed sets, a base that cannot be refined.
    """
    from torch.utils.tensorboard import SummaryWriter

    from robolearn.envs import make_env
    from robolearn.eval.rollout import rollout, summarize
    from robolearn.rl.collect import SeedCounter, collect_parallel, make_vector_env
    from robolearn.rl.ppo import PPOConfig, compute_gae, ppo_update
    from robolearn.rl.rewards import make_reward_fn
    from robolearn.train.checkpoint import (has_checkpoint, load_policy, load_train_state, read_policy_type,
                                            remove_checkpoint, save_checkpoint)
    from robolearn.utils.progress import progress_bar

    rl = cfg.rl
    if rl.num_threads:
        torch.set_num_threads(int(rl.num_threads))
    reserved = set().union(*check_seed_sets(cfg).values())
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints" / "latest"
    best_dir = run_dir / "checkpoints" / "best"
    ppo = PPOConfig(**OmegaConf.to_container(rl.ppo, resolve=True))
    try:
        reward_fn = make_reward_fn(str(rl.reward), str(cfg.task.name), float(ppo.gamma))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    probe = make_env(cfg.task)
    action_space, obs_space = probe.action_space, probe.observation_space
    probe.close()

    state = None
    if has_checkpoint(ckpt_dir):
        policy, saved = load_policy(ckpt_dir, use_ema=False)
        state = load_train_state(ckpt_dir)
        if state is None or type(policy).__name__ != "ResidualPolicy":
            raise CheckpointError(f"{ckpt_dir}: not a residual-RL checkpoint (another run in {run_dir}?)")
        a, b = dict(OmegaConf.to_container(saved.rl, resolve=True)), dict(OmegaConf.to_container(rl, resolve=True))
        for k in ("total_env_steps", "max_wall_s", "final_eval_episodes"):  # may change between sessions
            a.pop(k, None), b.pop(k, None)
        if a != b or saved.task.name != cfg.task.name:
            raise CheckpointError(f"{run_dir} holds an RL run with another config; use another run_dir")
    else:
        base, _ = load_policy(base_dir, use_ema=bool(rl.use_ema))
        base_type = read_policy_type(base_dir)
        if base_type == "residual":
            raise ConfigError(f"{base_dir} is already a residual-RL policy; refine its base instead")
        torch.manual_seed(int(rl.seed))  # the residual's initial weights
        policy = build_residual(base, base_type, action_space, rl, obs_space)
    policy.eval()
    actor_opt, critic_opt = _optimizers(policy, ppo)
    gen = torch.Generator().manual_seed(int(rl.seed))
    groups = _groups(int(rl.n_envs), int(rl.collect_threads))
    seeds = [SeedCounter(int(rl.seed_start) + g, int(rl.seed_start) + SEED_RANGE, exclude=reserved, step=len(groups))
             for g in range(len(groups))]
    history: list[dict] = []
    it, env_steps, wall_s = 0, 0, 0.0
    if state is not None:
        actor_opt.load_state_dict(state["actor_opt"])
        critic_opt.load_state_dict(state["critic_opt"])
        gen.set_state(state["generator"])
        for counter, nxt in zip(seeds, state["seed_next"], strict=True):  # same groups: the config check above
            counter.next = int(nxt)
        history = list(state["history"])
        it, env_steps, wall_s = int(state["iteration"]), int(state["env_steps"]), float(state["wall_s"])
    saved_it = it  # the iteration the checkpoint holds
    if state is None:  # a fresh run: a `best` left by an earlier run in this directory is not this run's
        remove_checkpoint(best_dir)
    # the score to beat: the best checkpoint's own (a run killed after writing `best` but before
    # `latest` repeats that iteration exactly, with the same score: `best` already holds it)
    best = read_best(run_dir)
    best_val = -1.0 if best is None else float(best["val_success_rate"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    writer = SummaryWriter(str(run_dir / "tensorboard"))
    venvs = [make_vector_env(cfg.task, n, str(rl.vector_env)) for n in groups]
    obs_keys = list(cfg.task.obs_keys)
    total = int(rl.total_env_steps)
    steps_per_iter = int(rl.n_envs) * int(rl.steps_per_rollout)
    bar = progress_bar(total=total, initial=min(env_steps, total), desc="rl", unit="step", disable=not progress)
    t_session = time.monotonic()
    recent: list[bool] = []  # outcomes of the last training episodes, for the progress bar
    try:
        while env_steps < total:
            if rl.max_wall_s is not None and wall_s >= float(rl.max_wall_s):
                break
            t0 = time.monotonic()
            ro = collect_parallel(policy, venvs, obs_keys, int(rl.steps_per_rollout), seeds, gen, reward_fn=reward_fn,
                                  align_chunks=bool(rl.align_chunks))
            t_collect = time.monotonic() - t0
            adv, ret = compute_gae(ro.rewards, ro.values, ro.next_values, ro.dones, ppo.gamma, ppo.gae_lambda)
            flat = ro.flat(adv, ret)  # steps of environments waiting for a chunk boundary are left out
            t1 = time.monotonic()
            info = ppo_update(policy.residual, actor_opt, critic_opt, flat, ppo, gen)
            t_update = time.monotonic() - t1
            it += 1
            env_steps += steps_per_iter
            successes = [e["success"] for e in ro.episodes]
            row: dict[str, Any] = {
                "iteration": it, "env_steps": env_steps, "wall_s": round(wall_s + time.monotonic() - t0, 3),
                "episodes": len(successes), "train_success_rate": float(np.mean(successes)) if successes else None,
                "idle_steps": int(ro.valid.numel() - flat["input"].shape[0]),
                "mean_reward": float(ro.rewards.sum() / ro.valid.sum()),
                "collect_s": round(t_collect, 3), "update_s": round(t_update, 3),
                "env_steps_per_s_collect": round(steps_per_iter / t_collect, 1),
                **{k: round(v, 3) for k, v in ro.timings.items()}, "base_queries": ro.base_queries,
                **{k: float(v) for k, v in info.items()},
            }
            if rl.eval_every and it % int(rl.eval_every) == 0:
                t2 = time.monotonic()
                res = summarize(rollout(policy, cfg.task, validation_seeds(cfg), n_envs=int(rl.n_envs), progress=False,
                                        in_process=True))
                row.update({"val_success_rate": res["success_rate"], "val_ci95": res["success_ci95"],
                            "val_s": round(time.monotonic() - t2, 2)})
            wall_s += time.monotonic() - t0
            row["wall_s"] = round(wall_s, 3)
            if row.get("val_success_rate", -1.0) > best_val:  # before `latest`: see best_val above
                best_val = row["val_success_rate"]
                meta = {"iteration": it, "env_steps": env_steps, "wall_s": row["wall_s"], "val_success_rate": best_val,
                        "val_episodes": int(rl.eval_episodes)}
                save_checkpoint(best_dir, policy, cfg, "residual", extra_files={"best.json": json.dumps(meta, indent=2)})
            history.append(row)
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("iteration", "env_steps"):
                    writer.add_scalar(f"rl/{k}", v, env_steps)
            writer.flush()
            recent = (recent + successes)[-200:]
            bar.update(min(steps_per_iter, total - bar.n))
            bar.set_postfix(sps=f"{steps_per_iter / (time.monotonic() - t0):.0f}",
                            success=f"{np.mean(recent):.2f}" if recent else "-", refresh=False)
            if it % int(rl.ckpt_every) == 0 or env_steps >= total:
                _save(ckpt_dir, policy, cfg, actor_opt, critic_opt, gen, seeds, history, it, env_steps, wall_s)
                saved_it = it
    finally:
        bar.close()
        for venv in venvs:
            venv.close()
        writer.close()
    if saved_it != it:  # stopped by the wall-clock budget between checkpoints
        _save(ckpt_dir, policy, cfg, actor_opt, critic_opt, gen, seeds, history, it, env_steps, wall_s)
    summary = {"iterations": it, "env_steps": env_steps, "wall_s": round(wall_s, 1),
               "session_wall_s": round(time.monotonic() - t_session, 1), "base": str(base_dir),
               "env_steps_per_s_overall": round(env_steps / wall_s, 1) if wall_s else None}
    summary["best"] = read_best(run_dir)
    (run_dir / "rl_summary.json").write_text(json.dumps(summary, indent=2))
    return best_dir if summary["best"] is not None else ckpt_dir


def read_best(run_dir: str | Path) -> dict | None:
    """``best.json`` of a residual-RL run's ``checkpoints/best`` (``iteration``, ``env_steps``,
    ``wall_s``, ``val_success_rate``, ``val_episodes``), or None where the run has no complete best
    checkpoint (no validation yet, or a run from before best checkpoints were kept)."""
    from robolearn.train.checkpoint import has_checkpoint, resolve_checkpoint_dir

    best_dir = Path(run_dir) / "checkpoints" / "best"
    meta = resolve_checkpoint_dir(best_dir) / "best.json"
    return json.loads(meta.read_text()) if has_checkpoint(best_dir) and meta.is_file() else None


def _groups(n_envs: int, threads: int) -> list[int]:
    """Environments per collection group: ``n_envs`` split as evenly as possible over
    ``min(threads, n_envs)`` groups (the first groups get the extra ones)."""
    g = max(1, min(int(threads), int(n_envs)))
    return [n_envs // g + (1 if i < n_envs % g else 0) for i in range(g)]


def _save(ckpt_dir, policy, cfg, actor_opt, critic_opt, gen, seeds, history, it, env_steps, wall_s):
    from robolearn.train.checkpoint import save_checkpoint

    state = {"actor_opt": actor_opt.state_dict(), "critic_opt": critic_opt.state_dict(), "generator": gen.get_state(),
             "seed_next": [c.next for c in seeds], "history": history, "iteration": it, "env_steps": env_steps, "wall_s": wall_s}
    save_checkpoint(ckpt_dir, policy, cfg, "residual", train_state=state)
