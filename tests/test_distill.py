"""Consistency distillation (robolearn.policies.consistency, robolearn.train.distill, `robolearn distill`)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from robolearn.apps.distill import distill_checkpoint
from robolearn.cli import main
from robolearn.eval.rollout import set_inference_steps
from robolearn.policies.consistency import BOUNDARY, ConsistencyPolicy
from robolearn.policies.export import ddim_step
from robolearn.train import distill as distill_mod
from robolearn.train.checkpoint import load_policy
from robolearn.train.trainer import train
from robolearn.utils.config import load_config
from robolearn.utils.errors import CheckpointError, ConfigError
from test_train import TINY, toy_store

# the toy teacher: a tiny U-Net on 2-D actions, DDPM of 20 steps, 5 DDIM steps at inference
TEACHER = [*TINY, "policy.num_inference_steps=5", "train.warmup_steps=10"]
DISTILL = ["distill.batch_size=32", "distill.num_threads=1", "distill.warmup_steps=10", "distill.lr=1e-3",
           "distill.val_windows=64", "distill.log_every=10"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A toy diffusion teacher trained for 300 steps (a few seconds) on goal-reaching demos."""
    tmp = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    store = toy_store(tmp / "toy.zarr", n_episodes=8, T=16)
    cfg = load_config([*TEACHER, f"data.path={store}", f"run_dir={tmp / 'run'}", "train.steps=300",
                       "train.ckpt_every=300", "train.val_every=300"])
    return train(cfg, progress=False)


def _obs(policy, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn((batch, policy.n_obs_steps, *shape), generator=g) for k, shape in policy.obs_shapes.items()}


