"""Record which files a process writes, through Python's audit hooks (PEP 578): every
``open`` for writing, ``os.open`` with write flags, rename/replace, remove and rmtree. Used by
the DDP tests to show that only rank 0 writes into a run directory.

Not seen: files written by C/C++ code directly (``torch.save(path)``); the harness writes
results through ``atomic_path`` (a rename, which is seen) and Lightning writes checkpoints
and logs through Python file objects.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def rank() -> int:
    """This process's rank on one machine as the launchers set it (0 when not distributed)."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def install(log_dir: Path) -> Path:
    """Append one JSON line per write-like event of this process to
    ``log_dir/rank<r>.<pid>.jsonl``; returns that file."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"rank{rank()}.{os.getpid()}.jsonl"
    fh = open(path, "a", buffering=1)
    own = str(path)

    def hook(event: str, args: tuple) -> None:
        paths = None
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writes = (mode is not None and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writes:
                paths = [args[0]]
        elif event in ("os.rename", "os.replace"):
            paths = list(args[:2])
        elif event in ("os.remove", "os.unlink", "shutil.rmtree"):
            paths = [args[0]]
        if not paths:
            return
        paths = [os.fsdecode(p) if isinstance(p, (bytes, os.PathLike)) else str(p) for p in paths]
        if own in paths:
            return
        fh.write(json.dumps({"event": event, "paths": [os.path.abspath(p) for p in paths]}) + "\n")

    sys.addaudithook(hook)
    return path


def writes_under(log_dir: Path, root: Path) -> dict[int, list[str]]:
    """{rank: [paths under ``root`` that rank wrote, renamed or removed]} from the logs."""
    root = os.path.abspath(root)
    out: dict[int, list[str]] = {}
    for log in sorted(Path(log_dir).glob("rank*.jsonl")):
        r = int(log.name[4:].split(".")[0])
        for line in log.read_text().splitlines():
            for p in json.loads(line)["paths"]:
                if p == root or p.startswith(root + os.sep):
                    out.setdefault(r, []).append(p)
    return out
