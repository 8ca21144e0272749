"""CPU pinning of the control loop, the policy worker and the camera threads, and the loop's
deadline misses inside and outside policy stalls, as rates.

Pinning (``os.sched_setaffinity``, Linux): with at least two CPUs allowed to this process, the
control loop's thread gets one CPU of its own (the highest-numbered allowed one: CPU 0 usually
takes more of the kernel's housekeeping and interrupts) and the policy worker process and the
camera threads share the others, so neither a chunk's computation nor a frame's rendering is
ever scheduled on the loop's CPU by this program. Other programs on the machine are not pinned
by us and may still run there; under SCHED_FIFO the loop preempts them. With one CPU there is
nothing to separate and nothing is pinned. Where the OS refuses (no ``sched_setaffinity`` on the
platform, a container's cpuset, a seccomp filter) every part carries on unpinned and the summary
says why, as the loop's ``realtime_note`` does for SCHED_FIFO.

Stall windows (:func:`miss_rates`): a policy stall is a chunk whose computation the fault injection
(:class:`~robolearn.robots.runner.StallingPolicy`) lengthened. Its window runs from the chunk's
``t_start`` (the policy worker's ``time.monotonic()`` just before it calls ``predict``, which
begins with the injected sleep) to the moment the control loop's ``poll`` received the chunk
(the loop process's ``time.monotonic()``). Both are CLOCK_MONOTONIC, one system-wide clock on
Linux, so the two processes' times compare directly. A miss is a loop deadline skipped because
a step overran it (:attr:`~robolearn.robots.loop.LoopStats.missed_times`, its deadline time on
the same clock); it falls in a window when its deadline does.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterable, Iterator, Sequence

#: The parts that get CPUs.
ROLES = ("loop", "policy", "cameras")


def allowed_cpus() -> tuple[list[int] | None, str]:
    """The CPUs this process may run on, sorted, and a note (``None`` where the platform cannot say)."""
    if not hasattr(os, "sched_getaffinity"):
        return None, "os.sched_getaffinity is not available on this platform"
    try:
        return sorted(os.sched_getaffinity(0)), ""
    except OSError as exc:
        return None, f"sched_getaffinity failed ({exc.strerror or exc})"


def plan_affinity(cpus: Iterable[int] | None = None) -> tuple[dict[str, list[int]], str]:
    """Which CPUs each part gets.

    Args:
        cpus: the CPUs to share out (default: those this process may run on, :func:`allowed_cpus`).

    Returns:
        ``(plan, note)``: ``plan = {"loop": [cpu], "policy": [...], "cameras": [...]}`` with two or
        more CPUs (the loop on the highest, the policy worker and cameras together on the rest),
        ``{}`` with one CPU or where the allowed set is unknown; ``note`` says which and why.

    Raises:
        ValueError: a negative CPU number.
    """
    note = ""
    if cpus is None:
        cpus, note = allowed_cpus()
        if cpus is None:
            return {}, f"not pinned: {note}"
    cpus = sorted(set(int(c) for c in cpus))
    if any(c < 0 for c in cpus):
        raise ValueError(f"CPU numbers must be >= 0, got {cpus}")
    if len(cpus) < 2:
        return {}, f"not pinned: {len(cpus)} CPU allowed ({cpus}), nothing to separate the loop from"
    loop, rest = cpus[-1], cpus[:-1]
    return ({"loop": [loop], "policy": list(rest), "cameras": list(rest)},
            f"loop on CPU {loop}, policy worker and cameras on CPUs {rest}")


def pin(cpus: Sequence[int], tid: int = 0) -> tuple[bool, str]:
    """Pin thread ``tid`` (0: the calling thread; a Linux thread id otherwise) to ``cpus``.

    Threads and processes it starts afterwards inherit the set.

    Returns:
        ``(pinned, note)``; never raises: where the OS refuses, the thread keeps its CPUs and the
        note says why.
    """
    cpus = sorted(int(c) for c in cpus)
    if not hasattr(os, "sched_setaffinity"):
        return False, "os.sched_setaffinity is not available on this platform; not pinned"
    try:
        os.sched_setaffinity(tid, cpus)
    except (PermissionError, OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        return False, f"sched_setaffinity({cpus}) refused ({why}); not pinned"
    return True, f"CPUs {cpus}"


def cpus_of(tid: int = 0) -> list[int] | None:
    """The CPUs thread ``tid`` may run on (0: the calling thread), or ``None`` where unknown."""
    try:
        return sorted(os.sched_getaffinity(tid))
    except (AttributeError, OSError):
        return None


def thread_cpus(thread: threading.Thread | None) -> list[int] | None:
    """The CPUs a running Python thread may run on (through its native id), or ``None``."""
    tid = getattr(thread, "native_id", None)
    return None if tid is None else cpus_of(tid)


@contextlib.contextmanager
def pinned(cpus: Sequence[int] | None) -> Iterator[tuple[bool, str]]:
    """Pin the calling thread to ``cpus`` for the block (so the threads it starts inherit them),
    then give it back its previous CPUs. ``cpus=None`` changes nothing. Yields :func:`pin`'s result."""
    if not cpus:
        yield False, "not pinned"
        return
    before = cpus_of(0)
    result = pin(cpus)
    try:
        yield result
    finally:
        if result[0] and before is not None:
            pin(before)


