"""The training step's plumbing, made faster without changing what is learned.

One optimizer step of :func:`robolearn.train.trainer.train` is: the policy's loss forward, zero the
gradients, backward, gradient-norm clip, AdamW step, learning-rate schedule step, EMA update. The
model and its loss are the policy's own (``compute_loss``); this module only changes how they run:

* **AdamW with ``fused=True``** (one kernel over all parameters instead of a Python loop of
  per-parameter ops; the same update rule, Loshchilov & Hutter 2019) where torch has a fused kernel
  for the device (CPU, CUDA, MPS), else ``foreach=True``.
* **EMA with ``foreach=True``** (diffusers' ``EMAModel``: multi-tensor ``_foreach_sub_`` instead of
  one ``sub_`` per parameter; the same warm-up decay).
* **torch.compile of the loss forward** (``train.compile``; its backward is compiled too, by
  AOTAutograd), with inductor's ``fallback_random`` so the diffusion noise and timesteps are drawn by
  the eager kernels from the same generator: the same random numbers as the eager step. Where
  compiling fails (no C++ compiler, an op inductor cannot lower) the step warns once and runs eager
  from the same RNG state. Under DDP (several processes) the step stays eager.
* **bf16 autocast** of the loss forward (``train.bf16``), unchanged: it does change the numbers
  (bfloat16 has an 8-bit mantissa), so it stays off by default.

Measured (issue 13) on the project's 2-core AVX-512/AMX CPU, shared with other jobs (load 4-7), the
default diffusion dims (U-Net [64, 128, 256], 4.55 M parameters), synthetic batch 128, the whole step
(forward, backward, clip, AdamW, EMA). CPU-time samples/s at 1 thread (robust to the sharing; 6
alternating runs, median [min-max]): per-parameter AdamW + EMA 514 [501-527], fused AdamW +
foreach EMA 538 [522-545], + compile 487 [473-499], + bf16 594 [588-612] (first loss 1.2e-4
relative off); lerobot 0.4.4's step 503 [488-507]. Wall samples/s at 2 threads in the quiet windows
only: 931 / 1016 / 891 / 959, bf16 + compile 871; lerobot 877. So the fused optimizer and foreach
EMA are always on; compile (inductor's conv kernels are no faster than oneDNN's here, and the first
step takes 48-65 s to compile on these cores) and bf16 (different numbers) stay off by default.
``max-autotune-no-cudagraphs`` was not measured (its compile time is longer still).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, ContextManager, Iterable

import torch

# torch.compile mode of train.compile=true (inductor's default; see the module docstring).
COMPILE_MODE = "default"


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float,
                   device: torch.device) -> torch.optim.AdamW:
    """AdamW with betas ``(0.95, 0.999)`` (Diffusion Policy's), fused where torch has the kernel.

    Args:
        params: the policy's parameters (all on ``device``).
        lr: peak learning rate; weight_decay: decoupled weight decay.
        device: the parameters' device; ``fused`` on CPU, CUDA and MPS, ``foreach`` elsewhere.

    Returns:
        The optimizer; its state dict is the same as the unfused one's (checkpoints load either way).
    """
    fused = torch.device(device).type in ("cpu", "cuda", "mps")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.95, 0.999),
                             **({"fused": True} if fused else {"foreach": True}))


def make_ema(params: Iterable[torch.nn.Parameter], max_decay: float, power: float):
    """diffusers' ``EMAModel`` with Diffusion Policy's warm-up ``decay = 1 - (1 + step) ** -power``
    capped at ``max_decay``, updated with multi-tensor (``foreach``) ops. Its state dict is the
    per-parameter version's."""
    from diffusers.training_utils import EMAModel

    return EMAModel(params, decay=max_decay, use_ema_warmup=True, power=power, inv_gamma=1.0, min_decay=0.0,
                    update_after_step=0, foreach=True)


class TrainStep:
    """``step(batch) -> (loss, info, grad_norm)``: loss forward, zero grad, backward, clip, AdamW step.

    The schedule and EMA steps stay with the caller (they do not touch the gradients).

    Args:
        model: ``model(batch) -> (loss, info)`` (the policy's ``compute_loss``, or its DDP module).
        params: the parameters to clip and step (the policy's).
        optimizer: their optimizer (:func:`make_optimizer`).
        grad_clip: max gradient norm (``train.grad_clip``).
        device: the parameters' device (autocast's device type).
        compile: compile ``model`` with ``torch.compile`` (falls back to eager on failure).
        bf16: bfloat16 autocast of the forward.
        randomness: a no-argument callable returning the context the forward runs in (the trainer's
            :meth:`robolearn.train.distributed.DistContext.sliced_randomness`); none by default.
        compile_mode: ``torch.compile``'s mode.

    Attributes:
        compiled: whether the compiled forward is in use (false before the first call, and after a
            fallback).

    Call: ``batch`` ``{obs.<key>: (B, To, ...), action: (B, T, A)}`` -> ``(loss, info, grad_norm)``:
    the scalar loss (detached), the policy's loss terms, and the total gradient norm before clipping.
    """

    def __init__(self, model: Callable[[Any], tuple[torch.Tensor, dict]], params: Iterable[torch.nn.Parameter],
                 optimizer: torch.optim.Optimizer, grad_clip: float, device: torch.device, compile: bool = False,
                 bf16: bool = False, randomness: Callable[[], ContextManager] | None = None,
                 compile_mode: str = COMPILE_MODE):
        self.model, self.params, self.optimizer = model, list(params), optimizer
        self.grad_clip, self.device_type = float(grad_clip), torch.device(device).type
        self.bf16 = bool(bf16)
        self.randomness = randomness or contextlib.nullcontext
        self._fn = model
        self._first = bool(compile)
        self.compiled = False
        if compile:
            # fallback_random: random ops run eagerly from the global generator, as in the eager step.
            # (torch.compile takes a mode or options, not both: the mode's options, plus this one.)
            from torch._inductor import list_mode_options

            options = {**list_mode_options(compile_mode), "fallback_random": True}
            self._fn = torch.compile(model, dynamic=False, options=options)

    def _forward(self, fn, batch):
        with self.randomness(), torch.autocast(self.device_type, torch.bfloat16, enabled=self.bf16):
            return fn(batch)

    def __call__(self, batch):
        if self._first:  # the first compiled call compiles; on failure, eager from the same RNG state
            self._first = False
            rng = torch.get_rng_state()
            cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
            try:
                loss, info = self._forward(self._fn, batch)
                self.compiled = True
            except Exception as exc:  # noqa: BLE001  (inductor raises many types: no compiler, unsupported op ...)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                warnings.warn(f"train.compile: torch.compile failed ({type(exc).__name__}: {first[:200]}); "
                              "training eager", RuntimeWarning, stacklevel=2)
                torch.set_rng_state(rng)
                if cuda_rng is not None:
                    torch.cuda.set_rng_state_all(cuda_rng)
                self._fn = self.model
                loss, info = self._forward(self._fn, batch)
        else:
            loss, info = self._forward(self._fn, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        return loss.detach(), info, grad_norm


def build_train_step(model, policy: torch.nn.Module, optimizer: torch.optim.Optimizer, tc, ctx,
                     local_batch: int) -> TrainStep:
    """The trainer's :class:`TrainStep` from the ``train`` config ``tc`` (``grad_clip``, ``compile``,
    ``bf16``) and the process context ``ctx`` (:class:`robolearn.train.distributed.DistContext`).

    ``train.compile`` applies to one process only: under DDP the step runs eager (one warning line).
    """
    compile = bool(tc.get("compile", False))
    if compile and ctx.distributed:
        warnings.warn("train.compile: not used under DDP (several processes); training eager", RuntimeWarning,
                      stacklevel=2)
        compile = False
    return TrainStep(model, policy.parameters(), optimizer, tc.grad_clip, ctx.device, compile=compile,
                     bf16=bool(tc.bf16), randomness=lambda: ctx.sliced_randomness(local_batch))
