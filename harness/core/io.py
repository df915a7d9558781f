"""Atomic file writes: results already on disk are never left half-written.

Every writer goes through :func:`atomic_path`: write to a temporary file in the same folder,
flush + fsync, then ``os.replace`` (atomic on POSIX), so a crash leaves either the old file
or the new one, never a truncated one.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it over ``path``. An
    ``OSError`` that names no file (a full disk) is re-raised naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; use the usual mode
        os.replace(tmp_path, path)
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        # a failed write (ENOSPC, EIO, quota) names no file: say which one was being written
        raise type(err)(err.errno, err.strerror or str(err), str(path)) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def _finite(obj: Any) -> Any:
    """Replace NaN/inf floats by None so the JSON is standard (RFC 8259)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, data: Any, indent: int = 2) -> Path:
    text = json.dumps(_finite(json.loads(json.dumps(data, default=_json_default))),
                      indent=indent, sort_keys=False)
    return atomic_write_text(path, text + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
