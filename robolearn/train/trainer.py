"""One training loop for every policy.

AdamW with linear warm-up then cosine decay (diffusers' schedule helper), gradient-norm clipping,
an EMA copy of the weights with Diffusion Policy's warm-up (decay = 1 - (1 + step) ** -power, capped;
diffusers' ``EMAModel``), a tqdm bar with the loss, validation loss on held-out episodes, TensorBoard
scalars plus ``metrics.jsonl``, and checkpoints that a restarted run resumes from.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from robolearn.data.training import TrainingData
from robolearn.policies import build_policy
from robolearn.train import distributed
from robolearn.train.checkpoint import has_checkpoint, load_train_state, resolve_checkpoint_dir, save_checkpoint
from robolearn.train.fast_step import build_train_step, make_ema, make_optimizer
from robolearn.utils.errors import ConfigError

# Keys that may change between a run and its resumption (they do not change what is learned so far).
_RESUMABLE_CHANGES = {"train.steps", "train.val_every", "train.ckpt_every", "train.log_every", "train.num_threads",
                      "train.device", "train.num_workers", "train.compile"}


def _flat(cfg: DictConfig) -> dict[str, Any]:
    out = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = node

    walk("", OmegaConf.to_container(cfg, resolve=True))
    return out


def _val_loss(policy, data: TrainingData, batch_size: int, device: str, max_windows: int = 4096) -> float | None:
    if len(data.val) == 0:
        return None
    idx = np.arange(len(data.val))[:max_windows]
    total, count = 0.0, 0
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(0)  # same noise every time: comparable numbers across the run
        for s in range(0, len(idx), batch_size):
            b = idx[s : s + batch_size]
            total += float(policy.compute_loss(data.batch(data.val, b, device))[0]) * len(b)
            count += len(b)
    return total / count


def train(cfg: DictConfig, progress: bool = True) -> Path:
    """Train the configured policy on the configured store; resume if the run directory has a checkpoint.

    Under ``torchrun`` every process runs this with the same config: ``train.batch_size`` is the
    global batch, split across the processes; rank 0 logs and writes checkpoints and the summary
    (robolearn/train/distributed.py).

    Args:
        cfg: experiment config (see ``configs/config.yaml``).
        progress: show a tqdm progress bar.

    Returns:
        The final checkpoint directory ``<run_dir>/checkpoints/latest``.

    Raises:
        StoreError: bad dataset.
        ConfigError: the run directory holds a run with a different config (change ``run_dir``,
            or delete the old run), or a policy option is invalid, or ``train.batch_size`` is not
            divisible by the number of processes.
    """
    ctx = distributed.init_distributed(cfg.train.device, global_batch=int(cfg.train.batch_size))
    try:
        return _train(cfg, progress, ctx)
    finally:
        ctx.close()


def _train(cfg: DictConfig, progress: bool, ctx: distributed.DistContext) -> Path:
    """:func:`train` in the process ``ctx``."""
    from diffusers.optimization import get_scheduler
    from torch.utils.tensorboard import SummaryWriter
    from robolearn.utils.progress import progress_bar

    tc = cfg.train
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints" / "latest"
    device = ctx.device
    bs = int(tc.batch_size)  # the global batch
    local_bs = ctx.local_batch_size(bs)
    if tc.num_threads:
        torch.set_num_threads(int(tc.num_threads))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    resume = has_checkpoint(ckpt_dir)
    if resume:
        # After a kill between the two renames of a checkpoint swap, the complete one is ``latest.old``.
        resume_dir = resolve_checkpoint_dir(ckpt_dir)
        old = OmegaConf.load(resume_dir / "config.yaml")
        a, b = _flat(old), _flat(cfg)
        # Task/eval/data keys the old run's config did not have (added to robolearn since, e.g. the
        # camera settings) are not a change: the run was made without them. Every other key must
        # match (policy keys always: they define the model), or be a resumable change.
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in _RESUMABLE_CHANGES
                      and (k in a or k.startswith("policy.")))
        if diff:
            raise ConfigError(
                f"{run_dir} holds a run with a different config ({', '.join(f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in diff[:5])}); "
                f"set run_dir=... to start a new run"
            )

    data = TrainingData(cfg)
    ctx.check_same("training data (windows, statistics)",
                   [len(data.train), len(data.val), *(float(np.sum(v)) for d in data.stats.values() for v in d.values())])
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    try:
        policy = build_policy(policy_cfg, data.obs_shapes, data.action_dim, stats=data.stats).to(device)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"policy config: {exc}") from None
    ema_policy = copy.deepcopy(policy).eval()
    for p in ema_policy.parameters():
        p.requires_grad_(False)
    ema = make_ema(policy.parameters(), tc.ema_max_decay, tc.ema_power)  # foreach update (robolearn/train/fast_step.py)
    opt = make_optimizer(policy.parameters(), tc.lr, tc.weight_decay, device)  # fused AdamW
    sched = get_scheduler("cosine", optimizer=opt, num_warmup_steps=tc.warmup_steps, num_training_steps=tc.steps)

    step = 0
    wall_before = 0.0  # training wall time of earlier sessions of this run (s), saved in each checkpoint
    if resume:
        from safetensors.torch import load_file

        state = load_train_state(resume_dir)
        policy.load_state_dict(load_file(str(resume_dir / "model.safetensors")))
        if state is not None:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            ema.load_state_dict(state["ema"])
            ema.to(device)  # the checkpoint's tensors are on the CPU
            step = int(state["step"])
            if "wall_s" in state:
                wall_before = float(state["wall_s"])
            elif (run_dir / "train_summary.json").is_file():  # a checkpoint of an older version: the last summary's
                last = json.loads((run_dir / "train_summary.json").read_text())
                wall_before = float(last.get("wall_s_total", last.get("wall_s", 0.0)))
            rng.bit_generator.state = state["numpy_rng"]
            torch.set_rng_state(state["torch_rng"])
        # LambdaLR saves only its position: a changed train.steps re-targets the cosine decay.
    ctx.check_same("resume step", [step], hint=f"every node must see the checkpoints of run_dir={run_dir} (a shared filesystem)")

    model = distributed.loss_module(policy, ctx)  # DDP with several processes: gradients averaged over ranks
    train_step = build_train_step(model, policy, opt, tc, ctx, local_bs)  # forward (compiled: train.compile), backward, clip, AdamW
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml")
    writer = SummaryWriter(str(run_dir / "tensorboard")) if ctx.is_main else distributed.NullWriter()
    metrics_f = open(run_dir / "metrics.jsonl", "a") if ctx.is_main else distributed.NullWriter()

    def checkpoint():
        if not ctx.is_main:
            return
        ema.copy_to(ema_policy.parameters())
        state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "ema": ema.state_dict(),
                 "numpy_rng": stream.rng_state(), "torch_rng": torch.get_rng_state(),
                 "wall_s": wall_before + time.monotonic() - t0}
        save_checkpoint(ckpt_dir, policy, cfg, cfg.policy.name, ema_policy=ema_policy, train_state=state,
                        stats=data.stats)

    n_train = len(data.train)
    stream = distributed.BatchStream(data, ctx, rng, bs, int(tc.num_workers))  # this rank's slice of each global batch
    t0 = time.monotonic()
    start_step = step
    bar = progress_bar(total=tc.steps, initial=step, desc=f"train {cfg.policy.name}",
                       disable=not progress or not ctx.is_main, unit="step")
    loss_ema = local_ema = None
    last_val = None
    policy.train()
    try:
        while step < tc.steps:
            batch = stream.next()
            loss, info, grad_norm = train_step(batch)
            sched.step()
            ema.step(policy.parameters())
            step += 1
            # This rank's loss terms and its EMA of the loss stay on the device; they are averaged over
            # the ranks (one all_reduce, no host sync) on log steps only. The EMA is linear in the
            # losses, so the mean of the ranks' EMAs is the EMA of the global-batch means.
            local = torch.stack([loss.detach().float(), *(v.detach().float() for v in info.values())])
            local_ema = local[0] if local_ema is None else 0.95 * local_ema + 0.05 * local[0]
            bar.update(1)
            if step % tc.log_every == 0 or step == tc.steps:
                logged = ctx.mean(torch.cat([local, local_ema.reshape(1)]))
                value, loss_ema = float(logged[0]), float(logged[-1])  # means over the global batch
                info = dict(zip(info, logged[1:-1]))
                lr = sched.get_last_lr()[0]
                bar.set_postfix(loss=f"{loss_ema:.4f}", lr=f"{lr:.1e}", refresh=False)
                writer.add_scalar("train/loss", value, step)
                writer.add_scalar("train/lr", lr, step)
                writer.add_scalar("train/grad_norm", float(grad_norm), step)
                terms = {name: float(v) for name, v in info.items()}  # the policy's loss terms (ACT: l1, kl)
                for name, v in terms.items():
                    writer.add_scalar(f"train/{name}", v, step)
                metrics_f.write(json.dumps({"step": step, "loss": value, "lr": lr, **terms}) + "\n")
            if (step % tc.val_every == 0 or step == tc.steps) and ctx.is_main:
                ema.copy_to(ema_policy.parameters())
                last_val = _val_loss(ema_policy, data, bs, device)
                if last_val is not None:
                    writer.add_scalar("val/loss", last_val, step)
                    metrics_f.write(json.dumps({"step": step, "val_loss": last_val}) + "\n")
                    bar.write(f"step {step}: val loss {last_val:.4f}")
            if step % tc.ckpt_every == 0 and step < tc.steps:
                checkpoint()
                metrics_f.flush()
        if step > start_step or not has_checkpoint(ckpt_dir):  # a finished run called again stays as it is
            checkpoint()
    finally:
        stream.close()
        bar.close()
        writer.close()
        metrics_f.close()
    wall = time.monotonic() - t0
    ctx.barrier()  # the other ranks return once rank 0's checkpoint is written
    if not ctx.is_main:
        return ckpt_dir
    summary_path = run_dir / "train_summary.json"
    if step == start_step and summary_path.is_file():
        return ckpt_dir  # a finished run, called again: nothing trained, keep its summary
    summary = {
        "steps": step, "resumed_from": start_step, "wall_s": round(wall, 2),
        # wall time of every session of this run, up to its last checkpoint (a killed run resumed counts both parts)
        "wall_s_total": round(wall_before + wall, 2),
        "samples_per_s": round((step - start_step) * bs / wall, 1) if wall > 0 and step > start_step else None,
        "world_size": ctx.world_size, "batch_size": bs, "batch_size_per_rank": local_bs, "device": str(device),
        "final_loss_ema": loss_ema, "val_loss": last_val, "n_episodes": data.n_episodes,
        "n_train_windows": n_train, "n_val_episodes": len(data.val_episodes),
        "n_params": sum(p.numel() for p in policy.parameters()),
    }
    summary_path.write_text(json.dumps(summary, indent=2))
    return ckpt_dir
