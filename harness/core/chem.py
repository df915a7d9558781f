"""Chemistry file formats: the only module that parses or writes them.

* SDF read/write, XYZ read/write, folders of SDF/XYZ files. ``.mol`` is read as a
  one-record SDF; a ``.gz`` of any of these is read through gzip (files and folders
  alike). A folder scan names every entry it does not read, with why. Every reader returns
  ``(records, skipped)``: a bad record or file costs exactly itself, reported as a
  :class:`SkippedRecord` (file, record index, one-line reason), and the rest is kept.
* SDF records are split as bytes: titles and SD properties may hold any bytes, the
  fixed-column connection table must be ASCII (RDKit cuts multi-byte characters apart).
* XYZ frames are ``count`` line, title line, ``count`` atom lines. A frame's body runs to
  the next line holding only an integer (the next count line); a body with more or fewer
  atom lines than announced costs that frame, and reading resumes at the next count line.

RDKit conversions, geometry checks, bond perception and SMILES live in
:mod:`harness.core.rdmol` and are re-exported here (``from harness.core.chem import ...``).
"""
from __future__ import annotations

import bisect
import gzip
import logging
import re
import zlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from rdkit import Chem

from harness.core.io import atomic_path
from harness.core.rdmol import (BOND_ORDERS, BOND_TYPES, MAX_ABS_COORD,  # noqa: F401 (re-exported)
                                MIN_PAIR_DISTANCE, RecordError, SkippedRecord, _quiet_stderr,
                                batch_to_mols, bonds_of, canonical_smiles, geometry_problem,
                                mol_from_arrays, mol_to_record, mols_to_batch, one_line,
                                perceive_bonds, rdkit_messages, record_to_mol, smiles_canonical,
                                validate_record)
from harness.core.types import PERIODIC_TABLE, MolRecord

__all__ = ["BOND_ORDERS", "BOND_TYPES", "MAX_ABS_COORD", "MIN_PAIR_DISTANCE", "RecordError",
           "SkippedRecord", "batch_to_mols", "bonds_of", "canonical_smiles", "geometry_problem",
           "mol_from_arrays", "mol_to_record", "mols_to_batch", "one_line", "perceive_bonds",
           "rdkit_messages", "record_to_mol", "smiles_canonical", "validate_record",
           "molecule_files", "molecule_format", "read_molecules", "read_sdf", "read_xyz",
           "records_to_xyz", "scan_folder", "write_sdf", "write_xyz"]

log = logging.getLogger(__name__)

#: file endings read as molecules -> format; each may also end in ``.gz``
MOLECULE_SUFFIXES = {".sdf": "sdf", ".mol": "sdf", ".xyz": "xyz"}
_READS = ".sdf, .mol, .xyz and their .gz"


