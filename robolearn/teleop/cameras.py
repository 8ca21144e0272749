"""Cameras for recording: each grabs frames in its own thread; the control loop takes the newest.

A camera read must never block the control loop (a USB camera delivers a frame every ~33 ms), so
:class:`OpenCVCamera` reads continuously in a background thread (OpenCV releases the interpreter
lock while it waits) and :meth:`OpenCVCamera.read` returns the newest frame at once: ``uint8
(H, W, 3)`` RGB, with the monotonic time it arrived.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Sequence

import numpy as np

from robolearn.utils.errors import DeviceError


class OpenCVCamera:
    """A camera (device index or path) or a video file read through OpenCV.

    Args:
        source: device index (``0``), device path (``/dev/video0``) or a video file.
        width, height, fps: requested capture format (the device may choose another). A video
            file is delivered at ``fps`` (default: the file's own rate, else 30 Hz), as a camera
            would deliver it, not as fast as it decodes.
        loop: restart a video file at its end (for tests and demos).
        image_size: ``(height, width)`` px to resize every frame to (``cv2.INTER_AREA``, in the
            grabber thread, so neither the control loop nor the policy pays for it): a policy's
            input size from a device that delivers 640 x 480. ``None`` keeps the device's size.

    Raises:
        DeviceError: the source cannot be opened or gives no frame within 5 s.
        ValueError: ``image_size`` is not two numbers >= 1 (``TypeError`` when not a sequence).
    """

    def __init__(self, source: int | str, width: int | None = None, height: int | None = None,
                 fps: float | None = None, loop: bool = False, image_size: Sequence[int] | None = None):
        import cv2

        if image_size is not None and (len(image_size) != 2 or min(int(v) for v in image_size) < 1):
            raise ValueError(f"camera {source!r}: image_size must be (height, width) >= 1 px, got {image_size!r}")
        self._cv2 = cv2
        self.source = source
        self.loop = loop
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            raise DeviceError(f"camera {source!r} cannot be opened")
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height),
                            (cv2.CAP_PROP_FPS, fps)):
            if value:
                self._cap.set(prop, value)
        is_file = isinstance(source, (str, os.PathLike)) and os.path.isfile(source)
        rate = float(fps or (self._cap.get(cv2.CAP_PROP_FPS) if is_file else 0) or 30.0)
        self._period = 1.0 / rate if is_file else 0.0  # a device paces itself
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
        next_t = time.monotonic()
        while not self._stop:
            if self._period:
                next_t = max(next_t + self._period, time.monotonic() - self._period)
                time.sleep(max(0.0, next_t - time.monotonic()))
            ok, bgr = self._cap.read()
            t_arrival = time.monotonic()  # before conversion and resizing: the observation's age counts them
            if not ok:
                if self.loop:
                    self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                time.sleep(0.005)
                continue
            rgb = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)
            if self.image_size is not None and rgb.shape[:2] != self.image_size:
                h, w = self.image_size
                rgb = self._cv2.resize(rgb, (w, h), interpolation=self._cv2.INTER_AREA)  # area: no aliasing
            with self._lock:
                self._frame, self._time = rgb, t_arrival
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


def make_cameras(cfg: dict[str, Any] | None, where: str = "cameras", robot: Any = None,
                 names: Sequence[str] | None = None) -> dict[str, Any]:
    """Cameras from a robot config's ``cameras`` section, checked first
    (:func:`robolearn.robots.config.check_cameras`) so none opens when one is wrong. Every camera
    is a :class:`~robolearn.robots.cameras.FrameSource` (``read() -> (newest frame, capture time)``;
    calling it gives the frame): a ``source:`` entry an :class:`OpenCVCamera` (frames resized to its
    ``image_size`` when given), a ``camera:`` entry
    a camera of the twin ``robot`` rendered beside the loop (``robot.make_camera``, see
    :meth:`robolearn.robots.twin.MujocoTwin.make_camera`).

    Args:
        cfg: the section ``{name: {source | camera, width, height, fps, loop, image_size}}`` (``None``:
            no cameras).
        where: the file to name in messages.
        robot: the built twin (in-process or over its socket) that rendered cameras render;
            needed only for those.
        names: build only these cameras (default: all of them), in this order.

    Raises:
        ConfigError: an unknown key, a wrong type or a bad value; a camera in ``names`` that the
            section lacks; a rendered camera without a twin, or one whose ``camera`` the twin's
            model does not have (``<where>: cameras.<name>.camera: ...``, the model's cameras listed).
        DeviceError: a camera cannot be opened or gives no first frame (named).
    """
    from robolearn.robots.config import check_cameras
    from robolearn.utils.errors import ConfigError

    checked = check_cameras(cfg, where)
    names = list(checked) if names is None else list(names)
    missing = [n for n in names if n not in checked]
    if missing:
        raise ConfigError(f"{where}: cameras: no camera {missing} (the config lists {sorted(checked)})")
    cams = {}
    try:
        for name in names:
            c = dict(checked[name])
            if "camera" in c:
                make = getattr(robot, "make_camera", None)
                if make is None:
                    raise ConfigError(f"{where}: cameras.{name}.camera: a rendered camera needs the MuJoCo "
                                      f"twin, not {type(robot).__name__}")
                try:
                    cams[name] = make(name, c["camera"], c["width"], c["height"], c["fps"])
                except ValueError as exc:
                    raise ConfigError(f"{where}: cameras.{name}.camera: {exc}") from None
            else:
                cams[name] = OpenCVCamera(c.pop("source"), **c)
    except Exception:
        for cam in cams.values():
            cam.close()
        raise
    return cams
