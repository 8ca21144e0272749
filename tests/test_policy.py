import numpy as np
import pytest
import torch

from robolearn.data.normalizer import compute_stats
from robolearn.policies import build_policy
from robolearn.policies.diffusion.unet import ConditionalUnet1D
from robolearn.policies.normalizer import Normalizer

SMALL = dict(name="diffusion", horizon=8, n_obs_steps=2, n_action_steps=4, down_dims=[16, 32], kernel_size=3,
             n_groups=4, step_embed_dim=16, num_train_timesteps=20, num_inference_steps=5,
             beta_schedule="squaredcos_cap_v2")


def test_minmax_normalizer_maps_range_and_inverts():
    x = np.array([[0.0, 5.0, 3.0], [2.0, 15.0, 3.0]], np.float32)
    n = Normalizer({"k": (3,)}, "minmax", compute_stats({"k": x}))
    y = n.normalize("k", torch.from_numpy(x))
    assert torch.allclose(y[:, :2], torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    assert torch.allclose(y[:, 2], torch.zeros(2))  # constant dimension maps to 0, not inf
    assert torch.allclose(n.unnormalize("k", y), torch.from_numpy(x), atol=1e-6)


def test_meanstd_normalizer_floors_std():
    x = np.array([[1.0, 0.0], [3.0, 0.001]], np.float32)
    n = Normalizer({"k": (2,)}, "meanstd", compute_stats({"k": x}), std_floor=1e-2)
    y = n.normalize("k", torch.from_numpy(x))
    assert torch.allclose(y[:, 0], torch.tensor([-1.0, 1.0]))
    assert y[:, 1].abs().max() <= 0.0005 / 1e-2 + 1e-6


def test_unet_shapes_and_film_uses_condition():
    torch.manual_seed(0)
    net = ConditionalUnet1D(action_dim=3, cond_dim=5, down_dims=(8, 16, 32), step_embed_dim=8, n_groups=4)
    x = torch.randn(2, 16, 3)
    out = net(x, torch.tensor([1, 7]), torch.randn(2, 5))
    assert out.shape == (2, 16, 3)
    assert not torch.allclose(net(x, 3, torch.zeros(2, 5)), net(x, 3, torch.ones(2, 5)))
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 10, 3), 1, torch.randn(1, 5))


def _toy_policy():
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (256, 2)).astype(np.float32)
    action = np.repeat((obs * np.array([0.5, -0.5], np.float32))[:, None], 8, axis=1)
    stats = compute_stats({"x": obs, "action": action.reshape(-1, 2)})
    policy = build_policy(SMALL, {"x": (2,)}, 2, stats=stats)
    return policy, obs, action


def test_diffusion_policy_learns_a_simple_mapping():
    torch.manual_seed(0)
    policy, obs, action = _toy_policy()
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    batch = {"obs.x": torch.from_numpy(np.repeat(obs[:, None], 2, axis=1)), "action": torch.from_numpy(action)}
    first = policy.compute_loss(batch)[0].item()
    for _ in range(300):
        loss, info = policy.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    assert set(info) == {"mse"} and torch.equal(info["mse"], loss.detach())
    policy.eval()
    pred = policy.predict_action({"x": batch["obs.x"][:64]}, generator=torch.Generator().manual_seed(0))
    assert pred.shape == (64, 4, 2)
    err = (pred - batch["action"][:64, :4]).abs().mean()
    assert err < 0.15, f"mean abs error {err:.3f} in raw units (actions span ±0.5)"


