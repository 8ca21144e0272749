"""Fixed-rate control loop on absolute deadlines.

Deadline ``k`` is ``t0 + k * period`` on the monotonic clock, never "last wake + period", so timing
errors do not accumulate. Each period the loop sleeps until ``spin_s`` before the deadline, then
busy-waits to it (measured here: plain sleep wakes up to ~2 ms late at p99, sleep-then-spin under
SCHED_FIFO ~0.2 µs; see REFERENCE.md). A step that runs past the next deadline is an overrun: the
missed deadlines are skipped, not replayed in a burst. With ``realtime=True`` the loop asks for
SCHED_FIFO and freezes the garbage collector's current objects (``gc.freeze()``); where the OS
refuses (no privileges, not Linux) it carries on without and says why in its stats. With ``cpus``
the loop's thread is pinned to those CPUs while it runs (:mod:`robolearn.robots.affinity`; same
fallback, ``cpus_note``).

Garbage collection: CPython collects whenever allocations cross a threshold, wherever that happens
to be, and a young-generation pass measured here took up to 0.5 ms, a middle-generation pass up to
2 ms: in a 2 ms period, that alone misses deadlines. With ``gc_in_slack`` (on by default) automatic
collection is off while the loop runs; the loop collects the young generations itself, after a step,
only when the time left before the next deadline exceeds ``gc_slack_s``, and at the latest when far
more objects are pending (``gc_force_factor`` times the usual threshold), so memory stays bounded.
The collector's state is restored when the loop returns.
"""

from __future__ import annotations

import gc
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from robolearn.robots.affinity import cpus_of, pinned


@dataclass
class LoopStats:
    """Timing of a loop run; all times in seconds.

    Attributes:
        steps: steps executed.
        overruns: steps that ended after the next deadline.
        missed_deadlines: deadlines skipped because of overruns.
        lateness: per-step wake-up lateness (actual start minus deadline).
        step_time: per-step duration of ``step_fn``.
        sections: per-section durations reported by ``step_fn`` (``{name: [s, ...]}``).
        realtime: whether SCHED_FIFO was obtained; ``realtime_note`` says why not.
        gc_runs: garbage collections the loop ran in slack time, per generation ``[gen0, gen1]``.
        gc_forced: collections run without enough slack (pending objects past the force limit).
        t_begin, t_end: the first deadline and the time the run ended (monotonic s).
        overrun_times: the deadline (monotonic s) of each step that overran.
        missed_times: the deadline (monotonic s) of each missed deadline.
        cpus: the CPUs the loop's thread ran on (``None``: unknown); ``cpus_note`` says whether
            it was pinned, and why not.
    """

    steps: int = 0
    overruns: int = 0
    missed_deadlines: int = 0
    lateness: list = field(default_factory=list)
    step_time: list = field(default_factory=list)
    sections: dict = field(default_factory=dict)
    realtime: bool = False
    realtime_note: str = ""
    gc_runs: list = field(default_factory=lambda: [0, 0])
    gc_forced: int = 0
    t_begin: float = float("nan")
    t_end: float = float("nan")
    overrun_times: list = field(default_factory=list)
    missed_times: list = field(default_factory=list)
    cpus: list | None = None
    cpus_note: str = ""

    def summary(self) -> dict:
        """Percentiles in microseconds: lateness p50/p99/p99.9/max, step time p50/p99/max, per section."""
        def pct(xs):
            if not xs:
                return {}
            a = np.asarray(xs) * 1e6
            return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
                    "p999_us": float(np.percentile(a, 99.9)), "max_us": float(a.max())}

        return {"steps": self.steps, "overruns": self.overruns, "missed_deadlines": self.missed_deadlines,
                "lateness": pct(self.lateness), "step_time": pct(self.step_time),
                "sections": {k: pct(v) for k, v in self.sections.items()},
                "gc_runs": list(self.gc_runs), "gc_forced": self.gc_forced,
                "realtime": self.realtime, "realtime_note": self.realtime_note,
                "cpus": self.cpus, "cpus_note": self.cpus_note}


class ManualClock:
    """A clock that advances only when slept on: ``clock()`` reads it, ``clock.sleep(s)`` advances it.

    Pass it as both ``clock`` and ``sleep`` of :class:`ControlLoop` (and as the clock of the
    drivers and sessions) to run a loop in lockstep, as fast as the machine allows and exactly
    reproducibly: what tests and offline simulation want.
    """

    def __init__(self, t: float = 0.0):
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        """Advance the clock by ``seconds``."""
        self.t += max(0.0, float(seconds))


def enable_realtime(priority: int = 80) -> tuple[bool, str]:
    """Ask for SCHED_FIFO at ``priority`` and freeze the GC's existing objects.

    Returns:
        ``(obtained, note)``; never raises: without the privilege the process keeps its scheduler.
    """
    gc.collect()
    gc.freeze()  # objects alive now are never scanned again: shorter, rarer GC pauses
    if not hasattr(os, "sched_setscheduler"):
        return False, "SCHED_FIFO not available on this OS"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as exc:
        return False, f"SCHED_FIFO refused ({exc.strerror or exc}); running with the default scheduler"
    return True, f"SCHED_FIFO priority {priority}"


