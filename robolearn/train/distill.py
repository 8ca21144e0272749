"""Consistency distillation of a diffusion policy: the ``robolearn distill`` run.

Method (consistency distillation, Song et al., "Consistency Models", ICML 2023, Alg. 2, in the
DDPM/DDIM form of Latent Consistency Models, Luo et al. 2023, Sec. 4.2-4.3; applied to a visuomotor
Diffusion Policy as in Consistency Policy, Prasad et al., RSS 2024). One update:

1. a batch of demonstration windows: observations and the normalized action sequence ``x0``;
2. a random interval ``n`` of the teacher's DDIM chain ``t_0 > t_1 > ... > t_N = boundary`` (the
   diffusers timesteps of ``teacher_steps`` DDIM steps, e.g. 90, 80, ..., 0, then ``abar = 1``);
3. ``x_{t_n} = sqrt(abar) x0 + sqrt(1 - abar) z`` (the forward process);
4. the teacher's ODE step to the adjacent point: one deterministic DDIM step (eta = 0, Song, Meng &
   Ermon 2021, Eq. 12; with the teacher sampler's ``clip_sample``) ``x_{t_n} -> x_{t_{n+1}}``;
5. loss ``|| f_theta(x_{t_n}, t_n) - f_target(x_{t_{n+1}}, t_{n+1}) ||^2`` (squared L2, weight 1),
   ``f_target`` an EMA of the student (rate ``target_ema``, stop-gradient), ``f`` the consistency
   function of :class:`~robolearn.policies.consistency.ConsistencyPolicy` (``f(x, boundary) = x``);
6. AdamW step, target EMA update, and the evaluation EMA (the trainer's, :func:`robolearn.train.fast_step.make_optimizer` and :func:`~robolearn.train.fast_step.make_ema`).

With ``method: direct`` (direct distillation, Luhman & Luhman 2021) an update is instead: the
batch's observations, fresh initial noise ``z``, the teacher's full deterministic DDIM sample from
``z`` (``teacher_steps`` evaluations, no gradient), and the loss ``|| f_theta(z, t_0) - sample ||^2``:
the student learns the teacher sampler's one-evaluation map exactly where it is used (1 step), at
``teacher_steps`` teacher evaluations per update instead of one (no target network involved).

The student starts as the teacher (same weights). The run directory holds ``checkpoints/latest``
(policy type ``consistency``, self-contained: the teacher is needed only while distilling),
``metrics.jsonl`` (rewritten from the checkpoint on resume), TensorBoard scalars and
``distill_summary.json``. The validation gap is the mean squared distance, in the normalized action
space, between the student's chunk and the teacher's ``teacher_steps``-step DDIM chunk drawn from the
same initial noise on held-out windows (the teacher's own ``k``-step DDIM is the baseline).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from robolearn.policies.export import ddim_step
from robolearn.utils.errors import CheckpointError, ConfigError

#: ``distill.*`` keys that may change between a run and its resumption. ``data_path`` among them: a
#: run may go on with more observations (e.g. the student's own rollouts appended, DAgger); its
#: validation gap is then measured on the new store's held-out windows.
RESUMABLE = ("steps", "val_every", "ckpt_every", "log_every", "num_threads", "device", "val_windows", "data_path")


def distillation_loss(student, target, teacher, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The consistency-distillation loss of a batch (steps 2-5 of the module docstring); noise and
    intervals from torch's global generator.

    Args:
        student, target: :class:`~robolearn.policies.consistency.ConsistencyPolicy` (target: the EMA copy).
        teacher: the :class:`~robolearn.policies.diffusion.policy.DiffusionPolicy`.
        batch: ``obs.<key>: (B, To, ...)``, ``action: (B, T, A)`` in raw units.

    Returns:
        The scalar loss (gradients reach the student only).
    """
    obs = {k[4:]: v for k, v in batch.items() if k.startswith("obs.")}
    x0 = student.normalizer.normalize("action", batch["action"].float())
    B, device = x0.shape[0], x0.device
    grid = student.grid.to(device)
    n = torch.randint(0, student.teacher_steps, (B,), device=device)
    t, t_next = grid[n], grid[n + 1]
    ab = student.alpha_bar(t)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn_like(x0)
    with torch.no_grad():
        eps = teacher.model(x_t, t, teacher._encode_obs(obs))
        cfg = teacher.sample_scheduler.config
        x_next = ddim_step(x_t, eps, ab, student.alpha_bar(t_next),
                           clip=float(cfg.clip_sample_range) if cfg.clip_sample else None)
        goal = target.consistency(x_next, t_next, target.encode_obs(obs))
    return F.mse_loss(student.consistency(x_t, t, student.encode_obs(obs)), goal)


