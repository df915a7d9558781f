"""Checks of command-line inputs that turn common mistakes into one-line errors.

Kept out of :mod:`harness.cli` so the parser module stays small; nothing heavy is imported
at start-up (``l3dg --help`` must not import torch or RDKit).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def require_positive(args: argparse.Namespace, *names: str) -> None:
    """Integer options that must be >= 1 when given (``--n 0`` is a mistake, not a no-op)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def load_space_plugin(target: str, registered: list[str]) -> None:
    """Import a user space file/module for ``check-space``; a name that is neither a
    registered space, a .py file nor an importable module is a one-line error."""
    from harness.core.registry import load_plugin

    hint = f"registered spaces: {', '.join(registered)}; or a .py file / module that registers one"
    path = Path(target)
    if path.is_dir() or (path.is_file() and path.suffix != ".py"):
        raise ValueError(f"{target} is not a Python file ({hint})")
    if path.suffix == ".py" and not path.exists():
        raise FileNotFoundError(f"{target} does not exist")
    try:
        load_plugin(target)
    except ModuleNotFoundError as err:
        if err.name and target.split(".")[0] == err.name.split(".")[0]:
            raise ValueError(f"unknown space {target!r} ({hint})") from None
        raise
