"""A small process pool for per-molecule RDKit work on large sample sets.

Tensor work stays in the parent; only RDKit loops (bond perception, sanitisation, SMILES,
descriptors) are farmed out, in order-preserving chunks. Workers are forked (Linux), so the
parent's imports are inherited and nothing has to be pickled but the chunk data.

The worker count is ``$L3DG_METRIC_WORKERS`` when set, else ``min(2, cpu_count)``; sets with
fewer than ``min_items`` items run serially (a pool costs ~0.1 s to start).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


def default_workers() -> int:
    env = os.environ.get("L3DG_METRIC_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"L3DG_METRIC_WORKERS must be an integer, got {env!r}") from None
    return max(1, min(2, os.cpu_count() or 1))


def _init_worker() -> None:
    # one thread per worker: the parent and workers share the machine's cores
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def chunked_map(fn: Callable[[Sequence[T]], list[R]], items: Sequence[T],
                workers: int | None = None, min_items: int = 2000,
                chunks_per_worker: int = 4) -> list[R]:
    """``fn`` maps a chunk (list of items) to a list of results of the same length; this
    returns the concatenated results in input order, using a process pool when there are
    at least ``min_items`` items and more than one worker."""
    items = list(items)
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers == 1 or len(items) < min_items or multiprocessing.current_process().daemon:
        return list(fn(items)) if items else []
    n_chunks = workers * chunks_per_worker
    size = -(-len(items) // n_chunks)
    chunks = [items[k:k + size] for k in range(0, len(items), size)]
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            parts = pool.map(fn, chunks)
    except (OSError, ValueError) as err:  # no fork / no semaphores: run serially
        log.warning("process pool unavailable (%s); running serially", err)
        parts = [fn(c) for c in chunks]
    out: list[R] = []
    for part in parts:
        out.extend(part)
    if len(out) != len(items):
        raise RuntimeError(f"chunked_map: {fn.__name__} returned {len(out)} results "
                           f"for {len(items)} items")
    return out
