"""Policy regression: the committed artifacts of ``tests/regression/make_artifacts.py`` (initial weights,
loss, gradients and predicted actions of a small diffusion and ACT policy, from state and from images)
are reproduced, and an old-format checkpoint keeps loading and giving its stored action.

A refactor must keep these equal; a change that alters the numbers on purpose regenerates them in a
commit of its own that says why (see the generator's docstring).

Tolerance: with one torch thread, on one machine and torch build, the numbers are bit-identical;
``atol=1e-6, rtol=1e-5`` leaves room only for another CPU's summation order, far below any change
of the model (another noise seed moves the loss by 0.35 to 0.69 here). Sampled actions get
``ACTION_TOL``: ten DDIM steps feed each step's rounding into the next, and on a CPU with AVX-512 and
AMX (where oneDNN picks other kernels than on the machine the artifacts were made on) the state
diffusion action moved by 9.8e-5 (relative 1.2e-4) while its loss and gradients stayed within 1e-6;
scaling one layer of the model by 1.001 moves them by 2.9e-2.
"""

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

_spec = importlib.util.spec_from_file_location("make_artifacts", Path(__file__).parent / "regression" / "make_artifacts.py")
artifacts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(artifacts)

TOL = dict(atol=1e-6, rtol=1e-5)
ACTION_TOL = dict(atol=1e-3, rtol=1e-3)  # sampled actions (see the module docstring)


@pytest.fixture(autouse=True)
def one_thread():
    """The artifacts were made with ``artifacts.THREADS`` torch threads: the same summation order."""
    before = torch.get_num_threads()
    torch.set_num_threads(artifacts.THREADS)
    yield
    torch.set_num_threads(before)


def _stored(case: str) -> dict[str, dict[str, torch.Tensor]]:
    """``{"weights": ..., "batch": ..., "out": {loss, grad.*, action, action_chunk}}`` of a case."""
    flat = load_file(str(artifacts.POLICY_DIR / f"{case}.safetensors"))
    parts = {"weights": {}, "batch": {}, "out": {}}
    for k, v in flat.items():
        head, _, rest = k.partition(".")
        if head in ("weights", "batch"):
            parts[head][rest] = v
        else:
            parts["out"][k] = v
    return parts


@pytest.mark.parametrize("case", sorted(artifacts.CASES))
def test_initial_weights_are_unchanged(case):
    """Same seed, same construction order: the same initial weights, to the bit."""
    stored = _stored(case)["weights"]
    built = artifacts.build(case).state_dict()
    assert sorted(built) == sorted(stored)
    for k, v in built.items():
        torch.testing.assert_close(v, stored[k], atol=0, rtol=0, msg=lambda m, k=k: f"{case} weights.{k}: {m}")


@pytest.mark.parametrize("case", sorted(artifacts.CASES))
def test_loss_gradients_and_actions_are_unchanged(case):
    stored = _stored(case)
    policy = artifacts.build(case)
    policy.load_state_dict(stored["weights"], strict=True)
    out = artifacts.outputs(policy, stored["batch"])
    assert sorted(out) == sorted(stored["out"])  # the same parameters receive a gradient
    assert any(k.startswith("grad.") for k in out) and out["action"].shape == (
        artifacts.BATCH, policy.n_action_steps, artifacts.ACTION_DIM)
    assert out["action_chunk"].shape[1] == policy.horizon - policy.n_obs_steps + 1
    for k, v in out.items():
        tol = ACTION_TOL if k in ("action", "action_chunk") else TOL
        torch.testing.assert_close(v, stored["out"][k], **tol, msg=lambda m, k=k: f"{case} {k}: {m}")


def test_old_format_checkpoint_keeps_loading_and_gives_its_action():
    from robolearn.train.checkpoint import load_policy

    policy, cfg = load_policy(artifacts.CHECKPOINT_DIR)
    assert cfg.policy.name == "diffusion" and cfg.task.name == "pusht"
    assert policy.obs_shapes == artifacts.CHECKPOINT_OBS and policy.n_action_steps == 4
    expected = load_file(str(artifacts.CHECKPOINT_ACTION))["action"]
    torch.testing.assert_close(artifacts.checkpoint_action(policy), expected, **ACTION_TOL)