def test_predict_is_reproducible_with_generator_and_checks_inputs():
    policy, obs, _ = _toy_policy()
    policy.eval()
    o = {"x": torch.from_numpy(np.repeat(obs[:3, None], 2, axis=1))}
    a = policy.predict_action(o, generator=torch.Generator().manual_seed(1))
    b = policy.predict_action(o, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(KeyError, match="'x' missing"):
        policy.predict_action({"y": o["x"]})
    with pytest.raises(ValueError, match="n_obs_steps"):
        policy.predict_action({"x": o["x"][:, :1]})


def test_predict_action_is_the_start_of_the_chunk_from_the_current_step():
    policy, obs, _ = _toy_policy()
    policy.eval()
    o = {"x": torch.from_numpy(np.repeat(obs[:3, None], 2, axis=1))}
    chunk = policy.predict_action_chunk(o, generator=torch.Generator().manual_seed(1))
    assert chunk.shape == (3, 8 - 2 + 1, 2) and policy.chunk_length == 7
    torch.testing.assert_close(policy.predict_action(o, generator=torch.Generator().manual_seed(1)), chunk[:, :4],
                               atol=0, rtol=0)
    policy.n_action_steps = 7  # the whole chunk
    torch.testing.assert_close(policy.predict_action(o, generator=torch.Generator().manual_seed(1)), chunk,
                               atol=0, rtol=0)


@pytest.mark.parametrize("name", ["diffusion", "act"])
def test_n_action_steps_is_checked_against_the_chunk_from_the_current_step(name):
    from robolearn.eval.rollout import set_action_steps

    cfg = SMALL if name == "diffusion" else dict(name="act", horizon=8, n_obs_steps=1, n_action_steps=4, dim_model=16,
                                                 n_heads=2, dim_feedforward=16, n_encoder_layers=1,
                                                 n_decoder_layers=1, n_vae_encoder_layers=1)
    most = 7 if name == "diffusion" else 8  # horizon 8 - n_obs_steps + 1
    policy = build_policy(cfg, {"x": (2,)}, 2)
    policy.n_action_steps = most
    set_action_steps(policy, 1)
    assert policy.n_action_steps == 1
    set_action_steps(policy, None)
    assert policy.n_action_steps == 1
    for bad in (0, most + 1, 2.5, True):
        with pytest.raises(ValueError, match=rf"n_action_steps must be in \[1, {most}\] .* got {bad}"):
            policy.n_action_steps = bad
        with pytest.raises(ValueError, match=rf"n_action_steps must be in \[1, {most}\] .* got {bad}"):
            set_action_steps(policy, bad)
    assert policy.n_action_steps == 1
    with pytest.raises(ValueError, match=rf"n_action_steps must be in \[1, {most}\] .* got {most + 1}"):
        build_policy({**cfg, "n_action_steps": most + 1}, {"x": (2,)}, 2)


@pytest.mark.parametrize("name", ["diffusion", "act"])
def test_class_defaults_are_the_default_config(name):
    """``configs/policy/<name>.yaml`` is what users run; the class defaults say the same."""
    import inspect

    from robolearn.policies.act.policy import ACTPolicy
    from robolearn.policies.diffusion.policy import DiffusionPolicy
    from robolearn.utils.config import load_config

    yaml = load_config([f"policy={name}"]).policy
    params = inspect.signature({"diffusion": DiffusionPolicy, "act": ACTPolicy}[name]).parameters
    for key, value in yaml.items():
        if key == "name":
            continue
        default = params[key].default
        assert (list(default) if isinstance(default, tuple) else default) == value, key


def test_build_policy_rejects_unknown_name_and_option():
    with pytest.raises(ValueError, match="unknown policy"):
        build_policy({**SMALL, "name": "nope"}, {"x": (2,)}, 2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        build_policy({**SMALL, "bogus": 1}, {"x": (2,)}, 2)


def test_policy_registry_imports_lazily_lists_known_names_and_registers(monkeypatch):
    import subprocess
    import sys

    from robolearn import policies
    from robolearn.policies.act.policy import ACTPolicy
    from robolearn.policies.diffusion.policy import DiffusionPolicy

    assert policies.policy_class("act") is ACTPolicy and policies.policy_class("diffusion") is DiffusionPolicy
    with pytest.raises(ValueError, match=r"unknown policy type 'nope'; known: \['act', 'consistency', 'diffusion', 'residual'\]"):
        policies.policy_class("nope")
    monkeypatch.setattr(policies, "POLICIES", dict(policies.POLICIES))
    policies.register_policy("diffusion_alias", policies.POLICIES["diffusion"])
    assert type(build_policy({**SMALL, "name": "diffusion_alias"}, {"x": (2,)}, 2)) is DiffusionPolicy
    policies.register_policy("act", policies.POLICIES["act"])  # the same class again: no-op
    with pytest.raises(ValueError, match="'act' is already registered as 'robolearn.policies.act.policy:ACTPolicy'"):
        policies.register_policy("act", policies.POLICIES["diffusion"])
    with pytest.raises(ValueError, match="must be 'module:Class', got 'ACTPolicy'"):
        policies.register_policy("x", "ACTPolicy")
    code = "import sys, robolearn.policies; print(any(m.startswith('robolearn.policies.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # no policy module (nor torch model code) until a policy is built


def test_batch_one_conv_fast_path_matches_the_standard_convolution():
    from robolearn.policies.diffusion.unet import Conv1d

    torch.manual_seed(0)
    for stride, k in ((1, 5), (2, 3), (1, 1)):
        conv = Conv1d(128, 64, k, stride=stride, padding=k // 2)
        x = torch.randn(1, 128, 8)
        with torch.no_grad():
            fast = conv(x)
            ref = torch.nn.functional.conv1d(x, conv.weight, conv.bias, stride, k // 2)
        assert fast.shape == ref.shape
        torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)


def test_training_gemm_conv_path_matches_the_standard_convolution_and_its_gradients(monkeypatch):
    from robolearn.policies.diffusion import unet

    torch.manual_seed(0)
    calls = []
    monkeypatch.setattr(unet.Conv1d, "_gemm", lambda self, x, f=unet.Conv1d._gemm: calls.append(1) or f(self, x))
    for c_in, c_out, k, stride, t, bias in ((256, 128, 5, 1, 4, True), (64, 64, 3, 2, 16, True), (32, 48, 1, 1, 2, False)):
        conv = unet.Conv1d(c_in, c_out, k, stride=stride, padding=k // 2, bias=bias)
        x = torch.randn(6, c_in, t, requires_grad=True)
        x_ref = x.detach().clone().requires_grad_()
        out = conv(x)
        ref = torch.nn.functional.conv1d(x_ref, conv.weight, conv.bias, stride, k // 2)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        g = torch.randn_like(ref)
        grads = torch.autograd.grad(out, [x, conv.weight], g)
        grads_ref = torch.autograd.grad(ref, [x_ref, conv.weight], g)
        for a, b in zip(grads, grads_ref):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)
    assert len(calls) == 3  # every case above took the GEMM path
    conv = unet.Conv1d(64, 64, 5, padding=2)
    conv(torch.randn(6, 64, 16, requires_grad=True))  # a long level keeps the standard path
    assert len(calls) == 3


def test_gemm_conv_traced_form_equals_the_eager_form(monkeypatch):
    from robolearn.policies.diffusion import unet

    torch.manual_seed(0)
    conv = unet.Conv1d(16, 8, 3, stride=2, padding=1)
    x = torch.randn(3, 16, 8)
    eager = conv._gemm(x)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # the stacked-slices form used under compile
    torch.testing.assert_close(conv._gemm(x), eager, atol=1e-6, rtol=1e-6)