def _rate(n: int, seconds: float) -> float | None:
    """``n`` events over ``seconds`` (per s), ``None`` where no time passed."""
    return n / seconds if seconds > 0 else None


def _union_length(windows: Sequence[tuple[float, float]], t0: float, t1: float) -> float:
    """Total length (s) of the union of ``windows`` clipped to ``[t0, t1]``."""
    total, end = 0.0, -float("inf")
    for a, b in sorted((max(a, t0), min(b, t1)) for a, b in windows):
        if b <= a:
            continue
        if a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def miss_rates(windows: Sequence[tuple[float, float]], miss_times: Sequence[float], t0: float, t1: float,
               overrun_times: Sequence[float] | None = None) -> dict:
    """The loop's misses per second inside stall windows against outside them.

    Args:
        windows: stall windows ``(start, end)``, monotonic s (module docstring); may overlap.
        miss_times: the deadline (monotonic s) of every missed deadline.
        t0, t1: the run's span (first deadline, end), monotonic s.
        overrun_times: optionally, when each overrun began (the deadline of the step that overran).

    Returns:
        ``seconds_in_stalls``, ``seconds_outside``, ``missed_in_stalls``, ``missed_outside``,
        ``misses_per_s_in_stalls``, ``misses_per_s_outside`` (``None`` where the time is zero),
        and the same for overruns (``overruns_*``) when ``overrun_times`` is given. Events outside
        ``[t0, t1]`` are not counted.

    Raises:
        ValueError: ``t1 < t0`` or a window that ends before it starts.
    """
    if t1 < t0:
        raise ValueError(f"the run ends ({t1}) before it starts ({t0})")
    bad = [w for w in windows if w[1] < w[0]]
    if bad:
        raise ValueError(f"stall windows must end after they start, got {bad[:3]}")
    inside_s = _union_length(windows, t0, t1)
    outside_s = (t1 - t0) - inside_s

    def split(times):
        times = [t for t in times if t0 <= t <= t1]
        n_in = sum(any(a <= t <= b for a, b in windows) for t in times)
        return n_in, len(times) - n_in

    m_in, m_out = split(miss_times)
    out = {"seconds_in_stalls": inside_s, "seconds_outside": outside_s,
           "missed_in_stalls": m_in, "missed_outside": m_out,
           "misses_per_s_in_stalls": _rate(m_in, inside_s), "misses_per_s_outside": _rate(m_out, outside_s)}
    if overrun_times is not None:
        o_in, o_out = split(overrun_times)
        out.update({"overruns_in_stalls": o_in, "overruns_outside": o_out,
                    "overruns_per_s_in_stalls": _rate(o_in, inside_s), "overruns_per_s_outside": _rate(o_out, outside_s)})
    return out


def stall_windows(chunk_log: Sequence[tuple[float, float, float]], stall_every: int) -> list[tuple[float, float]]:
    """The stall windows of a run with every ``stall_every``-th chunk stalled.

    Args:
        chunk_log: :attr:`~robolearn.robots.runner.PolicyRunner.chunk_log`, ``(t_start, t_done,
            t_received)`` per chunk in arrival order; the pipe is first in, first out and the
            worker computes one chunk at a time, so arrival order is the injection's call order.
        stall_every: chunks ``stall_every, 2 * stall_every, ...`` (1-based) were stalled; 0: none.

    Returns:
        ``[(t_start, t_received), ...]`` (monotonic s; see the module docstring).
    """
    if stall_every <= 0:
        return []
    return [(c[0], c[2]) for c in chunk_log[stall_every - 1::stall_every]]


def run_miss_rates(windows: Sequence[tuple[float, float]], runs: Sequence) -> dict:
    """:func:`miss_rates` summed over several loop runs (e.g. a deployment's episodes), each over
    its own span, so the time between runs counts neither inside nor outside.

    Args:
        windows: stall windows (:func:`stall_windows`).
        runs: :class:`~robolearn.robots.loop.LoopStats` with ``t_begin``, ``t_end``,
            ``missed_times`` and ``overrun_times``.

    Returns:
        The keys of :func:`miss_rates` (with overruns), plus ``stall_windows``: how many windows
        overlap the runs.
    """
    keys = ("seconds_in_stalls", "seconds_outside", "missed_in_stalls", "missed_outside",
            "overruns_in_stalls", "overruns_outside")
    total = dict.fromkeys(keys, 0)
    for r in runs:
        part = miss_rates(windows, r.missed_times, r.t_begin, r.t_end, r.overrun_times)
        for k in keys:
            total[k] += part[k]

    total.update({
        "stall_windows": sum(any(a <= r.t_end and b >= r.t_begin for r in runs) for a, b in windows),
        "misses_per_s_in_stalls": _rate(total["missed_in_stalls"], total["seconds_in_stalls"]),
        "misses_per_s_outside": _rate(total["missed_outside"], total["seconds_outside"]),
        "overruns_per_s_in_stalls": _rate(total["overruns_in_stalls"], total["seconds_in_stalls"]),
        "overruns_per_s_outside": _rate(total["overruns_outside"], total["seconds_outside"]),
    })
    return total
