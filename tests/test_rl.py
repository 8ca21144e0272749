"""Residual RL: the combined policy starts at the base, GAE and PPO against hand-computed values, a
residual that learns a sparse-reward toy task, exact resume, disjoint seed sets, clear errors."""

import json
from collections import deque
import math
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from robolearn.policies.base import Policy
from robolearn.policies.normalizer import Normalizer
from robolearn.rl.ppo import PPOConfig, compute_gae, ppo_losses, ppo_update


# ------------------------------------------------------------------ a toy task and a toy base

class ToyReach(gym.Env):
    """1-D reach: x starts near 0, moves by 0.05 * a per step (a clipped to [-1, 1]); reward 1 and
    termination once x > 0.1; truncation after 16 steps."""

    observation_space = gym.spaces.Dict({"pos": gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)})
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.uniform(-0.02, 0.02)), 0
        return {"pos": np.array([self.x], np.float32)}, {"is_success": False}

    def step(self, action):
        self.x += 0.05 * float(np.clip(action[0], -1, 1))
        self.t += 1
        success = self.x > 0.1
        return {"pos": np.array([self.x], np.float32)}, float(success), success, self.t >= 16, {"is_success": success}


class ZeroBase(Policy):
    """A chunked base that always outputs zeros (the residual must do all the work)."""

    def __init__(self, horizon=4, n_obs_steps=1, n_action_steps=4, stats=None):
        super().__init__()
        self.horizon, self.n_obs_steps = horizon, n_obs_steps
        self.n_action_steps = n_action_steps
        self.obs_shapes, self.action_dim = {"pos": (1,)}, 1
        stats = {"pos": {"min": np.array([-0.2]), "max": np.array([0.2])},
                 "action": {"min": np.array([-1.0]), "max": np.array([1.0])}}
        self.normalizer = Normalizer({"pos": (1,), "action": (1,)}, mode="minmax", stats=stats)
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def compute_loss(self, batch):
        raise NotImplementedError

    def predict_action_chunk(self, obs, **kwargs):
        b = next(iter(obs.values())).shape[0]
        return torch.zeros(b, self.chunk_length, 1) + 0 * self.bias

    def get_config(self):
        return {"horizon": self.horizon, "n_obs_steps": self.n_obs_steps, "n_action_steps": self.n_action_steps}


@pytest.fixture
def toy_registered(monkeypatch):
    from robolearn import policies

    monkeypatch.setattr(policies, "POLICIES", dict(policies.POLICIES))
    policies.register_policy("toy_zero", f"{__name__}:ZeroBase")


def toy_residual(**kw):
    from robolearn.rl.residual import ResidualPolicy

    args = dict(hidden=(32, 32), scale=1.0, log_std_init=-1.0, base_inference_steps=None)
    args.update(kw)
    return ResidualPolicy("toy_zero", {}, [-1.0], [1.0], **args).eval()


def toy_venv(n):
    return gym.vector.SyncVectorEnv([ToyReach for _ in range(n)], autoreset_mode=gym.vector.AutoresetMode.DISABLED)


# ------------------------------------------------------------------ the combined policy

def test_zero_initialized_residual_gives_the_base_action_bit_for_bit(tmp_path):
    """A diffusion base in insertion's shapes: combined actions equal the base's exactly at step 0."""
    from robolearn.eval.rollout import ChunkActor
    from robolearn.policies.diffusion.policy import DiffusionPolicy
    from robolearn.rl.residual import ResidualPolicy

    torch.manual_seed(0)
    shapes = {"robot0_eef_pos": (3,), "object": (10,)}
    rng = np.random.default_rng(0)
    stats = {k: {"min": -rng.random(s) - 0.1, "max": rng.random(s) + 0.1} for k, s in {**shapes, "action": (4,)}.items()}
    base = DiffusionPolicy(obs_shapes=shapes, action_dim=4, horizon=8, n_obs_steps=2, n_action_steps=4,
                           down_dims=(16, 32), n_groups=4, step_embed_dim=16, num_inference_steps=3, stats=stats).eval()
    combined = ResidualPolicy("diffusion", base.get_config(), [-0.01] * 3 + [-1.0], [0.01] * 3 + [1.0],
                              base_inference_steps=None).eval()
    combined.base.load_state_dict(base.state_dict())
    history = [[{k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()} for _ in range(2)]
               for _ in range(3)]
    active = [True, False, True]
    a_base = ChunkActor(base, 3, 4, list(shapes), generator=torch.Generator().manual_seed(5)).act(active, history)
    actor = combined.make_actor(3, 4, list(shapes), generator=torch.Generator().manual_seed(5))
    a_comb = actor.act(active, history)
    assert np.any(a_base != 0)
    assert a_comb.tobytes() == a_base.tobytes()
    assert torch.count_nonzero(actor.last["residual"]) == 0


