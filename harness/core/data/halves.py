"""The two fixed halves of a training split for property-conditional generation (EDM).

EDM's conditional protocol (Hoogeboom et al., 2022; reused by GeoLDM and LDM-3DG) splits
QM9-train into two disjoint halves with one fixed permutation: the property *predictor*
(the evaluator) is trained on the first half ``Da``, the conditional *generator* on the second
half ``Db``; the predictor's error on ``Db`` is the table's lower bound. EDM's code::

    np.random.seed(42)
    fixed_perm = np.random.permutation(len(train))
    first_half  = train[fixed_perm[: len(train) // 2]]     # Da
    second_half = train[fixed_perm[len(train) // 2 :]]     # Db

:func:`property_halves` does exactly that on a dataset's ``train`` split (whose indices are
already in the Cormorant/EDM split order, see ``qm9.py``). On the full QM9 the checksum of
the two index arrays is compared with :data:`QM9_HALVES_CHECKSUM`, like the main split's
checksum: a different value means a different partition, and results would not be
comparable with published ones.
"""
from __future__ import annotations

import numpy as np

from harness.core.data.base import MolDataset, splits_checksum

__all__ = ["HALVES_SEED", "QM9_HALVES_CHECKSUM", "halves_indices", "property_halves"]

#: EDM's seed for the fixed permutation of the training split.
HALVES_SEED = 42
#: sha256 prefix (``splits_checksum``) of {"Da", "Db"} global index arrays on the full QM9
#: (100,000 training molecules -> 50,000 + 50,000).
QM9_HALVES_CHECKSUM = "5eb90f51bba939a8"
_QM9_TRAIN = 100_000
_QM9_TOTAL = 130_831


def halves_indices(train_index: np.ndarray, seed: int = HALVES_SEED) -> dict[str, np.ndarray]:
    """``{"Da": ..., "Db": ...}``: ``train_index`` (dataset indices of the training split, in
    split order) cut by a ``RandomState(seed)`` permutation into its first and second half
    (``Da`` gets ``n // 2`` molecules, ``Db`` the rest)."""
    train_index = np.asarray(train_index, dtype=np.int64)
    perm = np.random.RandomState(seed).permutation(len(train_index))
    half = len(train_index) // 2
    return {"Da": train_index[perm[:half]], "Db": train_index[perm[half:]]}


def property_halves(dataset: MolDataset, split: str = "train", seed: int = HALVES_SEED
                    ) -> tuple[dict[str, MolDataset], dict[str, object]]:
    """The halves ``Da`` (predictor) and ``Db`` (generator) of ``dataset``'s ``split``.

    Args:
        dataset: a whole dataset with splits (e.g. ``load_dataset("qm9")``).
        split: the split to halve (EDM: ``train``).
        seed: permutation seed (EDM: 42).

    Returns:
        ``({"Da": MolDataset, "Db": MolDataset}, info)`` where ``info`` holds ``checksum``
        (of the two global index arrays), ``seed``, ``sizes`` and ``verified`` (True when the
        dataset is the full QM9 and the checksum equals :data:`QM9_HALVES_CHECKSUM`).

    Raises:
        KeyError: the dataset has no such split.
        RuntimeError: full QM9 but the checksum differs from the recorded one.
    """
    if split not in dataset.splits:
        raise KeyError(f"{dataset.name}: no split {split!r} to halve; splits: "
                       f"{sorted(dataset.splits) or 'none (pass the whole dataset, not a split)'}")
    index = halves_indices(dataset.splits[split], seed)
    checksum = splits_checksum(index)
    full_qm9 = (dataset.name.startswith("qm9") and len(dataset) == _QM9_TOTAL
                and len(dataset.splits[split]) == _QM9_TRAIN and split == "train"
                and seed == HALVES_SEED)
    if full_qm9 and checksum != QM9_HALVES_CHECKSUM:
        raise RuntimeError(f"qm9 halves checksum {checksum} != recorded {QM9_HALVES_CHECKSUM}: "
                           "numpy's RandomState stream or the train split changed; conditional "
                           "results would not be comparable")
    halves = {k: dataset.subset(v, f"{dataset.name}:{split}:{k}") for k, v in index.items()}
    info = {"checksum": checksum, "seed": seed, "split": split, "verified": full_qm9,
            "sizes": {k: int(len(v)) for k, v in index.items()}}
    return halves, info
