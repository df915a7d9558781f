"""Errors the harness raises for bad user input (a config key, a run directory, a name).

The CLI prints them as one line (``l3dg: error: ...``) and exits non-zero; ``--debug`` shows
the traceback.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad config key or value; the message names the key."""


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (locked, damaged, not a study)."""
