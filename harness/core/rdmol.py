"""RDKit molecules for records, and the checks done before RDKit sees coordinates.

* :class:`MolRecord` / :class:`MolBatch` <-> RDKit ``Mol`` with a 3D conformer.
* Geometry sanity (:func:`geometry_problem`): coordinates beyond :data:`MAX_ABS_COORD` Å or
  two atoms closer than :data:`MIN_PAIR_DISTANCE` Å are flagged before RDKit sees them
  (its bond perception can crash the process on coincident atoms).
* Bond perception from coordinates (``rdDetermineBonds``, retried with Hückel).
* Canonical SMILES (stereo-free and stereo variants); one-line reasons from RDKit's log.

File formats are parsed in :mod:`harness.core.chem`, which re-exports everything here.
"""
from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import rdDetermineBonds
from rdkit.Geometry import Point3D

from harness.core.types import PERIODIC_TABLE, MolBatch, MolRecord

RDLogger.DisableLog("rdApp.*")

BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
BOND_ORDERS = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}


class RecordError(ValueError):
    """A molecule record that cannot be used; ``reason`` says why."""


@dataclass
class SkippedRecord:
    """One skipped input record: where it was and why."""

    source: str
    index: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source} record {self.index}: {self.reason}"


# -- RDKit log capture ---------------------------------------------------------------------
class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().strip())


@contextlib.contextmanager
def rdkit_messages() -> Iterator[list[str]]:
    """Collect RDKit's error/warning messages raised inside the block (for error reasons)."""
    from rdkit import rdBase

    handler = _ListHandler()
    logger = logging.getLogger("rdkit")
    rdBase.LogToPythonLogger()
    RDLogger.EnableLog("rdApp.error")
    logger.addHandler(handler)
    old_propagate = logger.propagate
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate
        RDLogger.DisableLog("rdApp.*")


#: lines of an RDKit invariant report that carry no reason (banner, C++ stack frames, source)
_RDKIT_NOISE = re.compile(r"^(\*+|-+|Stacktrace:|\d+# .*|(Pre|Post)-condition Violation|"
                          r"Invariant Violation|Violation occurred on line.*|Failed Expression:.*)$")


def one_line(messages: Sequence[str] | str, default: str = "") -> str:
    """The first informative line of RDKit log messages or an error text: timestamps,
    C++ stack traces and invariant banners dropped, so a reason fits on one line."""
    text = "\n".join(messages) if not isinstance(messages, str) else messages
    for line in text.splitlines():
        line = re.sub(r"^\[\d\d:\d\d:\d\d\]\s*", "", line.strip()).strip()
        if line and not _RDKIT_NOISE.match(line):
            return line[:300]
    return default


# -- geometry sanity ------------------------------------------------------------------------
#: Å; no molecule file convention needs more (PDB's fixed columns stop at 9999.999), and at
#: 1e3 float32 still resolves 1e-4 Å. Larger values are diverged or corrupted samples.
MAX_ABS_COORD = 1e3
#: Å; the shortest real bond (H2) is 0.74 Å. Closer pairs are coincident atoms.
MIN_PAIR_DISTANCE = 0.1


def geometry_problem(pos: np.ndarray) -> str | None:
    """Why coordinates ``pos`` [n, 3] (Å) are unusable, or None: NaN/inf, ``|x|`` above
    :data:`MAX_ABS_COORD`, or two atoms closer than :data:`MIN_PAIR_DISTANCE` (KD-tree,
    O(n log n))."""
    pos = np.asarray(pos, np.float64).reshape(-1, 3)
    if not np.isfinite(pos).all():
        return "coordinates contain NaN or inf"
    if len(pos) and np.abs(pos).max() > MAX_ABS_COORD:
        atom = int(np.abs(pos).max(1).argmax())
        return (f"atom {atom} has a coordinate of {np.abs(pos[atom]).max():.3g} Å "
                f"(limit {MAX_ABS_COORD:g} Å)")
    if len(pos) > 1:
        from scipy.spatial import cKDTree

        pairs = cKDTree(pos).query_pairs(MIN_PAIR_DISTANCE, output_type="ndarray")
        if len(pairs):
            i, j = (int(v) for v in pairs[np.lexsort(pairs.T[::-1])][0])
            d = float(np.linalg.norm(pos[i] - pos[j]))
            return (f"atoms {i} and {j} are {d:.3g} Å apart (coincident; minimum "
                    f"{MIN_PAIR_DISTANCE:g} Å)")
    return None


