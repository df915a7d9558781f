"""The sub-command registry of the ``l3dg`` CLI (``@command("name")``), kept apart so the
command modules and the parser module do not import each other."""
from __future__ import annotations

import argparse
from typing import Callable

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    """Register ``fn(args) -> exit code`` as sub-command ``name``."""
    def deco(fn):
        COMMANDS[name] = fn
        return fn
    return deco


def plugins(args: argparse.Namespace) -> None:
    """Import user component files/modules named with --plugin before anything else."""
    if getattr(args, "plugin", None):
        from harness.core.registry import load_plugin

        for spec in args.plugin:
            load_plugin(spec)


def parse_overrides(items: list[str]) -> dict:
    """``key=value`` strings -> dict with YAML-typed values (``3`` -> int, ``true`` -> bool)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out