def test_zero_base_noise_makes_the_base_chunk_a_function_of_the_observation():
    """rl.base_noise=zero: the base starts DDIM from x_T = 0, so different generators give the same
    chunk, equal to the base sampled from zeros; the default (random) still depends on the draw, and
    the exported graph's noise input follows the same setting."""
    from robolearn.policies.diffusion.policy import DiffusionPolicy
    from robolearn.policies.export import draw_noise
    from robolearn.rl.residual import ResidualPolicy

    torch.manual_seed(0)
    shapes = {"pos": (3,)}
    stats = {"pos": {"min": -np.ones(3), "max": np.ones(3)}, "action": {"min": -np.ones(2), "max": np.ones(2)}}
    base = DiffusionPolicy(obs_shapes=shapes, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4,
                           down_dims=(16, 32), n_groups=4, step_embed_dim=16, num_inference_steps=3, stats=stats).eval()
    obs = {"pos": torch.randn(5, 2, 3)}
    kw = dict(base_inference_steps=None)
    zero = ResidualPolicy("diffusion", base.get_config(), [-1.0] * 2, [1.0] * 2, base_noise="zero", **kw).eval()
    rand = ResidualPolicy("diffusion", base.get_config(), [-1.0] * 2, [1.0] * 2, **kw).eval()
    for p in (zero, rand):
        p.base.load_state_dict(base.state_dict())
    with torch.no_grad():
        a1 = zero.base.predict_action(obs, generator=torch.Generator().manual_seed(1))
        a2 = zero.base.predict_action(obs, generator=torch.Generator().manual_seed(2))
        r1 = rand.base.predict_action(obs, generator=torch.Generator().manual_seed(1))
        r2 = rand.base.predict_action(obs, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a1, a2) and not torch.equal(r1, r2)
    assert zero.get_config()["base_noise"] == "zero" and not base.zero_initial_noise
    assert torch.count_nonzero(draw_noise(zero.base, 5, torch.Generator().manual_seed(1))) == 0
    assert torch.count_nonzero(draw_noise(rand.base, 5, torch.Generator().manual_seed(1))) > 0
    with pytest.raises(ValueError, match="base_noise"):
        ResidualPolicy("diffusion", base.get_config(), [-1.0] * 2, [1.0] * 2, base_noise="gaussian", **kw)
    # a distilled consistency base cannot start from zeros: refused, in RL and in eval, not ignored
    from robolearn.eval.rollout import set_zero_initial_noise
    from robolearn.policies.consistency import ConsistencyPolicy

    student = ConsistencyPolicy(base.get_config(), stats=stats)
    with pytest.raises(ValueError, match="base_noise='zero' is for diffusion bases"):
        ResidualPolicy("consistency", student.get_config(), [-1.0] * 2, [1.0] * 2, base_noise="zero", **kw)
    ResidualPolicy("consistency", student.get_config(), [-1.0] * 2, [1.0] * 2, base_noise="random", **kw)
    with pytest.raises(ValueError, match="ConsistencyPolicy does not start from x_T = 0"):
        set_zero_initial_noise(student)