def test_boundary_condition_and_init_is_the_teachers_x0_prediction(teacher):
    """f(x, boundary) = x exactly; away from it the student as initialised is the teacher's own
    (clipped) x0 prediction, so its 1-step sample is the teacher's one-evaluation denoising of the
    same initial noise."""
    t_pol, _ = load_policy(teacher)
    student = ConsistencyPolicy(t_pol.get_config())
    student.load_state_dict(t_pol.state_dict(), strict=True)
    student.eval()
    cond = student.encode_obs(_obs(student))
    x = torch.randn(3, student.horizon, student.action_dim)
    edge = torch.full((3,), BOUNDARY)
    assert torch.equal(student.consistency(x, edge, cond), x)
    c_skip, c_out = student.scalings(edge)
    assert torch.all(c_skip == 1) and torch.all(c_out == 0)
    assert student.grid.tolist() == [16, 12, 8, 4, 0, BOUNDARY]  # the teacher's 5 DDIM steps of 20, then clean

    got = student.sample(cond, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    t = torch.full((3,), 16)
    ab = student.alpha_bar(t)
    with torch.no_grad():
        x0 = ((noise - (1 - ab).sqrt() * t_pol.model(noise, t, cond)) / ab.sqrt()).clamp(-1, 1)
    torch.testing.assert_close(got, x0, atol=1e-4, rtol=0)


def test_ddim_step_is_the_schedulers_step(teacher):
    """The per-sample teacher ODE step equals diffusers' DDIMScheduler.step, clip_sample included."""
    t_pol, _ = load_policy(teacher)
    sched = t_pol.sample_scheduler
    sched.set_timesteps(5)
    x, eps = 3 * torch.randn(2, 8, 2), torch.randn(2, 8, 2)
    ac = sched.alphas_cumprod
    for i, t in enumerate(sched.timesteps):
        prev = ac[sched.timesteps[i + 1]] if i + 1 < len(sched.timesteps) else torch.tensor(1.0)
        want = sched.step(eps, t, x).prev_sample
        got = ddim_step(x, eps, ac[t].expand(2, 1, 1), prev.expand(2, 1, 1))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_distillation_brings_the_one_step_student_to_the_teacher(teacher, tmp_path):
    """300 updates: the 1-step student's chunks move toward the teacher's 5-step DDIM chunks drawn
    from the same initial noise on held-out windows (mean squared distance, normalized units), and
    end well below the teacher's own 1-step DDIM."""
    out = distill_checkpoint(teacher, [*DISTILL, "distill.steps=300", "distill.val_every=300",
                                       "distill.ckpt_every=300"], run_dir=tmp_path / "d", progress=False)
    before, after = out["summary"]["gap_before"], out["summary"]["gap_after"]
    assert before["step"] == 0 and after["step"] == 300
    assert after["gap_1step"] < 0.6 * before["gap_1step"], (before, after)
    assert after["gap_1step"] < 0.6 * before["teacher_ddim1_gap"], (before, after)

    # the checkpoint loads like any policy: a consistency policy with the teacher's chunk interface
    policy, cfg = load_policy(out["checkpoint"])
    assert isinstance(policy, ConsistencyPolicy) and cfg.policy.name == "consistency"
    obs = _obs(policy, batch=4)
    assert policy.predict_action(obs).shape == (4, policy.n_action_steps, policy.action_dim)
    assert policy.predict_action_chunk(obs).shape == (4, policy.chunk_length, policy.action_dim)
    a = policy.predict_action(obs, generator=torch.Generator().manual_seed(3))
    set_inference_steps(policy, 3)  # what `robolearn eval --ddim-steps 3` does
    assert policy.chain() == [16, 8, 4] and policy.predict_action(obs).shape == a.shape
    set_inference_steps(policy, 1)
    torch.testing.assert_close(policy.predict_action(obs, generator=torch.Generator().manual_seed(3)), a, rtol=0, atol=0)
    with pytest.raises(ValueError, match="1 to 5 inference steps"):
        set_inference_steps(policy, 6)
    # residual RL takes it as a base (its base_inference_steps set through the same attribute)
    from robolearn.rl.residual import ResidualPolicy

    combined = ResidualPolicy("consistency", policy.get_config(), [-1.0, -1.0], [1.0, 1.0], base_inference_steps=2)
    combined.base.load_state_dict(policy.state_dict(), strict=True)
    assert combined.base.num_inference_steps == 2 and combined.base.chain() == [16, 8]
    lines = (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["step"] == 0 and json.loads(lines[-1])["step"] == 300


def test_direct_distillation_regresses_one_step_onto_the_teachers_sampler(teacher, tmp_path):
    """method=direct (Luhman & Luhman 2021): its target is the teacher's own DDIM sampler output from
    the same noise; 300 updates bring the 1-step student's gap below a third of where it starts; a
    direct student at more than one step is refused naming the key."""
    t_pol, _ = load_policy(teacher)
    student = ConsistencyPolicy(t_pol.get_config())
    obs = _obs(t_pol, batch=4, seed=2)
    want = t_pol.normalizer.normalize("action", t_pol.predict_action_chunk(obs, generator=torch.Generator().manual_seed(5)))
    noise = torch.randn((4, t_pol.horizon, t_pol.action_dim), generator=torch.Generator().manual_seed(5))
    got = distill_mod.teacher_sample(student, t_pol, noise, t_pol._encode_obs(obs))[:, t_pol.n_obs_steps - 1 :]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)

    out = distill_checkpoint(teacher, [*DISTILL, "distill.method=direct", "distill.steps=300", "distill.val_every=300",
                                       "distill.ckpt_every=300"], run_dir=tmp_path / "direct", progress=False)
    before, after = out["summary"]["gap_before"], out["summary"]["gap_after"]
    assert out["summary"]["method"] == "direct" and after["step"] == 300
    assert after["gap_1step"] < before["gap_1step"] / 3, (before, after)
    policy, _ = load_policy(out["checkpoint"])
    assert isinstance(policy, ConsistencyPolicy) and policy.predict_action(obs).shape == (4, policy.n_action_steps, 2)
    with pytest.raises(ConfigError, match="distill.num_inference_steps=2.*method=direct"):
        distill_checkpoint(teacher, ["distill.method=direct", "distill.num_inference_steps=2"], run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="distill.method=progressive"):
        distill_checkpoint(teacher, ["distill.method=progressive"], run_dir=tmp_path / "x")


def test_interrupted_run_resumes_to_the_same_weights(teacher, tmp_path, monkeypatch):
    """A run stopped after its step-10 checkpoint and restarted with the same call makes the same
    next updates: its weights, target and EMA at step 20 equal an uninterrupted run's."""
    args = [*DISTILL, "distill.steps=20", "distill.ckpt_every=10", "distill.val_every=10"]
    distill_checkpoint(teacher, args, run_dir=tmp_path / "straight", progress=False)

    real, calls = distill_mod.distillation_loss, {"n": 0}

    def dies_at_13(*a, **k):
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt  # stands in for SIGKILL: the last checkpoint is step 10's
        return real(*a, **k)

    monkeypatch.setattr(distill_mod, "distillation_loss", dies_at_13)
    with pytest.raises(KeyboardInterrupt):
        distill_checkpoint(teacher, args, run_dir=tmp_path / "killed", progress=False)
    monkeypatch.setattr(distill_mod, "distillation_loss", real)
    out = distill_checkpoint(teacher, args, run_dir=tmp_path / "killed", progress=False)
    assert out["summary"]["resumed_from"] == 10 and out["summary"]["steps"] == 20
    for name in ("model.safetensors", "ema.safetensors", "train_state.safetensors"):
        a = load_file(str(tmp_path / "straight" / "checkpoints" / "latest" / name))
        b = load_file(str(tmp_path / "killed" / "checkpoints" / "latest" / name))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    straight = (tmp_path / "straight" / "metrics.jsonl").read_text()
    assert (tmp_path / "killed" / "metrics.jsonl").read_text() == straight  # no duplicate rows from the killed session

    summary = (tmp_path / "killed" / "distill_summary.json").read_text()
    assert distill_checkpoint(teacher, args, run_dir=tmp_path / "killed", progress=False)["summary"]["resumed_from"] == 10
    assert (tmp_path / "killed" / "distill_summary.json").read_text() == summary  # a finished run stays as it is

    with pytest.raises(CheckpointError, match="another config"):  # same run directory, other settings
        distill_checkpoint(teacher, [*args, "distill.target_ema=0.9"], run_dir=tmp_path / "killed", progress=False)
    # more observations (DAgger: the student's rollouts appended) and more steps: the run goes on
    more = toy_store(tmp_path / "more.zarr", n_episodes=10, T=16)
    out = distill_checkpoint(teacher, [*args, "distill.steps=25", f"distill.data_path={more}"],
                             run_dir=tmp_path / "killed", progress=False)
    assert out["summary"]["resumed_from"] == 20 and out["summary"]["steps"] == 25


def test_act_teacher_and_bad_settings_are_one_line_errors(tmp_path, capsys):
    """An ACT checkpoint is refused naming its type; bad settings name the key."""
    store = toy_store(tmp_path / "toy.zarr", n_episodes=4, T=8)
    act = train(load_config(["policy=act_small", "task.obs_keys=[obs]", "policy.horizon=4", "policy.n_action_steps=2",
                             "policy.dim_model=16", "policy.dim_feedforward=16", "policy.n_heads=2",
                             "train.batch_size=4", "train.steps=1", "train.num_threads=1", f"data.path={store}",
                             f"run_dir={tmp_path / 'act'}"]), progress=False)
    assert main(["distill", str(act), "--out", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'act' policy" in err[0] and "diffusion" in err[0], err
    assert not (tmp_path / "d").exists()
    with pytest.raises(ConfigError, match=r"distill.num_inference_steps=0: must be an integer >= 1"):
        distill_checkpoint(act, ["distill.num_inference_steps=0"], run_dir=tmp_path / "d")
    with pytest.raises(ConfigError, match="takes distill.<key>=value"):
        distill_checkpoint(act, ["train.steps=3"], run_dir=tmp_path / "d")


def test_image_teacher_distils_with_one_encoding_for_all_three_networks():
    """An image diffusion policy distils too: the student takes its ResNet encoder, one update
    back-propagates into it, and the chunk interface is the teacher's."""
    from robolearn.policies.diffusion.policy import DiffusionPolicy

    torch.manual_seed(0)
    kw = dict(obs_shapes={"cam_image": (24, 24, 3), "state": (3,)}, action_dim=2, horizon=8, n_action_steps=4,
              down_dims=(16, 32), kernel_size=3, n_groups=4, step_embed_dim=16, num_train_timesteps=20,
              num_inference_steps=4, vision={"width": 16, "crop": [20, 20], "num_keypoints": 8, "feature_dim": 16})
    teacher = DiffusionPolicy(**kw).eval()
    student = ConsistencyPolicy(teacher.get_config(), num_inference_steps=2)
    student.load_state_dict(teacher.state_dict(), strict=True)
    student.eval()
    target = ConsistencyPolicy(teacher.get_config(), num_inference_steps=2)
    target.load_state_dict(teacher.state_dict())
    target.eval()
    batch = {"obs.cam_image": torch.randint(0, 255, (4, 2, 24, 24, 3), dtype=torch.uint8),
             "obs.state": torch.randn(4, 2, 3), "action": torch.rand(4, 8, 2) * 2 - 1}
    loss = distill_mod.distillation_loss(student, target, teacher, batch)
    loss.backward()
    grads = [p.grad for p in student.obs_encoder.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert all(p.grad is None for p in teacher.parameters()) and all(p.grad is None for p in target.parameters())
    obs = {k[4:]: v for k, v in batch.items() if k.startswith("obs.")}
    assert student.predict_action(obs).shape == (4, 4, 2)
