"""`robolearn collect --policy`: a trained policy's rollouts recorded as episodes (PolicyExpert). The policy is
conftest's `tiny_base` (the tiny insertion policy, 10 training steps: it fails, so its rollouts are its own states)."""

import numpy as np
import pytest
import torch

from robolearn.apps.collect import collect
from robolearn.data.store import EpisodeStore
from robolearn.train.checkpoint import load_policy
from robolearn.utils.errors import ConfigError


def test_policy_rollouts_are_recorded_as_the_policy_runs_them(tiny_base, tmp_path):
    out = tmp_path / "rollouts.zarr"
    r = collect(None, 2, out=out, policy=tiny_base, seed_start=7, keep_failed=True, progress=False,
                overrides=["task.max_episode_steps=30"])
    assert r["attempted"] == 2 and r["kept"] == 2 and r["seeds"] == [7, 8]
    store = EpisodeStore.open(out)
    assert store.attrs["source"].startswith("policy ") and str(tiny_base.resolve()) in store.attrs["source"]
    policy, cfg = load_policy(tiny_base)
    ep = store.get_episode(0)
    assert store.episode_meta("length").max() <= 30  # the task.* override applied
    T, keys = len(ep["action"]), list(cfg.task.obs_keys)
    assert ep["action"].shape == (T, policy.action_dim) and T == store.episode_meta("length")[0]
    # replay: seeded with the episode's seed, the policy queried every n_action_steps on the last n_obs_steps
    # recorded observations (the first one repeated at the start) gives the recorded actions
    torch.manual_seed(7)
    k = policy.n_action_steps
    for t in range(0, T, k):
        window = [max(t - j, 0) for j in reversed(range(policy.n_obs_steps))]
        obs = {key: torch.from_numpy(np.asarray(ep[key][window], dtype=np.float32))[None] for key in keys}
        chunk = policy.predict_action(obs)[0].numpy()
        np.testing.assert_allclose(ep["action"][t:t + k], chunk[: len(ep["action"][t:t + k])], atol=1e-5)
    again = collect(None, 2, out=tmp_path / "again.zarr", policy=tiny_base, seed_start=7, keep_failed=True,
                    progress=False, overrides=["task.max_episode_steps=30"])
    np.testing.assert_array_equal(EpisodeStore.open(again["path"]).get_episode(0)["action"], ep["action"])


def test_policy_collect_refuses_what_does_not_apply(tiny_base, tmp_path):
    with pytest.raises(ConfigError, match="needs --out"):
        collect(None, 1, policy=tiny_base)
    with pytest.raises(ConfigError, match="trained on insertion"):
        collect("lift", 1, out=tmp_path / "x.zarr", policy=tiny_base)
    with pytest.raises(ConfigError, match="only task"):
        collect(None, 1, out=tmp_path / "x.zarr", policy=tiny_base, overrides=["train.steps=3"])
    with pytest.raises(ConfigError, match="task.nope: unknown key"):
        collect(None, 1, out=tmp_path / "x.zarr", policy=tiny_base, overrides=["task.nope=3"])
    with pytest.raises(ConfigError, match=r"task.max_episode_steps=0: must be an integer >= 1"):
        collect(None, 1, out=tmp_path / "x.zarr", policy=tiny_base, overrides=["task.max_episode_steps=0"])
    assert not (tmp_path / "x.zarr").exists()