def test_dim_scale_scales_each_action_dimension(toy_registered):
    from robolearn.rl.residual import ResidualPolicy

    p = ResidualPolicy("toy_zero", {}, [-2.0], [2.0], scale=0.5, dim_scale=[0.1], base_inference_steps=None)
    assert torch.allclose(p.combine(torch.tensor([[0.3]]), torch.tensor([[1.0]])), torch.tensor([[0.3 + 0.5 * 0.1 * 2.0]]))
    assert p.get_config()["dim_scale"] == pytest.approx([0.1])
    assert ResidualPolicy(**p.get_config()).step_scale.item() == pytest.approx(0.1)  # the saved config rebuilds it
    for bad in ([1.0, 1.0], [0.0]):
        with pytest.raises(ValueError, match="dim_scale"):
            ResidualPolicy("toy_zero", {}, [-2.0], [2.0], dim_scale=bad)


def test_fine_scale_adds_symlog_features_of_the_raw_observation(toy_registered):
    plain, fine = toy_residual(), toy_residual(fine_scale=0.01)
    assert (plain.in_dim, fine.in_dim) == (2, 3)
    x = fine.residual_input({"pos": torch.tensor([[0.003], [-0.05]])}, torch.zeros(2, 1))
    # normalized (min-max over [-0.2, 0.2]) observation, then symlog(obs / 1 cm), then the base action
    assert torch.allclose(x[:, 0], torch.tensor([0.015, -0.25]))
    assert torch.allclose(x[:, 1], torch.tensor([math.log1p(0.3), -math.log1p(5.0)]))
    with pytest.raises(ValueError, match="fine_scale"):
        toy_residual(fine_scale=0.0)


def test_image_base_is_refused_with_the_key_named():
    from robolearn.policies.diffusion.policy import DiffusionPolicy
    from robolearn.rl.residual import ResidualPolicy

    kwargs = DiffusionPolicy(obs_shapes={"agentview_image": (84, 84, 3), "pos": (3,)}, action_dim=4, horizon=8,
                             n_obs_steps=2, n_action_steps=4, down_dims=(16, 32), n_groups=4,
                             step_embed_dim=16).get_config()
    with pytest.raises(ValueError, match=r"state observations only.*agentview_image"):
        ResidualPolicy("diffusion", kwargs, [-1] * 4, [1] * 4)


# ------------------------------------------------------------------ GAE and PPO by hand

def test_gae_against_a_hand_computed_example():
    # one env, 4 steps: step 1 ends by termination (next value 0), step 3 is the rollout's last
    # step mid-episode (bootstrap from V(s_4) = 0.5); gamma 0.9, lambda 0.5
    r = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    v = torch.tensor([[0.2], [0.4], [0.1], [0.3]])
    nv = torch.tensor([[0.4], [0.0], [0.3], [0.5]])
    d = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    adv, ret = compute_gae(r, v, nv, d, gamma=0.9, lam=0.5)
    d3 = 0.0 + 0.9 * 0.5 - 0.3
    d2 = 0.0 + 0.9 * 0.3 - 0.1
    d1 = 1.0 + 0.0 - 0.4
    d0 = 0.0 + 0.9 * 0.4 - 0.2
    expected = [d0 + 0.45 * d1, d1, d2 + 0.45 * d3, d3]  # no recursion across the termination at step 1
    np.testing.assert_allclose(adv[:, 0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(ret.numpy(), (adv + v).numpy())


def test_ppo_losses_against_a_hand_computed_example():
    old = torch.log(torch.tensor([0.5, 0.5, 0.5]))
    new = torch.log(torch.tensor([0.8, 0.3, 0.55]))  # ratios 1.6, 0.6, 1.1
    adv = torch.tensor([1.0, -2.0, 0.5])
    out = ppo_losses(new, old, adv, torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 1.0]), clip=0.2)
    # per sample: max(-A r, -A clip(r)): 1.6 -> -1.2; 0.6 (A<0) -> max(1.2, 1.6) = 1.6; 1.1 -> -0.55
    assert float(out["policy_loss"]) == pytest.approx((-1.2 + 1.6 - 0.55) / 3, rel=1e-6)
    assert float(out["value_loss"]) == pytest.approx(0.5 * (1 + 0 + 1) / 3, rel=1e-6)
    kl = [(x - 1) - math.log(x) for x in (1.6, 0.6, 1.1)]
    assert float(out["approx_kl"]) == pytest.approx(sum(kl) / 3, rel=1e-5)
    assert float(out["clip_fraction"]) == pytest.approx(2 / 3)


