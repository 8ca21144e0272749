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
    with pytest.raises(ValueError, match=r"successes must be in \[0, n=10\], got 11"):
        wilson_interval(11, 10)


class ExpertAsPolicy(torch.nn.Module):
    """Wraps the scripted expert in the Policy interface (one action per chunk) to test the rollout loop."""

    n_obs_steps, n_action_steps = 2, 1

    def __init__(self, task="lift"):
        super().__init__()
        from robolearn.envs import make_expert

        self.experts = {}
        self.make = lambda: make_expert(task)
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


@pytest.mark.skipif(__import__("robolearn.utils.gl", fromlist=["x"]).pick_backend() is None
                    and not __import__("os").environ.get("ROBOLEARN_REQUIRE_RENDER"), reason="no offscreen rendering")
def test_rollout_records_videos_of_the_first_episodes_and_report_links_them(tmp_path):
    import imageio.v2 as iio

    from robolearn.eval.report import write_eval_report

    cfg = load_config()
    results = rollout(ExpertAsPolicy(), cfg.task, seeds=[3, 4, 5], n_envs=2, progress=False, n_videos=2,
                      video_dir=tmp_path / "videos")
    videos = [r.get("video") for r in results]
    assert videos[2] is None and all(videos[:2])
    for r in results[:2]:
        frames = [f for f in iio.get_reader(r["video"], format="ffmpeg")]  # list() would ask len(): inf
        assert len(frames) == r["length"] + 1  # the reset frame and one per step
        assert frames[0].shape == (240, 320, 3) and frames[0].std() > 5
        assert f"seed{r['seed']}_success" in r["video"]
    result = {**summarize(results), "episodes": results, "task": "lift", "policy": "expert", "seeds": [3, 5],
              "n_envs": 2, "wall_s": 1.0}
    report = write_eval_report(tmp_path, result).read_text()
    assert "| success rate | **1.000** (3/3) |" in report
    assert "(videos/episode000_seed3_success.mp4)" in report and (tmp_path / "eval.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="video_dir"):
        rollout(ExpertAsPolicy(), cfg.task, seeds=[3], n_videos=1)


class Hold(torch.nn.Module):
    """Keeps PushT's pusher where it is: the block never moves."""

    n_obs_steps, n_action_steps = 2, 4

    def predict_action(self, obs):
        return obs["agent_pos"][:, -1:].repeat(1, self.n_action_steps, 1)


def test_rollout_keeps_each_episodes_best_task_score():
    from robolearn.envs.pusht import PushTEnv, coverage

    task = load_config(["task=pusht", "task.obs_keys=[agent_pos,object]"]).task  # what the expert reads
    expert = rollout(ExpertAsPolicy("pusht"), task, seeds=[1, 2], n_envs=1, progress=False)
    assert all(r["success"] and r["max_coverage"] >= 0.95 for r in expert)
    held = rollout(Hold(), task, seeds=[2, 6], n_envs=1, progress=False)  # initial coverage 0.22, 0.20
    env = PushTEnv()
    for r in held:  # a block that never moves keeps its initial coverage all episode
        env.reset(seed=r["seed"])
        initial = coverage(env.block_pose())
        assert not r["success"] and initial > 0.1 and r["max_coverage"] == pytest.approx(initial, abs=1e-3)
    s = summarize(expert + held)
    assert s["mean_max_coverage"] == pytest.approx(np.mean([r["max_coverage"] for r in expert + held]))
    assert "mean_max_coverage" not in summarize([{"seed": 0, "success": True, "length": 3}])


class NoisyHold(Hold):
    """Hold plus torch-drawn noise, like a diffusion policy's sampling; keeps every chunk it returns."""

    def __init__(self):
        super().__init__()
        self.chunks = []

    def predict_action(self, obs):
        chunk = super().predict_action(obs) + 0.01 * torch.randn(obs["agent_pos"].shape[0], self.n_action_steps, 2)
        self.chunks.append(chunk)
        return chunk


def test_rollouts_are_reproducible_and_leave_the_callers_rng_alone():
    task = load_config(["task=pusht", "task.max_episode_steps=20"]).task
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = NoisyHold(), NoisyHold(), NoisyHold()
    rollout(a, task, seeds=[2, 6], progress=False)
    assert torch.rand(1) == before  # the policy's draws came from a forked generator
    rollout(b, task, seeds=[2, 6], progress=False)
    rollout(c, task, seeds=[2, 6], progress=False, noise_seed=1)
    assert len(a.chunks) == 10 and all(torch.equal(x, y) for x, y in zip(a.chunks, b.chunks))
    assert not torch.equal(a.chunks[0], c.chunks[0])


def test_executed_actions_per_chunk_can_be_overridden():
    from robolearn.eval.rollout import set_action_steps

    task = load_config(["task=pusht", "task.max_episode_steps=20"]).task
    policy = NoisyHold()
    policy.horizon = 8  # with n_obs_steps 2: chunks of 7 actions from the current step on
    set_action_steps(policy, 2)
    rollout(policy, task, seeds=[2], progress=False)
    assert len(policy.chunks) == 10  # 20 steps, 2 actions per call
    set_action_steps(policy, None)  # the range is checked by the policy's setter (tests/test_policy.py)
    assert policy.n_action_steps == 2
