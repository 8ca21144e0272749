"""CPU pinning of loop, policy worker and cameras; misses per second inside and outside stall windows."""

import os
import time

import numpy as np
import pytest

from robolearn.robots.affinity import miss_rates, pin, pinned, plan_affinity, run_miss_rates, stall_windows
from robolearn.robots.loop import ControlLoop, LoopStats, ManualClock
from robolearn.robots.runner import PolicyRunner

CAN_PIN = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 1


def refuse(*args):
    raise PermissionError(1, "Operation not permitted")


# -- rates on a hand-built timeline

def test_miss_rates_on_a_hand_built_timeline():
    # run 0..10 s; windows overlap (1-2 and 1.5-2.5: 1.5 s) plus 5-6 (1 s): 2.5 s inside, 7.5 outside
    windows = [(1.0, 2.0), (1.5, 2.5), (5.0, 6.0)]
    misses = [1.2, 2.4, 3.0, 7.0, 8.0, 11.0]  # 11.0 is after the run: not counted
    r = miss_rates(windows, misses, 0.0, 10.0, overrun_times=[1.1, 3.0])
    assert r["seconds_in_stalls"] == pytest.approx(2.5)
    assert r["seconds_outside"] == pytest.approx(7.5)
    assert (r["missed_in_stalls"], r["missed_outside"]) == (2, 3)
    assert r["misses_per_s_in_stalls"] == pytest.approx(2 / 2.5)
    assert r["misses_per_s_outside"] == pytest.approx(3 / 7.5)
    assert (r["overruns_in_stalls"], r["overruns_outside"]) == (1, 1)
    assert r["overruns_per_s_outside"] == pytest.approx(1 / 7.5)


def test_miss_rates_clip_windows_to_the_run_and_refuse_bad_input():
    r = miss_rates([(-1.0, 0.5), (9.5, 12.0)], [], 0.0, 10.0)
    assert r["seconds_in_stalls"] == pytest.approx(1.0)
    assert r["misses_per_s_in_stalls"] == 0.0 and "overruns_in_stalls" not in r
    assert miss_rates([], [1.0], 0.0, 10.0)["misses_per_s_in_stalls"] is None  # no time inside: no rate
    with pytest.raises(ValueError, match="before it starts"):
        miss_rates([], [], 2.0, 1.0)
    with pytest.raises(ValueError, match="end after they start"):
        miss_rates([(3.0, 2.0)], [], 0.0, 10.0)


def test_time_inside_matches_a_fine_grid_on_random_windows():
    rng = np.random.default_rng(0)
    starts = rng.uniform(0, 10, 15)
    windows = [(a, a + d) for a, d in zip(starts, rng.uniform(0.05, 1.0, 15))]
    grid = np.linspace(0, 10, 200_001)
    inside = np.zeros_like(grid, bool)
    for a, b in windows:
        inside |= (grid >= a) & (grid <= b)
    assert miss_rates(windows, [], 0.0, 10.0)["seconds_in_stalls"] == pytest.approx(inside.mean() * 10, abs=1e-3)


def test_stall_windows_pick_every_nth_chunk_from_start_to_receipt():
    log = [(float(i), i + 0.5, i + 0.6) for i in range(7)]  # (t_start, t_done, t_received)
    assert stall_windows(log, 3) == [(2.0, 2.6), (5.0, 5.6)]
    assert stall_windows(log, 0) == []


def test_run_miss_rates_sum_runs_and_leave_the_gap_between_them_out():
    a = LoopStats(t_begin=0.0, t_end=4.0, missed_times=[1.5, 3.0], overrun_times=[1.4])
    b = LoopStats(t_begin=6.0, t_end=10.0, missed_times=[6.2], overrun_times=[])
    r = run_miss_rates([(1.0, 2.0), (4.5, 5.5), (5.0, 6.5)], [a, b])  # the second window lies between the runs
    assert r["seconds_in_stalls"] == pytest.approx(1.5) and r["seconds_outside"] == pytest.approx(6.5)
    assert (r["missed_in_stalls"], r["missed_outside"]) == (2, 1)
    assert r["stall_windows"] == 2
    assert r["misses_per_s_in_stalls"] == pytest.approx(2 / 1.5)