def molecule_format(path: str | Path) -> str | None:
    """``"sdf"`` or ``"xyz"`` for a molecule file name (``.sdf``, ``.mol``, ``.xyz``, each
    optionally ``.gz``; any case), else None."""
    name = Path(path).name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    return next((fmt for suffix, fmt in MOLECULE_SUFFIXES.items() if name.endswith(suffix)), None)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in ``.gz``; a damaged gzip stream is
    an ``OSError`` naming the file."""
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise OSError(f"{path}: not a valid gzip file ({one_line(str(err), type(err).__name__)})") from None
    return data


# -- SDF ------------------------------------------------------------------------------------
def _sdf_blocks(data: bytes) -> Iterator[bytes]:
    """The records of an SDF file as bytes (split on ``$$$$`` lines; undecoded, so one bad
    byte can only spoil its own record)."""
    block: list[bytes] = []
    for line in data.splitlines(keepends=True):
        if line.strip() == b"$$$$":
            yield b"".join(block)
            block = []
        else:
            block.append(line)
    if b"".join(block).strip():
        yield b"".join(block)


def _sdf_props(block: str) -> dict[str, str]:
    return dict(re.findall(r"^>\s*<([^>]+)>[^\n]*\n([^\n]*)", block, flags=re.M))


def read_sdf(path: str | Path, elements: Sequence[str] | None = None,
             perceive_missing_bonds: bool = True, check_geometry: bool = True,
             ) -> tuple[list[tuple[MolRecord, dict[str, str]]], list[SkippedRecord]]:
    """Read every record of an SDF file.

    Returns ``(records, skipped)``: each good record with its SD properties, and each bad
    one with the file, record index (0-based) and a one-line reason: malformed block,
    non-ASCII bytes in the connection table, unknown element, NaN/inf, 2D-only, missing or
    (``check_geometry``) :func:`geometry_problem` coordinates, or bonds that cannot be
    perceived. Titles and SD properties may hold any bytes (decoded as UTF-8, bad bytes
    replaced). Records without bonds get perceived bonds when ``perceive_missing_bonds``.
    """
    path = Path(path)
    records, skipped = [], []
    for index, block in enumerate(_sdf_blocks(_read_bytes(path))):
        try:
            text = block.decode("utf-8", errors="replace")
            record = _parse_mol_block(block, index, elements, perceive_missing_bonds,
                                      check_geometry)
            records.append((record, _sdf_props(text)))
        except RecordError as err:
            skipped.append(SkippedRecord(str(path), index, str(err)))
    return records, skipped


def _ctab_text(block: bytes) -> tuple[str, str]:
    """(title, mol block for RDKit). The connection table (line 4 to ``M  END``) is
    fixed-column ASCII; any other byte there is an error (RDKit would cut multi-byte
    characters apart and fail inside its logger). Header lines are made ASCII."""
    lines = block.split(b"\n")
    end = next((k for k, line in enumerate(lines) if line.startswith(b"M  END")), len(lines) - 1)
    for k in range(3, end + 1):
        bad = next((c for c in lines[k] if c > 127 or (c < 32 and c not in (9, 13))), None)
        if bad is not None:
            raise RecordError(f"byte 0x{bad:02x} in the connection table (line {k + 1} of the "
                              "record; it must be plain ASCII text)")
    header = [line.decode("ascii", errors="replace").replace("\ufffd", "?") for line in lines[:3]]
    title = lines[0].decode("utf-8", errors="replace").strip() if lines else ""
    body = [line.decode("ascii") for line in lines[3:end + 1]]
    return title, "\n".join(header + body) + "\n"


def _parse_mol_block(block: bytes, index: int, elements, perceive_missing_bonds,
                     check_geometry: bool = True) -> MolRecord:
    if not block.strip():
        raise RecordError("empty record")
    title, text = _ctab_text(block)
    atom_lines = "".join(text.splitlines(keepends=True)[3:]).split("M  END")[0]  # not the title
    if re.search(r"\b(nan|inf)\b", atom_lines, flags=re.I):
        raise RecordError("coordinates contain NaN or inf")
    try:
        with rdkit_messages() as messages, _quiet_stderr():
            mol = Chem.MolFromMolBlock(text, sanitize=False, removeHs=False, strictParsing=True)
    except Exception as err:  # RDKit raises from C++ for some malformed tables
        raise RecordError(f"malformed record: {one_line(str(err), type(err).__name__)}") from None
    if mol is None:
        raise RecordError(f"malformed record: {one_line(messages, 'RDKit could not parse it')}")
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
        raise RecordError(f"cannot read bonds: {one_line(str(err), type(err).__name__)}") from None
    validate_record(record, elements, check_geometry)
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
_COUNT_LINE = re.compile(r"^\s*[+-]?\d+\s*$")
_ATOM_LINE = re.compile(r"^\s*([A-Za-z]{1,3}\d*|\d{1,3})\s+\S+\s+\S+\s+\S+")


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


def _parse_atoms(body: Sequence[str], title: str, index: int) -> MolRecord:
    numbers, pos = [], []
    for line in body:
        parts = line.split()
        if len(parts) < 4:
            raise RecordError(f"malformed atom line {line.strip()[:60]!r}")
        sym = parts[0].capitalize()
        if sym.isdigit():
            sym = PERIODIC_TABLE[int(sym)] if 0 < int(sym) < len(PERIODIC_TABLE) else "?"
        if sym not in PERIODIC_TABLE[1:]:
            raise RecordError(f"unknown element {parts[0][:10]!r}")
        numbers.append(PERIODIC_TABLE.index(sym))
        try:
            pos.append([float(v) for v in parts[1:4]])
        except ValueError:
            raise RecordError(f"malformed coordinates in {line.strip()[:60]!r}") from None
    return MolRecord(numbers=numbers, pos=np.array(pos, np.float64), name=title or str(index))


def read_xyz(path: str | Path, elements: Sequence[str] | None = None, perceive: bool = True,
             check_geometry: bool = True) -> tuple[list[MolRecord], list[SkippedRecord]]:
    """Read a (multi-frame) XYZ file; bonds are perceived from coordinates when ``perceive``.
    Lines that belong to no frame (text before the first count line, or after a frame's
    atoms) are one skipped entry per run of lines; see the module doc for the resync rule."""
    path = Path(path)
    lines = _read_bytes(path).decode("utf-8", errors="replace").splitlines()
    starts = [k for k, line in enumerate(lines) if _COUNT_LINE.match(line)]
    records, skipped = [], []
    index = 0

    def skip(reason: str) -> None:
        nonlocal index
        skipped.append(SkippedRecord(str(path), index, reason))
        index += 1

    def junk(a: int, b: int) -> None:
        """Lines a..b-1 (0-based) belong to no frame: one skipped entry."""
        first_text = next(line for line in lines[a:b] if line.strip()).strip()[:40]
        where = f"line {a + 1}" if b - a == 1 else f"lines {a + 1}-{b}"
        skip(f"{where}: expected an atom count, got {first_text!r}")

    first = starts[0] if starts else len(lines)
    if any(line.strip() for line in lines[:first]):
        junk(0, first)
    k = 0
    while k < len(starts):
        start = starts[k]
        n = int(lines[start])
        where = f"frame at line {start + 1}"
        if n < 1:
            k += 1
            skip(f"{where}: atom count must be positive, got {n}")
            continue
        # the title line may itself be a bare integer: the body starts after it regardless
        k = bisect.bisect_right(starts, start + 1)
        nxt = starts[k] if k < len(starts) else len(lines)
        body = lines[start + 2:nxt]
        while body and not body[-1].strip():
            body.pop()
        title = lines[start + 1].strip() if start + 1 < len(lines) else ""
        if len(body) < n or (len(body) > n and _ATOM_LINE.match(body[n])):
            atoms = sum(1 for line in body if _ATOM_LINE.match(line))
            skip(f"{where}: {n} atoms announced, {atoms} atom lines follow")
            continue
        try:
            record = _parse_atoms(body[:n], title, index)
            validate_record(record, elements, check_geometry)
            if perceive and record.n_atoms > 1:
                record = mol_to_record(perceive_bonds(record.numbers, record.pos), name=record.name)
            records.append(record)
            index += 1
        except RecordError as err:
            skip(f"{where}: {err}")
            continue
        if any(line.strip() for line in body[n:]):  # e.g. a frame whose count line is garbage
            junk(start + 2 + n, nxt)
    return records, skipped


def scan_folder(path: str | Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``(files, ignored)`` of a folder: the molecule files (sorted; see
    :func:`molecule_format`) and every other entry with why it is not read (sub-folders are
    not searched)."""
    files, ignored = [], []
    for p in sorted(Path(path).iterdir()):
        if p.is_dir():
            ignored.append((p, "a folder (folders are not searched; give its path to read it)"))
        elif molecule_format(p) is None:
            ignored.append((p, f"not a molecule file (reads {_READS})"))
        else:
            files.append(p)
    return files, ignored


