"""robolearn: teleop → Zarr episodes → visuomotor policies → evaluation → real-time deployment.

See README.md for the tour and ``../shared/DESIGN.md`` for the architecture.
"""

__version__ = "0.1.0"

from robolearn.utils.gl import configure_gl as _configure_gl

# Before anything imports mujoco or robosuite: they read MUJOCO_GL once, at import.
_configure_gl()