def test_the_loop_records_when_it_overran_and_which_deadlines_it_missed():
    clock = ManualClock(100.0)

    def step(k, deadline):
        if k == 3:
            clock.sleep(0.025)  # 2.5 periods of 10 ms: deadlines 4 and 5 are missed

    stats = ControlLoop(100, step, clock=clock, sleep=clock.sleep, spin_s=0.0).run(max_steps=8)
    assert stats.t_begin == 100.0
    assert stats.overrun_times == [pytest.approx(100.03)]
    assert stats.missed_times == [pytest.approx(100.04), pytest.approx(100.05)]
    assert stats.missed_deadlines == 2 and stats.t_end >= 100.0 + 9 * 0.01


# -- pinning plans and fallbacks

def test_plans_for_one_two_and_four_cpus():
    plan, note = plan_affinity([3])
    assert plan == {} and "1 CPU" in note
    plan, note = plan_affinity([0, 1])
    assert plan == {"loop": [1], "policy": [0], "cameras": [0]}
    plan, _ = plan_affinity([2, 0, 3, 1])
    assert plan == {"loop": [3], "policy": [0, 1, 2], "cameras": [0, 1, 2]}
    with pytest.raises(ValueError, match="CPU numbers"):
        plan_affinity([-1, 0])


def test_plan_without_getaffinity_pins_nothing(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    plan, note = plan_affinity()
    assert plan == {} and "not available" in note


def test_pin_falls_back_when_the_os_refuses(monkeypatch):
    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    ok, note = pin([0])
    assert not ok and "refused" in note and "Operation not permitted" in note
    monkeypatch.delattr(os, "sched_setaffinity")
    ok, note = pin([0])
    assert not ok and "not available" in note


def test_a_loop_whose_pinning_is_refused_runs_and_says_why(monkeypatch):
    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    clock = ManualClock()
    stats = ControlLoop(100, lambda k, d: None, clock=clock, sleep=clock.sleep, spin_s=0.0,
                        cpus=[0]).run(max_steps=5)
    assert stats.steps == 5 and "refused" in stats.cpus_note
    assert stats.summary()["cpus_note"] == stats.cpus_note


@pytest.mark.skipif(not CAN_PIN, reason="no sched_setaffinity here")
def test_the_loop_runs_pinned_and_gives_the_cpus_back():
    before = sorted(os.sched_getaffinity(0))
    target = [before[-1]]
    seen = []
    clock = ManualClock()
    stats = ControlLoop(100, lambda k, d: seen.append(sorted(os.sched_getaffinity(0))), clock=clock,
                        sleep=clock.sleep, spin_s=0.0, cpus=target).run(max_steps=3)
    if stats.cpus_note.startswith("CPUs"):  # permitted here
        assert seen == [target] * 3 and stats.cpus == target
    assert sorted(os.sched_getaffinity(0)) == before
    with pinned(None) as (ok, _):
        assert not ok and sorted(os.sched_getaffinity(0)) == before


def constant_policy():
    def predict(obs):
        return np.zeros((4, 2))

    return predict


def test_the_policy_worker_pins_itself_or_reports_why_not(monkeypatch):
    with PolicyRunner(constant_policy, mode="thread", cpus=[0]) as runner:
        assert runner.cpus == [0] if runner.cpus_note.startswith("CPUs") else "not pinned" in runner.cpus_note
        runner.submit({"x": np.zeros((1, 2))}, time.monotonic())
        assert runner.wait(5.0) is not None
        assert len(runner.chunk_log) == 1
        t_start, t_done, t_received = runner.chunk_log[0]
        assert t_start <= t_done <= t_received
    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    with PolicyRunner(constant_policy, mode="thread", cpus=[0]) as runner:
        assert "refused" in runner.cpus_note
        runner.submit({"x": np.zeros((1, 2))}, time.monotonic())
        assert runner.wait(5.0) is not None  # unpinned, it still serves
    with PolicyRunner(constant_policy, mode="thread") as runner:
        assert runner.cpus_note == "not pinned (no cpus given)"
