"""The molecules being scored, packed flat, with views that metric families share.

:class:`Samples` stores M molecules PyG-style (per-atom arrays plus per-molecule offsets), so
memory is linear in the number of atoms whatever the largest molecule is; dense padded
tensors are made a chunk at a time (:meth:`Samples.dense`) for the vectorised distance
tests. Intermediate results several families need (bonds resolved from the input or
perceived with ``rdDetermineBonds``, RDKit validity, SMILES) are computed once and kept in
:attr:`Samples.cache`.

Bond provenance is explicit: ``bonds_known[m]`` says whether molecule m's given bonds are
authoritative (a decoder that predicts bonds, a dataset, an SDF with a bond block), and
``bond_mode`` says how the bond-based metrics resolve them:

* ``"auto"``: the given bonds where known, ``rdDetermineBonds`` (Hückel retry) elsewhere;
* ``"perceive"``: ignore given bonds, perceive every molecule;
* ``"given"``: the given bonds for every molecule (none given = no bonds).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from harness.core.molecules import Molecules, gather_ranges, offsets
from harness.core.types import PERIODIC_TABLE, MolBatch, MolRecord
from metrics.capping import cap_indices

BOND_MODES = ("auto", "perceive", "given")
#: bond_source labels that mean "use the given bonds"; the label is kept as the origin.
GIVEN_LABELS = ("given", "decoder", "dataset", "file", "batch")
PERCEIVER = "rdDetermineBonds (charge 0, Hückel retry)"


def parse_bond_source(bond_source: str) -> tuple[str, str | None]:
    """``bond_source`` argument -> (bond_mode, origin label of given bonds)."""
    if bond_source == "auto":
        return "auto", None
    if bond_source == "perceive":
        return "perceive", None
    if bond_source in GIVEN_LABELS:
        return "given", bond_source
    raise ValueError(f"bond_source must be one of auto, perceive, "
                     f"{', '.join(GIVEN_LABELS)}; got {bond_source!r}")


@dataclass
class ResolvedBonds:
    """Bonds (and formal charges) the bond-based metrics use.

    Attributes:
        bonds: [E, 3] int64 (i, j, order), molecule-local, i < j; bond_ptr: [M + 1].
        charges: [A] int64 formal charges (given ones, or those perception assigned).
        status: [M] str: ``"given"``, ``"perceived"`` or ``"failed"`` (perception failed;
            the molecule has no bonds here and counts as invalid).
        reasons: molecule index -> why perception failed.
    """

    bonds: np.ndarray
    bond_ptr: np.ndarray
    charges: np.ndarray
    status: np.ndarray
    reasons: dict[int, str]

    def of(self, m: int) -> np.ndarray:
        return self.bonds[self.bond_ptr[m]:self.bond_ptr[m + 1]]

    def take(self, index: np.ndarray, atom_ptr: np.ndarray) -> "ResolvedBonds":
        """The bonds of molecules ``index`` (for resamples of :meth:`Samples.take`;
        ``atom_ptr`` is the samples' atom offsets, which locate the per-atom charges)."""
        index = np.asarray(index, np.int64).reshape(-1)
        rows, counts = gather_ranges(self.bond_ptr, index)
        atoms, _ = gather_ranges(np.asarray(atom_ptr, np.int64), index)
        return ResolvedBonds(bonds=self.bonds[rows], bond_ptr=offsets(counts),
                             charges=self.charges[atoms], status=self.status[index],
                             reasons={k: self.reasons[int(i)] for k, i in enumerate(index)
                                      if int(i) in self.reasons})

    def counts(self) -> dict[str, int]:
        values, counts = np.unique(self.status, return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts)}


