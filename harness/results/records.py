"""Run records: what produced a result (seeds, versions, git state, device, wall times).

* :func:`package_versions` — installed versions of the packages a result depends on;
* :func:`git_state` / :func:`code_state` — the harness commit and dirty flag (``git``, or the
  checkout's ``.git`` files read directly when no ``git`` binary answers); outside a checkout
  the installed package version ``l3dg 0.1.0`` stands for the code;
* :func:`hardware_info` — CPU model, cores, threads (results depend on the thread count);
* :func:`base_record` — the ``record.json`` a study starts with.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: distribution names whose versions a result records (RDKit, torch, Lightning, e3nn, Optuna,
#: tblite, PoseBusters and the rest of the scoring stack)
PACKAGES = ("l3dg", "torch", "pytorch-lightning", "lightning", "e3nn", "rdkit", "optuna",
            "tblite", "posebusters", "numpy", "scipy", "selfies", "fcd", "qm9pack")
#: the checkout the harness code lives in (``<repo>/harness/results/records.py``)
CODE_ROOT = Path(__file__).resolve().parents[2]


def package_versions() -> dict[str, str | None]:
    """Distribution name -> installed version (None when not installed)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git_dir(where: Path) -> Path | None:
    """The ``.git`` directory of the checkout rooted at ``where`` (a worktree's ``.git``
    file followed), or None."""
    dot = where / ".git"
    if dot.is_dir():
        return dot
    if dot.is_file():
        text = dot.read_text(errors="replace").strip()
        if text.startswith("gitdir:"):
            target = Path(text.split(":", 1)[1].strip())
            return target if target.is_absolute() else (where / target).resolve()
    return None


def _head_from_files(git_dir: Path) -> str | None:
    """HEAD's commit read from ``.git`` files (loose ref, then ``packed-refs``)."""
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
        common = git_dir
        if (git_dir / "commondir").exists():   # a linked worktree keeps refs in the main .git
            common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
        for base in (git_dir, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip() or None
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
    except OSError:
        return None
    return None


def git_state(path: Path | None = None) -> dict[str, Any]:
    """Commit hash and dirty flag of the checkout holding the code: ``{"commit", "dirty"}``
    (both None outside a checkout; ``dirty`` None when no ``git`` binary can tell).

    Only a checkout rooted at ``path`` (default: the harness's own) counts: an installed
    copy inside some other repository is not that repository's code."""
    where = Path(path or CODE_ROOT)
    git_dir = _git_dir(where)
    if git_dir is None:
        return {"commit": None, "dirty": None}
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                              text=True, timeout=10)
        if head.returncode == 0 and head.stdout.strip():
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=where, capture_output=True, text=True, timeout=10)
            return {"commit": head.stdout.strip(),
                    "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}
    except (OSError, subprocess.SubprocessError):
        pass
    # no git binary, or git refuses the checkout (e.g. another owner): read the files
    return {"commit": _head_from_files(git_dir), "dirty": None}


def code_state(path: Path | None = None) -> dict[str, Any]:
    """The code that produced a result: ``{"l3dg": version, "commit", "dirty", "source"}``
    with ``source`` ``"git"`` (a checkout) or ``"package"`` (an installed copy)."""
    try:
        version = importlib.metadata.version("l3dg")
    except importlib.metadata.PackageNotFoundError:
        version = None
    git = git_state(path)
    return {"l3dg": version, **git, "source": "git" if git["commit"] else "package"}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def hardware_info() -> dict[str, Any]:
    """CPU model, logical cores (machine and usable by this process), torch's intra-op
    thread count and ``OMP_NUM_THREADS``; GPUs when CUDA is available."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "cores_usable": usable,
            "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def device_info() -> dict[str, Any]:
    import torch

    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "host": socket.gethostname(), "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def base_record(seed: int) -> dict[str, Any]:
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": seed,
            "versions": package_versions(), "git": git_state(), "device": device_info()}
