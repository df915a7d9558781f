"""Chemistry I/O: the only module that parses or writes chemistry formats.

* :class:`MolRecord` / :class:`MolBatch` <-> RDKit ``Mol`` with a 3D conformer.
* SDF and XYZ read/write (reads report bad records with file, record index and reason).
* Bond perception from coordinates (``rdDetermineBonds``, retried with Hückel).
* Canonical SMILES (stereo-free and stereo variants).
"""
from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import rdDetermineBonds
from rdkit.Geometry import Point3D

from harness.core.io import atomic_path
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


def validate_record(record: MolRecord, elements: Sequence[str] | None = None) -> None:
    """Raise :class:`RecordError` for empty molecules, unknown elements or non-finite
    coordinates."""
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

    Raises :class:`RecordError` when neither works.
    """
    base = mol_from_arrays(numbers, pos)
    errors = []
    for hueckel in (False, True):
        mol = Chem.Mol(base)
        try:
            with _quiet_stderr():
                rdDetermineBonds.DetermineBonds(mol, charge=charge, useHueckel=hueckel)
            return mol
        except (ValueError, RuntimeError) as err:
            errors.append(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
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


# -- SDF ------------------------------------------------------------------------------------
def _sdf_blocks(text: str) -> Iterator[str]:
    block: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.strip() == "$$$$":
            yield "".join(block)
            block = []
        else:
            block.append(line)
    if "".join(block).strip():
        yield "".join(block)


def _sdf_props(block: str) -> dict[str, str]:
    return dict(re.findall(r"^>\s*<([^>]+)>[^\n]*\n([^\n]*)", block, flags=re.M))


def read_sdf(path: str | Path, elements: Sequence[str] | None = None,
             perceive_missing_bonds: bool = True,
             ) -> tuple[list[tuple[MolRecord, dict[str, str]]], list[SkippedRecord]]:
    """Read every record of an SDF file.

    Returns ``(records, skipped)``: each good record with its SD properties, and each bad
    one with the file, record index (0-based) and reason: malformed block, unknown element,
    NaN/inf coordinates, 2D-only or missing coordinates, or bonds that cannot be perceived.
    Records without bonds (e.g. from a bond-free generator) get perceived bonds when
    ``perceive_missing_bonds``.
    """
    path = Path(path)
    text = path.read_text(errors="replace")
    records, skipped = [], []
    for index, block in enumerate(_sdf_blocks(text)):
        try:
            records.append((_parse_mol_block(block, index, elements, perceive_missing_bonds),
                            _sdf_props(block)))
        except RecordError as err:
            skipped.append(SkippedRecord(str(path), index, str(err)))
    return records, skipped


def _parse_mol_block(block: str, index: int, elements, perceive_missing_bonds) -> MolRecord:
    if not block.strip():
        raise RecordError("empty record")
    atom_lines = "".join(block.splitlines(keepends=True)[3:]).split("M  END")[0]  # not the title
    if re.search(r"\b(nan|inf)\b", atom_lines, flags=re.I):
        raise RecordError("coordinates contain NaN or inf")
    with rdkit_messages() as messages:
        mol = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False, strictParsing=True)
    if mol is None:
        detail = "; ".join(m for m in messages if m) or "RDKit could not parse the mol block"
        raise RecordError(f"malformed record: {detail}")
    title = block.splitlines()[0].strip() if block.splitlines() else ""
    if mol.GetNumConformers() == 0:
        raise RecordError("record has no coordinates")
    pos = mol.GetConformer().GetPositions()
    if mol.GetNumAtoms() > 1 and not mol.GetConformer().Is3D() and np.allclose(pos[:, 2], 0):
        raise RecordError("record has 2D coordinates only (z = 0 for every atom)")
    try:
        mol.UpdatePropertyCache(strict=False)
        record = mol_to_record(mol, name=title or str(index))
    except RecordError:
        raise
    except Exception as err:  # RDKit chemistry errors (e.g. kekulisation)
        raise RecordError(f"cannot read bonds: {err}") from None
    validate_record(record, elements)
    if len(record.bonds) == 0 and record.n_atoms > 1 and perceive_missing_bonds:
        perceived = perceive_bonds(record.numbers, record.pos)
        record = mol_to_record(perceived, name=record.name)
    return record


def write_sdf(mols: Sequence[Chem.Mol | None], path: str | Path,
              props: Sequence[dict[str, object]] | None = None) -> Path:
    """Write molecules atomically; a None entry is written as an empty record with a
    ``l3dg_invalid`` property so record indices stay aligned with the samples."""
    path = Path(path)
    with atomic_path(path, ".sdf") as tmp:
        writer = Chem.SDWriter(str(tmp))
        writer.SetKekulize(False)
        for k, mol in enumerate(mols):
            m = Chem.Mol(mol) if mol is not None else Chem.Mol()
            if mol is None:
                m.SetProp("l3dg_invalid", "1")
            for key, value in (props[k] if props else {}).items():
                m.SetProp(str(key), str(value))
            writer.write(m)
        writer.close()
    return path


# -- XYZ ------------------------------------------------------------------------------------
def records_to_xyz(records: Sequence[MolRecord]) -> str:
    lines = []
    for r in records:
        lines.append(str(r.n_atoms))
        lines.append(r.name)
        for sym, (x, y, z) in zip(r.symbols, r.pos):
            lines.append(f"{sym} {x:.6f} {y:.6f} {z:.6f}")  # RDKit rejects 1e-5 notation
    return "\n".join(lines) + "\n"


def write_xyz(records: Sequence[MolRecord], path: str | Path) -> Path:
    with atomic_path(path, ".xyz") as tmp:
        tmp.write_text(records_to_xyz(records))
    return Path(path)


def read_xyz(path: str | Path, elements: Sequence[str] | None = None,
             perceive: bool = True) -> tuple[list[MolRecord], list[SkippedRecord]]:
    """Read a (multi-frame) XYZ file; bonds are perceived from coordinates when ``perceive``."""
    path = Path(path)
    lines = path.read_text(errors="replace").splitlines()
    records, skipped = [], []
    k = index = 0
    while k < len(lines):
        if not lines[k].strip():
            k += 1
            continue
        try:
            try:
                n = int(lines[k].split()[0])
            except ValueError:
                k += 1  # resynchronise on the next line
                raise RecordError(f"line {k}: expected an atom count, got {lines[k - 1]!r}") from None
            if n < 1:
                k += 1
                raise RecordError(f"line {k}: atom count must be positive, got {n}")
            body = lines[k + 2: k + 2 + n]
            title = lines[k + 1].strip() if k + 1 < len(lines) else ""
            k += 2 + n
            if len(body) < n:
                raise RecordError(f"truncated frame: {n} atoms announced, {len(body)} lines")
            numbers, pos = [], []
            for line in body:
                parts = line.split()
                if len(parts) < 4:
                    raise RecordError(f"malformed atom line {line!r}")
                sym = parts[0].capitalize()
                if sym.isdigit():
                    sym = PERIODIC_TABLE[int(sym)] if int(sym) < len(PERIODIC_TABLE) else "?"
                if sym not in PERIODIC_TABLE[1:]:
                    raise RecordError(f"unknown element {parts[0]!r}")
                numbers.append(PERIODIC_TABLE.index(sym))
                try:
                    pos.append([float(v) for v in parts[1:4]])
                except ValueError:
                    raise RecordError(f"malformed coordinates in {line!r}") from None
            record = MolRecord(numbers=numbers, pos=np.array(pos), name=title or str(index))
            validate_record(record, elements)
            if perceive and record.n_atoms > 1:
                record = mol_to_record(perceive_bonds(record.numbers, record.pos), name=record.name)
            records.append(record)
        except RecordError as err:
            skipped.append(SkippedRecord(str(path), index, str(err)))
        index += 1
    return records, skipped


def molecule_files(path: str | Path) -> list[Path]:
    """The file itself, or every .sdf/.xyz file of a folder (sorted)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".sdf", ".xyz")) \
        if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no .sdf or .xyz files in the folder")
    return files


def read_molecules(path: str | Path, elements: Sequence[str] | None = None, perceive: bool = True,
                   ) -> tuple[list[tuple[MolRecord, dict[str, str]]], list[SkippedRecord]]:
    """Records (with their SD properties; {} for XYZ) from an SDF or XYZ file, or from every
    such file of a folder, and the skipped records with file, index and reason. Missing bonds
    are perceived from coordinates when ``perceive``."""
    records, skipped = [], []
    for f in molecule_files(path):
        if f.stat().st_size == 0:
            skipped.append(SkippedRecord(str(f), 0, "empty file"))
        elif f.suffix.lower() == ".xyz":
            recs, skip = read_xyz(f, elements, perceive=perceive)
            records += [(r, {}) for r in recs]
            skipped += skip
        elif f.suffix.lower() == ".sdf":
            pairs, skip = read_sdf(f, elements, perceive_missing_bonds=perceive)
            records += pairs
            skipped += skip
        else:
            raise ValueError(f"{f}: unsupported format {f.suffix!r} (use .sdf or .xyz)")
    return records, skipped
