"""The fast training step (robolearn/train/fast_step.py) learns what the plain step learns.

Plain step: ``policy.compute_loss``, ``zero_grad``, backward, clip, per-parameter AdamW, per-parameter
EMA (the trainer before issue 13). Tolerances: fused AdamW / foreach EMA and the compiled fp32
forward reorder float32 sums only: 1e-5 on losses and gradients (and on weights, except after a
compiled step: see its test). bf16
autocast changes the numbers on purpose (8-bit mantissa): its loss is within 3 % of the fp32 loss.
A small U-Net keeps torch.compile's compile time to seconds.
"""

import copy

import numpy as np
import pytest
import torch

from robolearn.data.normalizer import compute_stats
from robolearn.policies import build_policy
from robolearn.train import fast_step
from robolearn.train.fast_step import TrainStep, make_ema, make_optimizer

OBS = {"agent_pos": (2,), "keypoints": (16,)}
B = 16
TOL = dict(atol=1e-5, rtol=1e-5)


def _policy():
    rng = np.random.default_rng(0)
    stats = compute_stats({**{k: rng.normal(size=(64, *s)) for k, s in OBS.items()}, "action": rng.normal(size=(64, 2))})
    torch.manual_seed(0)
    return build_policy({"name": "diffusion", "down_dims": [16, 32], "step_embed_dim": 16, "horizon": 8, "n_action_steps": 4},
                        OBS, 2, stats=stats).train()


def _batch():
    g = torch.Generator().manual_seed(1)
    batch = {f"obs.{k}": torch.randn(B, 2, *s, generator=g) for k, s in OBS.items()}
    batch["action"] = torch.randn(B, 8, 2, generator=g)
    return batch


def _plain_steps(policy, n):
    """The trainer's step before the fast step: the reference."""
    from diffusers.training_utils import EMAModel

    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3, weight_decay=1e-6, betas=(0.95, 0.999))
    ema = EMAModel(policy.parameters(), decay=0.9999, use_ema_warmup=True, power=0.75, inv_gamma=1.0, min_decay=0.0,
                   update_after_step=0)
    torch.manual_seed(5)
    losses = []
    for _ in range(n):
        loss, _ = policy.compute_loss(_batch())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        ema.step(policy.parameters())
        losses.append(float(loss.detach()))
    return losses, ema, torch.get_rng_state()


def _fast_steps(policy, n, **kw):
    opt = make_optimizer(policy.parameters(), 1e-3, 1e-6, torch.device("cpu"))
    ema = make_ema(policy.parameters(), 0.9999, 0.75)
    step = TrainStep(policy.compute_loss, policy.parameters(), opt, 1.0, torch.device("cpu"), **kw)
    torch.manual_seed(5)
    losses = []
    for _ in range(n):
        loss, info, grad_norm = step(_batch())
        ema.step(policy.parameters())
        losses.append(float(loss.detach()))
        assert torch.isfinite(grad_norm) and set(info) == {"mse"}
    return losses, ema, torch.get_rng_state(), step


def _assert_same_training(a, b, losses_a, losses_b, ema_a, ema_b, tol=TOL, weight_tol=None):
    np.testing.assert_allclose(losses_a, losses_b, **tol)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **tol, msg=f"gradient {name}")
        torch.testing.assert_close(p, q, **(weight_tol or tol), msg=f"weight {name}")
    for s, t in zip(ema_a.shadow_params, ema_b.shadow_params):
        torch.testing.assert_close(s, t, **(weight_tol or tol))


def test_fused_adamw_and_foreach_ema_learn_what_the_plain_step_learns():
    plain, fast = _policy(), _policy()
    losses_p, ema_p, rng_p = _plain_steps(plain, 3)
    losses_f, ema_f, rng_f, step = _fast_steps(fast, 3)
    assert not step.compiled
    assert torch.equal(rng_p, rng_f)  # the same noise and timesteps drawn
    _assert_same_training(plain, fast, losses_p, losses_f, ema_p, ema_f)


def test_optimizer_state_dict_loads_into_the_unfused_optimizer():
    """Checkpoints of either version resume in the other."""
    policy = _policy()
    _, _, _, step = _fast_steps(policy, 1)
    plain = torch.optim.AdamW(policy.parameters(), lr=1e-3, weight_decay=1e-6, betas=(0.95, 0.999))
    plain.load_state_dict(step.optimizer.state_dict())
    make_optimizer(policy.parameters(), 1e-3, 1e-6, torch.device("cpu")).load_state_dict(plain.state_dict())


def test_compiled_step_matches_eager_and_draws_the_same_noise():
    eager, comp = _policy(), _policy()
    losses_e, ema_e, rng_e, _ = _fast_steps(eager, 2)
    losses_c, ema_c, rng_c, step = _fast_steps(comp, 2, compile=True)
    if not step.compiled:
        pytest.skip("torch.compile unavailable here (the fallback test covers this case)")
    assert torch.equal(rng_e, rng_c)
    # Adam divides each gradient by its own running RMS: a gradient element near 0 whose rounding
    # differs by 1e-7 can take an lr-sized step (1e-3) the other way, so the weights get lr-scale
    # room; the losses and gradients, the compiled computation itself, are held to 1e-5.
    _assert_same_training(eager, comp, losses_e, losses_c, ema_e, ema_c, weight_tol=dict(atol=5e-3, rtol=0))


def test_compile_failure_falls_back_to_eager_from_the_same_rng_state(monkeypatch):
    def broken_compile(fn, **kw):
        def fail(*a, **k):
            torch.randn(3)  # a failure after consuming random numbers: the fallback must restore them
            raise RuntimeError("InductorError: no C++ compiler found\nmore lines")
        return fail

    monkeypatch.setattr(fast_step.torch, "compile", broken_compile)
    eager, fallback = _policy(), _policy()
    losses_e, ema_e, rng_e, _ = _fast_steps(eager, 2)
    with pytest.warns(RuntimeWarning, match="train.compile: torch.compile failed .RuntimeError: InductorError"):
        losses_f, ema_f, rng_f, step = _fast_steps(fallback, 2, compile=True)
    assert not step.compiled
    assert torch.equal(rng_e, rng_f)
    _assert_same_training(eager, fallback, losses_e, losses_f, ema_e, ema_f, tol=dict(atol=0, rtol=0))


def test_a_real_error_in_the_loss_is_raised_not_hidden(monkeypatch):
    policy = _policy()
    step = TrainStep(policy.compute_loss, policy.parameters(), make_optimizer(policy.parameters(), 1e-3, 0, "cpu"),
                     1.0, torch.device("cpu"))
    batch = _batch()
    del batch["obs.keypoints"]
    with pytest.raises(KeyError, match="keypoints"):
        step(batch)


def test_fast_step_is_deterministic():
    a, b = _policy(), _policy()
    losses_a, ema_a, _, _ = _fast_steps(a, 2)
    losses_b, ema_b, _, _ = _fast_steps(b, 2)
    _assert_same_training(a, b, losses_a, losses_b, ema_a, ema_b, tol=dict(atol=0, rtol=0))


def test_bf16_step_stays_close_to_fp32():
    """bf16 autocast changes what is computed: its first loss (same weights, same noise) is within
    3 % of the fp32 one (measured 0.1-1 % here), and it keeps fp32 master weights."""
    fp32, bf16 = _policy(), _policy()
    losses_32, _, _, _ = _fast_steps(fp32, 1)
    losses_16, _, _, _ = _fast_steps(bf16, 1, bf16=True)
    np.testing.assert_allclose(losses_16, losses_32, rtol=3e-2)
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
