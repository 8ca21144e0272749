"""ONNX export and the ONNX Runtime backend give eager torch's actions (same noise for diffusion)."""

import json
import warnings

import numpy as np
import pytest
import torch

from robolearn.policies.act.policy import ACTPolicy
from robolearn.policies.diffusion.policy import DiffusionPolicy
from robolearn.policies.export import example_inputs, export_onnx, input_names

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ATOL = 1e-4  # raw action units; the tiny models' actions are O(1)


def tiny_diffusion(images=False):
    torch.manual_seed(0)
    shapes = {"obs": (4,), **({"cam_image": (20, 20, 3)} if images else {})}
    vision = {"width": 8, "crop": [16, 16], "num_keypoints": 4, "feature_dim": 8} if images else None
    stats = {"obs": {"min": -np.ones(4), "max": np.ones(4) * 2, "mean": np.zeros(4), "std": np.ones(4)},
             "action": {"min": -np.ones(2) * 3, "max": np.ones(2), "mean": np.zeros(2), "std": np.ones(2)}}
    return DiffusionPolicy(shapes, 2, horizon=8, n_obs_steps=2, n_action_steps=4, down_dims=(16, 32), kernel_size=3,
                           n_groups=4, step_embed_dim=16, num_train_timesteps=20, num_inference_steps=3,
                           vision=vision, stats=stats).eval()


def tiny_act():
    torch.manual_seed(0)
    stats = {"obs": {"min": -np.ones(4), "max": np.ones(4), "mean": np.full(4, 0.5), "std": np.full(4, 2.0)},
             "action": {"min": -np.ones(2), "max": np.ones(2), "mean": np.full(2, 0.1), "std": np.full(2, 3.0)}}
    return ACTPolicy({"obs": (4,)}, 2, horizon=6, n_action_steps=3, dim_model=16, n_heads=2, dim_feedforward=32,
                     n_encoder_layers=1, n_decoder_layers=1, n_vae_encoder_layers=1, stats=stats).eval()


def random_obs(policy, seed=1):
    g = torch.Generator().manual_seed(seed)
    ins = example_inputs(policy, 1)
    obs = {}
    for k, x in zip(policy.obs_shapes, ins):
        obs[k] = (torch.randint(0, 256, x.shape, generator=g).to(torch.uint8) if x.dtype == torch.uint8
                  else torch.randn(x.shape, generator=g))
    return obs


@pytest.mark.parametrize("make", [tiny_diffusion, lambda: tiny_diffusion(images=True), tiny_act],
                         ids=["diffusion", "diffusion_image", "act"])
def test_onnx_file_runs_without_robolearn_and_matches_eager(tmp_path, make):
    policy = make()
    model, side = export_onnx(policy, tmp_path / "policy.onnx")
    meta = json.loads(side.read_text())
    assert [i["name"] for i in meta["inputs"]] == input_names(policy)
    assert meta["n_obs_steps"] == policy.n_obs_steps and meta["n_action_steps"] == policy.n_action_steps
    obs = random_obs(policy)
    feeds = {f"obs.{k}": v.numpy() for k, v in obs.items()}
    kwargs = {}
    if "noise" in meta["inputs"][-1]["name"]:
        feeds["noise"] = torch.randn((1, policy.horizon, policy.action_dim), generator=torch.Generator().manual_seed(7)).numpy()
        kwargs = {"generator": torch.Generator().manual_seed(7)}  # the eager policy's first draw is the same noise
    eager = policy.predict_action_chunk(obs, **kwargs).numpy()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, feeds)
    assert out.shape == tuple(meta["outputs"][0]["shape"]) == eager.shape
    np.testing.assert_allclose(out, eager, atol=ATOL, rtol=0)
    assert not policy.training  # export leaves the policy in eval mode


def test_accelerate_matches_eager_and_reexports_on_new_steps():
    from robolearn.policies.fast import accelerate

    policy = tiny_diffusion()
    fast = accelerate(policy, "onnxruntime", threads=1)
    obs = random_obs(policy)
    for steps in (3, 1):
        policy.num_inference_steps = steps
        a = fast.predict_action(obs, generator=torch.Generator().manual_seed(5))
        b = policy.predict_action(obs, generator=torch.Generator().manual_seed(5))
        assert a.shape == (1, 4, 2)
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=ATOL, rtol=0)


def test_accelerate_falls_back_with_one_warning_when_onnxruntime_is_missing(monkeypatch):
    import sys

    from robolearn.policies.fast import accelerate

    policy = tiny_act()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert accelerate(policy, "onnxruntime") is policy
    assert len(caught) == 1 and "running eager torch" in str(caught[0].message)
    with pytest.raises(ValueError, match="unknown inference backend"):
        accelerate(policy, "tensorrt")
