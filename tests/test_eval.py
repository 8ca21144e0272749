import numpy as np
import pytest
import torch

from robolearn.eval.metrics import wilson_interval
from robolearn.eval.rollout import rollout, summarize
from robolearn.utils.config import load_config


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)  # textbook example: [0.490, 0.943]
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


class ExpertAsPolicy(torch.nn.Module):
    """Wraps the scripted expert in the Policy interface (one action per chunk) to test the rollout loop."""

    n_obs_steps, n_action_steps = 2, 1

    def __init__(self):
        super().__init__()
        from robolearn.envs import make_expert

        self.experts = {}
        self.make = lambda: make_expert("lift")
        self.calls = []

    def predict_action(self, obs):
        B = obs["object"].shape[0]
        assert obs["object"].shape[1] == 2  # history of n_obs_steps
        self.calls.append(B)
        out = []
        for b in range(B):
            key = tuple(np.round(obs["object"][b, 0, :3].numpy(), 5))  # one expert per episode
            exp = self.experts.setdefault(key, self.make())
            out.append(exp({k: v[b, -1].numpy() for k, v in obs.items()}))
            self.experts[tuple(np.round(obs["object"][b, -1, :3].numpy(), 5))] = exp
        return torch.from_numpy(np.stack(out))[:, None]


def test_rollout_runs_every_seed_in_parallel_envs():
    cfg = load_config()
    policy = ExpertAsPolicy()
    results = rollout(policy, cfg.task, seeds=[3, 4, 5], n_envs=2, progress=False)
    assert [r["seed"] for r in results] == [3, 4, 5]
    assert all(r["success"] for r in results)
    assert all(10 < r["length"] < 60 for r in results)
    assert max(policy.calls) == 2  # batched across the two envs
    s = summarize(results)
    assert s["success_rate"] == 1.0 and s["n_episodes"] == 3 and s["success_ci95"][1] == 1.0