def test_target_kl_stops_the_epochs_early():
    from robolearn.rl.residual import ResidualActorCritic

    torch.manual_seed(0)
    model = ResidualActorCritic(3, 2, hidden=(8,))
    batch = {"input": torch.randn(64, 3), "residual": torch.randn(64, 2), "log_prob": torch.full((64,), -5.0),
             "advantages": torch.randn(64), "returns": torch.randn(64)}
    opts = [torch.optim.Adam(model.actor.parameters(), 1e-2), torch.optim.Adam(model.critic.parameters(), 1e-2)]
    before = [p.detach().clone() for p in model.actor.parameters()]
    out = ppo_update(model, *opts, batch, PPOConfig(update_epochs=10, target_kl=0.01), torch.Generator().manual_seed(0))
    # old log-probs far from the current ones: the first minibatch's KL is above the target, so nothing is applied
    assert out["epochs"] == 1 and out["updates"] == 0 and out["approx_kl"] > 0.015
    assert all(torch.equal(a, b) for a, b in zip(before, model.actor.parameters()))
    out = ppo_update(model, *opts, batch, PPOConfig(update_epochs=3, target_kl=None), torch.Generator().manual_seed(0))
    assert out["epochs"] == 3 and out["updates"] == 3 * 4
    # consistent log-probs: KL starts at 0 and the update runs until the policy has moved past 1.5 x target
    with torch.no_grad():
        batch["log_prob"] = model.distribution(batch["input"]).log_prob(batch["residual"]).sum(-1)
    out = ppo_update(model, *opts, batch, PPOConfig(update_epochs=50, target_kl=0.02, n_minibatches=1),
                     torch.Generator().manual_seed(0))
    assert 0 < out["updates"] < 50 and out["epochs"] == out["updates"] + 1


# ------------------------------------------------------------------ learning and seeds

def _success(policy, n_envs=8, seed0=0):
    from robolearn.rl.collect import SeedCounter, collect_rollout

    venv = toy_venv(n_envs)
    ro = collect_rollout(policy, venv, ["pos"], 16, SeedCounter(seed0, seed0 + 10_000), torch.Generator().manual_seed(1))
    venv.close()
    return ro


def test_residual_learns_a_sparse_reward_task(toy_registered):
    """From a base that never succeeds, PPO on sparse reward makes the deterministic policy succeed."""
    from robolearn.eval.rollout import rollout, summarize
    from robolearn.rl.collect import SeedCounter, collect_rollout

    torch.manual_seed(0)
    policy = toy_residual()
    task = {"name": "toy", "obs_keys": ["pos"]}
    import robolearn.eval.rollout as ro_mod

    def evaluate():
        old = ro_mod._make_env_fn
        ro_mod._make_env_fn = lambda cfg, render_mode=None: ToyReach
        try:
            return summarize(rollout(policy, task, range(500, 520), n_envs=1, progress=False))["success_rate"]
        finally:
            ro_mod._make_env_fn = old

    assert evaluate() == 0.0
    cfg = PPOConfig(actor_lr=3e-3, critic_lr=5e-3, update_epochs=4, n_minibatches=2, gamma=0.99)
    actor_opt = torch.optim.Adam(policy.residual.actor.parameters(), lr=cfg.actor_lr)
    critic_opt = torch.optim.Adam(policy.residual.critic.parameters(), lr=cfg.critic_lr)
    gen, seeds, venv = torch.Generator().manual_seed(0), SeedCounter(0, 100_000), toy_venv(8)
    first = None
    for it in range(25):
        ro = collect_rollout(policy, venv, ["pos"], 16, seeds, gen)
        first = first if first is not None else np.mean([e["success"] for e in ro.episodes])
        adv, ret = compute_gae(ro.rewards, ro.values, ro.next_values, ro.dones, cfg.gamma, cfg.gae_lambda)
        ppo_update(policy.residual, actor_opt, critic_opt, ro.flat(adv, ret), cfg, gen)
    venv.close()
    assert first < 0.5
    assert evaluate() == 1.0


