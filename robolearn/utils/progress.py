"""Progress bars: tqdm, refreshed rarely when output is not a terminal (logs, CI)."""

from __future__ import annotations

import sys


def progress_bar(*args, disable: bool = False, **kwargs):
    """A ``tqdm`` bar; outside a terminal it redraws at most every 15 s to keep logs readable."""
    from tqdm.auto import tqdm

    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 15.0)
    return tqdm(*args, disable=disable, dynamic_ncols=True, **kwargs)
