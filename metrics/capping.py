"""How a capped metric member picks its molecules: the first N (``first``, the v1 suites) or
a seeded random subset kept in file order (``random``, the v2 suites)."""
from __future__ import annotations

import numpy as np

__all__ = ["cap_indices"]


def cap_indices(total: int, n: int | None, subset: str = "first", seed: int = 0) -> np.ndarray | None:
    """Indices of at most ``n`` of ``total`` items (None: all of them): the first ``n``, or
    ``n`` drawn by a seeded permutation and sorted (``random``)."""
    if subset not in ("first", "random"):
        raise ValueError(f"subset must be 'first' or 'random', got {subset!r}")
    if n is None or n >= total:
        return None
    if subset == "first":
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(total)[:n])
