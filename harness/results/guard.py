"""Guards around a running study: one process per run directory, honest exit codes.

* :class:`RunDirLock` — an exclusive ``fcntl`` lock on ``<run_dir>/.lock``: a second
  ``l3dg run`` on the same directory refuses at once with the holder's pid instead of
  interleaving its stages into a directory of mixed configs. The lock dies with its process
  (kill -9 included), so a stale lock never blocks a resume.
* :func:`exit_nonzero_on_sigterm` — SIGTERM (what batch schedulers send) raises
  :class:`Terminated`, so the study stops between atomic writes and the process exits 143,
  never 0 with the study unfinished.
* :func:`check_saved_spaces` — a damaged fitted space is named before a resume writes anything.
"""
from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Iterator

from harness.errors import RunDirError


class Terminated(SystemExit):
    """SIGTERM arrived; exits with 128 + 15."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@contextlib.contextmanager
def exit_nonzero_on_sigterm() -> Iterator[None]:
    def handler(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:          # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class RunDirLock:
    """Exclusive lock of a run directory for the lifetime of a study process."""

    def __init__(self, root: Path):
        self.path = Path(root) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> "RunDirLock":
        import fcntl

        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirError(f"{self.path.parent} is in use by another l3dg process (pid {holder}); "
                              "wait for it to finish, or use another study name (study=NAME)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_saved_spaces(root: Path, spaces: list[str], seeds: list[int] | None = None) -> None:
    """Refuse, before any stage writes a file, when a fitted space that later stages would
    load has a damaged ``space/weights.pt`` or ``space.json`` (a one-line
    :class:`spaces.base.SavedSpaceError` naming the file); seed studies are checked per seed."""
    from harness.results.state import SpaceState
    from spaces.base import read_space_weights

    roots = [Path(root) / f"seed-{int(k)}" for k in seeds] if seeds else [Path(root)]
    for base in roots:
        for name in spaces:
            directory = base / name
            if not (directory / "state.json").exists():
                continue
            if SpaceState(directory).done("fit_space") and (directory / "space").exists():
                read_space_weights(directory / "space")