@torch.no_grad()
def teacher_sample(student, teacher, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """The teacher's deterministic DDIM sample (eta = 0) from initial noise ``x`` in ``student.teacher_steps``
    steps (the DDIM timesteps of the student's discretisation): what the teacher's own sampler gives from
    the same noise (``clip_sample`` included), by :class:`~robolearn.policies.export.DDIMSampler`.

    Args:
        x: ``(B, T, A)`` initial noise; cond: ``(B, To * feature_dim)`` the teacher's encoded observations.

    Returns:
        ``(B, T, A)`` clean sequences in the normalized action space.
    """
    from robolearn.policies.export import DDIMSampler

    return DDIMSampler(teacher, int(student.teacher_steps)).denoise(x, cond)


def direct_loss(student, teacher, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Direct distillation of the teacher's sampler (Luhman & Luhman, "Knowledge Distillation in
    Iterative Generative Models for Improved Sampling Speed", 2021, Sec. 3): the student's single
    evaluation at the chain's first timestep regresses, in squared L2, onto the teacher's full
    ``teacher_steps``-step DDIM sample from the same initial noise (fresh noise each batch, so no fixed
    noise-sample dataset is memorised). The demonstrations' actions are not used: only their
    observations.

    Args:
        student: :class:`~robolearn.policies.consistency.ConsistencyPolicy`; teacher: the diffusion policy.
        batch: ``obs.<key>: (B, To, ...)`` in raw units (``action`` is ignored).

    Returns:
        The scalar loss (gradients reach the student only).
    """
    obs = {k[4:]: v for k, v in batch.items() if k.startswith("obs.")}
    cond_teacher = teacher._encode_obs(obs)
    B, device = cond_teacher.shape[0], cond_teacher.device
    z = torch.randn((B, student.horizon, student.action_dim), device=device)
    goal = teacher_sample(student, teacher, z, cond_teacher)
    t0 = student.grid[:1].to(device).expand(B)
    return F.mse_loss(student.consistency(z, t0, student.encode_obs(obs)), goal)


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


class ValidationGap:
    """Distance between student and teacher samples on fixed held-out windows and fixed noise.

    The teacher's ``teacher_steps``-step DDIM chunks are computed once; :meth:`__call__` gives the
    student's mean squared distance to them (normalized action units) at each of ``steps``. At one
    step both samplers are deterministic maps of the same noise, so the gap measures the distillation
    directly; multistep consistency sampling re-noises with fresh noise (Song et al. 2023, Alg. 1), so
    its gap also holds sampling spread and is no target to drive to zero: judge it by success rate.
    """

    def __init__(self, teacher, data, n_windows: int, teacher_steps: int, seed: int, device: str):
        sampler = data.val if len(data.val) else data.train
        idx = np.unique(np.linspace(0, len(sampler) - 1, min(n_windows, len(sampler))).round().astype(int))
        batch = data.batch(sampler, idx, device)
        self.obs = {k[4:]: v for k, v in batch.items() if k.startswith("obs.")}
        self.seed, self.norm = seed, teacher.normalizer
        self.reference = self._teacher(teacher, teacher_steps)

    def _gen(self) -> torch.Generator:
        return torch.Generator(device=next(iter(self.obs.values())).device).manual_seed(self.seed)

    def _teacher(self, teacher, steps: int) -> torch.Tensor:
        before = teacher.num_inference_steps
        teacher.num_inference_steps = steps
        try:
            return self.norm.normalize("action", teacher.predict_action_chunk(self.obs, generator=self._gen()))
        finally:
            teacher.num_inference_steps = before

    def teacher_baseline(self, teacher, steps: int) -> float:
        """The teacher's own ``steps``-step DDIM chunks vs its reference chunks (same noise)."""
        return float(((self._teacher(teacher, steps) - self.reference) ** 2).mean())

    def __call__(self, student, steps: int) -> float:
        with torch.no_grad():
            out = student.sample(student.encode_obs(self.obs), generator=self._gen(), steps=steps)
        chunk = out[:, student.n_obs_steps - 1 :]
        return float(((chunk - self.reference) ** 2).mean())


def _check_teacher(teacher_dir: str | Path) -> None:
    from robolearn.train.checkpoint import read_policy_type

    kind = read_policy_type(teacher_dir)
    if kind != "diffusion":
        raise ConfigError(f"{teacher_dir}: a '{kind}' policy; `robolearn distill` distils a diffusion policy "
                          f"(policy type 'diffusion') into a consistency policy")


def distill(cfg: DictConfig, teacher_dir: str | Path, progress: bool = True) -> Path:
    """Distil the diffusion checkpoint at ``teacher_dir`` into a consistency policy; resume if
    ``cfg.run_dir`` holds a checkpoint of this run (same teacher, same ``distill`` settings but the
    :data:`RESUMABLE` ones).

    Args:
        cfg: the teacher's experiment config with a ``distill`` section (``configs/distill/*.yaml``)
            and ``run_dir`` set to the distillation run directory.
        teacher_dir: the teacher checkpoint or run directory.

    Returns:
        The latest checkpoint directory ``<run_dir>/checkpoints/latest``.

    Raises:
        ConfigError: a teacher that is not a diffusion policy, or bad distillation settings.
        CheckpointError: an unreadable teacher, or a run directory holding another run.
        StoreError: a missing or bad observation store.
    """
    from diffusers.optimization import get_scheduler
    from safetensors.torch import load_file
    from torch.utils.tensorboard import SummaryWriter

    from robolearn.data.training import TrainingData
    from robolearn.policies.consistency import ConsistencyPolicy
    from robolearn.train.checkpoint import (_checkpoint_dir, has_checkpoint, load_policy, load_train_state,
                                            resolve_checkpoint_dir, save_checkpoint)
    from robolearn.train.fast_step import make_ema, make_optimizer
    from robolearn.utils.progress import progress_bar

    dc = cfg.distill
    device = _device(str(dc.device))
    if dc.num_threads:
        torch.set_num_threads(int(dc.num_threads))
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints" / "latest"
    _check_teacher(teacher_dir)
    teacher, _ = load_policy(teacher_dir, use_ema=bool(dc.use_ema), device=device)
    teacher.requires_grad_(False)
    teacher_steps = int(dc.teacher_steps or teacher.num_inference_steps)
    try:
        student = ConsistencyPolicy(teacher.get_config(), num_inference_steps=int(dc.num_inference_steps),
                                    teacher_steps=teacher_steps, sigma_data=float(dc.sigma_data),
                                    timestep_scaling=float(dc.timestep_scaling)).to(device)
    except ValueError as exc:
        raise ConfigError(f"distill: {exc}") from None
    student.load_state_dict(teacher.state_dict(), strict=True)
    student.eval()  # no augmentation: student, target and teacher see the same observation encoding
    target = copy.deepcopy(student).requires_grad_(False)
    ema_student = copy.deepcopy(student).requires_grad_(False)
    data = TrainingData(cfg)

    torch.manual_seed(int(dc.seed))
    rng = np.random.default_rng(int(dc.seed))
    opt = make_optimizer(student.parameters(), dc.lr, dc.weight_decay, device)  # the trainer's AdamW
    sched = get_scheduler("cosine", optimizer=opt, num_warmup_steps=dc.warmup_steps, num_training_steps=dc.steps)
    ema = make_ema(student.parameters(), dc.ema_max_decay, dc.ema_power)  # the trainer's evaluation EMA
    step, wall_before, history = 0, 0.0, []
    teacher_id = str(_checkpoint_dir(teacher_dir).resolve())
    stats_file = Path(teacher_id) / "stats.json"  # the normalizer's statistics are the teacher's
    teacher_stats = json.loads(stats_file.read_text()) if stats_file.is_file() else None
    if has_checkpoint(ckpt_dir):
        here = resolve_checkpoint_dir(ckpt_dir)
        state = load_train_state(here)
        saved = OmegaConf.load(here / "config.yaml")
        if state is None or "distill" not in saved or "target" not in state:
            raise CheckpointError(f"{ckpt_dir}: not a distillation checkpoint (another run in {run_dir}?); "
                                  f"use another run directory")
        a, b = (dict(OmegaConf.to_container(c.distill, resolve=True)) for c in (saved, cfg))
        a.setdefault("method", "consistency")  # runs saved before distill.method existed
        changed = sorted(k for k in set(a) | set(b) if k not in RESUMABLE and a.get(k) != b.get(k))
        if changed or state["teacher"] != teacher_id:
            what = ", ".join(f"distill.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed[:5]) or \
                f"teacher {state['teacher']} -> {teacher_id}"
            raise CheckpointError(f"{run_dir} holds a distillation run with another config ({what}); use another run directory")
        student.load_state_dict(load_file(str(here / "model.safetensors"), device=device))
        target.load_state_dict({k: v.to(device) for k, v in state["target"].items()})
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        ema.load_state_dict(state["ema"])
        step, wall_before, history = int(state["step"]), float(state["wall_s"]), list(state["history"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if step >= int(dc.steps) and (run_dir / "distill_summary.json").is_file():
            return ckpt_dir  # a finished run, called again: nothing to do, its summary stays
    ema.to(device)

    gap = ValidationGap(teacher, data, int(dc.val_windows), teacher_steps, int(dc.seed), device)
    eval_steps = sorted({1, int(dc.num_inference_steps)})

    def validate(policy) -> dict[str, float]:
        return {f"gap_{k}step": gap(policy, k) for k in eval_steps}

    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml")
    if not history:  # a new run: the gap of the student as initialised (the teacher at one evaluation)
        history.append({"step": 0, **validate(student),
                        **{f"teacher_ddim{k}_gap": gap.teacher_baseline(teacher, k) for k in eval_steps}})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    writer = SummaryWriter(str(run_dir / "tensorboard"))

    def checkpoint():
        ema.copy_to(ema_student.parameters())
        state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "ema": ema.state_dict(),
                 "target": target.state_dict(), "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                 "wall_s": wall_before + time.monotonic() - t0, "history": history, "teacher": teacher_id}
        save_checkpoint(ckpt_dir, student, cfg, "consistency", ema_policy=ema_student, train_state=state,
                        stats=teacher_stats)

    bs, n_train, mu = int(dc.batch_size), len(data.train), float(dc.target_ema)
    direct = str(dc.method) == "direct"
    t0, start = time.monotonic(), step
    bar = progress_bar(total=int(dc.steps), initial=step, desc="distill", unit="step", disable=not progress)
    loss_ema = None
    saved_step = step
    try:
        while step < int(dc.steps):
            idx = rng.choice(n_train, size=bs, replace=n_train < bs)
            batch = data.batch(data.train, idx, device)
            loss = direct_loss(student, teacher, batch) if direct else distillation_loss(student, target, teacher, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), dc.grad_clip)
            opt.step()
            sched.step()
            if not direct:  # direct distillation has no target network (it stays saved, for resume)
                with torch.no_grad():
                    for p_t, p_s in zip(target.parameters(), student.parameters()):
                        p_t.lerp_(p_s, 1.0 - mu)  # theta- <- mu theta- + (1 - mu) theta
            ema.step(student.parameters())
            step += 1
            value = loss.item()
            loss_ema = value if loss_ema is None else 0.95 * loss_ema + 0.05 * value
            bar.update(1)
            row: dict[str, Any] = {}
            if step % int(dc.log_every) == 0 or step == int(dc.steps):
                row.update(loss=value, lr=sched.get_last_lr()[0])
                bar.set_postfix(loss=f"{loss_ema:.2e}", refresh=False)
            if step % int(dc.val_every) == 0 or step == int(dc.steps):
                ema.copy_to(ema_student.parameters())
                row.update(validate(ema_student))
                bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("gap")))
            if row:
                row = {"step": step, **row}
                history.append(row)
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                for k, v in row.items():
                    if k != "step":
                        writer.add_scalar(f"distill/{k}", v, step)
            if step % int(dc.ckpt_every) == 0 and step < int(dc.steps):
                checkpoint()
                saved_step = step
        if step > saved_step or not has_checkpoint(ckpt_dir):
            checkpoint()
    finally:
        bar.close()
        writer.close()
    wall = time.monotonic() - t0
    gaps = [r for r in history if any(k.startswith("gap") for k in r)]
    summary = {"method": str(dc.method), "steps": step, "resumed_from": start, "teacher": teacher_id, "teacher_steps": teacher_steps,
               "num_inference_steps": int(dc.num_inference_steps), "wall_s": round(wall, 2),
               "wall_s_total": round(wall_before + wall, 2),
               "samples_per_s": round((step - start) * bs / wall, 1) if step > start and wall > 0 else None,
               "final_loss_ema": loss_ema, "gap_before": gaps[0] if gaps else None, "gap_after": gaps[-1] if gaps else None}
    (run_dir / "distill_summary.json").write_text(json.dumps(summary, indent=2))
    return ckpt_dir

