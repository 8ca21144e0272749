"""``robolearn rl BASE [overrides]``: refine a trained chunked policy with residual RL (PPO), then
evaluate base and base + residual on the same held-out seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from robolearn.utils.errors import ConfigError


def load_rl_config(overrides: Sequence[str] = (), name: str = "default") -> DictConfig:
    """The RL settings ``configs/rl/<name>.yaml`` with ``rl.<key>=value`` overrides, typed and checked
    by the :class:`~robolearn.utils.config_schema.RLConfig` schema.

    Raises:
        ConfigError: unknown file or key, a value of the wrong type or out of range (named as
            ``rl.<key>``), or an override that does not start with ``rl.``.
    """
    from robolearn.utils.config import load_config
    from robolearn.utils.config_schema import RLFileConfig
    from robolearn.utils.paths import config_dir

    if not (Path(config_dir()) / "rl" / f"{name}.yaml").is_file():
        known = sorted(p.stem for p in (Path(config_dir()) / "rl").glob("*.yaml"))
        raise ConfigError(f"rl={name}: no file configs/rl/{name}.yaml (known: {known})")
    for o in overrides:
        if not o.split("=", 1)[0].lstrip("+~").startswith("rl."):
            raise ConfigError(f"{o}: `robolearn rl` takes rl.<key>=value overrides (the task, policy and data "
                              f"are the base checkpoint's)")
    return load_config(list(overrides), config_name=f"rl/{name}", schema=RLFileConfig).rl


def rl_run_config(base_dir: str | Path, overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> DictConfig:
    """The RL run's config: the base checkpoint's experiment config, its ``run_dir`` set to the RL run
    (default ``<base run>_rl``), and an ``rl`` section.

    Raises:
        CheckpointError: ``base_dir`` is not a checkpoint.
        ConfigError: a bad override.
    """
    from robolearn.train.checkpoint import read_checkpoint_config

    base_cfg = read_checkpoint_config(base_dir)
    name, rest = "default", []
    for o in overrides:
        if o.startswith("rl=") or o.startswith("+rl="):
            name = o.split("=", 1)[1]
        else:
            rest.append(o)
    OmegaConf.set_struct(base_cfg, False)
    base_cfg.rl = load_rl_config(rest, name)
    base_run = Path(base_dir)
    if base_run.name == "latest" and base_run.parent.name == "checkpoints":
        base_run = base_run.parent.parent
    base_cfg.run_dir = str(run_dir if run_dir is not None else base_run.with_name(base_run.name + "_rl"))
    OmegaConf.set_struct(base_cfg, True)
    return base_cfg


def residual_rl(base_dir: str | Path, overrides: Sequence[str] = (), run_dir: str | Path | None = None,
                progress: bool = True, final_eval: bool = True) -> dict[str, Any]:
    """Train (or resume) a residual on the base checkpoint, then compare base and base + residual on
    ``rl.final_eval_episodes`` held-out seeds (the seeds ``robolearn eval`` uses), and draw the
    learning curve.

    Returns:
        ``{"run_dir", "checkpoint", "comparison" (or None)}``; the comparison (with ``selected``: the
        residual checkpoint evaluated, ``best`` with its validation or ``latest``) is also written to
        ``<run>/eval_comparison.json`` and the curve to ``<run>/learning_curve.png``.

    Raises:
        CheckpointError, ConfigError: see :func:`robolearn.rl.trainer.train_residual`.
    """
    from robolearn.rl.report import plot_learning_curve
    from robolearn.rl.trainer import read_best, train_residual

    cfg = rl_run_config(base_dir, overrides, run_dir)
    ckpt = train_residual(cfg, base_dir, progress=progress)
    run = Path(cfg.run_dir)
    plot_learning_curve(run / "metrics.jsonl", run / "learning_curve.png")
    comparison = None
    if final_eval:
        comparison = compare(base_dir, ckpt, int(cfg.rl.final_eval_episodes), progress=progress,
                             base_inference_steps=cfg.rl.base_inference_steps, base_noise=str(cfg.rl.base_noise),
                             use_ema=bool(cfg.rl.use_ema))
        best = read_best(run)  # which residual checkpoint the comparison evaluated
        comparison["selected"] = {"checkpoint": "best", **best} if best is not None else {"checkpoint": "latest"}
        (run / "eval_comparison.json").write_text(json.dumps(comparison, indent=2))
    return {"run_dir": str(run), "checkpoint": str(ckpt), "comparison": comparison}


def compare(base_dir, combined_dir, episodes: int, progress: bool = True,
            base_inference_steps: int | None = None, base_noise: str = "random",
            use_ema: bool = True) -> dict[str, Any]:
    """Evaluate the base as ``robolearn eval`` runs it, the base as the residual runs it (its
    denoising steps, initial noise and weights (EMA or raw) under RL), and base + residual, on the
    same held-out seeds.

    Returns:
        ``{"base": summary, "base_rl_steps": summary or None (when RL runs the base as eval does),
        "residual": summary, "seeds": [first, last]}`` (summaries without per-episode rows).
    """
    from robolearn.eval.rollout import evaluate_checkpoint

    def run(path, **kw):
        out = evaluate_checkpoint(path, episodes, progress=progress, **kw)
        out.pop("episodes")
        return out

    from robolearn.train.checkpoint import read_policy_type

    base = run(base_dir)
    base_rl = None
    steps = base.get("num_inference_steps")
    zero = base_noise == "zero" and read_policy_type(base_dir) == "diffusion"
    if (steps is not None and (base_inference_steps not in (None, steps) or zero)) or not use_ema:
        base_rl = run(base_dir, num_inference_steps=None if steps is None else base_inference_steps,
                      zero_initial_noise=zero, use_ema=use_ema)  # ACT has no steps: only its weights differ
    combined = run(combined_dir)
    return {"base": base, "base_rl_steps": base_rl, "residual": combined, "seeds": combined["seeds"]}
