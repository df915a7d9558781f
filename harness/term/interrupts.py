"""Ctrl-C that always stops an ``l3dg`` command (exit code 130, one line).

Native libraries may take SIGINT for themselves: RDKit's substructure search (QED, PAINS,
...) installs its own handler for the duration of the call, and a Ctrl-C that lands there
only cuts that search short ("result may not include all matches") — the command then
finishes, exits 0 and writes its results. Lightning turns a Ctrl-C during ``fit`` into
``exit(1)``.

:func:`owned_sigint` makes the harness, not a library, own the signal: SIGINT is blocked in
the main thread (and in every thread or forked worker started afterwards), so no library
handler ever runs; a watcher thread takes it with ``sigtimedwait`` and raises
``KeyboardInterrupt`` in the main thread (``_thread.interrupt_main``) at its next Python
instruction — between two molecules, never inside a native call. ``received`` tells the
CLI that a Ctrl-C arrived even when a library turned it into another exit.
"""
from __future__ import annotations

import _thread
import contextlib
import signal
import threading
from typing import Iterator

#: exit code of a command stopped by Ctrl-C (128 + SIGINT)
EXIT_INTERRUPTED = 128 + signal.SIGINT


class SigintOwner:
    """State of one :func:`owned_sigint` block: ``received`` counts the Ctrl-Cs taken."""

    def __init__(self) -> None:
        self.received = 0
        self._stop = threading.Event()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                got = signal.sigtimedwait({signal.SIGINT}, 0.1)
            except OSError:
                return
            if got is not None:
                self.received += 1
                _thread.interrupt_main(signal.SIGINT)


def _supported() -> bool:
    return (hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigtimedwait")
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)


@contextlib.contextmanager
def owned_sigint() -> Iterator[SigintOwner]:
    """Within the block a Ctrl-C is a ``KeyboardInterrupt`` in the main thread whatever
    native code runs (see the module doc). A no-op (plain Python Ctrl-C) where the platform
    lacks ``pthread_sigmask`` / ``sigtimedwait``, off the main thread, or when someone else
    already replaced Python's SIGINT handler."""
    owner = SigintOwner()
    if not _supported():
        yield owner
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    watcher = threading.Thread(target=owner._watch, name="l3dg-sigint", daemon=True)
    watcher.start()
    try:
        yield owner
    finally:
        owner._stop.set()
        watcher.join()
        late = signal.SIGINT in signal.sigpending()
        if late:                         # arrived after the watcher stopped: still honoured
            signal.sigtimedwait({signal.SIGINT}, 0)
            owner.received += 1
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if late:
            raise KeyboardInterrupt
