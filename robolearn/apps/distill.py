"""``robolearn distill TEACHER [overrides]``: distil a trained diffusion policy into a one- to
few-step consistency policy, or (``distill.method=direct``) a one-step student of its DDIM sampler
(:mod:`robolearn.train.distill`); resumable, loadable wherever a policy is."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from robolearn.utils.errors import ConfigError


def load_distill_config(overrides: Sequence[str] = (), name: str = "default") -> DictConfig:
    """The settings of ``configs/distill/<name>.yaml`` with ``distill.<key>=value`` overrides, typed and
    checked by :class:`~robolearn.utils.config_schema.DistillConfig`.

    Raises:
        ConfigError: an unknown file or key, a value of the wrong type or out of range, or an override
            that does not start with ``distill.``.
    """
    from robolearn.utils.config import load_config
    from robolearn.utils.config_schema import DistillFileConfig
    from robolearn.utils.paths import config_dir

    folder = Path(config_dir()) / "distill"
    if not (folder / f"{name}.yaml").is_file():
        raise ConfigError(f"distill={name}: no file configs/distill/{name}.yaml "
                          f"(known: {sorted(p.stem for p in folder.glob('*.yaml'))})")
    bad = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith("distill.")]
    if bad:
        raise ConfigError(f"{bad[0]}: `robolearn distill` takes distill.<key>=value overrides (the task, policy "
                          f"and data are the teacher checkpoint's)")
    return load_config(list(overrides), config_name=f"distill/{name}", schema=DistillFileConfig).distill


def distill_run_config(teacher_dir: str | Path, overrides: Sequence[str] = (),
                       run_dir: str | Path | None = None) -> DictConfig:
    """The distillation run's config: the teacher checkpoint's experiment config with a ``distill``
    section, ``run_dir`` (default ``<teacher run>_distill``), ``data.path`` from ``distill.data_path``
    when set, and ``policy.name: consistency`` (what ``robolearn eval`` reports).

    Raises:
        CheckpointError: ``teacher_dir`` is not a checkpoint.
        ConfigError: a bad override.
    """
    from robolearn.train.checkpoint import read_checkpoint_config

    cfg = read_checkpoint_config(teacher_dir)
    name = "default"
    rest = []
    for o in overrides:
        if o.lstrip("+").startswith("distill="):
            name = o.split("=", 1)[1]
        else:
            rest.append(o)
    dc = load_distill_config(rest, name)
    OmegaConf.set_struct(cfg, False)
    cfg.distill = dc
    if dc.data_path is not None:
        cfg.data.path = dc.data_path
    cfg.policy.name = "consistency"
    cfg.policy.num_inference_steps = int(dc.num_inference_steps)
    teacher = Path(teacher_dir)
    run = teacher.parent.parent if teacher.parts[-2:] == ("checkpoints", "latest") else teacher
    cfg.run_dir = str(run_dir if run_dir is not None else run.with_name(run.name + "_distill"))
    OmegaConf.set_struct(cfg, True)
    return cfg


def distill_checkpoint(teacher_dir: str | Path, overrides: Sequence[str] = (), run_dir: str | Path | None = None,
                       progress: bool = True) -> dict[str, Any]:
    """Distil (or resume distilling) the teacher at ``teacher_dir``.

    Returns:
        ``{"run_dir", "checkpoint", "summary"}`` (``summary``: ``<run>/distill_summary.json``'s content).

    Raises:
        CheckpointError, ConfigError, StoreError: see :func:`robolearn.train.distill.distill`.
    """
    import json

    from robolearn.train.distill import distill

    cfg = distill_run_config(teacher_dir, overrides, run_dir)
    ckpt = distill(cfg, teacher_dir, progress=progress)
    summary = json.loads((Path(cfg.run_dir) / "distill_summary.json").read_text())
    return {"run_dir": cfg.run_dir, "checkpoint": str(ckpt), "summary": summary}