class ControlLoop:
    """Calls ``step_fn(k, deadline)`` at a fixed rate on absolute deadlines.

    Args:
        rate_hz: control frequency in Hz (1 to 10,000).
        step_fn: called once per period with the step index and its deadline (monotonic s); may
            return ``{section: seconds}`` to have section times recorded. It must not block: the
            policy runs elsewhere and hands over actions through a scheduler.
        spin_s: the last part of each wait is a busy-wait of this many seconds.
        realtime: try SCHED_FIFO + ``gc.freeze()`` (see :func:`enable_realtime`).
        gc_in_slack: turn automatic garbage collection off during the run and collect the young
            generations in the slack after steps instead (see the module docstring).
        gc_slack_s: least time (s) left before the next deadline for a collection to run.
        gc_force_factor: collect anyway once this many times the generation-0 threshold of
            objects are pending.
        clock, sleep: the monotonic clock and sleep function (injectable for tests).
        cpus: pin the loop's thread to these CPUs while it runs (``None``: leave it as it is);
            its previous CPUs are restored when :meth:`run` returns.

    Raises:
        ValueError: a rate outside 1 to 10,000 Hz, a negative ``spin_s`` or ``gc_slack_s``, or a
            ``gc_force_factor`` below 1.
    """

    def __init__(self, rate_hz: float, step_fn: Callable[[int, float], dict | None], spin_s: float = 0.001,
                 realtime: bool = False, gc_in_slack: bool = True, gc_slack_s: float = 0.0008,
                 gc_force_factor: float = 20.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, cpus=None):
        if not 1 <= rate_hz <= 10_000:
            raise ValueError(f"rate_hz must be between 1 and 10000, got {rate_hz}")
        if spin_s < 0:
            raise ValueError(f"spin_s must be >= 0, got {spin_s}")
        if gc_slack_s < 0:
            raise ValueError(f"gc_slack_s must be >= 0, got {gc_slack_s}")
        if gc_force_factor < 1:
            raise ValueError(f"gc_force_factor must be >= 1, got {gc_force_factor}")
        self.gc_in_slack = gc_in_slack
        self.gc_slack_s = gc_slack_s
        self.gc_force_factor = gc_force_factor
        self.period = 1.0 / rate_hz
        self.step_fn = step_fn
        self.spin_s = spin_s
        self.realtime = realtime
        self.clock = clock
        self.sleep = sleep
        self.cpus = None if cpus is None else sorted(int(c) for c in cpus)
        self._stop = False

    def stop(self) -> None:
        """Ask the loop to return after the current step (thread-safe)."""
        self._stop = True

    def run(self, duration_s: float | None = None, max_steps: int | None = None,
            stop_when: Callable[[], bool] | None = None, on_start: Callable[[], object] | None = None) -> LoopStats:
        """Run until ``duration_s`` elapsed, ``max_steps`` executed, :meth:`stop`, or ``stop_when()``
        (checked after every step) is true. ``on_start()`` runs after the real-time set-up and just
        before the first deadline (e.g. a first read, so the driver's catch-up is not in period 0).

        Returns:
            :class:`LoopStats` of the run.
        """
        stats = LoopStats()
        if self.realtime:
            stats.realtime, stats.realtime_note = enable_realtime()
        self._stop = False
        gc_was_enabled = gc.isenabled()
        if self.gc_in_slack:
            gc.disable()
        with pinned(self.cpus) as (ok, note):
            stats.cpus = cpus_of(0)
            stats.cpus_note = note if self.cpus else "not pinned (no cpus given)"
            try:
                if on_start is not None:
                    on_start()
                return self._run(stats, duration_s, max_steps, stop_when)
            finally:
                if gc_was_enabled:
                    gc.enable()

    def _collect_in_slack(self, stats: LoopStats, next_deadline: float) -> None:
        """One young-generation collection if enough objects are pending and, unless far too many
        are, enough time is left before ``next_deadline``."""
        threshold0, threshold1, _ = gc.get_threshold()
        count0, count1, _ = gc.get_count()
        if count0 < max(threshold0, 1):
            return
        forced = count0 >= self.gc_force_factor * max(threshold0, 1)
        if not forced and next_deadline - self.clock() < self.gc_slack_s:
            return
        generation = 1 if count1 >= max(threshold1, 1) else 0
        gc.collect(generation)
        stats.gc_runs[generation] += 1
        stats.gc_forced += forced

    def _run(self, stats: LoopStats, duration_s, max_steps, stop_when) -> LoopStats:
        t0 = self.clock()
        stats.t_begin = t0
        end = math.inf if duration_s is None else t0 + duration_s
        k = 0
        while not self._stop and (max_steps is None or stats.steps < max_steps):
            deadline = t0 + k * self.period
            if deadline >= end:
                break
            now = self.clock()
            if deadline - now > self.spin_s:
                self.sleep(deadline - now - self.spin_s)
            while self.clock() < deadline:
                pass
            start = self.clock()
            sections = self.step_fn(k, deadline)
            finish = self.clock()
            stats.steps += 1
            stats.lateness.append(start - deadline)
            stats.step_time.append(finish - start)
            for name, secs in (sections or {}).items():
                stats.sections.setdefault(name, []).append(secs)
            if stop_when is not None and stop_when():
                break
            next_k = k + 1
            if finish > t0 + next_k * self.period:  # overran the next deadline: skip, don't burst
                stats.overruns += 1
                stats.overrun_times.append(deadline)
                caught_up = math.ceil((finish - t0) / self.period)
                stats.missed_deadlines += caught_up - next_k
                stats.missed_times.extend(t0 + j * self.period for j in range(next_k, caught_up))
                next_k = caught_up
            k = next_k
            if self.gc_in_slack:
                self._collect_in_slack(stats, t0 + k * self.period)
        stats.t_end = self.clock()
        return stats