def _samples_below(path: Path) -> list[Path]:
    """``<path>/*/samples.sdf``: what a study directory given as a folder holds."""
    return sorted(p for p in path.glob("*/samples.sdf") if p.is_file())


def molecule_files(path: str | Path) -> list[Path]:
    """The file itself, or every molecule file of a folder (sorted; see :func:`scan_folder`).
    A folder without any is an error; when its sub-folders hold ``samples.sdf`` files (a
    study directory) the error lists them."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not path.is_dir():
        return [path]
    files, _ = scan_folder(path)
    if not files:
        below = _samples_below(path)
        if below:
            raise ValueError(f"{path}: no molecule file at the top of the folder; its sub-folders "
                             f"hold {', '.join(str(p) for p in below[:6])}: score one of them "
                             f"(e.g. l3dg eval {below[0]})")
        raise ValueError(f"{path}: no molecule files in the folder (reads {_READS})")
    return files


def read_molecules(path: str | Path, elements: Sequence[str] | None = None, perceive: bool = True,
                   check_geometry: bool = True, report_ignored: bool = True,
                   ) -> tuple[list[tuple[MolRecord, dict[str, str]]], list[SkippedRecord]]:
    """Records (with their SD properties; {} for XYZ) from an SDF or XYZ file (``.mol`` and
    ``.gz`` too), or from every such file of a folder, and the skipped records with file,
    index and reason. Missing bonds are perceived from coordinates when ``perceive``;
    ``check_geometry`` skips records with :func:`~harness.core.chem.geometry_problem`
    coordinates (scoring passes False and decides itself). An unreadable file is one skipped
    entry; a folder entry that is not read is logged as a warning naming it and why
    (``report_ignored``; callers that report it themselves pass False)."""
    records, skipped = [], []
    if report_ignored and Path(path).is_dir():
        for entry, why in scan_folder(path)[1]:
            log.warning("%s: not read: %s", entry, why)
    for f in molecule_files(path):
        fmt = molecule_format(f)
        if fmt is None:
            raise ValueError(f"{f}: unsupported format {''.join(f.suffixes[-2:]) or 'no suffix'!r} "
                             f"(reads {_READS})")
        try:
            if f.is_dir():
                raise IsADirectoryError(f"{f} is a directory")
            if f.stat().st_size == 0:
                skipped.append(SkippedRecord(str(f), 0, "empty file"))
            elif fmt == "xyz":
                recs, skip = read_xyz(f, elements, perceive=perceive, check_geometry=check_geometry)
                records += [(r, {}) for r in recs]
                skipped += skip
            else:
                pairs, skip = read_sdf(f, elements, perceive_missing_bonds=perceive,
                                       check_geometry=check_geometry)
                records += pairs
                skipped += skip
        except OSError as err:
            reason = str(err).removeprefix(f"{f}: ") if err.strerror is None else err.strerror
            skipped.append(SkippedRecord(str(f), 0, f"cannot read the file ({reason})"))
    return records, skipped
