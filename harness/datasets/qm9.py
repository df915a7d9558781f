"""QM9 from the ``qm9pack`` package's CSV files (read directly; ``import qm9pack`` needs
``pkg_resources``, which current setuptools no longer ships).

All 130,831 molecules (the 3,054 "uncharacterized" ones are already excluded), DFT
(B3LYP/6-31G(2df,p)) coordinates in Å, 12 standard properties in their source units, and
bonds perceived from the coordinates with RDKit (``DetermineBonds``, Hückel retry).
Split: Cormorant/EDM procedure (seed-0 permutation; 100,000 / 17,748 / 13,083).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import time
from pathlib import Path

import numpy as np

from harness.core.data.base import (DatasetCache, MolDataset, Molecules, default_cache_dir,
                               deterministic_split, fingerprint_of, splits_checksum,
                               subset_splits, take_subset)
from harness.core.registry import DATASETS
from harness.core.types import ATOMIC_NUMBER

log = logging.getLogger(__name__)

ELEMENTS = ("H", "C", "N", "O", "F")
N_MOLECULES = 130_831
SPLIT_SIZES = {"train": 100_000, "val": 17_748, "test": 13_083}
SPLIT_SEED = 0
#: sha256 prefix of the split index arrays; a different value means a different split.
SPLIT_CHECKSUM = "654d077935093aa1"
#: bump when preprocessing changes: every cache built by an older version becomes stale.
PREPROCESS_VERSION = 2

#: (name, CSV column, unit)
PROPERTIES = (
    ("mu", "Dipole_debye", "D"),
    ("alpha", "Polarizability_bohr3", "bohr^3"),
    ("homo", "HOMO_au", "Ha"),
    ("lumo", "LUMO_au", "Ha"),
    ("gap", "HOMO_LUMO_gap_au", "Ha"),
    ("r2", "R2_bohr2", "bohr^2"),
    ("zpve", "ZPVE_au", "Ha"),
    ("U0", "InternalEnergy_0K_au", "Ha"),
    ("U", "InternalEnergy_298K_au", "Ha"),
    ("H", "Enthalphy_298K_au", "Ha"),
    ("G", "GibbsFreeEnergy_298K_au", "Ha"),
    ("Cv", "Heatcapacity_Cv_cal_mol_K", "cal/(mol K)"),
)


def qm9pack_csvs() -> list[Path]:
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the qm9pack package is not installed (pip install qm9pack)")
    data = Path(spec.origin).parent / "data"
    files = [data / f"qm9_part{k}.csv" for k in (1, 2, 3)]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"qm9pack data files missing: {missing}")
    return files


def _parse_float_lists(column) -> np.ndarray:
    """'[[x,y,z],...]' strings (numbers like '0.' included) -> one flat float array."""
    joined = ",".join(column).replace("[", "").replace("]", "")
    return np.array(joined.split(","), dtype=np.float64)


def read_qm9_csvs(files: list[Path]):
    """Parse the CSVs into flat arrays (numbers, pos, counts, props, smiles, names)."""
    import pandas as pd

    columns = ["Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang"] + [c for _, c, _ in PROPERTIES]
    frame = pd.concat([pd.read_csv(f, usecols=columns) for f in files], ignore_index=True)
    frame = frame.sort_values("Index", kind="stable").reset_index(drop=True)
    counts = frame["N_atoms"].to_numpy(np.int64)
    symbols = ",".join(frame["Elements"]).replace("[", "").replace("]", "").replace("'", "")
    lookup = {s: ATOMIC_NUMBER[s] for s in ELEMENTS}
    numbers = np.array([lookup[s] for s in symbols.split(",")], np.int64)
    pos = _parse_float_lists(frame["XYZ_Ang"]).astype(np.float32).reshape(-1, 3)
    if len(numbers) != counts.sum() or len(pos) != counts.sum():
        raise ValueError("qm9pack CSV: atom counts do not match the Elements/XYZ columns")
    props = frame[[c for _, c, _ in PROPERTIES]].to_numpy(np.float32)
    names = np.array([f"gdb_{i}" for i in frame["Index"]], dtype=str)
    return numbers, pos, counts, props, frame["SMILES"].to_numpy(str), names


def _perceive_chunk(args):
    """Worker: perceive bonds for a chunk of molecules; returns per-molecule results."""
    from harness.core.chem import RecordError, bonds_of, canonical_smiles, perceive_bonds, smiles_canonical

    numbers, pos, counts, smiles = args
    out = []
    start = 0
    for n, smi in zip(counts, smiles):
        z, x = numbers[start:start + n], pos[start:start + n]
        start += n
        try:
            mol = perceive_bonds(z, x)
            bonds = bonds_of(mol)
            charges = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], np.int64)
            agrees = canonical_smiles(mol) == smiles_canonical(smi)
            out.append((bonds, charges, True, agrees))
        except RecordError:
            out.append((np.zeros((0, 3), np.int64), np.zeros(n, np.int64), False, False))
    return out


def _quiet_worker() -> None:
    """RDKit's C++ bond perception prints '!!! Warning !!!' lines for short contacts straight
    to stderr; the pool's workers silence them (results and exceptions still come back)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)


