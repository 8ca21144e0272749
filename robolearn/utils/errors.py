"""Errors that robolearn raises on bad input.

Every error a user can cause (a wrong path, a corrupt store, an unknown config key) is a
:class:`RobolearnError`. The CLI prints such errors as one line and exits non-zero; the traceback is
shown only with ``--debug``.
"""


class RobolearnError(Exception):
    """Base class of errors caused by user input (files, configs, arguments)."""


class StoreError(RobolearnError):
    """An episode store is missing, corrupt, or was used wrongly.

    The message always names the store path and, where one is at fault, the key.
    """


class ConfigError(RobolearnError):
    """A config file or a command-line override is invalid (unknown key, bad value, missing file)."""


class CheckpointError(RobolearnError):
    """A checkpoint directory is missing files or holds weights that do not fit its config."""


class DeviceError(RobolearnError):
    """A teleop device or robot interface that is missing, unplugged or not installed."""


class RenderError(RobolearnError):
    """Offscreen rendering is unavailable (no OpenGL backend); the message says how to get one."""
