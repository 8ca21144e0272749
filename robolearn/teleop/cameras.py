"""Cameras for recording: each grabs frames in its own thread; the control loop takes the newest.

A camera read must never block the control loop (a USB camera delivers a frame every ~33 ms), so
:class:`OpenCVCamera` reads continuously in a background thread (OpenCV releases the interpreter
lock while it waits) and :meth:`OpenCVCamera.read` returns the newest frame at once: ``uint8
(H, W, 3)`` RGB, with the monotonic time it arrived.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from robolearn.utils.errors import DeviceError


class OpenCVCamera:
    """A camera (device index or path) or a video file read through OpenCV.

    Args:
        source: device index (``0``), device path (``/dev/video0``) or a video file.
        width, height, fps: requested capture format (the device may choose another).
        loop: restart a video file at its end (for tests and demos).

    Raises:
        DeviceError: the source cannot be opened or gives no frame within 5 s.
    """

    def __init__(self, source: int | str, width: int | None = None, height: int | None = None,
                 fps: float | None = None, loop: bool = False):
        import cv2

        self._cv2 = cv2
        self.source = source
        self.loop = loop
        self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            raise DeviceError(f"camera {source!r} cannot be opened")
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height),
                            (cv2.CAP_PROP_FPS, fps)):
            if value:
                self._cap.set(prop, value)
        self._lock = threading.Lock()
        self._frame: np.ndarray | None = None
        self._time = 0.0
        self.n_frames = 0
        self._stop = False
        self._thread = threading.Thread(target=self._grab, daemon=True, name=f"camera-{source}")
        self._thread.start()
        deadline = time.monotonic() + 5.0
        while self._frame is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if self._frame is None:
            self.close()
            raise DeviceError(f"camera {source!r} gave no frame within 5 s")

    def _grab(self) -> None:
        while not self._stop:
            ok, bgr = self._cap.read()
            if not ok:
                if self.loop:
                    self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                time.sleep(0.005)
                continue
            rgb = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)
            with self._lock:
                self._frame, self._time = rgb, time.monotonic()
                self.n_frames += 1

    def read(self) -> tuple[np.ndarray, float]:
        """The newest frame ``uint8 (H, W, 3)`` RGB and its arrival time (monotonic s); never blocks."""
        with self._lock:
            return self._frame, self._time

    def __call__(self) -> np.ndarray:
        """The newest frame (see :meth:`read`)."""
        return self.read()[0]

    def close(self) -> None:
        """Stop the grabber thread and release the device."""
        self._stop = True
        self._thread.join(timeout=2)
        self._cap.release()


def make_cameras(cfg: dict[str, Any] | None, where: str = "cameras") -> dict[str, OpenCVCamera]:
    """Cameras from a robot config's ``cameras`` section: ``{name: {source, width, height, fps, loop}}``,
    checked first (:func:`robolearn.robots.config.check_cameras`) so none opens when one is wrong.

    Args:
        cfg: the section (``None``: no cameras).
        where: the file to name in messages.

    Raises:
        ConfigError: an unknown key, a wrong type or a bad value (``cameras.<name>.<key>`` named).
        DeviceError: a camera cannot be opened (named).
    """
    from robolearn.robots.config import check_cameras

    cams = {}
    try:
        for name, c in check_cameras(cfg, where).items():
            cams[name] = OpenCVCamera(c.pop("source"), **c)
    except Exception:
        for cam in cams.values():
            cam.close()
        raise
    return cams