def perceive_all(numbers, pos, counts, smiles, workers: int, progress: bool):
    """Bond perception over all molecules, in a process pool with a progress bar."""
    from harness.core.data.pool import ordered_chunk_map

    chunk = 2000
    starts = np.concatenate([[0], np.cumsum(counts)])
    jobs = []
    for m0 in range(0, len(counts), chunk):
        m1 = min(m0 + chunk, len(counts))
        a0, a1 = starts[m0], starts[m1]
        jobs.append((numbers[a0:a1], pos[a0:a1], counts[m0:m1], smiles[m0:m1]))
    return ordered_chunk_map(_perceive_chunk, jobs, workers, total=len(counts), progress=progress,
                             desc="qm9: perceiving bonds", initializer=_quiet_worker)


def preprocess_qm9(workers: int | None = None, progress: bool = True) -> tuple[Molecules, dict]:
    t0 = time.perf_counter()
    numbers, pos, counts, props, smiles, names = read_qm9_csvs(qm9pack_csvs())
    t_read = time.perf_counter() - t0
    workers = workers or min(4, os.cpu_count() or 1)
    results = perceive_all(numbers, pos, counts, smiles, workers, progress)
    bonds = [r[0] for r in results]
    charges = np.concatenate([r[1] for r in results]) if results else np.zeros(0, np.int64)
    bond_ok = np.array([r[2] for r in results], bool)
    agrees = np.array([r[3] for r in results], bool)
    bond_counts = np.array([len(b) for b in bonds], np.int64)
    packed = Molecules(
        numbers=numbers, pos=pos, charges=charges,
        atom_ptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        bonds=np.concatenate(bonds).astype(np.int64) if bonds else np.zeros((0, 3), np.int64),
        bond_ptr=np.concatenate([[0], np.cumsum(bond_counts)]).astype(np.int64),
        props=props, smiles=smiles, names=names, bond_ok=bond_ok,
    )
    stats = {
        "molecules": len(counts),
        "bond_perception_failures": int((~bond_ok).sum()),
        "perceived_smiles_disagree_with_dataset": int((bond_ok & ~agrees).sum()),
        "seconds_read_csv": round(t_read, 2),
        "seconds_total": round(time.perf_counter() - t0, 2),
        "workers": workers,
    }
    return packed, stats


def qm9_fingerprint() -> str:
    files = qm9pack_csvs()
    return fingerprint_of({
        "dataset": "qm9", "preprocess_version": PREPROCESS_VERSION,
        "qm9pack": importlib.metadata.version("qm9pack"),
        "files": [(f.name, f.stat().st_size) for f in files],
        "bond_perception": "rdDetermineBonds(charge=0) then useHueckel=True",
    })


@DATASETS.register("qm9")
def load_qm9(subset: int | None = None, remove_h: bool = False, cache_dir: str | Path | None = None,
             workers: int | None = None, progress: bool = True, rebuild: bool = False) -> MolDataset:
    """QM9 with splits ``train`` / ``val`` / ``test``.

    Args:
        subset: keep N molecules (each split in proportion, its first indices: nested and
            deterministic), e.g. 2000 for quick studies.
        remove_h: drop hydrogens (elements C, N, O, F).
        cache_dir: preprocessing cache root (default :func:`default_cache_dir`).
        workers: processes for bond perception on a cold cache.
        rebuild: ignore an existing cache.
    """
    if subset is not None and (isinstance(subset, bool) or not float(subset).is_integer()
                               or int(subset) < 1):
        raise ValueError(f"qm9: subset must be a positive integer, got {subset!r}")
    t0 = time.perf_counter()
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    cache = DatasetCache(root, "qm9", qm9_fingerprint())
    hit = None if rebuild else cache.load()
    if hit is None:
        log.info("qm9: preprocessing into %s", cache.dir)
        packed, stats = preprocess_qm9(workers=workers, progress=progress)
        meta = cache.store(packed, {"preprocess": stats})
        from_cache = False
    else:
        packed, meta = hit
        from_cache = True
    if len(packed) != N_MOLECULES:
        raise ValueError(f"qm9: expected {N_MOLECULES} molecules, the CSVs gave {len(packed)}")
    splits = deterministic_split(len(packed), SPLIT_SIZES, SPLIT_SEED)
    checksum = splits_checksum(splits)
    if checksum != SPLIT_CHECKSUM:
        raise RuntimeError(f"qm9 split checksum {checksum} != recorded {SPLIT_CHECKSUM}: "
                           "numpy's RandomState stream changed; results would not be comparable")
    name = "qm9"
    elements = ELEMENTS
    if subset is not None:
        packed, splits = take_subset(packed, splits, int(subset))
        name = f"qm9[subset={subset}]"
    if remove_h:
        packed = packed.without_hydrogens()
        elements = ELEMENTS[1:]
        name += "[noH]"
    return MolDataset(
        name=name, packed=packed, elements=elements,
        prop_names=tuple(p for p, _, _ in PROPERTIES), prop_units=tuple(u for _, _, u in PROPERTIES),
        splits=splits,
        fingerprint=fingerprint_of([cache.fingerprint, subset, remove_h, checksum]),
        cache_dir=cache.dir,
        info={"source": "qm9pack CSV", "cache": str(cache.dir), "from_cache": from_cache,
              "split_checksum": checksum, "seconds_load": round(time.perf_counter() - t0, 2),
              **meta.get("preprocess", {})},
    )


def qm9_split_sizes(subset: int | None = None, **_: object) -> dict[str, int]:
    """Molecules per split that :func:`load_qm9` gives for these options, computed without
    loading the data (``l3dg config`` shows it; tests pin it per preset)."""
    splits = {k: np.arange(v) for k, v in SPLIT_SIZES.items()}
    if subset is not None:
        splits = subset_splits(splits, int(subset))
    return {k: int(len(v)) for k, v in splits.items()}