class Samples(Molecules):
    """Molecules being scored: the flat :class:`~harness.core.molecules.Molecules`
    container (float64 coordinates) plus bond provenance.

    Attributes:
        numbers: [A] int64 atomic numbers.
        pos: [A, 3] float64 coordinates, Å.
        charges: [A] int64 given formal charges.
        atom_ptr: [M + 1] int64; molecule m owns atoms ``atom_ptr[m]:atom_ptr[m+1]``.
        bonds: [E, 3] int64 given bonds (i, j, order), molecule-local with i < j.
        bond_ptr: [M + 1] int64.
        bonds_known: [M] bool, given bonds are authoritative for the molecule.
        bond_mode: ``auto`` / ``perceive`` / ``given`` (see the module doc).
        bond_origin: label of the given bonds (``decoder``, ``file``, ``dataset``, ...).
        names: [M] identifiers.
        skipped: input records that could not be used, as ``{"source", "index", "reason"}``.
        cache: shared intermediate results (keyed by the family that made them).
    """

    def __init__(self, numbers: np.ndarray, pos: np.ndarray, charges: np.ndarray,
                 atom_ptr: np.ndarray, bonds: np.ndarray, bond_ptr: np.ndarray,
                 bonds_known: np.ndarray, bond_mode: str = "auto", bond_origin: str = "given",
                 names: Sequence[str] | None = None, skipped: Sequence[dict] = ()):
        if bond_mode not in BOND_MODES:
            raise ValueError(f"bond_mode must be one of {BOND_MODES}, got {bond_mode!r}")
        m = len(np.asarray(atom_ptr).reshape(-1)) - 1
        super().__init__(
            numbers=np.asarray(numbers, np.int64).reshape(-1),
            pos=np.asarray(pos, np.float64).reshape(-1, 3),
            charges=np.asarray(charges, np.int64).reshape(-1),
            atom_ptr=np.asarray(atom_ptr, np.int64).reshape(-1),
            bonds=np.asarray(bonds, np.int64).reshape(-1, 3),
            bond_ptr=np.asarray(bond_ptr, np.int64).reshape(-1),
            props=np.zeros((m, 0), np.float32), smiles=np.array([""] * m, dtype=str),
            names=list(names) if names is not None else [str(k) for k in range(m)],
            bond_ok=np.asarray(bonds_known, bool).reshape(-1))
        self.bond_mode = bond_mode
        self.bond_origin = bond_origin
        self.skipped = list(skipped)
        self.cache: dict[Any, Any] = {}
        if not (len(self.pos) == len(self.numbers) == len(self.charges) == self.atom_ptr[-1]):
            raise ValueError("Samples: per-atom arrays disagree with atom_ptr")
        if len(self.bond_ptr) != m + 1 or self.bond_ptr[-1] != len(self.bonds) \
                or len(self.bonds_known) != m:
            raise ValueError("Samples: bond arrays disagree with the molecule count")
        if len(self.numbers) and not np.isfinite(self.pos).all():
            bad = np.unique(np.repeat(np.arange(m), self.counts)[~np.isfinite(self.pos).all(1)])
            raise ValueError(f"Samples: coordinates contain NaN or inf (molecules "
                             f"{[self.names[k] for k in bad[:5]]})")
        if len(self.bonds):
            mol_of_bond = np.repeat(np.arange(m), np.diff(self.bond_ptr))
            n_of_bond = self.counts[mol_of_bond]
            bad = ~np.isin(self.bonds[:, 2], (1, 2, 3)) | (self.bonds[:, :2] < 0).any(1) \
                | (self.bonds[:, :2] >= n_of_bond[:, None]).any(1) | (self.bonds[:, 0] == self.bonds[:, 1])
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise ValueError(f"Samples: molecule {self.names[mol_of_bond[k]]!r} has an invalid "
                                 f"bond row {self.bonds[k].tolist()} (orders must be 1, 2 or 3 "
                                 "between two distinct atoms of the molecule)")

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def from_records(cls, records: Sequence[MolRecord], bond_source: str = "auto",
                     bonds_known: Sequence[bool] | None = None,
                     skipped: Sequence[dict] = ()) -> "Samples":
        """From records. By default a record's bonds are known when it has any (or has a
        single atom); pass ``bonds_known`` to say otherwise (e.g. a decoder's output,
        where "no bonds" is an answer)."""
        mode, origin = parse_bond_source(bond_source)
        records, bonds_known, skipped = _drop_unusable(records, bonds_known, skipped)
        counts = np.fromiter((r.n_atoms for r in records), np.int64, len(records))
        bond_counts = np.fromiter((len(r.bonds) for r in records), np.int64, len(records))
        cat = (lambda xs, shape, dt: np.concatenate(xs).astype(dt) if len(xs) else np.zeros(shape, dt))
        if bonds_known is None:
            bonds_known = (bond_counts > 0) | (counts <= 1)
        return cls(
            numbers=cat([r.numbers for r in records], (0,), np.int64),
            pos=cat([r.pos for r in records], (0, 3), np.float64),
            charges=cat([r.charges for r in records], (0,), np.int64),
            atom_ptr=np.concatenate([[0], np.cumsum(counts)]),
            bonds=cat([r.bonds for r in records], (0, 3), np.int64),
            bond_ptr=np.concatenate([[0], np.cumsum(bond_counts)]),
            bonds_known=np.asarray(bonds_known, bool), bond_mode=mode,
            bond_origin=origin or "given", names=[r.name or str(k) for k, r in enumerate(records)],
            skipped=skipped,
        )

    @classmethod
    def from_batch(cls, batch: MolBatch, bond_source: str = "auto") -> "Samples":
        """From a padded batch (vectorised unpadding); its bonds (when present) are
        authoritative for every molecule, including molecules with none. ``bond_source``
        ``auto`` labels them ``batch``."""
        samples = cls.from_molecules(Molecules.from_batch(batch), bond_source)
        samples.bond_origin = parse_bond_source(bond_source)[1] or "batch"
        return samples

    @classmethod
    def from_molecules(cls, mols: Molecules, bond_source: str = "auto",
                       bonds_known: np.ndarray | None = None) -> "Samples":
        """From the flat container (no per-molecule Python work): ``mols.bond_ok`` (or
        ``bonds_known``) says whose bonds are authoritative; molecules with no atoms or
        non-finite coordinates move to :attr:`skipped`."""
        mode, origin = parse_bond_source(bond_source)
        known = np.asarray(mols.bond_ok if bonds_known is None else bonds_known, bool)
        counts = mols.counts
        finite = np.ones(len(mols), bool)
        if mols.n_atoms:
            bad_atom = ~np.isfinite(np.asarray(mols.pos, np.float64)).all(1)
            finite = np.bincount(mols.mol_of_atom[bad_atom], minlength=len(mols)) == 0
        keep = (counts > 0) & finite
        names = [str(n) for n in mols.names]
        skipped = [{"source": "input", "index": int(k), "name": names[k],
                    "reason": "no atoms" if counts[k] == 0 else "coordinates contain NaN or inf"}
                   for k in np.flatnonzero(~keep)]
        if not keep.all():
            mols = mols.take(np.flatnonzero(keep))
            known = known[keep]
            names = [n for n, k in zip(names, keep) if k]
        return cls(numbers=mols.numbers, pos=mols.pos, charges=mols.charges,
                   atom_ptr=mols.atom_ptr, bonds=mols.bonds, bond_ptr=mols.bond_ptr,
                   bonds_known=known, bond_mode=mode, bond_origin=origin or "given",
                   names=names, skipped=skipped)

    @classmethod
    def from_mols(cls, mols: Sequence[Any], bond_source: str = "auto") -> "Samples":
        """From RDKit molecules with conformers (or records); a ``None`` entry (a failed
        sample) is recorded in :attr:`skipped`."""
        from harness.core.chem import RecordError, mol_to_record

        records, skipped = [], []
        for k, mol in enumerate(mols):
            if mol is None:
                skipped.append({"source": "input", "index": k, "reason": "no molecule (None)"})
                continue
            if isinstance(mol, MolRecord):
                records.append(mol)
                continue
            try:
                records.append(mol_to_record(mol))
            except RecordError as err:
                skipped.append({"source": "input", "index": k, "reason": str(err)})
        return cls.from_records(records, bond_source, skipped=skipped)

    @classmethod
    def from_dataset(cls, dataset: Any, bond_source: str = "auto",
                     limit: int | None = None) -> "Samples":
        """From a :class:`~harness.core.data.MolDataset` (uses its packed arrays when present);
        molecules whose bond perception failed at preprocessing have unknown bonds."""
        packed = getattr(dataset, "packed", None)
        if packed is None:
            records = list(dataset.records())
            if limit is not None:
                records = records[:limit]
            samples = cls.from_records(records, bond_source)
            if samples.bond_origin == "given" and bond_source == "auto":
                samples.bond_origin = "dataset"
            return samples
        if limit is not None and limit < len(packed):
            packed = packed.take(np.arange(limit))
        mode, origin = parse_bond_source(bond_source)
        return cls(numbers=packed.numbers, pos=packed.pos, charges=packed.charges,
                   atom_ptr=packed.atom_ptr, bonds=packed.bonds, bond_ptr=packed.bond_ptr,
                   bonds_known=packed.bond_ok, bond_mode=mode, bond_origin=origin or "dataset",
                   names=[str(n) for n in packed.names])

    @classmethod
    def coerce(cls, data: Any, bond_source: str = "auto") -> "Samples":
        """Samples from a :class:`Samples`, :class:`MolBatch`, dataset, or a sequence of
        :class:`MolRecord` / RDKit ``Mol`` (None entries allowed)."""
        if isinstance(data, Samples):
            return data
        if isinstance(data, MolBatch):
            return cls.from_batch(data, bond_source)
        if hasattr(data, "packed") or (hasattr(data, "records") and hasattr(data, "elements")):
            return cls.from_dataset(data, bond_source)
        items = list(data)
        if all(isinstance(x, MolRecord) for x in items):
            return cls.from_records(items, bond_source)
        return cls.from_mols(items, bond_source)

    # -- shape (the rest comes from Molecules) -----------------------------------------------
    @property
    def bonds_known(self) -> np.ndarray:
        """[M] bool, the given bonds are authoritative (the container's ``bond_ok``)."""
        return self.bond_ok

    @property
    def mol_of_atom(self) -> np.ndarray:
        """[A] molecule index of each atom."""
        if "mol_of_atom" not in self.cache:
            self.cache["mol_of_atom"] = np.repeat(np.arange(len(self)), self.counts)
        return self.cache["mol_of_atom"]

    @property
    def symbols(self) -> list[str]:
        """Element symbols present, by atomic number."""
        return [PERIODIC_TABLE[z] for z in np.unique(self.numbers)]

    def take(self, index: Sequence[int] | np.ndarray) -> "Samples":
        """The molecules at ``index`` (a new :class:`Samples`, empty cache)."""
        index = np.asarray(index, np.int64).reshape(-1)
        atoms, counts = gather_ranges(self.atom_ptr, index)
        rows, bond_counts = gather_ranges(self.bond_ptr, index)
        return Samples(numbers=self.numbers[atoms], pos=self.pos[atoms],
                       charges=self.charges[atoms],
                       atom_ptr=offsets(counts),
                       bonds=self.bonds[rows], bond_ptr=offsets(bond_counts),
                       bonds_known=self.bonds_known[index], bond_mode=self.bond_mode,
                       bond_origin=self.bond_origin, names=[self.names[i] for i in index])

    def capped(self, n: int | None, subset: str = "first", seed: int = 0) -> tuple["Samples", dict]:
        """At most ``n`` molecules and how they were chosen: the first ``n`` (``first``, the
        rule of the v1 suites) or a seeded random subset kept in file order (``random``: a
        file sorted by size is not scored on its extremes). Returns the subset and its
        metadata (``{"subset": ..., "size": ..., "of": ..., "seed": ...}``)."""
        index = cap_indices(len(self), n, subset, seed)
        meta = {"subset": subset if index is not None else "all", "size": len(self) if index is None
                else len(index), "of": len(self)}
        if index is not None and subset == "random":
            meta["seed"] = int(seed)
        return (self if index is None else self.take(index)), meta

    def head(self, n: int | None) -> "Samples":
        """The first ``n`` molecules (self when n is None or covers everything)."""
        if n is None or n >= len(self):
            return self
        return self.take(np.arange(n))

    def fingerprint(self) -> str:
        """Content hash (atoms, coordinates, given bonds, bond mode)."""
        h = hashlib.sha256()
        for arr in (self.numbers, self.pos.astype(np.float32), self.charges, self.atom_ptr,
                    self.bonds, self.bond_ptr, self.bonds_known):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(self.bond_mode.encode())
        return h.hexdigest()[:16]

    def chunks(self, max_pairs: int = 2_000_000) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` molecule ranges whose dense pair tensors ``[b, N, N]`` hold at
        most ``max_pairs`` entries."""
        m = len(self)
        start = 0
        counts = self.counts
        while start < m:
            n = int(counts[start:start + 4096].max())
            size = max(1, min(4096, max_pairs // max(1, n * n)))
            stop = min(m, start + size)
            yield start, stop
            start = stop

    def to_batch(self, elements: Sequence[str] | None = None) -> MolBatch:
        """A padded :class:`MolBatch` with the given bonds (vocabulary: ``elements`` or
        the elements present)."""
        from harness.core.types import collate_arrays

        elements = tuple(elements) if elements is not None else tuple(self.symbols)
        return collate_arrays(self.numbers, self.pos.astype(np.float32), self.charges,
                              self.counts, self.bonds, np.diff(self.bond_ptr),
                              np.zeros((len(self), 0), np.float32), elements,
                              names=self.names)

    # -- resolved bonds -----------------------------------------------------------------------
    def resolved_bonds(self) -> ResolvedBonds:
        """Bonds for the bond-based metrics according to :attr:`bond_mode` (cached)."""
        key = ("resolved_bonds", self.bond_mode)
        if key in self.cache:
            return self.cache[key]
        m = len(self)
        if self.bond_mode == "given":
            use_given = np.ones(m, bool)
        elif self.bond_mode == "perceive":
            use_given = self.counts <= 1
        else:
            use_given = self.bonds_known | (self.counts <= 1)
        to_perceive = np.flatnonzero(~use_given)
        jobs = [(self.numbers[self.atoms(k)], self.pos[self.atoms(k)]) for k in to_perceive]
        from metrics.parallel import chunked_map

        results = chunked_map(_perceive_chunk, jobs, min_items=3000)
        status = np.where(use_given, "given", "perceived").astype(object)
        charges = self.charges.copy()
        per_mol: list[np.ndarray] = [self.given_bonds(k) for k in range(m)]
        reasons: dict[int, str] = {}
        for k, (bonds, mol_charges, reason) in zip(to_perceive.tolist(), results):
            if bonds is None:
                status[k] = "failed"
                reasons[k] = reason
                per_mol[k] = np.zeros((0, 3), np.int64)
            else:
                per_mol[k] = bonds
                charges[self.atoms(k)] = mol_charges
        counts = np.fromiter((len(b) for b in per_mol), np.int64, m)
        resolved = ResolvedBonds(
            bonds=np.concatenate(per_mol).astype(np.int64) if m else np.zeros((0, 3), np.int64),
            bond_ptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            charges=charges, status=status.astype(str), reasons=reasons)
        self.cache[key] = resolved
        return resolved

    def attach_resolved_bonds(self, resolved: ResolvedBonds) -> None:
        """Use bonds resolved earlier (e.g. by the study's sample stage) instead of
        resolving them again; they must describe these molecules."""
        if len(resolved.bond_ptr) != len(self) + 1 or len(resolved.charges) != self.n_atoms:
            raise ValueError("resolved bonds describe other molecules than these samples")
        self.cache[("resolved_bonds", self.bond_mode)] = resolved

    def bond_source_summary(self) -> dict[str, Any]:
        """How the bond-based metrics got their bonds: a label and per-source counts."""
        resolved = self.resolved_bonds()
        counts = resolved.counts()
        parts = []
        if counts.get("given"):
            parts.append(self.bond_origin)
        if counts.get("perceived") or counts.get("failed"):
            parts.append(PERCEIVER)
        label = " + ".join(parts) if parts else "none"
        out = {"label": label, "mode": self.bond_mode, "given_origin": self.bond_origin,
               "counts": counts}
        if resolved.reasons:
            out["perception_failures"] = [
                {"molecule": self.names[k], "reason": r} for k, r in list(resolved.reasons.items())[:20]]
        return out


def _drop_unusable(records: Sequence[MolRecord], bonds_known, skipped: Sequence[dict]):
    """Move records with no atoms or non-finite coordinates to ``skipped`` (a diverged
    sample must not abort scoring; it is reported and counted instead)."""
    keep, known_kept, skipped = [], [], list(skipped)
    for k, r in enumerate(records):
        if r.n_atoms == 0:
            skipped.append({"source": "input", "index": k, "name": r.name, "reason": "no atoms"})
        elif not np.isfinite(r.pos).all():
            skipped.append({"source": "input", "index": k, "name": r.name,
                            "reason": "coordinates contain NaN or inf"})
        else:
            keep.append(r)
            if bonds_known is not None:
                known_kept.append(bool(bonds_known[k]))
    return keep, (None if bonds_known is None else np.asarray(known_kept, bool)), skipped


def _perceive_chunk(jobs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple]:
    """Worker: ``rdDetermineBonds`` on each (numbers, pos); (bonds, charges, None) or
    (None, None, reason)."""
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")   # failed perception is a result here, not noise
    from harness.core.chem import RecordError, bonds_of, perceive_bonds

    out = []
    for numbers, pos in jobs:
        try:
            mol = perceive_bonds(numbers, pos)
            charges = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], np.int64)
            out.append((bonds_of(mol), charges, None))
        except RecordError as err:
            out.append((None, None, str(err)))
        except Exception as err:  # RDKit chemistry errors of odd geometries
            out.append((None, None, f"bond perception failed ({type(err).__name__}: {err})"))
    return out
