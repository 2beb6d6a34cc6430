"""Errors that end a run for a reason one line states fully.

The entry point prints such an error as `error: <line>` and exits non-zero without a traceback:
the traceback of a NaN streak or an out-of-memory points into the library, not at what to change.
"""

from __future__ import annotations


class RunStopped(RuntimeError):
    """Training stopped on purpose (too many non-finite steps, out of memory); the message says why
    and what to change."""
