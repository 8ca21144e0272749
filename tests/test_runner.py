"""The asynchronous policy runner: chunks come back timestamped, a busy policy refuses new requests,
policy errors surface in the caller, and a process worker behaves like a thread worker."""

import time
import types

import numpy as np
import pytest

from robolearn.robots.runner import PolicyRunner, StallingPolicy


class AddOne:
    """Factory of a policy whose chunk is (4, 2) copies of the last observation + 1."""

    def __call__(self):
        def predict(obs):
            return np.repeat(obs["x"][-1:] + 1.0, 4, axis=0)

        return predict


class Broken:
    def __call__(self):
        def predict(obs):
            raise RuntimeError("policy exploded")

        return predict


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_chunk_round_trip(mode):
    with PolicyRunner(AddOne(), mode=mode) as runner:
        assert runner.poll() is None
        rid = runner.submit({"x": np.array([[0.0, 0.0], [1.0, 2.0]])}, t_obs=123.0)
        assert runner.busy and runner.submit({"x": np.zeros((2, 2))}, 124.0) is None
        assert runner.n_refused_busy == 1
        result = runner.wait(30)
        assert result.request_id == rid and result.t_obs == 123.0
        assert result.t_start <= result.t_done
        np.testing.assert_array_equal(result.actions, [[2.0, 3.0]] * 4)
        assert not runner.busy and len(runner.latencies) == 1


def test_policy_errors_reach_the_caller():
    with PolicyRunner(Broken(), mode="thread") as runner:
        runner.submit({"x": np.zeros((1, 2))}, 0.0)
        with pytest.raises(RuntimeError, match="policy exploded"):
            runner.wait(10)


def test_stall_injection_delays_only_the_chosen_calls(monkeypatch):
    # Which calls stall is asserted from the sleeps the wrapper asks for, not from wall-clock upper
    # bounds (an unstalled call can take 0.1 s on a loaded 2-core machine).
    import robolearn.robots.runner as runner_module

    sleeps = []
    recording_time = types.SimpleNamespace(monotonic=time.monotonic,
                                           sleep=lambda s: (sleeps.append(s), time.sleep(s)))
    monkeypatch.setattr(runner_module, "time", recording_time)
    with PolicyRunner(StallingPolicy(AddOne(), stall_s=0.2, stall_calls=(2,)), mode="thread") as runner:
        durations, sleeps_after_call = [], []
        for _ in range(3):
            runner.submit({"x": np.zeros((1, 2))}, time.monotonic())
            r = runner.wait(10)
            durations.append(r.t_done - r.t_start)
            sleeps_after_call.append(list(sleeps))
            np.testing.assert_array_equal(r.actions, [[1.0, 1.0]] * 4)  # a stalled call still answers
    assert sleeps_after_call == [[], [0.2], [0.2]]
    assert durations[1] >= 0.2  # the stall is added to the chunk's compute time
