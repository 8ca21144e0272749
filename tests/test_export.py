"""ONNX export and the ONNX Runtime backend give eager torch's actions (same noise for diffusion)."""

import json
import warnings

import numpy as np
import pytest
import torch

from robolearn.policies.act.policy import ACTPolicy
from robolearn.policies.diffusion.policy import DiffusionPolicy
from robolearn.policies import export
from robolearn.policies.export import draw_noise, export_onnx, input_names

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ATOL = 1e-4  # raw action units; the tiny models' actions are O(1)


STATS = {"obs": {"min": -np.ones(4), "max": np.ones(4) * 2, "mean": np.zeros(4), "std": np.ones(4)},
         "action": {"min": -np.ones(2) * 3, "max": np.ones(2), "mean": np.zeros(2), "std": np.ones(2)}}


def tiny_diffusion(images=False):
    torch.manual_seed(0)
    shapes = {"obs": (4,), **({"cam_image": (20, 20, 3)} if images else {})}
    vision = {"width": 8, "crop": [16, 16], "num_keypoints": 4, "feature_dim": 8} if images else None
    return DiffusionPolicy(shapes, 2, horizon=8, n_obs_steps=2, n_action_steps=4, down_dims=(16, 32), kernel_size=3,
                           n_groups=4, step_embed_dim=16, num_train_timesteps=20, num_inference_steps=3,
                           vision=vision, stats=STATS).eval()


def tiny_consistency(steps=2):
    """A (randomly initialized) consistency student of the tiny diffusion policy: 2 of its 3-step chain."""
    from robolearn.policies.consistency import ConsistencyPolicy

    teacher = tiny_diffusion()
    torch.manual_seed(1)
    return ConsistencyPolicy(teacher.get_config(), num_inference_steps=steps, stats=STATS).eval()


def tiny_act():
    torch.manual_seed(0)
    stats = {"obs": {"min": -np.ones(4), "max": np.ones(4), "mean": np.full(4, 0.5), "std": np.full(4, 2.0)},
             "action": {"min": -np.ones(2), "max": np.ones(2), "mean": np.full(2, 0.1), "std": np.full(2, 3.0)}}
    return ACTPolicy({"obs": (4,)}, 2, horizon=6, n_action_steps=3, dim_model=16, n_heads=2, dim_feedforward=32,
                     n_encoder_layers=1, n_decoder_layers=1, n_vae_encoder_layers=1, stats=stats).eval()


def random_obs(policy, seed=1):
    return export.random_obs(policy, 1, seed)


@pytest.mark.parametrize("make", [tiny_diffusion, lambda: tiny_diffusion(images=True), tiny_consistency, tiny_act],
                         ids=["diffusion", "diffusion_image", "consistency", "act"])
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
        feeds["noise"] = draw_noise(policy, 1, torch.Generator().manual_seed(7)).numpy()
        assert list(feeds["noise"].shape) == meta["inputs"][-1]["shape"]
        kwargs = {"generator": torch.Generator().manual_seed(7)}  # the eager policy draws the same noise from it
    eager = policy.predict_action_chunk(obs, **kwargs).numpy()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, feeds)
    assert out.shape == tuple(meta["outputs"][0]["shape"]) == eager.shape
    np.testing.assert_allclose(out, eager, atol=ATOL, rtol=0)
    assert not policy.training  # export leaves the policy in eval mode


@pytest.mark.parametrize("make", [tiny_diffusion, lambda: tiny_consistency(steps=1)], ids=["diffusion", "consistency"])
def test_accelerate_matches_eager_and_reexports_on_new_steps(make):
    from robolearn.policies.fast import accelerate

    policy = make()
    fast = accelerate(policy, "onnxruntime", threads=1)
    obs = random_obs(policy)
    for steps in (3, 1) if policy.num_inference_steps == 3 else (1, 3):  # consistency: the re-noising steps too
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


def test_cli_export_writes_model_and_sidecar_and_prints_parity(tmp_path, capsys):
    from robolearn.cli import main
    from test_deploy import tiny_lift_checkpoint

    ckpt = tiny_lift_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "edge" / "lift.onnx"
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out), "--num-inference-steps", "3"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "3 DDIM step(s) unrolled" in printed
    diff = float(printed.split("max |onnxruntime - eager| ")[1].split()[0])
    assert diff < ATOL
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["num_inference_steps"] == 3 and meta["inputs"][-1]["name"] == "noise"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [i["name"] for i in meta["inputs"]]


@pytest.mark.parametrize("argv, message", [
    (["export", "{tmp}/nowhere"], r"nowhere"),
    (["export", "{ckpt}", "--format", "tensorrt"], r"unsupported export format 'tensorrt'; supported: onnx"),
    (["export", "{ckpt}", "--batch", "0"], r"--batch must be >= 1, got 0"),
    (["export", "{ckpt}", "--num-inference-steps", "0"], r"inference steps must be >= 1, got 0"),
])
def test_cli_export_bad_input_is_one_line(tmp_path, capsys, argv, message):
    import re

    from robolearn.cli import main
    from test_deploy import tiny_lift_checkpoint

    ckpt = tiny_lift_checkpoint(tmp_path / "ckpt") if "{ckpt}" in argv else None
    assert main([a.format(tmp=tmp_path, ckpt=ckpt) for a in argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("robolearn: error: ") and re.search(message, err[0]), err
    assert not list(tmp_path.glob("**/*.onnx"))


def test_deploy_and_eval_take_a_backend(tmp_path):
    from robolearn.apps.deploy import CheckpointPolicy
    from robolearn.cli import build_parser
    from robolearn.eval.rollout import evaluate_checkpoint
    from test_deploy import tiny_lift_checkpoint

    ckpt = tiny_lift_checkpoint(tmp_path / "ckpt")
    eager, fast = CheckpointPolicy(ckpt)(), CheckpointPolicy(ckpt, backend="onnxruntime")()
    obs = {k: np.random.default_rng(3).normal(size=(2, *s)).astype(np.float32)
           for k, s in {"robot0_eef_pos": (3,), "robot0_eef_quat": (4,), "robot0_gripper_qpos": (2,),
                        "object": (10,)}.items()}
    torch.manual_seed(11)
    a = fast(obs)
    torch.manual_seed(11)
    np.testing.assert_allclose(a, eager(obs), atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="unknown inference backend 'tvm'"):
        CheckpointPolicy(ckpt, backend="tvm").check()
    with pytest.raises(ValueError, match="unknown inference backend 'tvm'"):
        evaluate_checkpoint(tmp_path / "not_read", 1, backend="tvm")
    for cmd in ("eval", "deploy"):
        assert build_parser().parse_args([cmd, "ckpt"]).backend == "eager"
        assert build_parser().parse_args([cmd, "ckpt", "--backend", "compile"]).backend == "compile"

