import math

import numpy as np
import pytest

from robolearn.robots.scheduler import ActionScheduler
from robolearn.utils.rotations import slerp


def test_temporal_ensembling_matches_hand_computed_weights():
    s = ActionScheduler(1, mode="ensemble", ensemble_k=1.0)
    for t0, value in ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0)):  # each chunk: 4 steps of a constant value
        s.add_chunk(np.full((4, 1), value), t0=t0, dt=1.0, now=t0)
    # At t = 2 all three chunks have a prediction; weights exp(-k*i), i = 0 the oldest:
    # (1*1 + 2*e^-1 + 3*e^-2) / (1 + e^-1 + e^-2) = 2.14176473 / 1.50321472 = 1.4247896
    assert s.get(2.0)[0] == pytest.approx(1.4247896, abs=1e-7)
    # At t = 3.5 only the chunks from t0 = 1 and t0 = 2 remain: (2 + 3 e^-1) / (1 + e^-1)
    assert s.get(3.5)[0] == pytest.approx((2 + 3 * math.exp(-1)) / (1 + math.exp(-1)), abs=1e-9)


def test_default_coefficient_weights_old_predictions_slightly_more():
    s = ActionScheduler(1, mode="ensemble")  # k = 0.01 as in ACT
    s.add_chunk(np.zeros((3, 1)), 0.0, 1.0, now=0.0)
    s.add_chunk(np.ones((3, 1)), 1.0, 1.0, now=1.0)
    assert s.get(1.0)[0] == pytest.approx(math.exp(-0.01) / (1 + math.exp(-0.01)))


def test_receding_horizon_newest_chunk_wins_and_interpolates():
    s = ActionScheduler(2, mode="receding")
    s.add_chunk(np.array([[0.0, 0.0], [1.0, 10.0], [2.0, 20.0]]), t0=0.0, dt=0.1, now=0.0)
    np.testing.assert_allclose(s.get(0.025), [0.25, 2.5])  # linear between the first two actions
    s.add_chunk(np.array([[5.0, 5.0], [6.0, 6.0]]), t0=0.1, dt=0.1, now=0.1)
    np.testing.assert_allclose(s.get(0.15), [5.5, 5.5])


def test_stale_actions_are_dropped_and_counted():
    s = ActionScheduler(1, latency_s=0.01)
    kept = s.add_chunk(np.arange(10.0)[:, None], t0=0.0, dt=0.1, now=0.25)
    assert kept == 7 and s.n_stale_dropped == 3  # 0.0, 0.1, 0.2 are before 0.26
    assert s.get(0.26)[0] == pytest.approx(2.6)  # interpolated from the last stale to the first fresh
    assert s.add_chunk(np.zeros((3, 1)), t0=0.0, dt=0.1, now=5.0) == 0 and s.n_stale_dropped == 6
    s.add_chunk(np.zeros((3, 1)), t0=1.0, dt=0.1, now=0.99)  # arrives before its first action is due
    assert (s.n_chunks, s.n_chunks_stale, s.n_stale_dropped) == (3, 2, 6)
    assert s.n_chunks_late == 2  # the first two chunks had more than their first action past
    s.add_chunk(np.zeros((3, 1)), t0=2.0, dt=0.1, now=2.05)  # only its first action past: stale, not late
    assert (s.n_chunks_stale, s.n_chunks_late) == (3, 2)


def test_holds_when_dry():
    s = ActionScheduler(1)
    assert s.get(0.0) is None and s.n_dry == 0
    s.add_chunk(np.array([[1.0], [2.0]]), t0=0.0, dt=0.1, now=0.0)
    assert s.get(0.1)[0] == 2.0
    assert s.get(0.5)[0] == 2.0 and s.get(0.6)[0] == 2.0
    assert s.n_dry == 2


def test_quaternions_are_slerped():
    z90 = np.array([0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)])
    ident = np.array([0, 0, 0, 1.0])
    half = slerp(ident, z90, 0.5)
    np.testing.assert_allclose(half, [0, 0, math.sin(math.pi / 8), math.cos(math.pi / 8)], atol=1e-12)
    s = ActionScheduler(5, quat_slice=(0, 4))
    s.add_chunk(np.array([[*ident, 0.0], [*z90, 1.0]]), t0=0.0, dt=1.0, now=0.0)
    out = s.get(0.5)
    np.testing.assert_allclose(out[:4], half, atol=1e-12)
    assert out[4] == pytest.approx(0.5)


def test_bad_chunks_are_refused():
    s = ActionScheduler(2)
    with pytest.raises(ValueError, match="shape"):
        s.add_chunk(np.zeros((3, 3)), 0.0, 0.1, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        s.add_chunk(np.array([[np.nan, 0.0]]), 0.0, 0.1, 0.0)
    with pytest.raises(ValueError, match="dt"):
        s.add_chunk(np.zeros((3, 2)), 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="quat_slice"):
        ActionScheduler(3, quat_slice=(0, 4))


def test_hold_mode_and_remaining():
    s = ActionScheduler(action_dim=1, interpolate=False)
    assert s.remaining(0.0) == 0
    s.add_chunk(np.array([[0.0], [1.0], [2.0], [3.0]]), t0=1.0, dt=0.1, now=1.05)
    # action 0 (t=1.0) is stale and dropped; it is kept only as the value before t=1.1
    assert s.n_stale_dropped == 1
    assert s.remaining(1.1) == 3 and s.remaining(1.25) == 1
    assert s.get(1.1)[0] == 1.0
    assert s.get(1.19)[0] == 1.0   # held, not interpolated toward 2.0
    assert s.get(1.2)[0] == 2.0


def test_hold_mode_is_robust_to_float_rounding_of_times():
    s = ActionScheduler(action_dim=1, interpolate=False)
    t0 = 0.1 + 0.2  # 0.30000000000000004
    s.add_chunk(np.arange(5.0)[:, None], t0=t0, dt=0.05, now=0.0)
    for i in range(5):
        assert s.get(0.3 + i * 0.05 - 1e-9)[0] == i
