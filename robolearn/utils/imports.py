"""Lazy imports for the registries (tasks, experts, policies): ``"package.module:Name"`` strings
that are imported only when first used, so optional dependencies stay optional."""

from __future__ import annotations

from importlib import import_module
from typing import Any


def load_object(target: str) -> Any:
    """The object that ``target`` (``"package.module:Name"``) names, importing its module now.

    Raises:
        ValueError: ``target`` is not of the form ``module:Name``.
        ImportError: the module cannot be imported.
        AttributeError: the module has no attribute ``Name``.
    """
    module, sep, name = target.partition(":")
    if not (module and sep and name):
        raise ValueError(f"{target!r} is not a 'package.module:Name' import target")
    return getattr(import_module(module), name)
