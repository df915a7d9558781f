"""One ordered, chunked map for dataset preprocessing (QM9 bond perception, MOSES
conformers): chunks run in a spawned process pool when more than one worker is asked for,
results come back in input order, and one progress bar counts molecules."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

__all__ = ["ordered_chunk_map"]


def ordered_chunk_map(fn: Callable[[Any], list], jobs: Sequence[Any], workers: int, *, total: int,
                      desc: str, progress: bool, initializer: Callable[[], None] | None = None) -> list:
    """``fn(job)`` (a list per chunk) for every job, concatenated in order.

    Args:
        fn, initializer: top-level (picklable) functions; ``initializer`` runs once in each
            worker (e.g. one torch thread, quiet RDKit logs).
        workers: processes (``<= 1`` or a single job: in this process).
        total / desc / progress: the bar's molecule count, label, and whether it shows.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="mol", disable=not progress)
    results: list = []
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                 initializer=initializer) as pool:
            for part in pool.map(fn, jobs):
                results += part
                bar.update(len(part))
    else:
        for job in jobs:
            part = fn(job)
            results += part
            bar.update(len(part))
    bar.close()
    return results
