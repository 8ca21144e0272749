import numpy as np
import pytest

from robolearn.data.normalizer import compute_stats
from robolearn.data.sampler import SequenceSampler, split_episodes


def test_window_count_and_edge_padding():
    # Two episodes: rows 0..4 (episode 0) and 5..11 (episode 1).
    ends = np.array([5, 12])
    s = SequenceSampler(ends, horizon=4, n_obs_steps=2, n_action_steps=2)
    # Per episode of length L: starts from -(To-1) to L - H + (Ta-1) inclusive -> L - H + To + Ta - 1.
    assert len(s) == (5 - 4 + 2 + 2 - 1) + (7 - 4 + 2 + 2 - 1)
    rows = s.rows(np.arange(len(s)))
    # The first window of episode 0 repeats row 0 once before the episode starts.
    assert rows[0].tolist() == [0, 0, 1, 2]
    # The last window of episode 0 repeats its last row (4) once past the end.
    last0 = [r for r in rows if r.max() <= 4][-1]
    assert last0.tolist() == [2, 3, 4, 4]
    # No window mixes episodes.
    for r in rows:
        assert (r <= 4).all() or (r >= 5).all()
    assert rows[len(rows) - 1].tolist() == [9, 10, 11, 11]


def test_short_episode_gets_one_padded_window():
    s = SequenceSampler(np.array([2]), horizon=8, n_obs_steps=2, n_action_steps=4)
    assert len(s) == 1
    assert s.rows(0).tolist() == [[0, 0, 1, 1, 1, 1, 1, 1]]


def test_sample_obs_history_and_actions():
    ends = np.array([3, 6])
    data = {"obs": np.arange(6, dtype=np.float32)[:, None], "action": 10 + np.arange(6, dtype=np.float32)[:, None]}
    s = SequenceSampler(ends, horizon=3, n_obs_steps=2, n_action_steps=1, episodes=np.array([1]))
    batch = s.sample(data, np.arange(len(s)), obs_keys=("obs",))
    assert batch["obs"].shape == (len(s), 2, 1) and batch["action"].shape == (len(s), 3, 1)
    assert batch["obs"][0, :, 0].tolist() == [3, 3]
    assert batch["action"][0, :, 0].tolist() == [13, 13, 14]
    assert (batch["obs"] >= 3).all()  # only episode 1 is sampled


def test_invalid_sizes():
    with pytest.raises(ValueError, match="exceeds horizon"):
        SequenceSampler(np.array([10]), horizon=4, n_obs_steps=2, n_action_steps=4)
    with pytest.raises(ValueError, match="must be >= 1"):
        SequenceSampler(np.array([10]), horizon=0, n_obs_steps=1, n_action_steps=1)


def test_split_by_episode_is_seeded_partition():
    tr, va = split_episodes(20, 0.1, seed=3)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(20))
    assert len(va) == 2 and not set(tr) & set(va)
    tr2, va2 = split_episodes(20, 0.1, seed=3)
    assert va.tolist() == va2.tolist()
    # Tiny datasets keep at least one episode on each side.
    assert [len(x) for x in split_episodes(2, 0.01)] == [1, 1]
    assert [len(x) for x in split_episodes(1, 0.5)] == [1, 0]
    assert len(split_episodes(5, 0.0)[1]) == 0
    with pytest.raises(ValueError, match=r"val_ratio must be in \[0, 1\), got 1.0"):
        split_episodes(5, 1.0)


def test_compute_stats_and_errors():
    st = compute_stats({"a": np.array([[0.0, 1.0], [2.0, 1.0]])})
    assert st["a"]["min"].tolist() == [0, 1] and st["a"]["max"].tolist() == [2, 1]
    assert st["a"]["mean"].tolist() == [1, 1] and st["a"]["std"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="'b'.*NaN"):
        compute_stats({"b": np.array([[np.nan]])})
