"""GEOM-Drugs for users who have the files (nothing is downloaded). Three layouts:

* ``edm`` -- EDM's processed arrays (``build_geom_dataset.py``): ``geom_drugs_{K}.npy``, a
  float ``[atoms, 5]`` array whose rows are ``[conformer_id, atomic_number, x, y, z]`` (Å;
  consecutive rows with one id form one conformer), and ``geom_permutation.npy``, the saved
  permutation of the conformer list that fixes the split: the first 10 % (``int(n * 0.1)``)
  is ``val``, the next 10 % ``test``, the rest ``train`` -- EDM splits **by conformer**, so
  conformers of one molecule land in several splits (a known leak, kept for comparability).
  ``K`` (EDM's ``--conformations``, the K lowest-energy conformers per molecule; 30 by
  default) picks the file; the arrays do not record which conformers belong to which
  molecule, so fewer than K per molecule means rebuilding them with EDM's script. With
  ``remove_h`` the ``geom_drugs_no_h_{K}.npy`` file is used when present, else H atoms are
  dropped here. ``filter_size`` keeps conformers of at most that many atoms before the
  permutation is applied (EDM's ``filter_size``). No bonds: bond-based metrics perceive
  them from coordinates.
* ``midi`` -- MiDi's (also SemlaFlow's input) per-split pickles ``{train,val,test}_data.pickle``:
  a list of ``(smiles, [rdkit Mol, ...])``, each Mol holding one or more conformers, in the
  order stored (lowest energy first in MiDi's files). ``conformers`` per molecule are kept
  (MiDi: 5). Split **by molecule** (one file per split). Read with a restricted unpickler
  that reconstructs only ``rdkit.Chem.rdchem.Mol`` / ``RWMol`` (plus ``_codecs.encode``,
  which protocol-2 pickles use for bytes) and builtin containers; anything else is refused
  with :class:`UnsafePickleError` naming the file -- a planted pickle can never run code.
* ``sdf`` -- per-split SDF files ``{train,val,test}.sdf`` (or ``*_data.sdf``), one record per
  conformer; consecutive records with the same ``smiles`` SD field (else the same title)
  are one molecule, of which the first ``conformers`` are kept.

Bonds of the ``midi`` / ``sdf`` layouts come from the files (kekulised; formal charges
kept). Each record's ``props`` holds ``molecule_id`` (the molecule it is a conformer of,
numbered across splits), so conformers can be grouped. Conversions of pickles and SDF files
are cached (``DatasetCache``, keyed by file names, sizes, mtimes and options).

Level of theory: GEOM's conformers are CREST (GFN2-xTB metadynamics) ensembles optimised at
GFN2-xTB (Axelrod & Gómez-Bombarelli 2022).
"""
from __future__ import annotations

import importlib
import logging
import pickle
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.core.data.base import (DatasetCache, MolDataset, Molecules, default_cache_dir,
                                    fingerprint_of, take_subset)
from harness.core.registry import DATASETS
from harness.core.types import PERIODIC_TABLE, MolRecord

log = logging.getLogger(__name__)

#: EDM's GEOM-Drugs atom encoder order (also the element vocabulary of these datasets).
GEOM_ELEMENTS = ("H", "B", "C", "N", "O", "F", "Al", "Si", "P", "S", "Cl", "As", "Br", "I", "Hg", "Bi")
SPLITS = ("train", "val", "test")
EDM_VAL_FRACTION = EDM_TEST_FRACTION = 0.1
DEFAULT_CONFORMERS = {"edm": 30, "midi": 5, "sdf": 5}
#: bump when the conversion of pickles / SDF changes (invalidates caches)
CONVERT_VERSION = 1


class UnsafePickleError(ValueError):
    """A pickle asked for something other than RDKit molecules and builtin containers."""


