"""Pick MuJoCo's offscreen OpenGL backend before MuJoCo is imported.

MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is first imported (robosuite too, and it forces
``egl`` unless ``osmesa`` or ``glx`` is set). :func:`configure_gl` runs when ``robolearn`` is
imported and, unless the user set ``MUJOCO_GL`` (the override), chooses:

* ``egl`` where an NVIDIA GPU is visible (``/dev/nvidia0`` or ``/proc/driver/nvidia``) and
  ``libEGL`` loads: hardware rendering;
* ``osmesa`` where ``libOSMesa`` is installed (``apt-get install libosmesa6``): software rendering
  on CPU machines. Measured here: an 84×84 frame takes ~1 ms with shadows and reflections off,
  ~20-30 ms with them on, so our renderers turn them off (see :mod:`robolearn.envs.rendering`);
* nothing otherwise: MuJoCo keeps its default (GLFW, which needs a display), and rendering raises
  a clear error while everything that does not render keeps working.
"""

from __future__ import annotations

import ctypes.util
import os


def _loads(name: str) -> bool:
    path = ctypes.util.find_library(name)
    if path is None:
        return False
    try:
        ctypes.CDLL(path)
    except OSError:
        return False
    return True


def pick_backend() -> str | None:
    """The backend :func:`configure_gl` would choose on this machine: ``"egl"``, ``"osmesa"`` or None."""
    if (os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia")) and _loads("EGL"):
        return "egl"
    if _loads("OSMesa"):
        return "osmesa"
    return None


def configure_gl() -> str | None:
    """Set ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) if unset; returns the backend in effect.

    An explicit ``MUJOCO_GL`` is never changed. Call before ``mujoco`` or ``robosuite`` is
    imported: ``import robolearn`` does.
    """
    current = os.environ.get("MUJOCO_GL", "").strip().lower()
    if current:
        return current
    backend = pick_backend()
    if backend is not None:
        os.environ["MUJOCO_GL"] = backend
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend
