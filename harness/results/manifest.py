"""``manifest.json``: the sha256 of every artefact of a run directory.

Written atomically at the end of a study and by ``l3dg report`` (after the reports, so they
are listed too)::

    {"schema": "manifest/v1", "written": "2026-...", "files": {relative path: {"sha256", "bytes"}}}

Listed: every regular file below the run directory except the manifest itself and the
leaderboard export derived from it, the run lock (``.lock``) and temporary files of atomic
writes (``.*.tmp``). :func:`manifest_hash`
(the sha256 of the file list, written time excluded) names the exact set of artefacts in a
leaderboard row; :func:`verify_manifest` says which files changed since.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from harness.core.io import atomic_write_json

SCHEMA = "manifest/v1"
NAME = "manifest.json"
#: files at the run's top that derive from the manifest (``l3dg export``'s default output)
DERIVED = (NAME, "leaderboard.jsonl")
_CHUNK = 1 << 20    # bytes read at a time


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _listed(root: Path, path: Path) -> bool:
    rel = path.relative_to(root)
    name = path.name
    return (path.is_file() and not path.is_symlink() and rel.as_posix() not in DERIVED and name != ".lock"
            and not (name.startswith(".") and name.endswith(".tmp")))


def artefacts(root: Path) -> dict[str, dict[str, Any]]:
    """Relative path (POSIX) -> ``{"sha256", "bytes"}`` of every listed file, sorted."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if _listed(root, p))
    return {p.relative_to(root).as_posix(): {"sha256": sha256_of(p), "bytes": p.stat().st_size}
            for p in files}


def write_manifest(root: str | Path) -> Path:
    """Hash every artefact of ``root`` into ``root/manifest.json`` (atomically)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a run directory")
    return atomic_write_json(root / NAME, {"schema": SCHEMA,
                                           "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                           "files": artefacts(root)})


def read_manifest(root: str | Path) -> dict[str, Any]:
    """``root/manifest.json``; a missing or damaged one is a one-line error naming it."""
    path = Path(root) / NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing; `l3dg report {root}` writes it") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: damaged manifest ({type(err).__name__}); `l3dg report "
                         f"{root}` rewrites it") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise ValueError(f"{path}: not an l3dg manifest (no 'files' mapping)")
    return data


def manifest_hash(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's file list (canonical JSON, sorted keys): the same artefacts
    give the same hash whenever the manifest was written."""
    text = json.dumps(manifest.get("files", {}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def verify_manifest(root: str | Path) -> dict[str, list[str]]:
    """``{"changed", "missing", "added"}`` relative paths since the manifest was written."""
    root = Path(root)
    listed = read_manifest(root)["files"]
    now = artefacts(root)
    return {"changed": sorted(k for k in listed if k in now and now[k]["sha256"] != listed[k].get("sha256")),
            "missing": sorted(k for k in listed if k not in now),
            "added": sorted(k for k in now if k not in listed)}