class _RDKitOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only RDKit molecule classes (see the module doc)."""

    ALLOWED = frozenset({("rdkit.Chem.rdchem", "Mol"), ("rdkit.Chem.rdchem", "RWMol"),
                         ("_codecs", "encode")})

    def __init__(self, fh, path: Path):
        super().__init__(fh)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return getattr(importlib.import_module(module), name)
        raise UnsafePickleError(
            f"{self.path}: refusing to unpickle {module}.{name}; only RDKit molecules "
            "(rdkit.Chem.rdchem.Mol) in lists/tuples/dicts are accepted")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.path}: refusing a persistent-id reference in the pickle")


def read_rdkit_pickle(path: str | Path) -> list[tuple[str, list[Any]]]:
    """``[(smiles, [Mol, ...]), ...]`` from a pickle of RDKit molecules, restricted as the
    module doc says. Accepted shapes: MiDi's list of ``(smiles, [Mol])`` pairs, a dict
    ``smiles -> Mol or [Mol]``, or a plain list of Mol (SMILES then from the molecule)."""
    from rdkit import Chem

    path = Path(path)
    with open(path, "rb") as fh:
        try:
            data = _RDKitOnlyUnpickler(fh, path).load()
        except UnsafePickleError:
            raise
        except Exception as err:
            raise ValueError(f"{path}: not a readable pickle of RDKit molecules "
                             f"({type(err).__name__}: {err})") from None
    items = list(data.items()) if isinstance(data, dict) else data
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"{path}: expected a list of (smiles, [Mol]) pairs, got {type(data).__name__}")
    out = []
    for k, item in enumerate(items):
        if isinstance(item, Chem.Mol):
            out.append((Chem.MolToSmiles(Chem.RemoveHs(item, sanitize=False)), [item]))
            continue
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError(f"{path}: entry {k} is not a (smiles, [Mol]) pair ({type(item).__name__})")
        mols = [item[1]] if isinstance(item[1], Chem.Mol) else item[1]
        if not isinstance(mols, (list, tuple)) or not all(isinstance(m, Chem.Mol) for m in mols):
            raise ValueError(f"{path}: entry {k} ({item[0]!r}) holds something other than RDKit molecules")
        out.append((item[0], list(mols)))
    return out


def _mol_conformers(mol: Any, smiles: str, name: str, limit: int) -> list[MolRecord]:
    """One record per conformer of ``mol`` (at most ``limit``)."""
    from harness.core.chem import bonds_of

    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.int64)
    charges = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], np.int64)
    bonds = bonds_of(mol)
    return [MolRecord(numbers=numbers, pos=conf.GetPositions(), bonds=bonds, charges=charges,
                      smiles=smiles, name=f"{name}/{c}")
            for c, conf in enumerate(list(mol.GetConformers())[:limit])]


# -- layouts ------------------------------------------------------------------------------
def detect_format(root: Path) -> str:
    if root.is_file():
        if root.suffix == ".npy":
            return "edm"
        raise ValueError(f"geom: {root} is a file; give the folder holding the split files "
                         "(or a geom_drugs_*.npy file)")
    names = {p.name for p in root.iterdir()}
    if any(n.startswith("geom_drugs_") and n.endswith(".npy") for n in names):
        return "edm"
    if any(f"{s}_data.pickle" in names for s in SPLITS):
        return "midi"
    if any(f"{s}.sdf" in names or f"{s}_data.sdf" in names for s in SPLITS):
        return "sdf"
    raise FileNotFoundError(f"geom: {root} holds none of geom_drugs_*.npy (EDM), "
                            "{train,val,test}_data.pickle (MiDi) or {train,val,test}.sdf")


def read_edm_arrays(path: Path) -> Molecules:
    """Conformers from an EDM ``geom_drugs_*.npy`` file (vectorised; no bonds)."""
    data = np.load(path, allow_pickle=False)
    if data.ndim != 2 or data.shape[1] != 5:
        raise ValueError(f"{path}: expected rows [conformer_id, atomic_number, x, y, z] "
                         f"(shape [atoms, 5]), got shape {list(data.shape)}")
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: contains NaN or inf")
    ids, z = data[:, 0], data[:, 1]
    if (ids != np.round(ids)).any() or (np.diff(ids) < 0).any():
        raise ValueError(f"{path}: conformer ids (column 0) must be integers in non-decreasing order")
    if (z != np.round(z)).any() or (z < 1).any() or (z >= len(PERIODIC_TABLE)).any():
        raise ValueError(f"{path}: atomic numbers (column 1) must be integers 1..{len(PERIODIC_TABLE) - 1}")
    starts = np.flatnonzero(np.diff(ids) != 0) + 1
    counts = np.diff(np.concatenate([[0], starts, [len(data)]])).astype(np.int64)
    m, a = len(counts), len(data)
    return Molecules(numbers=z.astype(np.int64), pos=data[:, 2:5].astype(np.float32),
                     charges=np.zeros(a, np.int64),
                     atom_ptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                     bonds=np.zeros((0, 3), np.int64), bond_ptr=np.zeros(m + 1, np.int64),
                     props=np.zeros((m, 0), np.float32), smiles=np.full(m, "", dtype=str),
                     names=np.array([f"conformer_{k}" for k in range(m)], dtype=str),
                     bond_ok=np.zeros(m, bool))


def _edm_files(root: Path, conformers: int, remove_h: bool) -> tuple[Path, bool, Path]:
    """(array file, whether H still has to be dropped, permutation file)."""
    if root.is_file():
        folder, array = root.parent, root
        return array, remove_h and "no_h" not in array.name, folder / "geom_permutation.npy"
    folder = root
    no_h = folder / f"geom_drugs_no_h_{conformers}.npy"
    full = folder / f"geom_drugs_{conformers}.npy"
    if remove_h and no_h.exists():
        array, drop = no_h, False
    elif full.exists():
        array, drop = full, remove_h
    else:
        present = sorted(p.name for p in folder.glob("geom_drugs_*.npy"))
        raise FileNotFoundError(f"geom: {full} not found (conformers={conformers}); "
                                f"arrays present: {present or 'none'}")
    return array, drop, folder / "geom_permutation.npy"


def load_edm(root: Path, conformers: int, remove_h: bool, filter_size: int | None
             ) -> tuple[Molecules, dict[str, np.ndarray], dict[str, Any]]:
    array, drop_h, perm_file = _edm_files(root, conformers, remove_h)
    packed = read_edm_arrays(array)
    n_read = len(packed)
    if drop_h:
        packed = packed.without_hydrogens()
    if filter_size is not None:
        packed = packed.take(np.flatnonzero(packed.counts <= int(filter_size)))
    if not perm_file.exists():
        raise FileNotFoundError(f"geom: {perm_file} not found; EDM's split is that saved permutation")
    perm = np.load(perm_file, allow_pickle=False).astype(np.int64).reshape(-1)
    n = len(packed)
    if len(perm) != n or not np.array_equal(np.sort(perm), np.arange(n)):
        raise ValueError(f"{perm_file}: not a permutation of the {n} conformers of {array.name}"
                         f"{' after filter_size=' + str(filter_size) if filter_size else ''} "
                         f"(length {len(perm)})")
    val_end = int(n * EDM_VAL_FRACTION)
    test_end = val_end + int(n * EDM_TEST_FRACTION)
    splits = {"train": perm[test_end:], "val": perm[:val_end], "test": perm[val_end:test_end]}
    info = {"format": "edm", "files": [str(array), str(perm_file)], "conformers_read": n_read,
            "split": "EDM: saved permutation, by conformer (val 10 %, test 10 %, rest train)",
            "note": "EDM arrays carry no bonds, SMILES or conformer-to-molecule map"}
    return packed, splits, info


def _split_files(root: Path, layout: str) -> dict[str, Path]:
    out = {}
    for split in SPLITS:
        names = [f"{split}_data.pickle"] if layout == "midi" else [f"{split}.sdf", f"{split}_data.sdf"]
        for name in names:
            if (root / name).exists():
                out[split] = root / name
                break
    if not out:
        raise FileNotFoundError(f"geom: no {layout} split files in {root}")
    return out


def convert_split_files(files: dict[str, Path], layout: str, conformers: int, progress: bool
                        ) -> tuple[Molecules, dict[str, list[int]], dict[str, Any]]:
    """Records of every split file (contiguous per split), split ranges, statistics."""
    from tqdm.auto import tqdm

    from harness.core.chem import RecordError, read_sdf

    records: list[MolRecord] = []
    molecule_ids: list[int] = []
    ranges: dict[str, list[int]] = {}
    skipped: list[dict[str, Any]] = []
    n_mol = 0
    for split, path in files.items():
        start = len(records)
        if layout == "midi":
            pairs = read_rdkit_pickle(path)
            for k, (smiles, mols) in enumerate(tqdm(pairs, desc=f"geom: {path.name}", unit="mol",
                                                    disable=not progress)):
                confs: list[MolRecord] = []
                for j, mol in enumerate(mols):
                    if len(confs) >= conformers:
                        break
                    try:
                        confs += _mol_conformers(mol, smiles, f"{split}/{k}/{j}", conformers - len(confs))
                    except (RecordError, ValueError, RuntimeError) as err:
                        skipped.append({"file": str(path), "record": k, "reason": str(err)})
                if confs:
                    records += confs
                    molecule_ids += [n_mol] * len(confs)
                    n_mol += 1
        else:
            pairs, bad = read_sdf(path, perceive_missing_bonds=False)
            skipped += [{"file": s.source, "record": s.index, "reason": s.reason} for s in bad]
            previous, kept = None, 0
            for record, props in pairs:
                key = props.get("smiles") or record.name
                if key != previous:
                    previous, kept = key, 0
                    n_mol += 1
                if kept < conformers:
                    record.smiles = props.get("smiles", "")
                    records.append(record)
                    molecule_ids.append(n_mol - 1)
                    kept += 1
        ranges[split] = [start, len(records)]
    if not records:
        raise ValueError(f"geom: no usable conformer in {[str(p) for p in files.values()]}")
    for r, mid in zip(records, molecule_ids):
        r.props = np.array([mid], np.float32)
    packed = Molecules.from_records(records)
    return packed, ranges, {"molecules": n_mol, "conformers": len(records), "skipped": skipped[:200],
                            "skipped_count": len(skipped)}


def _file_signature(files: Sequence[Path]) -> list:
    return [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files]


@DATASETS.register("geom")
def load_geom(path: str | Path, format: str = "auto", conformers: int | None = None,
              remove_h: bool = False, subset: int | None = None, filter_size: int | None = None,
              cache_dir: str | Path | None = None, rebuild: bool = False,
              progress: bool = True) -> MolDataset:
    """GEOM-Drugs from local files (see the module doc for the layouts).

    Args:
        path: the folder holding the files (or an EDM ``geom_drugs_*.npy`` file).
        format: ``auto`` (detect), ``edm``, ``midi`` or ``sdf``.
        conformers: conformers per molecule (default: EDM 30, MiDi 5); for ``edm`` it
            selects ``geom_drugs_{conformers}.npy``.
        remove_h: drop hydrogens.
        subset: keep N conformers (each split in proportion, its first indices).
        filter_size: ``edm`` only: keep conformers with at most this many atoms.
        cache_dir / rebuild: conversion cache of the pickle / SDF layouts.
    """
    t0 = time.perf_counter()
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"geom: {root} does not exist")
    layout = detect_format(root) if format == "auto" else format
    if layout not in DEFAULT_CONFORMERS:
        raise ValueError(f"geom: format must be auto, edm, midi or sdf; got {format!r}")
    k = int(conformers) if conformers is not None else DEFAULT_CONFORMERS[layout]
    if k < 1:
        raise ValueError(f"geom: conformers must be >= 1, got {k}")
    from_cache = False
    if layout == "edm":
        packed, splits, info = load_edm(root, k, remove_h, filter_size)
        fingerprint = fingerprint_of(["geom-edm", _file_signature([Path(f) for f in info["files"]]),
                                      k, remove_h, filter_size])
        cache_path = (Path(cache_dir) if cache_dir else default_cache_dir()) / "datasets" / f"geom-edm-{fingerprint}"
    else:
        if filter_size is not None:
            raise ValueError("geom: filter_size applies to the edm layout only")
        files = _split_files(root, layout)
        fingerprint = fingerprint_of(["geom", layout, CONVERT_VERSION,
                                      _file_signature(list(files.values())), k])
        cache = DatasetCache(Path(cache_dir) if cache_dir else default_cache_dir(), f"geom-{layout}",
                             fingerprint)
        hit = None if rebuild else cache.load()
        if hit is None:
            packed, ranges, stats = convert_split_files(files, layout, k, progress)
            meta = cache.store(packed, {"ranges": ranges, "stats": stats})
        else:
            packed, meta = hit
            from_cache = True
        splits = {s: np.arange(a, b) for s, (a, b) in meta["ranges"].items()}
        info = {"format": layout, "files": [str(p) for p in files.values()],
                "split": "per-split files (by molecule)", "cache": str(cache.dir), **meta["stats"]}
        cache_path = cache.dir
        if remove_h:
            packed = packed.without_hydrogens()
    name = f"geom[{layout},{k}conf]"
    if subset is not None:
        packed, splits = take_subset(packed, splits, int(subset))
        name += f"[subset={subset}]"
    if remove_h:
        name += "[noH]"
    present = set(np.unique(packed.numbers).tolist())
    unknown = sorted(PERIODIC_TABLE[z] for z in present if PERIODIC_TABLE[z] not in GEOM_ELEMENTS)
    elements = tuple(e for e in GEOM_ELEMENTS if not remove_h or e != "H") + tuple(unknown)
    has_ids = packed.props.shape[1] == 1
    return MolDataset(
        name=name, packed=packed, elements=elements,
        prop_names=("molecule_id",) if has_ids else (), prop_units=("",) if has_ids else (),
        splits=splits, fingerprint=fingerprint_of([fingerprint, remove_h, subset]),
        cache_dir=cache_path,
        info={**info, "conformers_per_molecule": k, "from_cache": from_cache,
              "seconds_load": round(time.perf_counter() - t0, 2)},
    )
