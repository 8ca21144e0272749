"""Control loop logic on a simulated clock: deterministic, no real-time assertions (those are benchmarks)."""

import pytest

from robolearn.robots import loop as loop_mod
from robolearn.robots.loop import ControlLoop


class FakeClock:
    """Monotonic clock whose time advances only through sleep (plus a fixed oversleep) and step work."""

    def __init__(self, oversleep=0.0):
        self.t = 100.0
        self.oversleep = oversleep
        self.sleeps = []

    def __call__(self):
        self.t += 1e-6  # every read costs a microsecond, so busy-waits terminate
        return self.t

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s + self.oversleep


def test_deadlines_are_absolute_and_do_not_drift():
    clock = FakeClock(oversleep=0.0003)
    starts = []

    def step(k, deadline):
        starts.append((k, deadline, clock.t))
        clock.t += 0.0004  # 0.4 ms of work in a 2 ms period

    stats = ControlLoop(500, step, spin_s=0.0005, clock=clock, sleep=clock.sleep).run(max_steps=1000)
    assert stats.steps == 1000 and stats.overruns == 0 and stats.missed_deadlines == 0
    t0 = starts[0][1]
    for k, deadline, _ in starts:
        assert deadline == pytest.approx(t0 + k * 0.002, abs=1e-9)  # no accumulated drift
    assert max(stats.lateness) < 2e-5  # oversleep absorbed by the spin margin
    assert all(s <= 0.002 for s in clock.sleeps)


def test_overruns_skip_missed_deadlines_instead_of_bursting():
    clock = FakeClock()
    ks = []

    def step(k, deadline):
        ks.append(k)
        if k == 3:
            clock.t += 0.0105  # a 10.5 ms stall in a 2 ms loop
        return {"work": 0.0001}

    stats = ControlLoop(500, step, spin_s=0.0002, clock=clock, sleep=clock.sleep).run(max_steps=8)
    assert stats.overruns == 1 and stats.missed_deadlines == 5
    assert ks == [0, 1, 2, 3, 9, 10, 11, 12]  # deadlines 4..8 are skipped
    assert len(stats.sections["work"]) == 8
    s = stats.summary()
    assert s["steps"] == 8 and s["step_time"]["max_us"] > 10000


def test_duration_and_stop():
    clock = FakeClock()
    stats = ControlLoop(100, lambda k, d: None, clock=clock, sleep=clock.sleep).run(duration_s=0.5)
    assert stats.steps == 50
    holder = {}

    def step(k, d):
        if k == 4:
            holder["loop"].stop()

    holder["loop"] = ControlLoop(100, step, clock=clock, sleep=clock.sleep)
    assert holder["loop"].run().steps == 5


def test_realtime_degrades_gracefully_without_privilege(monkeypatch):
    def refuse(*a):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(loop_mod.os, "sched_setscheduler", refuse, raising=False)
    monkeypatch.setattr(loop_mod.gc, "freeze", lambda: None)
    clock = FakeClock()
    stats = ControlLoop(100, lambda k, d: None, realtime=True, clock=clock, sleep=clock.sleep).run(max_steps=3)
    assert stats.steps == 3 and not stats.realtime and "refused" in stats.realtime_note


def test_bad_rate():
    with pytest.raises(ValueError, match="rate_hz"):
        ControlLoop(0, lambda k, d: None)


class _Cycle:
    """A reference cycle: freed only by the garbage collector."""

    def __init__(self):
        self.me = self


def _garbage_step(clock, work_s):
    def step(k, deadline):
        for _ in range(300):
            _Cycle()
        clock.t += work_s
    return step


def test_gc_runs_only_in_slack_and_state_is_restored():
    import gc

    gc.enable()
    clock = FakeClock()
    loop = ControlLoop(500, _garbage_step(clock, 0.0004), spin_s=0.0002, clock=clock, sleep=clock.sleep)
    collections_in_step = []
    orig_step = loop.step_fn

    def step(k, deadline):
        before = gc.get_stats()[0]["collections"]
        orig_step(k, deadline)
        collections_in_step.append(gc.get_stats()[0]["collections"] - before)

    loop.step_fn = step
    stats = loop.run(max_steps=200)
    assert gc.isenabled()  # restored after the run
    assert sum(collections_in_step) == 0  # no automatic collection inside a step
    assert sum(stats.gc_runs) > 0 and stats.gc_forced == 0  # the loop collected in its slack
    assert stats.overruns == 0


def test_gc_without_slack_is_forced_only_when_far_behind():
    import gc

    clock = FakeClock()
    # Every step takes almost the whole period: never enough slack, so only forced collections run.
    loop = ControlLoop(500, _garbage_step(clock, 0.00195), spin_s=0.0, gc_force_factor=5.0,
                       clock=clock, sleep=clock.sleep)
    stats = loop.run(max_steps=100)
    threshold0 = gc.get_threshold()[0]
    assert stats.gc_forced == sum(stats.gc_runs) > 0
    # 300 objects per step, forced at 5 thresholds: about 30,000 / (5 * threshold0) collections.
    assert sum(stats.gc_runs) <= 100 * 300 // (5 * threshold0) + 1


def test_gc_settings_are_validated():
    with pytest.raises(ValueError, match="gc_slack_s"):
        ControlLoop(100, lambda k, d: None, gc_slack_s=-1)
    with pytest.raises(ValueError, match="gc_force_factor"):
        ControlLoop(100, lambda k, d: None, gc_force_factor=0.5)
