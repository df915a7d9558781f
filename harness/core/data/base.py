"""Datasets as packed arrays, split views, on-disk caching.

A :class:`MolDataset` stores every molecule of a dataset in flat arrays (PyG-style
"collated" storage: per-atom arrays plus per-molecule offsets), so that loading 130k
molecules from cache is a single ``np.load`` and collating a batch is vectorised gathers.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from harness.core.io import atomic_write_json
from harness.core.molecules import Molecules
from harness.core.types import PERIODIC_TABLE, MolBatch, MolRecord


def default_cache_dir() -> Path:
    """``$L3DG_CACHE_DIR`` if set, else the user's cache directory (e.g. ~/.cache/l3dg)."""
    env = os.environ.get("L3DG_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("l3dg"))


def fingerprint_of(obj: Any, length: int = 16) -> str:
    """Stable short hash of a JSON-serialisable object (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass
class MolDataset(torch.utils.data.Dataset):
    """Molecules of one dataset (or one split of it).

    Attributes:
        name: e.g. ``"qm9"`` or ``"qm9:train"``.
        packed: the molecules.
        elements: element vocabulary (``atom_types`` index into it).
        prop_names / prop_units: property columns of ``packed.props`` and their units.
        splits: split name -> indices into ``packed`` (only on a whole dataset).
        fingerprint: identifies the data and options (keys caches built from it).
        info: provenance (source files, preprocessing stats, skipped records).
    """

    name: str
    packed: Molecules
    elements: tuple[str, ...]
    prop_names: tuple[str, ...] = ()
    prop_units: tuple[str, ...] = ()
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    fingerprint: str = ""
    cache_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, index: int) -> MolRecord:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range ({len(self)} molecules)")
        return self.packed.record(index)

    def records(self) -> list[MolRecord]:
        return [self.packed.record(m) for m in range(len(self))]

    @property
    def atom_counts(self) -> np.ndarray:
        """[M] atoms per molecule."""
        return self.packed.counts

    @property
    def smiles(self) -> list[str]:
        return self.packed.smiles.tolist()

    def split(self, name: str) -> "MolDataset":
        """The molecules of split ``name`` (e.g. train / val / test)."""
        if name in ("all", "", None):
            return self
        if name not in self.splits:
            raise KeyError(f"{self.name} has no split {name!r}; splits: {sorted(self.splits) or 'none'}")
        return self.subset(self.splits[name], f"{self.name}:{name}")

    def subset(self, index: np.ndarray | Sequence[int], name: str | None = None) -> "MolDataset":
        index = np.asarray(index, dtype=np.int64)
        return MolDataset(
            name=name or f"{self.name}[{len(index)}]", packed=self.packed.take(index),
            elements=self.elements, prop_names=self.prop_names, prop_units=self.prop_units,
            fingerprint=fingerprint_of([self.fingerprint, name, index.tobytes().hex()[:64],
                                        len(index), int(index.sum()) if len(index) else 0]),
            cache_dir=self.cache_dir, info=self.info,
        )

    def batch(self, index: np.ndarray | Sequence[int] | torch.Tensor) -> MolBatch:
        """Dense padded batch of the molecules at ``index``."""
        return self.packed.take(np.asarray(index, dtype=np.int64)).to_batch(self.elements)

    def iter_batches(self, batch_size: int, shuffle: bool = False, seed: int = 0,
                     drop_last: bool = False) -> Iterator[MolBatch]:
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            yield self.batch(order[start:start + batch_size])

    def stats(self) -> dict[str, Any]:
        """Counts for ``l3dg data``: molecules per split, atom-count histogram, elements."""
        counts = self.atom_counts
        z, n = np.unique(self.packed.numbers, return_counts=True)
        return {
            "name": self.name,
            "molecules": len(self),
            "splits": {k: int(len(v)) for k, v in self.splits.items()},
            "atoms_per_molecule": {"min": int(counts.min()), "mean": float(counts.mean()),
                                   "max": int(counts.max())} if len(counts) else {},
            "atom_count_histogram": {int(k): int(v) for k, v in zip(*np.unique(counts, return_counts=True))},
            "element_counts": {PERIODIC_TABLE[int(a)]: int(b) for a, b in zip(z, n)},
            "bond_perception_failures": int((~self.packed.bond_ok).sum()),
        }


class IndexDataset(torch.utils.data.Dataset):
    """0..n-1; with :class:`CollateIndices` a DataLoader yields padded batches of a
    :class:`MolDataset` (collation is vectorised per batch, not per molecule)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class CollateIndices:
    """Picklable collate: indices -> ``dataset.batch(indices)``, optionally passed through
    ``transform(batch, indices)`` (extra per-molecule inputs of a space)."""

    def __init__(self, dataset: "MolDataset", transform=None):
        self.dataset, self.transform = dataset, transform

    def __call__(self, indices):
        idx = np.asarray(indices)
        batch = self.dataset.batch(idx)
        return batch if self.transform is None else self.transform(batch, idx)


def deterministic_split(n: int, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Cormorant/EDM-style split: one seeded permutation cut into consecutive pieces in the
    order given by ``sizes`` (the last size may be -1 for "the rest")."""
    perm = np.random.RandomState(seed).permutation(n)
    out, start = {}, 0
    for k, (name, size) in enumerate(sizes.items()):
        stop = n if size < 0 else start + size
        out[name] = perm[start:stop]
        start = stop
    return out


def subset_splits(splits: dict[str, np.ndarray], total: int) -> dict[str, np.ndarray]:
    """Keep ``total`` molecules, in each split's proportion, taking each split's first
    indices (splits are already in random order, so subsets are nested and deterministic)."""
    n_all = sum(len(v) for v in splits.values())
    if total >= n_all:
        return splits
    out = {}
    for name, idx in splits.items():
        k = max(1, int(round(total * len(idx) / n_all)))
        out[name] = idx[:k]
    return out


def take_subset(packed: "Molecules", splits: dict[str, np.ndarray], total: int
                ) -> tuple["Molecules", dict[str, np.ndarray]]:
    """``total`` molecules in each split's proportion (:func:`subset_splits`), re-indexed so
    the returned container holds only them: ``(packed subset, splits into it)``."""
    splits = subset_splits(splits, int(total))
    packed = packed.take(np.concatenate(list(splits.values())))
    offsets = np.cumsum([0] + [len(v) for v in splits.values()])
    return packed, {k: np.arange(offsets[i], offsets[i + 1]) for i, k in enumerate(splits)}


def splits_checksum(splits: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(splits):
        h.update(name.encode())
        h.update(np.ascontiguousarray(splits[name], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


class DatasetCache:
    """A folder holding one preprocessed dataset: ``molecules.npz`` + ``meta.json``.

    ``meta.json`` stores the fingerprint of everything that shaped the preprocessing and the
    checksum of the arrays; a mismatch of either means the cache is stale (or damaged) and
    must be rebuilt.
    """

    def __init__(self, root: Path, dataset: str, fingerprint: str):
        self.dir = Path(root) / "datasets" / f"{dataset}-{fingerprint}"
        self.fingerprint = fingerprint

    @property
    def data_path(self) -> Path:
        return self.dir / "molecules.npz"

    @property
    def meta_path(self) -> Path:
        return self.dir / "meta.json"

    def load(self) -> tuple[Molecules, dict[str, Any]] | None:
        """The cached molecules and meta, or None when missing or stale."""
        if not (self.data_path.exists() and self.meta_path.exists()):
            return None
        try:
            meta = json.loads(self.meta_path.read_text())
            if meta.get("fingerprint") != self.fingerprint:
                return None
            packed = Molecules.load(self.data_path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        if meta.get("checksum") != packed.checksum():
            return None
        return packed, meta

    def store(self, packed: Molecules, meta: dict[str, Any]) -> dict[str, Any]:
        meta = dict(meta, fingerprint=self.fingerprint, checksum=packed.checksum(),
                    created=time.strftime("%Y-%m-%dT%H:%M:%S"))
        packed.save(self.data_path)
        atomic_write_json(self.meta_path, meta)
        return meta