# -- record <-> Mol -------------------------------------------------------------------------
def mol_from_arrays(numbers: Sequence[int], pos: np.ndarray | None = None,
                    bonds: np.ndarray | None = None, charges: Sequence[int] | None = None,
                    sanitize: bool = False) -> Chem.Mol:
    """Build an RDKit molecule with explicit atoms, optional bonds ``[m, 3]`` (i, j, order)
    and an optional 3D conformer (``pos`` [n, 3] Å). No implicit hydrogens are added when
    ``sanitize`` is False."""
    mol = Chem.RWMol()
    for k, z in enumerate(numbers):
        atom = Chem.Atom(int(z))
        if charges is not None and charges[k]:
            atom.SetFormalCharge(int(charges[k]))
        atom.SetNoImplicit(not sanitize)
        mol.AddAtom(atom)
    if bonds is not None:
        for i, j, order in np.asarray(bonds, dtype=np.int64).reshape(-1, 3):
            mol.AddBond(int(i), int(j), BOND_TYPES[int(order)])
    if pos is not None:
        conf = Chem.Conformer(len(numbers))
        for k, (x, y, z) in enumerate(np.asarray(pos, dtype=np.float64)):
            conf.SetAtomPosition(k, Point3D(x, y, z))
        conf.Set3D(True)
        mol.AddConformer(conf, assignId=True)
    mol = mol.GetMol()
    if sanitize:
        Chem.SanitizeMol(mol)
    else:
        mol.UpdatePropertyCache(strict=False)
    return mol


def record_to_mol(record: MolRecord, with_bonds: bool = True) -> Chem.Mol:
    """RDKit molecule (explicit H, kekulised bonds, formal charges, 3D conformer)."""
    mol = mol_from_arrays(record.numbers, record.pos, record.bonds if with_bonds else None,
                          record.charges)
    if record.name:
        mol.SetProp("_Name", record.name)
    return mol


def bonds_of(mol: Chem.Mol) -> np.ndarray:
    """[m, 3] (i, j, order) with i < j from a molecule, kekulising aromatic bonds."""
    if any(b.GetBondType() == Chem.BondType.AROMATIC for b in mol.GetBonds()):
        mol = Chem.Mol(mol)
        Chem.Kekulize(mol, clearAromaticFlags=True)
    rows = []
    for bond in mol.GetBonds():
        order = BOND_ORDERS.get(bond.GetBondType())
        if order is None:
            raise RecordError(f"unsupported bond type {bond.GetBondType()} between atoms "
                              f"{bond.GetBeginAtomIdx()} and {bond.GetEndAtomIdx()}")
        i, j = sorted((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
        rows.append((i, j, order))
    return np.asarray(rows, np.int64).reshape(-1, 3)


def mol_to_record(mol: Chem.Mol, name: str = "", smiles: str = "",
                  props: np.ndarray | None = None) -> MolRecord:
    """Record from a molecule with a conformer; hydrogens must be explicit atoms."""
    if mol.GetNumConformers() == 0:
        raise RecordError("molecule has no conformer (no coordinates)")
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.int64)
    pos = mol.GetConformer().GetPositions().astype(np.float32)
    charges = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], np.int64)
    return MolRecord(numbers=numbers, pos=pos, bonds=bonds_of(mol), charges=charges,
                     smiles=smiles, props=np.zeros(0, np.float32) if props is None else props,
                     name=name or (mol.GetProp("_Name") if mol.HasProp("_Name") else ""))


