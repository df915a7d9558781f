"""A quiet terminal: library noise silenced at its source, one verbosity for the whole CLI.

Call :func:`configure` once, early (``harness.cli.main`` does, before any sub-command
imports torch or Lightning). It is cheap: it imports neither.

What is silenced at the default verbosity (``-v`` shows it again):

* Lightning's INFO banners (``GPU available: ...``, ``TPU available: ...``, the
  ``litlogger`` advert, ```Trainer.fit` stopped: ...``, checkpoint-restore notices). They
  come from the ``rank_zero`` loggers, whose level we set *before* Lightning is imported:
  Lightning resets its package logger to INFO on import but never touches the children.
* Advisory warnings that say nothing about the user's study: torch's ``LeafSpec``
  deprecation (raised inside Lightning), "You defined a `validation_step` but have no
  `val_dataloader`" (the generator validates only when given validation latents), "does
  not have many workers" and the logging-interval hint (tiny in-memory datasets).
* RDKit's C++ log (``rdApp.*``), which prints sanitisation / bond-perception chatter for
  every broken sample. (Bond perception's raw ``fd 2`` prints are muted around the call by
  ``harness.core.chem``.)

Warnings that *do* concern the user (a config change that redoes stages, a missing file,
"GPU available but not used") stay visible at every verbosity except ``-qq``.
"""
from __future__ import annotations

import logging
import sys
import warnings

#: verbosity levels: -2 errors only, -1 quiet (no progress view), 0 default, 1 verbose, 2 debug
QUIET, NORMAL, VERBOSE, DEBUG = -1, 0, 1, 2

_state = {"verbosity": NORMAL, "configured": False}

#: loggers whose INFO records are banners and adverts, not study information
NOISY_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "pytorch_lightning.accelerators.cuda",
    "lightning.pytorch.accelerators.cuda",
)

#: (message regex, category) of advisory warnings raised by libraries on every run
NOISY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r".*isinstance\(treespec, LeafSpec\)", FutureWarning),
    (r".*You defined a `validation_step` but have no `val_dataloader`", Warning),
    (r".*does not have many workers", Warning),
    (r".*is smaller than the logging interval", Warning),
)


def verbosity() -> int:
    """The verbosity set by :func:`configure` (``NORMAL`` when nothing set it)."""
    return int(_state["verbosity"])


def silence_libraries() -> None:
    """Mute library banners, adverts and advisory warnings (idempotent; imports neither
    torch nor Lightning)."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern, category in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    _silence_rdkit()


def _silence_rdkit() -> None:
    """RDKit's C++ log off. Only when RDKit is loaded already (importing it costs ~0.1 s of
    CLI start-up): ``harness.core.chem``, through which the harness reaches RDKit, turns the
    same log off when it is imported."""
    if "rdkit" in sys.modules:
        from rdkit import RDLogger

        RDLogger.DisableLog("rdApp.*")


class _Formatter(logging.Formatter):
    """``message`` for INFO and below (the harness's own progress), ``warning: name:
    message`` above, so warnings stand out and INFO lines read like output."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {record.name}: {message}"
        if record.levelno <= logging.DEBUG:
            return f"debug: {record.name}: {message}"
        return message


def configure(level: int = NORMAL, stream=None) -> int:
    """Set the CLI's verbosity once, early: logging handlers, library noise, and the level
    :mod:`harness.term.progress` reads to choose its view.

    Args:
        level: ``-2`` errors only, ``-1`` quiet (warnings, final tables), ``0`` default
            (progress view + warnings), ``1`` verbose (harness INFO logs, library banners
            and warnings back on), ``>= 2`` debug.
        stream: where log records go (default ``sys.stderr``).
    Returns:
        the level, clamped to ``[-2, 2]``.
    """
    level = max(-2, min(DEBUG, int(level)))
    _state["verbosity"] = level
    _state["configured"] = True
    if level < VERBOSE:
        silence_libraries()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_l3dg", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._l3dg = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel({-2: logging.ERROR, -1: logging.WARNING, 0: logging.WARNING,
                   1: logging.INFO, 2: logging.DEBUG}[level])
    # the harness's own INFO lines are what the progress view replaces: shown from -v up
    logging.getLogger("harness").setLevel(logging.DEBUG if level >= DEBUG else
                                          logging.INFO if level >= VERBOSE else logging.WARNING)
    if level >= VERBOSE:
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
    return level


def add_verbosity_flags(parser, subparsers=None) -> None:
    """``-q``/``-v`` (repeatable) on ``parser`` and, when given, on every sub-command, so
    both ``l3dg -q run tiny`` and ``l3dg run tiny -q`` work. Sub-commands that already
    define ``--quiet`` (``eval``) keep theirs; ``-q`` is added where it is free.

    Parsed into ``args.verbose`` and ``args.quiet_level``; see :func:`level_from_args`.
    """
    import argparse

    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more output: -v harness logs and library banners, -vv debug")
    parser.add_argument("-q", action="count", default=0, dest="quiet_level",
                        help="less output: -q no progress view, -qq errors only")
    if subparsers is None:
        return
    for sub in subparsers.choices.values():
        taken = set(sub._option_string_actions)
        flags_v = [f for f in ("-v", "--verbose") if f not in taken]
        if flags_v:
            sub.add_argument(*flags_v, action="count", default=argparse.SUPPRESS, dest="verbose",
                             help=argparse.SUPPRESS)
        if "-q" not in taken:
            sub.add_argument("-q", action="count", default=argparse.SUPPRESS, dest="quiet_level",
                             help=argparse.SUPPRESS)


def level_from_args(args) -> int:
    """Verbosity from parsed ``-v``/``-q`` counts (``verbose`` may be a bool in old parsers)."""
    return int(getattr(args, "verbose", 0) or 0) - int(getattr(args, "quiet_level", 0) or 0)
