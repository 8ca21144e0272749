"""Cameras for deployment: sources of the newest frame and its capture time, beside the control loop.

Every camera, rendered or real, is a :class:`FrameSource`: :meth:`~FrameSource.read` returns at
once the newest frame, ``uint8 (H, W, 3)`` RGB with the top row first (as the eval environments'
``<camera>_image`` observations), and the monotonic time (s) it was captured; ``(None, nan)``
before the first frame. It never waits for a new frame: a camera runs at its own rate in its own
thread, and the control loop (or the policy source on it) only takes what is there (DESIGN.md,
"The HAL and the control loop"). Three kinds implement it:

* :class:`RenderedCamera`: a camera of a MuJoCo twin's model, rendered in its own thread at its
  configured fps. The thread never touches the twin's ``MjData``, which the loop's thread steps:
  it asks the twin's :class:`StateTap` for a copy of the state, which the twin takes on the
  loop's thread between physics steps (a few microseconds: qpos, qvel, act, mocap poses), then
  loads the copy into an ``MjData`` of its own, runs ``mj_forward`` and renders with
  :class:`~robolearn.envs.rendering.CameraRenderer`, the renderer of the eval environments (same
  camera, size, orientation and dtype as the frames the policy was trained on). MuJoCo releases
  the interpreter lock while it computes and renders (measured here: a thread rendering Lift's
  agentview back to back, 24 ms a frame on loaded cores, left the main thread's longest wake-up
  gap at 7.5 ms against 2.8 ms alone), so the loop keeps running meanwhile.
* :class:`~robolearn.robots.socket_twin.SocketCamera`: a camera of the twin in its own process,
  rendered there as above (the server's loop serves the tap) and streamed raw to a receiving
  thread here, with its capture time.
* :class:`~robolearn.teleop.cameras.OpenCVCamera` (real arms, as in recording): grabbed in a
  thread, stamped on arrival (then resized to the config's ``image_size``, if any).

:class:`ThreadedFrameSource` is the frame thread both rendered and test cameras share: capture on
absolute deadlines ``t0 + k / fps`` (deadlines missed by a slow capture are skipped, not caught up
in a burst), the newest frame published as one ``(frame, t)`` tuple (a single reference swap, so a
reader never waits on a lock held by the camera). :func:`wait_frames` is for set-up only (after a
reset, before the loop starts): it blocks until every camera shows a frame captured after a time.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from robolearn.utils.errors import DeviceError

#: MjData fields a rendered frame depends on (kinematics of the state; forces do not show).
STATE_FIELDS = ("qpos", "qvel", "act", "mocap_pos", "mocap_quat")


@runtime_checkable
class FrameSource(Protocol):
    """A camera: the newest frame and its capture time, without waiting."""

    def read(self) -> tuple[np.ndarray | None, float]:
        """``(uint8 (H, W, 3) RGB, capture time in monotonic s)``; ``(None, nan)`` before the first frame."""

    def close(self) -> None:
        """Stop capturing and release the device or renderer (idempotent)."""


@dataclass(frozen=True)
class StateSnapshot:
    """A copy of a MuJoCo state: ``seq`` (1, 2, ...), ``t`` its time (monotonic s), ``time`` the
    simulation time (s), ``arrays`` the :data:`STATE_FIELDS` copies."""

    seq: int
    t: float
    time: float
    arrays: dict


class StateTap:
    """Copies of a MuJoCo state for readers on other threads, taken on the owner's thread.

    Readers (camera threads) call :meth:`request` and then :meth:`wait_newer`; the owner (a twin,
    on the control loop's thread) calls :meth:`serve` whenever its state is consistent (after its
    physics steps). ``serve`` copies the state only when a reader asked (once per frame, not once
    per period) and never waits: it takes the readers' lock only if that is free at once, and a
    reader that missed the wake-up sees the snapshot on its next short poll.

    Args:
        data: the owner's ``MjData`` (read by :meth:`serve` only, on the owner's thread).
        clock: monotonic clock (s) of snapshots served without an explicit time.
    """

    def __init__(self, data, clock: Callable[[], float] = time.monotonic):
        self.data = data
        self.clock = clock
        self._wanted = False
        self._latest: StateSnapshot | None = None
        self._cond = threading.Condition()
        self.n_served = 0

    def request(self) -> None:
        """Ask for a snapshot at the owner's next :meth:`serve` (any thread)."""
        self._wanted = True

    def serve(self, t: float | None = None, force: bool = False) -> None:
        """On the owner's thread: if a reader asked (or ``force``), publish a copy of the state now,
        stamped ``t`` (monotonic s; default ``clock()``)."""
        if not (self._wanted or force):
            return
        self._wanted = False
        d = self.data
        prev = self._latest.seq if self._latest is not None else 0
        self._latest = StateSnapshot(prev + 1, self.clock() if t is None else float(t), float(d.time),
                                     {f: np.array(getattr(d, f), copy=True) for f in STATE_FIELDS})
        self.n_served += 1
        if self._cond.acquire(blocking=False):
            try:
                self._cond.notify_all()
            finally:
                self._cond.release()

    def latest(self) -> StateSnapshot | None:
        """The newest snapshot (``None`` before the first)."""
        return self._latest

    def wait_newer(self, seq: int, timeout_s: float, poll_s: float = 0.005) -> StateSnapshot | None:
        """A snapshot newer than ``seq``, waiting up to ``timeout_s`` (reader threads only)."""
        deadline = time.monotonic() + timeout_s
        while True:
            snap = self._latest
            if snap is not None and snap.seq > seq:
                return snap
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with self._cond:
                self._cond.wait(min(poll_s, left))


