"""Asynchronous policy runner: the policy computes action chunks off the control loop's thread.

The control loop hands the runner the newest observation history with :meth:`PolicyRunner.submit`
(never blocking: a request made while the policy is busy is refused, and the caller tries again on
a later period) and collects finished chunks with :meth:`PolicyRunner.poll`. Each chunk carries
the time of the observation it was computed from, so the action scheduler can place its actions in
time and drop those already past (DESIGN.md, "The HAL and the control loop").

By default the policy lives in its own process (started with ``forkserver``): a policy in a thread
would share the interpreter lock with the loop and delay its wake-ups by up to Python's switch
interval (5 ms). ``mode="thread"`` is there for policies cheap enough not to matter and for tests.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

#: ``factory() -> predict``; ``predict(obs) -> (T, action_dim)`` with ``obs = {key: (n_obs_steps, *shape)}``.
#: A ``predict`` whose attribute ``takes_obs_time`` is true is called ``predict(obs, t_obs)`` instead,
#: ``t_obs`` the observation's monotonic time (s): a policy that keeps state across calls (a
#: residual-RL policy's open-loop base chunk, :mod:`robolearn.rl.stepper`) places each observation
#: in time with it, so a request refused while the worker was busy does not shift its steps.
PolicyFactory = Callable[[], Callable[[dict[str, np.ndarray]], np.ndarray]]


@dataclass(frozen=True)
class ChunkResult:
    """A finished chunk.

    Attributes:
        actions: ``(T, action_dim)``; action ``i`` is meant for ``t_obs + i * dt`` of the caller's rate.
        t_obs: monotonic time (s) of the observation the chunk was computed from.
        t_start, t_done: monotonic times (s) the computation started and finished.
        request_id: the id :meth:`PolicyRunner.submit` returned.
    """

    actions: np.ndarray
    t_obs: float
    t_start: float
    t_done: float
    request_id: int


def _serve(conn, factory: PolicyFactory, num_threads: int | None, cpus=None) -> None:
    """Worker body (process or thread): pin itself to ``cpus`` (first, so the threads torch starts
    inherit them), build the policy, then answer requests until told to stop."""
    from robolearn.robots.affinity import cpus_of, pin

    pinning = pin(cpus) if cpus else (False, "not pinned (no cpus given)")
    try:
        if num_threads:
            try:
                import torch

                torch.set_num_threads(num_threads)
            except ImportError:
                pass
        predict = factory()
        reset = getattr(predict, "reset", None)
        timed = bool(getattr(predict, "takes_obs_time", False))
        conn.send(("ready", {"cpus": cpus_of(0), "cpus_note": pinning[1], "pid": os.getpid()}))
    except Exception:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        msg = conn.recv()
        if msg is None:
            return
        if msg == "reset":
            if reset is not None:
                reset()
            continue
        request_id, obs, t_obs = msg
        t_start = time.monotonic()
        try:
            actions = np.asarray(predict(obs, t_obs) if timed else predict(obs), dtype=np.float64)
        except Exception:  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))
            continue
        conn.send(("chunk", (actions, t_obs, t_start, time.monotonic(), request_id)))


class PolicyRunner:
    """Runs ``predict`` on submitted observations in another process (or thread).

    Args:
        factory: picklable callable returning ``predict`` (see :data:`PolicyFactory`); ``predict``
            may have a ``reset()`` method, called by :meth:`reset`, and a true ``takes_obs_time``
            attribute, to be called ``predict(obs, t_obs)``.
        mode: ``"process"`` (default) or ``"thread"``.
        num_threads: torch intra-op threads in the worker (1 leaves the other cores to the loop).
        startup_timeout_s: how long :meth:`start` waits for the policy to load.
        cpus: pin the worker to these CPUs (:mod:`robolearn.robots.affinity`; it pins itself
            before loading the policy; ``None``: leave it as it is).

    Attributes:
        latencies: s from each chunk's observation time to its receipt.
        chunk_log: ``(t_start, t_done, t_received)`` of every chunk received, in order (monotonic s:
            computation start and end in the worker, receipt by :meth:`poll` in this process).
        cpus, cpus_note: after :meth:`start`, the CPUs the worker may run on and whether it was
            pinned (and why not).

    Raises:
        ValueError: unknown mode.
    """

    def __init__(self, factory: PolicyFactory, mode: str = "process", num_threads: int | None = 1,
                 startup_timeout_s: float = 300.0, cpus=None):
        if mode not in ("process", "thread"):
            raise ValueError(f"mode must be 'process' or 'thread', got {mode!r}")
        self.factory = factory
        self.mode = mode
        self.num_threads = num_threads
        self.startup_timeout_s = startup_timeout_s
        self._conn = None
        self._worker: Any = None
        self._busy = False
        self._next_id = 0
        self.n_submitted = 0
        self.n_refused_busy = 0
        self.latencies: list[float] = []  # s from observation time to chunk received
        self.chunk_log: list[tuple[float, float, float]] = []
        self.pin_cpus = None if cpus is None else sorted(int(c) for c in cpus)
        self.cpus: list[int] | None = None
        self.cpus_note = ""

    def start(self) -> "PolicyRunner":
        """Start the worker and wait until the policy is loaded.

        Raises:
            RuntimeError: the policy failed to load (the worker's traceback is in the message).
            TimeoutError: it did not load within ``startup_timeout_s``.
        """
        if self.mode == "process":
            ctx = mp.get_context("forkserver")
            self._conn, child = ctx.Pipe()
            self._worker = ctx.Process(target=_serve, args=(child, self.factory, self.num_threads, self.pin_cpus),
                                       daemon=True, name="robolearn-policy")
        else:
            self._conn, child = mp.Pipe()
            self._worker = threading.Thread(target=_serve, args=(child, self.factory, None, self.pin_cpus),
                                            daemon=True, name="robolearn-policy")
        self._worker.start()
        if not self._conn.poll(self.startup_timeout_s):
            self.close()
            raise TimeoutError(f"policy did not load within {self.startup_timeout_s} s")
        kind, payload = self._conn.recv()
        if kind == "error":
            self.close()
            raise RuntimeError(f"policy failed to load:\n{payload}")
        self.cpus, self.cpus_note = payload["cpus"], payload["cpus_note"]
        return self

    @property
    def busy(self) -> bool:
        """Whether a request is being computed (a new one would be refused)."""
        return self._busy

    def submit(self, obs: dict[str, np.ndarray], t_obs: float) -> int | None:
        """Ask for a chunk from ``obs`` (``{key: (n_obs_steps, *shape)}``) observed at ``t_obs``.

        Returns:
            The request id, or ``None`` when the policy is still busy with the previous request.
        """
        if self._busy:
            self.n_refused_busy += 1
            return None
        self._next_id += 1
        self._conn.send((self._next_id, obs, float(t_obs)))
        self._busy = True
        self.n_submitted += 1
        return self._next_id

    def poll(self) -> ChunkResult | None:
        """The finished chunk, if one arrived since the last call (never blocks).

        Raises:
            RuntimeError: the policy raised (its traceback is in the message).
        """
        if self._conn is None or not self._conn.poll(0):
            return None
        kind, payload = self._conn.recv()
        self._busy = False
        if kind == "error":
            raise RuntimeError(f"policy failed:\n{payload}")
        actions, t_obs, t_start, t_done, request_id = payload
        now = time.monotonic()
        self.latencies.append(now - t_obs)
        self.chunk_log.append((t_start, t_done, now))
        return ChunkResult(actions, t_obs, t_start, t_done, request_id)

    def wait(self, timeout_s: float) -> ChunkResult | None:
        """Block up to ``timeout_s`` for the pending chunk (for tests and start-up, never in the loop)."""
        if self._conn is not None and self._conn.poll(timeout_s):
            return self.poll()
        return None

    def reset(self) -> None:
        """Start a new episode: drop a pending result and call the policy's ``reset()``."""
        if self._busy:
            self.wait(self.startup_timeout_s)
        self._busy = False
        self._conn.send("reset")

    def close(self) -> None:
        """Stop the worker (idempotent)."""
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
        if self._worker is not None:
            self._worker.join(timeout=5)
            if self.mode == "process" and self._worker.is_alive():
                self._worker.terminate()
        self._conn = None
        self._worker = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


class StallingPolicy:
    """Fault injection: wraps a policy factory and sleeps ``stall_s`` on given calls.

    Args:
        factory: the wrapped :data:`PolicyFactory`.
        stall_s: extra seconds of latency.
        stall_calls: 1-based call numbers that stall (e.g. ``(20,)`` stalls the 20th chunk).
    """

    def __init__(self, factory: PolicyFactory, stall_s: float, stall_calls: tuple[int, ...]):
        self.factory = factory
        self.stall_s = float(stall_s)
        self.stall_calls = tuple(stall_calls)

    def __call__(self):
        predict = self.factory()
        calls = [0]
        stall_s, stall_calls = self.stall_s, self.stall_calls

        def stalled(obs, *t_obs):
            calls[0] += 1
            if calls[0] in stall_calls:
                time.sleep(stall_s)
            return predict(obs, *t_obs)

        stalled.reset = getattr(predict, "reset", lambda: None)
        stalled.takes_obs_time = bool(getattr(predict, "takes_obs_time", False))
        return stalled
