"""robolearn: teleop → Zarr episodes → visuomotor policies → evaluation → real-time deployment.

See README.md for the tour and ``../shared/DESIGN.md`` for the architecture.
"""

__version__ = "0.1.0"