def load_state(model, data, snap: StateSnapshot) -> None:
    """Put ``snap`` into ``data`` (an ``MjData`` of ``model``) and compute its kinematics (``mj_forward``)."""
    import mujoco

    for f, a in snap.arrays.items():
        getattr(data, f)[...] = a
    data.time = snap.time
    mujoco.mj_forward(model, data)


class ThreadedFrameSource:
    """A :class:`FrameSource` whose frames come from :meth:`capture`, called in a thread of its own
    on absolute deadlines ``t0 + k / fps`` (monotonic s).

    Subclasses implement :meth:`capture` (``-> (frame, t_capture)``, or ``None`` when there is no
    new frame this period) and may implement :meth:`setup`/:meth:`teardown`, run in the thread
    before the first and after the last capture (an OpenGL context belongs to the thread that
    made it). A capture that raises stops the thread; the error is kept in :attr:`error` and
    raised by :func:`wait_frames`, while :meth:`read` keeps returning the last frame (whose age
    then grows, as the deployment's observation ages show).

    Args:
        name: the camera's name (its frames are the policy's ``<name>_image``).
        fps: capture rate (Hz), > 0.
        history: how many capture times :attr:`timestamps` keeps.

    Attributes:
        n_frames: frames published; ``timestamps`` their capture times (monotonic s, the last ``history``).

    Raises:
        ValueError: ``fps`` not a finite number > 0.
    """

    def __init__(self, name: str, fps: float, history: int = 10_000):
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"camera {name!r}: fps must be a finite number > 0, got {fps!r}")
        self.name = str(name)
        self.fps = float(fps)
        self._newest: tuple[np.ndarray | None, float] = (None, math.nan)
        self.n_frames = 0
        self.timestamps: deque = deque(maxlen=history)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- to implement
    def setup(self) -> None:
        """In the camera's thread, before the first capture."""

    def capture(self) -> tuple[np.ndarray, float] | None:
        """One frame and its capture time (monotonic s), or ``None`` (nothing new)."""
        raise NotImplementedError

    def teardown(self) -> None:
        """In the camera's thread, after the last capture."""

    # -- the frame thread
    def start(self) -> "ThreadedFrameSource":
        """Start the thread (idempotent); returns ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name=f"camera-{self.name}")
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.setup()
            period = 1.0 / self.fps
            t0 = time.monotonic()
            k = 0
            while not self._stop.is_set():
                out = self.capture()
                if out is not None:
                    frame, t = out
                    self._newest = (frame, float(t))  # one reference swap: readers never wait
                    self.n_frames += 1
                    self.timestamps.append(float(t))
                k += 1
                now = time.monotonic()
                if now > t0 + k * period:  # a slow capture: skip the deadlines it ran over
                    k = math.ceil((now - t0) / period)
                self._stop.wait(max(0.0, t0 + k * period - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - kept for wait_frames and the caller
            self.error = exc
        finally:
            try:
                self.teardown()
            except Exception:  # noqa: BLE001
                pass

    def read(self) -> tuple[np.ndarray | None, float]:
        """The newest frame ``uint8 (H, W, 3)`` and its capture time (monotonic s); ``(None, nan)``
        before the first. Never blocks."""
        return self._newest

    def __call__(self) -> np.ndarray | None:
        """The newest frame (see :meth:`read`); what :class:`~robolearn.teleop.recorder.Recorder` calls."""
        return self._newest[0]

    def close(self) -> None:
        """Stop the thread and wait for it (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class RenderedCamera(ThreadedFrameSource):
    """A camera of a MuJoCo model, rendered in its own thread from a :class:`StateTap`'s snapshots.

    Each period the thread asks the tap for a snapshot (the owner serves it at its next physics
    step), renders it and publishes the frame stamped with the snapshot's time. When the owner
    does not serve (it is not stepping: between episodes), no frame is published: the newest
    one still shows the unchanged scene.

    Args:
        name: the camera's name in the robot config.
        model: the ``MjModel`` (shared read-only with the owner).
        tap: the owner's :class:`StateTap`.
        camera: the model's camera to render.
        width, height: image size (px).
        fps: rate (Hz).
        snapshot_timeout_s: how long one period waits for the owner's snapshot.

    Raises:
        ValueError: ``camera`` is not a camera of ``model`` (the message lists those it has), a
            bad size or fps.
    """

    def __init__(self, name: str, model, tap: StateTap, camera: str, width: int, height: int, fps: float,
                 snapshot_timeout_s: float = 0.5):
        from robolearn.envs.rendering import camera_names

        super().__init__(name, fps)
        known = camera_names(model)
        if camera not in known:
            raise ValueError(f"{camera!r} is not a camera of the twin's model; it has {known}")
        if int(width) < 1 or int(height) < 1:
            raise ValueError(f"camera {name!r}: image size must be >= 1 px, got {width}x{height}")
        self.model, self.tap, self.camera = model, tap, camera
        self.width, self.height = int(width), int(height)
        self.snapshot_timeout_s = float(snapshot_timeout_s)
        self._seq = 0
        self._data = None
        self._renderer = None

    def setup(self) -> None:
        import mujoco

        from robolearn.envs.rendering import CameraRenderer

        self._data = mujoco.MjData(self.model)
        self._renderer = CameraRenderer(self.model, [self.camera], self.height, self.width)

    def capture(self) -> tuple[np.ndarray, float] | None:
        self.tap.request()
        snap = self.tap.wait_newer(self._seq, self.snapshot_timeout_s)
        if snap is None or self._stop.is_set():
            return None
        self._seq = snap.seq
        load_state(self.model, self._data, snap)
        return self._renderer.render(self._data, self.camera), snap.t

    def teardown(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def wait_frames(cameras: Mapping[str, FrameSource], after: float = -math.inf,
                timeout_s: float = 10.0) -> dict[str, tuple[np.ndarray, float]]:
    """Block until every camera's newest frame was captured after ``after`` (monotonic s): for
    set-up (a camera's first frame, the first frame of a new episode), never inside the loop.

    Returns:
        ``{name: (frame, t_capture)}``.

    Raises:
        DeviceError: a camera failed (its error chained) or gave no such frame within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    out = {}
    for name, cam in cameras.items():
        while True:
            err = getattr(cam, "error", None)
            if err is not None:
                raise DeviceError(f"camera {name!r} failed: {type(err).__name__}: {err}") from err
            frame, t = cam.read()
            if frame is not None and t > after:
                out[name] = (frame, t)
                break
            if time.monotonic() > deadline:
                raise DeviceError(f"camera {name!r} gave no new frame within {timeout_s:g} s")
            time.sleep(0.002)
    return out


def start_camera(cam: "ThreadedFrameSource", timeout_s: float = 10.0) -> "ThreadedFrameSource":
    """Start ``cam`` and wait for its first frame; ``cam`` is closed when that fails.

    Raises:
        DeviceError: the camera failed (its error chained) or gave no frame within ``timeout_s``.
    """
    cam.start()
    try:
        wait_frames({cam.name: cam}, timeout_s=timeout_s)
    except BaseException:
        cam.close()
        raise
    return cam


def close_all(cameras: Mapping[str, FrameSource]) -> None:
    """Close every camera, even when one raises (the first error is raised after)."""
    first = None
    for cam in cameras.values():
        try:
            cam.close()
        except Exception as exc:  # noqa: BLE001
            first = first or exc
    if first is not None:
        raise first


def age_summary(ages: list[dict[str, float]]) -> dict:
    """Observation ages (capture → policy input) per chunk, ``[{camera: s}]``, as milliseconds:
    ``p50``, ``p99``, ``max`` of the oldest frame of each chunk, ``chunks``, and per camera ``p50``/``p99``."""
    if not ages:
        return {}

    def pct(xs):
        a = np.asarray(xs, dtype=np.float64) * 1e3
        return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}

    names = sorted({n for a in ages for n in a})
    return {**pct([max(a.values()) for a in ages]), "chunks": len(ages),
            "per_camera": {n: pct([a[n] for a in ages if n in a]) for n in names}}