def validate_record(record: MolRecord, elements: Sequence[str] | None = None,
                    check_geometry: bool = True) -> None:
    """Raise :class:`RecordError` for empty molecules, unknown elements, non-finite
    coordinates and (``check_geometry``) the :func:`geometry_problem` cases."""
    if record.n_atoms == 0:
        raise RecordError("molecule has no atoms")
    if (record.numbers <= 0).any() or (record.numbers >= len(PERIODIC_TABLE)).any():
        raise RecordError("dummy or unknown atom (atomic number "
                          f"{int(record.numbers[(record.numbers <= 0) | (record.numbers >= len(PERIODIC_TABLE))][0])})")
    if elements is not None:
        unknown = sorted({PERIODIC_TABLE[z] for z in record.numbers} - set(elements))
        if unknown:
            raise RecordError(f"element(s) {unknown} not in the vocabulary {list(elements)}")
    if not np.isfinite(record.pos).all():
        raise RecordError("coordinates contain NaN or inf")
    problem = geometry_problem(record.pos) if check_geometry else None
    if problem:
        raise RecordError(problem)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence C++ writes to fd 2 (RDKit's bond perception prints '!!! Warning !!!' lines for
    short contacts straight to stderr, bypassing its logger) for the duration of the block."""
    import os
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): leave it alone
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# -- bond perception ------------------------------------------------------------------------
def perceive_bonds(numbers: Sequence[int], pos: np.ndarray, charge: int = 0) -> Chem.Mol:
    """Bonds (orders and formal charges) from coordinates with RDKit's ``DetermineBonds``;
    retried with ``useHueckel=True`` when the default connectivity fails (strained cages).

    Raises :class:`RecordError` when neither works, and before calling RDKit when
    :func:`geometry_problem` finds the coordinates unusable (coincident atoms can crash it).
    """
    problem = geometry_problem(pos)
    if problem:
        raise RecordError(f"bond perception refused: {problem}")
    base = mol_from_arrays(numbers, pos)
    errors = []
    for hueckel in (False, True):
        mol = Chem.Mol(base)
        try:
            with _quiet_stderr():
                rdDetermineBonds.DetermineBonds(mol, charge=charge, useHueckel=hueckel)
            return mol
        except (ValueError, RuntimeError) as err:
            errors.append(one_line(str(err), type(err).__name__))
    raise RecordError(f"bond perception failed ({'; '.join(errors)})")


# -- SMILES ---------------------------------------------------------------------------------
def canonical_smiles(mol: Chem.Mol, stereo: bool = False, remove_hs: bool = True) -> str | None:
    """Canonical SMILES of a sanitisable molecule, or None. ``stereo=False`` drops
    stereochemistry (the comparison used for reconstruction and novelty)."""
    try:
        m = Chem.Mol(mol)
        Chem.SanitizeMol(m)
        if stereo and m.GetNumConformers():
            Chem.AssignStereochemistryFrom3D(m)
        elif not stereo:
            # else RemoveHs keeps hydrogens that define double-bond stereo ([H]N=C...)
            Chem.RemoveStereochemistry(m)
        if remove_hs:
            m = Chem.RemoveHs(m, sanitize=False)
        return Chem.MolToSmiles(m, isomericSmiles=stereo)
    except Exception:  # RDKit raises several exception types for chemistry errors
        return None


def smiles_canonical(smiles: str, stereo: bool = False) -> str | None:
    """Canonical form of a SMILES string, or None if RDKit cannot parse it."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    return Chem.MolToSmiles(mol, isomericSmiles=stereo)


# -- batches --------------------------------------------------------------------------------
def batch_to_mols(batch: MolBatch, bond_source: str = "batch") -> list[Chem.Mol | None]:
    """RDKit molecules with conformers for every molecule of a batch.

    Args:
        bond_source: ``"batch"`` uses ``batch.bonds`` (error if absent), ``"perceive"`` runs
            :func:`perceive_bonds` (None where it fails), ``"none"`` adds no bonds.
    """
    if bond_source not in ("batch", "perceive", "none"):
        raise ValueError(f"bond_source must be batch, perceive or none, got {bond_source!r}")
    if bond_source == "batch" and batch.bonds is None:
        raise ValueError("bond_source='batch' but the batch carries no bonds")
    out: list[Chem.Mol | None] = []
    for record in batch.to_records():
        if bond_source == "perceive":
            try:
                mol = perceive_bonds(record.numbers, record.pos)
            except RecordError:
                mol = None
        else:
            mol = record_to_mol(record, with_bonds=bond_source == "batch")
        if mol is not None and record.name:
            mol.SetProp("_Name", record.name)
        out.append(mol)
    return out


def mols_to_batch(mols: Sequence[Chem.Mol], elements: Sequence[str]) -> MolBatch:
    return MolBatch.from_records([mol_to_record(m) for m in mols], elements)
