"""The one flat container for many molecules: :class:`Molecules`.

M molecules are stored PyG-style ("collated" storage): per-atom arrays plus per-molecule
offsets, so memory is linear in the number of atoms, loading 130k molecules from cache is a
single ``np.load``, and every selection is a vectorised gather. Datasets, caches and
generated samples (``metrics.samples.Samples`` = this container + bond provenance) all use
it; :class:`~harness.core.types.MolBatch` is the padded view networks consume and
:class:`~harness.core.types.MolRecord` the view of one molecule.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from harness.core.io import atomic_path
from harness.core.types import MolBatch, MolRecord, collate_arrays, pack_records


def gather_ranges(ptr: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat row indices of the ranges ``ptr[i]:ptr[i+1]`` for i in ``index``, and lengths."""
    starts = ptr[index]
    lengths = ptr[index + 1] - starts
    total = int(lengths.sum())
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) \
        if len(index) else np.zeros(0, np.int64)
    return (offsets + np.arange(total)).astype(np.int64), lengths


def offsets(counts: np.ndarray) -> np.ndarray:
    """[M + 1] int64 offsets from [M] counts."""
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


@dataclass(eq=False)
class Molecules:
    """M molecules in flat arrays.

    Attributes:
        numbers: [A] atomic numbers; pos: [A, 3] Å; charges: [A] formal charges.
        atom_ptr: [M + 1] offsets: molecule m owns atoms ``atom_ptr[m]:atom_ptr[m+1]``.
        bonds: [E, 3] (i, j, order) with molecule-local i < j; bond_ptr: [M + 1].
        props: [M, P] float (units in the dataset's ``prop_units``).
        smiles: [M] reference SMILES ("" if none); names: [M] identifiers.
        bond_ok: [M] bool: the molecule's bonds are known (False where bond perception
            failed at preprocessing, or for a decoder that predicts no bonds).
    """

    numbers: np.ndarray
    pos: np.ndarray
    charges: np.ndarray
    atom_ptr: np.ndarray
    bonds: np.ndarray
    bond_ptr: np.ndarray
    props: np.ndarray
    smiles: np.ndarray
    names: np.ndarray
    bond_ok: np.ndarray

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def from_records(cls, records: Sequence[MolRecord], bond_ok: Sequence[bool] | None = None
                     ) -> "Molecules":
        numbers, pos, charges, counts, bonds, bond_counts, props = pack_records(records)
        return cls(
            numbers=numbers, pos=pos, charges=charges, atom_ptr=offsets(counts),
            bonds=bonds, bond_ptr=offsets(bond_counts),
            props=props, smiles=np.array([r.smiles for r in records], dtype=str),
            names=np.array([r.name for r in records], dtype=str),
            bond_ok=np.ones(len(records), bool) if bond_ok is None else np.asarray(bond_ok, bool),
        )

    @classmethod
    def from_batch(cls, batch: MolBatch) -> "Molecules":
        """Unpad a :class:`MolBatch` (vectorised; real atoms are packed first in every row,
        as collation and every space's decode produce them). ``bond_ok`` is True for every
        molecule when the batch carries bonds (then "no bonds" is an answer), else False."""
        cpu = batch.to("cpu")
        mask = cpu.mask
        counts = mask.sum(1).numpy().astype(np.int64)
        m = len(counts)
        numbers = cpu.numbers[mask].numpy().astype(np.int64)
        charges = (cpu.charges[mask].numpy().astype(np.int64) if cpu.charges is not None
                   else np.zeros(len(numbers), np.int64))
        if cpu.bonds is not None:
            upper = torch.triu(cpu.bonds * (mask[:, :, None] & mask[:, None, :]), diagonal=1)
            b, i, j = upper.nonzero(as_tuple=True)     # sorted by molecule, then i, then j
            bonds = torch.stack([i, j, upper[b, i, j].long()], 1).numpy().astype(np.int64)
            bond_counts = np.bincount(b.numpy(), minlength=m).astype(np.int64)
        else:
            bonds, bond_counts = np.zeros((0, 3), np.int64), np.zeros(m, np.int64)
        props = cpu.props.numpy() if cpu.props is not None else np.zeros((m, 0), np.float32)
        names = list(batch.names) if batch.names else [str(k) for k in range(m)]
        return cls(numbers=numbers, pos=cpu.pos[mask].numpy(), charges=charges,
                   atom_ptr=offsets(counts), bonds=bonds, bond_ptr=offsets(bond_counts),
                   props=props, smiles=np.array([""] * m, dtype=str),
                   names=np.array(names, dtype=str),
                   bond_ok=np.full(m, cpu.bonds is not None))

    # -- shape --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.atom_ptr) - 1

    @property
    def counts(self) -> np.ndarray:
        """[M] atoms per molecule."""
        return np.diff(self.atom_ptr)

    @property
    def n_atoms(self) -> int:
        return int(len(self.numbers))

    @property
    def mol_of_atom(self) -> np.ndarray:
        """[A] molecule index of each atom."""
        return np.repeat(np.arange(len(self)), self.counts)

    def atoms(self, m: int) -> slice:
        return slice(int(self.atom_ptr[m]), int(self.atom_ptr[m + 1]))

    def given_bonds(self, m: int) -> np.ndarray:
        return self.bonds[self.bond_ptr[m]:self.bond_ptr[m + 1]]

    def record(self, m: int) -> MolRecord:
        a = self.atoms(m)
        return MolRecord(numbers=self.numbers[a], pos=self.pos[a], bonds=self.given_bonds(m),
                         charges=self.charges[a], smiles=str(self.smiles[m]),
                         props=self.props[m], name=str(self.names[m]))

    # -- selections ---------------------------------------------------------------------
    def take(self, index: np.ndarray | Sequence[int]) -> "Molecules":
        """The molecules at ``index`` (vectorised gather, no loop over molecules)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        atoms, counts = gather_ranges(self.atom_ptr, index)
        bond_rows, bond_counts = gather_ranges(self.bond_ptr, index)
        return Molecules(
            numbers=self.numbers[atoms], pos=self.pos[atoms], charges=self.charges[atoms],
            atom_ptr=offsets(counts), bonds=self.bonds[bond_rows], bond_ptr=offsets(bond_counts),
            props=self.props[index], smiles=self.smiles[index], names=self.names[index],
            bond_ok=self.bond_ok[index],
        )

    def without_hydrogens(self) -> "Molecules":
        """Drop H atoms and their bonds; heavy-atom bond indices are renumbered."""
        keep = self.numbers != 1
        mol_of_atom = self.mol_of_atom
        new_counts = np.bincount(mol_of_atom[keep], minlength=len(self))
        # new molecule-local index of each kept atom = kept atoms before it in its molecule
        kept_before = np.cumsum(keep) - keep
        local_new = kept_before - np.repeat(kept_before[self.atom_ptr[:-1]]
                                            if len(self) else np.zeros(0, np.int64), self.counts)
        mol_of_bond = np.repeat(np.arange(len(self)), np.diff(self.bond_ptr))
        gi = self.atom_ptr[mol_of_bond] + self.bonds[:, 0]
        gj = self.atom_ptr[mol_of_bond] + self.bonds[:, 1]
        bond_keep = keep[gi] & keep[gj]
        bonds = np.stack([local_new[gi], local_new[gj], self.bonds[:, 2]], 1)[bond_keep]
        bond_counts = np.bincount(mol_of_bond[bond_keep], minlength=len(self))
        return Molecules(
            numbers=self.numbers[keep], pos=self.pos[keep], charges=self.charges[keep],
            atom_ptr=offsets(new_counts), bonds=bonds.reshape(-1, 3).astype(np.int64),
            bond_ptr=offsets(bond_counts),
            props=self.props, smiles=self.smiles, names=self.names, bond_ok=self.bond_ok,
        )

    # -- padded views -------------------------------------------------------------------
    def to_batch(self, elements: Sequence[str], with_bonds: bool = True,
                 with_props: bool = True) -> MolBatch:
        """A padded :class:`MolBatch` over vocabulary ``elements`` (given bonds)."""
        return collate_arrays(self.numbers, self.pos, self.charges, self.counts, self.bonds,
                              np.diff(self.bond_ptr), self.props, elements,
                              with_bonds=with_bonds, with_props=with_props,
                              names=[str(n) for n in self.names])

    def dense(self, start: int, stop: int, dtype: torch.dtype = torch.float64
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded tensors of molecules ``start:stop``: atomic numbers ``[b, N]`` (0 in
        padding), positions ``[b, N, 3]`` (Å, ``dtype``), mask ``[b, N]``."""
        counts = self.counts[start:stop]
        b = len(counts)
        n = int(counts.max()) if b else 0
        a0, a1 = self.atom_ptr[start], self.atom_ptr[stop]
        mol = np.repeat(np.arange(b), counts)
        slot = np.arange(a1 - a0) - np.repeat(self.atom_ptr[start:stop] - a0, counts)
        z = np.zeros((b, n), np.int64)
        z[mol, slot] = self.numbers[a0:a1]
        pos = np.zeros((b, n, 3), np.float64)
        pos[mol, slot] = self.pos[a0:a1]
        mask = np.zeros((b, n), bool)
        mask[mol, slot] = True
        return torch.from_numpy(z), torch.from_numpy(pos).to(dtype), torch.from_numpy(mask)

    # -- persistence --------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Atomically write every field to one ``.npz`` (plain arrays, no pickles)."""
        with atomic_path(path, ".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **{f.name: np.asarray(getattr(self, f.name)) for f in fields(Molecules)})

    @classmethod
    def load(cls, path: Path) -> "Molecules":
        with np.load(path, allow_pickle=False) as data:
            return Molecules(**{f.name: data[f.name] for f in fields(Molecules)})

    def checksum(self) -> str:
        h = hashlib.sha256()
        for f in fields(Molecules):
            arr = np.ascontiguousarray(getattr(self, f.name))
            h.update(f.name.encode())
            h.update(arr.tobytes() if arr.dtype.kind != "U" else "\x00".join(arr.tolist()).encode())
        return h.hexdigest()[:16]