def test_seed_counter_and_seed_sets_are_disjoint():
    from robolearn.rl.collect import SeedCounter
    from robolearn.rl.trainer import check_seed_sets
    from robolearn.utils.errors import ConfigError

    with pytest.raises(ValueError, match=r"overlaps reserved seeds.*100005"):
        SeedCounter(100000, 100010, exclude={100005})
    c = SeedCounter(7, 9)
    assert [c.take(), c.take()] == [7, 8]
    with pytest.raises(ValueError, match="used up"):
        c.take()
    groups = [SeedCounter(20 + g, 40, step=3) for g in range(3)]  # parallel groups: interleaved, never shared
    drawn = [[c.take() for _ in range(6)] for c in groups]
    assert drawn[1] == [21, 24, 27, 30, 33, 36]
    assert len(set(sum(drawn, []))) == 18 and set(sum(drawn, [])) == set(range(20, 38))
    cfg = OmegaConf.create({"data": {"path": "/nonexistent.zarr"}, "eval": {"seed_start": 100000},
                            "rl": {"seed_start": 10_000_000, "final_eval_episodes": 50, "eval_seed_start": 5_000_000,
                                   "eval_episodes": 32}})
    check_seed_sets(cfg)  # the defaults are disjoint
    cfg.rl.seed_start = 100020
    with pytest.raises(ConfigError, match=r"rl.seed_start=100020.*held-out evaluation.*100020"):
        check_seed_sets(cfg)
    cfg.rl.seed_start, cfg.rl.eval_seed_start = 10_000_000, 100040
    with pytest.raises(ConfigError, match=r"held-out evaluation and RL validation seeds meet.*100040"):
        check_seed_sets(cfg)


# ------------------------------------------------------------------ the run: resume, eval, errors

RL_TINY = ["rl.n_envs=2", "rl.steps_per_rollout=12", "rl.eval_every=0", "rl.residual.hidden=[16,16]", "rl.final_eval_episodes=2",
           "rl.ppo.update_epochs=2", "rl.ppo.n_minibatches=2"]


def test_resume_repeats_the_next_update_exactly(tiny_base, tmp_path):
    from robolearn.apps.rl import residual_rl
    from safetensors.torch import load_file

    straight = residual_rl(tiny_base, [*RL_TINY, "rl.total_env_steps=48"], run_dir=tmp_path / "a", progress=False,
                           final_eval=False)
    residual_rl(tiny_base, [*RL_TINY, "rl.total_env_steps=24"], run_dir=tmp_path / "b", progress=False, final_eval=False)
    resumed = residual_rl(tiny_base, [*RL_TINY, "rl.total_env_steps=48"], run_dir=tmp_path / "b", progress=False,
                          final_eval=False)
    wa = load_file(f"{straight['checkpoint']}/model.safetensors")
    wb = load_file(f"{resumed['checkpoint']}/model.safetensors")
    assert wa.keys() == wb.keys() and any(k.startswith("residual.actor") for k in wa)
    changed = [k for k in wa if k.startswith("residual.") and not torch.equal(wa[k], load_file(
        f"{tiny_base}/checkpoints/latest/model.safetensors").get(k, torch.zeros(0)))]
    assert changed  # the residual was updated
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    rows_a = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows_b] == [1, 2]  # no duplicate rows after the resume
    assert [r["policy_loss"] for r in rows_a] == [r["policy_loss"] for r in rows_b]


