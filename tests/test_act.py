"""ACT: the two defects of the reference implementation are absent, temporal ensembling matches a
hand-computed example, and the policy learns a toy mapping through the standard Policy interface."""

import numpy as np
import pytest
import torch

from robolearn.policies import build_policy, build_policy_from_kwargs
from robolearn.policies.act.policy import ACTPolicy

SHAPES = {"state": (3,)}
STATS = {"state": {"min": -np.ones(3), "max": np.ones(3), "mean": np.zeros(3), "std": np.ones(3)},
         "action": {"min": -np.ones(2), "max": np.ones(2), "mean": np.zeros(2), "std": np.ones(2)}}


def small(**kw):
    torch.manual_seed(0)
    args = dict(obs_shapes=SHAPES, action_dim=2, horizon=4, n_action_steps=2, dim_model=32, n_heads=4,
                dim_feedforward=64, n_encoder_layers=2, n_decoder_layers=3, n_vae_encoder_layers=2, dropout=0.0,
                stats=STATS)
    args.update(kw)
    return ACTPolicy(**args).eval()


def test_the_last_decoder_layer_drives_the_actions():
    """Reference defect 1: the head read the first decoder layer, so later layers changed nothing."""
    policy = small()
    obs = {"state": torch.randn(2, 1, 3)}
    before = policy.predict_action_chunk(obs)
    with torch.no_grad():
        for p in policy.decoder.layers[-1].parameters():
            p.add_(torch.randn_like(p) * 0.5)
    assert not torch.allclose(before, policy.predict_action_chunk(obs), atol=1e-4)


def test_the_latent_reaches_the_decoder_without_cameras():
    """Reference defect 2: with no camera the latent was dropped, so z could not change the output."""
    policy = small()
    state = torch.randn(2, 3)
    a = policy.decode(state, torch.zeros(2, 32))
    b = policy.decode(state, torch.ones(2, 32))
    assert not torch.allclose(a, b, atol=1e-4)


def test_temporal_ensembling_matches_a_hand_computed_example(monkeypatch):
    policy = small(temporal_ensemble_k=0.5)
    # Query q returns a chunk whose action i is 10 * q + i (same in both action dimensions).
    calls = iter(range(10))

    def fake_chunk(obs):
        q = next(calls)
        return (10.0 * q + torch.arange(4.0))[None, :, None].repeat(1, 1, 2)

    monkeypatch.setattr(policy, "predict_action_chunk", fake_chunk)
    obs = {"state": torch.zeros(1, 1, 3)}
    assert policy.predict_action(obs)[0, 0, 0].item() == pytest.approx(0.0)
    # Step 1: query 0 predicted action 1 -> 1.0 (oldest, weight 1); query 1 its action 0 -> 10.0 (weight e^-0.5).
    w = np.exp(-0.5 * np.arange(2))
    assert policy.predict_action(obs)[0, 0, 0].item() == pytest.approx((w @ [1.0, 10.0]) / w.sum())
    # Step 2: predictions 2.0 (query 0), 11.0 (query 1), 20.0 (query 2).
    w = np.exp(-0.5 * np.arange(3))
    assert policy.predict_action(obs)[0, 0, 0].item() == pytest.approx((w @ [2.0, 11.0, 20.0]) / w.sum())
    policy.reset()
    assert policy.predict_action(obs)[0, 0, 0].item() == pytest.approx(30.0)  # a fresh episode


def test_act_learns_a_toy_mapping_and_round_trips_its_config():
    torch.manual_seed(0)
    policy = build_policy({"name": "act", "horizon": 4, "n_action_steps": 2, "dim_model": 32, "n_heads": 4,
                           "dim_feedforward": 64, "n_encoder_layers": 1, "n_decoder_layers": 2,
                           "n_vae_encoder_layers": 1, "dropout": 0.0, "kl_weight": 1.0}, SHAPES, 2, stats=STATS)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    state = torch.rand(256, 1, 3) * 2 - 1
    target = torch.stack([state[:, 0, :2] * (i + 1) / 4 for i in range(4)], dim=1)  # (B, 4, 2)
    losses = []
    for _ in range(150):
        loss, info = policy.compute_loss({"obs.state": state, "action": target})
        assert set(info) == {"l1", "kl"} and not info["l1"].requires_grad
        torch.testing.assert_close(loss.detach(), info["l1"] + policy.kl_weight * info["kl"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    policy.eval()
    out = policy.predict_action({"state": state[:8]})
    assert out.shape == (8, 2, 2)
    assert (out - target[:8, :2]).abs().mean() < 0.15
    clone = build_policy_from_kwargs("act", policy.get_config())
    clone.load_state_dict(policy.state_dict())
    torch.testing.assert_close(clone.eval().predict_action({"state": state[:8]}), out)
    with pytest.raises(ValueError, match="n_obs_steps"):
        ACTPolicy(SHAPES, 2, n_obs_steps=2)
