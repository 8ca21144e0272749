"""Offscreen rendering of MuJoCo cameras to ``uint8 (H, W, 3)`` images.

One :class:`CameraRenderer` holds one MuJoCo offscreen context of a fixed size and renders any
named camera of the model into it. Shadows, reflections and multisampling are off: with software
rendering (``MUJOCO_GL=osmesa``, see :mod:`robolearn.utils.gl`) they cost 10-30× the rest of the
frame (measured here, 84×84: insertion ~1 ms per frame without, ~25 ms with; robosuite Lift ~12 ms
without, ~26-43 ms with) and add nothing a policy needs. Images come out top row first, as a
camera would deliver them.
"""

from __future__ import annotations

from typing import Sequence

import mujoco
import numpy as np

from robolearn.utils.errors import RenderError


def camera_names(model: mujoco.MjModel) -> list[str]:
    """Names of the model's cameras, in model order."""
    return [model.camera(i).name for i in range(model.ncam)]


def image_key(camera: str) -> str:
    """Observation key of a camera's images: ``"<camera>_image"`` (robomimic's naming)."""
    return f"{camera}_image"


class CameraRenderer:
    """Renders named cameras of ``model`` at ``height`` × ``width`` pixels.

    Args:
        model: the MuJoCo model (its ``vis.quality.offsamples`` is set to 0: no multisampling).
        cameras: camera names this renderer will be asked for (checked now).
        height, width: image size in pixels.

    Raises:
        ValueError: a camera name the model does not have (the message lists those it has).
        RenderError: no OpenGL backend could create a context (the message says how to get one).
    """

    def __init__(self, model: mujoco.MjModel, cameras: Sequence[str], height: int = 84, width: int = 84):
        known = camera_names(model)
        unknown = [c for c in cameras if c not in known]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; this scene has {known}")
        if height <= 0 or width <= 0:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        self.cameras = list(cameras)
        self.height, self.width = int(height), int(width)
        model.vis.quality.offsamples = 0
        # The offscreen buffer must hold the image: grow the model's if needed.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        try:
            self._renderer = mujoco.Renderer(model, self.height, self.width)
        except Exception as exc:  # GLFW without a display, missing libOSMesa, broken EGL, ...
            import os

            raise RenderError(
                f"cannot render MuJoCo cameras (MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')}): {exc}. "
                "On a CPU machine install OSMesa (apt-get install -y libosmesa6) and set MUJOCO_GL=osmesa; "
                "on a GPU machine use MUJOCO_GL=egl"
            ) from None
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    def render(self, data: mujoco.MjData, camera: str | int = -1) -> np.ndarray:
        """One frame from ``camera`` (a name, an id, or -1 for the free camera).

        Returns:
            ``uint8 (height, width, 3)``, a new array.
        """
        self._renderer.update_scene(data, camera=camera)
        return self._renderer.render().copy()

    def render_all(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        """``{"<camera>_image": uint8 (H, W, 3)}`` for every camera given at construction."""
        return {image_key(c): self.render(data, c) for c in self.cameras}

    def close(self) -> None:
        """Release the OpenGL context."""
        if getattr(self, "_renderer", None) is not None:
            self._renderer.close()
            self._renderer = None


class EnvCameras:
    """Camera observations and ``rgb_array`` frames for an environment built on a MuJoCo model.

    Renderers are created on first use, in the process that renders (vector-env workers each make
    their own OpenGL context).

    Args:
        cameras: cameras whose images join the observation, as ``"<camera>_image"`` keys.
        image_size: ``(height, width)`` of those images in pixels.
        render_camera: camera of :meth:`frame` (videos); None means the free camera.
        render_size: ``(height, width)`` of :meth:`frame`.

    Raises:
        ValueError: (on :meth:`check`) a camera the model does not have.
    """

    def __init__(self, cameras: Sequence[str] = (), image_size: Sequence[int] = (84, 84),
                 render_camera: str | None = None, render_size: Sequence[int] = (240, 320)):
        self.cameras = list(cameras)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.render_camera = render_camera
        self.render_size = (int(render_size[0]), int(render_size[1]))
        self._obs_renderer: CameraRenderer | None = None
        self._frame_renderer: CameraRenderer | None = None

    def check(self, model: mujoco.MjModel) -> None:
        """Raise ``ValueError`` if a configured camera is not in ``model``."""
        known = camera_names(model)
        wanted = self.cameras + ([self.render_camera] if self.render_camera else [])
        unknown = [c for c in wanted if c not in known]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; this scene has {known}")

    def spaces(self) -> dict:
        """Observation spaces of the image keys: ``Box(0, 255, (H, W, 3), uint8)`` each."""
        import gymnasium as gym

        return {image_key(c): gym.spaces.Box(0, 255, (*self.image_size, 3), np.uint8) for c in self.cameras}

    def obs(self, model: mujoco.MjModel, data: mujoco.MjData) -> dict[str, np.ndarray]:
        """``{"<camera>_image": uint8 (H, W, 3)}`` of the current state (empty without cameras)."""
        if not self.cameras:
            return {}
        if self._obs_renderer is None:
            self._obs_renderer = CameraRenderer(model, self.cameras, *self.image_size)
        return self._obs_renderer.render_all(data)

    def frame(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        """One ``uint8 (H, W, 3)`` frame from the render camera, for videos."""
        if self._frame_renderer is None:
            cams = [self.render_camera] if self.render_camera else []
            self._frame_renderer = CameraRenderer(model, cams, *self.render_size)
        return self._frame_renderer.render(data, self.render_camera if self.render_camera else -1)

    def close(self) -> None:
        """Release the OpenGL contexts."""
        for r in (self._obs_renderer, self._frame_renderer):
            if r is not None:
                r.close()
        self._obs_renderer = self._frame_renderer = None


class CameraEnvMixin:
    """``render()`` and ``close()`` for a gymnasium env with ``self.model``, ``self.data`` (MuJoCo),
    ``self.cameras`` (:class:`EnvCameras`) and ``self.render_mode``."""

    def render(self):
        """A ``uint8 (H, W, 3)`` frame of the render camera with ``render_mode="rgb_array"``, else None."""
        if self.render_mode != "rgb_array":
            return None
        return self.cameras.frame(self.model, self.data)

    def close(self):
        """Release the renderers."""
        self.cameras.close()