def test_eval_and_deploy_accept_the_combined_checkpoint(tiny_base, tmp_path):
    from robolearn.apps.deploy import CheckpointPolicy, PolicyStack
    from robolearn.apps.rl import residual_rl
    from robolearn.eval.rollout import evaluate_checkpoint
    from robolearn.utils.errors import ConfigError

    out = residual_rl(tiny_base, [*RL_TINY, "rl.total_env_steps=24"], run_dir=tmp_path / "rl", progress=False)
    comp = json.loads((tmp_path / "rl" / "eval_comparison.json").read_text())
    assert comp["base"]["seeds"] == comp["residual"]["seeds"] == [100000, 100001]
    assert comp["residual"]["policy"] == "diffusion" and comp["residual"]["n_episodes"] == 2
    assert (tmp_path / "rl" / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    res = evaluate_checkpoint(tmp_path / "rl", 1, n_envs=1, progress=False)
    assert res["n_episodes"] == 1 and res["seeds"] == [100000, 100000]
    assert res["num_inference_steps"] == 4 and res["zero_initial_noise"]  # the base as RL ran it
    res = evaluate_checkpoint(tmp_path / "rl", 1, n_envs=1, progress=False, num_inference_steps=2)  # --ddim-steps
    assert res["num_inference_steps"] == 2
    assert CheckpointPolicy(out["checkpoint"]).check()  # a per-step policy: deploy serves it step by step
    # (tests/test_rl_deploy.py deploys one on the Lift twin); the only twin, sim, simulates Lift, not insertion
    with pytest.raises(ConfigError, match="twin simulates task 'lift' but the policy was trained on 'insertion'"):
        PolicyStack(out["checkpoint"], robot="sim")


def test_best_validation_checkpoint_is_what_the_run_directory_stands_for(tiny_base, tmp_path, monkeypatch):
    """Validation scores are scripted (the tiny base never succeeds): `best` follows the highest one,
    survives a resume (the score to beat is the best checkpoint's own), and a fresh run in the same
    directory drops an earlier run's `best`."""
    import shutil

    import robolearn.eval.rollout as rollout_mod
    from robolearn.apps.rl import residual_rl
    from robolearn.rl.trainer import read_best
    from robolearn.train.checkpoint import _checkpoint_dir
    from safetensors.torch import load_file

    scores: list[float] = []
    monkeypatch.setattr(rollout_mod, "summarize", lambda results: {"success_rate": (v := scores.pop(0)),
                                                                    "success_ci95": [v, v]})
    run = tmp_path / "rl"
    args = [*RL_TINY, "rl.eval_every=1", "rl.eval_episodes=1"]
    scores[:] = [0.1, 0.5, 0.3]
    out = residual_rl(tiny_base, [*args, "rl.total_env_steps=72"], run_dir=run, progress=False, final_eval=False)
    best = read_best(run)
    assert best["iteration"] == 2 and best["val_success_rate"] == 0.5 and best["env_steps"] == 48
    assert json.loads((run / "rl_summary.json").read_text())["best"] == best
    assert out["checkpoint"] == str(run / "checkpoints" / "best") == str(_checkpoint_dir(run))
    assert _checkpoint_dir(run / "checkpoints" / "latest") == run / "checkpoints" / "latest"
    assert not (run / "checkpoints" / "best" / "train_state.json").exists()  # resume reads `latest` only
    wb, wl = (load_file(f"{run}/checkpoints/{n}/model.safetensors") for n in ("best", "latest"))
    assert any(not torch.equal(wb[k], wl[k]) for k in wb if k.startswith("residual.actor"))  # iteration 2, not 3
    # resumed: 0.45 does not beat the best checkpoint's 0.5, 0.7 does
    scores[:] = [0.45, 0.7]
    residual_rl(tiny_base, [*args, "rl.total_env_steps=120"], run_dir=run, progress=False, final_eval=False)
    assert read_best(run)["iteration"] == 5 and read_best(run)["val_success_rate"] == 0.7
    # a fresh run in the same directory (its `latest` gone), validating never: no `best` of the old run
    shutil.rmtree(run / "checkpoints" / "latest")
    out = residual_rl(tiny_base, [*RL_TINY, "rl.total_env_steps=24"], run_dir=run, progress=False, final_eval=False)
    assert read_best(run) is None and not (run / "checkpoints" / "best").exists()
    assert out["checkpoint"] == str(run / "checkpoints" / "latest") == str(_checkpoint_dir(run))
    assert scores == []


def test_bad_base_and_task_mismatch_end_with_one_line(tiny_base, tmp_path):
    run = subprocess.run([sys.executable, "-m", "robolearn.cli", "rl", str(tmp_path / "nope")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope" in lines[0] and "internal error" not in lines[0]
    from robolearn.rl.trainer import build_residual
    from robolearn.train.checkpoint import load_policy
    from robolearn.utils.errors import ConfigError

    base, _ = load_policy(tiny_base)
    with pytest.raises(ConfigError, match=r"acts in 4 dimensions but the task's actions are \(7,\)"):
        build_residual(base, "diffusion", gym.spaces.Box(-1, 1, (7,)), {})
    obs = gym.spaces.Dict({"robot0_eef_pos": gym.spaces.Box(-1, 1, (3,))})
    with pytest.raises(ConfigError, match=r"needs observation '(robot0_gripper_qpos|object)'.*missing"):
        build_residual(base, "diffusion", gym.spaces.Box(-1, 1, (4,)), {}, obs)


def test_in_process_rollout_with_more_envs_than_episodes_left(toy_registered, monkeypatch):
    """Validation steps all envs in this process: envs left idle at the end are reset, not stepped
    finished (gymnasium's SyncVectorEnv refuses that), and every seed gives its own result."""
    import robolearn.eval.rollout as ro_mod

    monkeypatch.setattr(ro_mod, "_make_env_fn", lambda cfg, render_mode=None: ToyReach)
    policy = toy_residual()
    res = ro_mod.rollout(policy, {"name": "toy", "obs_keys": ["pos"]}, range(5), n_envs=4, progress=False,
                         in_process=True)
    one = ro_mod.rollout(policy, {"name": "toy", "obs_keys": ["pos"]}, range(5), n_envs=1, progress=False)
    assert [r["seed"] for r in res] == list(range(5)) and res == one


# ------------------------------------------------------------------ chunk alignment and shaping

class ToyVarLen(ToyReach):
    """ToyReach whose episodes are truncated after ``5 + seed % 4`` steps (never a multiple of 4 alone)."""

    def reset(self, *, seed=None, options=None):
        self.limit = 5 + int(seed) % 4
        return super().reset(seed=seed, options=options)

    def step(self, action):
        obs, r, term, _, info = super().step(action)
        return obs, r, term, self.t >= self.limit, info


@pytest.mark.parametrize("align", [True, False])
def test_aligned_chunks_query_the_base_once_per_boundary(toy_registered, align):
    """With align_chunks, an environment whose episode ended waits for the next multiple of
    n_action_steps (4): episodes start only there, so the base is queried once per boundary; the
    waiting steps are invalid (no reward, done, left out of the batch) and leave no trace (each
    episode keeps its seed's length). Without it, the base is queried at more steps."""
    from robolearn.rl.collect import SeedCounter, collect_rollout

    policy = toy_residual()
    venv = gym.vector.SyncVectorEnv([ToyVarLen for _ in range(6)], autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    ro = collect_rollout(policy, venv, ["pos"], 24, SeedCounter(0, 1000), torch.Generator().manual_seed(0),
                         align_chunks=align)
    venv.close()
    lengths = {e["seed"]: e["length"] for e in ro.episodes}
    assert len(lengths) >= 12 and all(n == 5 + s % 4 for s, n in lengths.items())
    valid = ro.valid.numpy()
    if align:
        assert ro.base_queries <= 24 // 4 + 1  # one per boundary, plus the input of the state after the last step
        starts = [(t, i) for i in range(6) for t in range(24) if valid[t, i] and (t == 0 or not valid[t - 1, i])]
        assert starts and all(t % 4 == 0 for t, _ in starts)
        idle = valid == 0
        assert idle.any()
        assert np.all(ro.rewards.numpy()[idle] == 0) and np.all(ro.dones.numpy()[idle] == 1)
        adv, ret = compute_gae(ro.rewards, ro.values, ro.next_values, ro.dones, 0.99, 0.95)
        assert torch.all(adv[ro.valid == 0] == 0)
        assert ro.flat(adv, ret)["input"].shape[0] == int(valid.sum())
    else:
        assert valid.all()
        assert ro.base_queries > 24 // 4 + 1


def test_shaped_reward_is_potential_based_and_opt_in():
    """rl.reward=shaped adds gamma * phi(s') - phi(s) with insertion's alignment potential (flat beyond
    5 cm, 0 at 5 cm, 1 on the axis); sparse adds nothing; other tasks are refused by name; with
    gamma < 1 a step far from the hole earns nothing (the floor of the potential is 0)."""
    from robolearn.rl.rewards import insertion_alignment_potential, make_reward_fn

    def obs(dx, dy):
        o = np.zeros((1, 13), np.float32)
        o[0, 10:12] = dx, dy
        return {"object": o}

    assert make_reward_fn("sparse", "insertion", 0.99) is None
    assert insertion_alignment_potential(obs(0.0, 0.0))[0] == 1.0
    assert insertion_alignment_potential(obs(0.03, 0.04))[0] == pytest.approx(0.0, abs=1e-6)
    assert insertion_alignment_potential(obs(0.3, 0.0))[0] == pytest.approx(0.0, abs=1e-6)
    fn = make_reward_fn("shaped", "insertion", 1.0)
    path = [obs(0.2, 0.0), obs(0.04, 0.0), obs(0.01, 0.0), obs(0.0, 0.002)]
    shaped = [float(fn(np.zeros(1), a, b, np.zeros(1, bool))[0]) for a, b in zip(path, path[1:])]
    assert shaped[0] == pytest.approx(0.2) and shaped[1] == pytest.approx(0.6)
    assert sum(shaped) == pytest.approx(float(insertion_alignment_potential(path[-1])[0]))  # telescopes (phi0 = 0)
    far = make_reward_fn("shaped", "insertion", 0.999)
    assert float(far(np.zeros(1), path[0], path[0], np.zeros(1, bool))[0]) == pytest.approx(0.0, abs=1e-9)  # staying away pays nothing
    assert float(fn(np.ones(1), path[1], path[1], np.ones(1, bool))[0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no shaping potential for task 'lift'"):
        make_reward_fn("shaped", "lift", 0.99)


@pytest.mark.parametrize("policy_type,steps,use_ema,expect", [
    ("act", None, True, None),  # ACT run as eval runs it: no second base evaluation
    ("act", None, False, {"num_inference_steps": None, "zero_initial_noise": False, "use_ema": False}),
    ("diffusion", 10, True, {"num_inference_steps": 4, "zero_initial_noise": True, "use_ema": True}),
])
def test_compare_evaluates_the_base_as_rl_runs_it(monkeypatch, policy_type, steps, use_ema, expect):
    """The second base evaluation happens exactly when RL runs the base differently from `robolearn eval`
    (denoising steps, x_T = 0, or the raw instead of the EMA weights), with only the settings that apply."""
    import robolearn.eval.rollout as rollout_mod
    import robolearn.train.checkpoint as ckpt_mod
    from robolearn.apps.rl import compare

    calls = []

    def fake_eval(path, episodes, progress=True, **kw):
        calls.append((str(path), kw))
        return {"num_inference_steps": steps, "seeds": [100000, 100049], "episodes": []}

    monkeypatch.setattr(rollout_mod, "evaluate_checkpoint", fake_eval)
    monkeypatch.setattr(ckpt_mod, "read_policy_type", lambda path: policy_type)
    out = compare("base", "rl", 50, progress=False, base_inference_steps=4, base_noise="zero", use_ema=use_ema)
    assert [c[0] for c in calls] == ["base", *(["base"] if expect else []), "rl"]
    assert calls[0][1] == {} and calls[-1][1] == {}
    assert (out["base_rl_steps"] is None) == (expect is None)
    if expect:
        assert calls[1][1] == expect
