"""A drug-like 3D dataset built offline from the MOSES SMILES (``molsets`` wheel).

Source: the ``molsets`` package ships MOSES's ZINC-derived drug-like SMILES
(``moses/dataset/data/{train,test,test_scaffolds}.csv.gz``: 1,584,663 / 176,074 / 176,225
molecules; elements C N O F S Cl Br + H). The files are read directly (``import moses``
pulls a broken ``pomegranate`` pin: install with ``pip install --no-deps molsets``).

Splits: MOSES's own ``train`` / ``test`` / ``test_scaffolds`` (the scaffold split holds
Bemis-Murcko scaffolds absent from train); ``val`` is carved from train with a seeded
permutation (``val_fraction``). Every split is visited in a seeded random order, so
``subset=N`` (N molecules over all splits, in proportion to their sizes) is nested and
deterministic.

Conformers (one per molecule, explicit H):

* ``conformers="mmff"`` (default): RDKit ETKDGv3 (``candidates`` embeddings, seeded) then
  MMFF94 minimisation; the lowest-MMFF-energy candidate is kept. ~80 ms per molecule on
  one core.
* ``conformers="xtb"``: the same, then a GFN2-xTB (tblite) relaxation of the kept conformer
  (:func:`harness.core.xtb.relax`); ~1-4 s per molecule on one core.

Level of theory vs GEOM: GEOM-Drugs conformers are CREST ensembles (GFN2-xTB metadynamics)
optimised at GFN2-xTB, many per molecule, Boltzmann-weighted. ``mmff`` here is a single
force-field local minimum near the ETKDG start -- cheaper and lower-level than GEOM;
``xtb`` matches GEOM's level of theory for the final local optimisation but not its
conformer search (no CREST, no ensemble), so it is the lowest GFN2 minimum reachable from
the embedding, not the global one.

Conformers are cached per molecule in a store keyed by a fingerprint of the method,
options and RDKit/tblite versions (``DatasetCache``); a larger subset reuses what a smaller
one built, and failures (unparseable SMILES, embedding or force-field failure, xTB refusals
with their reason) are recorded, counted and named, never silently dropped or retried.
Parallelism: a process pool over molecules (``workers``, default up to 2 cores) and
RDKit's multi-threaded embedding / MMFF of the candidates (``threads``; tests use 1).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.core.data.base import (DatasetCache, MolDataset, Molecules, default_cache_dir,
                                    fingerprint_of, subset_splits)
from harness.core.registry import DATASETS
from harness.core.types import PERIODIC_TABLE, MolRecord

log = logging.getLogger(__name__)

ELEMENTS = ("H", "C", "N", "O", "F", "S", "Cl", "Br")
SOURCE_SPLITS = ("train", "test", "test_scaffolds")
METHODS = ("mmff", "xtb")
#: bump when conformer generation changes: every store built by an older version is stale
BUILD_VERSION = 1


def moses_files() -> dict[str, Path]:
    """The MOSES split CSVs inside the installed ``molsets`` wheel."""
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the molsets package is not installed "
                                  "(pip install --no-deps molsets)")
    data = Path(list(spec.submodule_search_locations)[0]) / "dataset" / "data"
    files = {s: data / f"{s}.csv.gz" for s in SOURCE_SPLITS}
    missing = [str(f) for f in files.values() if not f.exists()]
    if missing:
        raise FileNotFoundError(f"molsets data files missing: {missing}")
    return files


def read_smiles(path: Path) -> np.ndarray:
    """The ``SMILES`` column of a MOSES CSV (one column, header ``SMILES``) as an object
    array (a fixed-width str array of 1.6M SMILES would take 0.6 GB)."""
    import gzip

    with gzip.open(path, "rt") as fh:
        lines = fh.read().splitlines()
    if not lines or lines[0].strip().split(",")[0] != "SMILES":
        raise ValueError(f"{path}: expected a CSV whose first column is SMILES")
    if "," in lines[0]:
        lines = [line.split(",", 1)[0] for line in lines]
    return np.array([s for s in lines[1:] if s], dtype=object)


def moses_splits(val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Split name -> SMILES (object arrays), each in its seeded visiting order (val carved
    from train)."""
    files = moses_files()
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for split in SOURCE_SPLITS:
        smiles = read_smiles(files[split])
        smiles = smiles[rng.permutation(len(smiles))]
        if split == "train":
            n_val = int(round(val_fraction * len(smiles)))
            out["train"], out["val"] = smiles[n_val:], smiles[:n_val]
        else:
            out[split] = smiles
    return out


def build_conformer(smiles: str, method: str, seed: int, candidates: int, threads: int,
                    mmff_iters: int, xtb_options: dict[str, Any]) -> tuple[MolRecord | None, str]:
    """One conformer of ``smiles``: (record with ``props = [energy kcal/mol]``, "") or
    (None, reason)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from harness.core.chem import bonds_of

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None, "unparseable SMILES"
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    params.numThreads = int(threads)
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=int(candidates), params=params))
    if not ids:
        params.useRandomCoords = True                 # ETKDG's fallback for hard ring systems
        ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=int(candidates), params=params))
    if not ids:
        return None, "ETKDG embedding failed"
    if not AllChem.MMFFHasAllMoleculeParams(mol):
        return None, "MMFF94 cannot type the molecule"
    results = AllChem.MMFFOptimizeMoleculeConfs(mol, numThreads=int(threads), maxIters=int(mmff_iters))
    energies = np.array([e if not_done in (0, 1) else np.inf for not_done, e in results])
    if not np.isfinite(energies).any():
        return None, "MMFF94 minimisation failed"
    best = int(ids[int(np.argmin(energies))])
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.int64)
    charges = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], np.int64)
    pos = mol.GetConformer(best).GetPositions()
    energy = float(energies.min())                    # kcal/mol (MMFF94)
    if method == "xtb":
        from harness.core.xtb import HARTREE_KCAL, XtbError, relax, screen

        reason = screen(numbers, int(charges.sum()), allow_charged=True)
        if reason:
            return None, f"xTB: {reason}"
        try:
            r = relax(numbers, pos, int(charges.sum()), **xtb_options)
        except XtbError as err:
            return None, f"xTB: {err}"
        if not r.converged:
            return None, f"xTB relaxation not converged in {r.steps} steps"
        pos, energy = r.pos, r.energy * HARTREE_KCAL  # kcal/mol (GFN2-xTB total energy)
    return MolRecord(numbers=numbers, pos=pos, bonds=bonds_of(mol), charges=charges,
                     smiles=smiles, props=np.array([energy], np.float32)), ""


def _build_chunk(args: tuple) -> list[tuple[MolRecord | None, str]]:
    smiles, settings = args
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    out = []
    for s in smiles:
        try:
            out.append(build_conformer(s, **settings))
        except Exception as err:  # RDKit raises assorted errors on odd chemistry
            out.append((None, f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"))
    return out


def _single_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def build_many(smiles: Sequence[str], settings: dict[str, Any], workers: int, progress: bool
               ) -> list[tuple[MolRecord | None, str]]:
    """:func:`build_conformer` over ``smiles`` (process pool when ``workers > 1``), in order."""
    from harness.core.data.pool import ordered_chunk_map

    chunk = 25
    jobs = [(list(smiles[k:k + chunk]), settings) for k in range(0, len(smiles), chunk)]
    return ordered_chunk_map(_build_chunk, jobs, workers, total=len(smiles), progress=progress,
                             desc=f"moses: {settings['method']} conformers", initializer=_single_thread)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("rdkit", "molsets", "tblite"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "-"
    return out


@DATASETS.register("moses")
def load_moses(subset: int | None = 2000, conformers: str = "mmff", remove_h: bool = False,
               val_fraction: float = 0.1, seed: int = 0, candidates: int = 1, threads: int = 1,
               mmff_iters: int = 2000, xtb_fmax: float = 1e-3, xtb_max_steps: int = 500,
               workers: int | None = None, cache_dir: str | Path | None = None,
               rebuild: bool = False, progress: bool = True) -> MolDataset:
    """MOSES molecules with 3D conformers; splits ``train`` / ``val`` / ``test`` /
    ``test_scaffolds`` (see the module doc).

    Args:
        subset: molecules over all splits (in proportion); None = all 1.9M (days of CPU).
        conformers: ``mmff`` (ETKDG + MMFF94) or ``xtb`` (then GFN2-xTB relaxation).
        remove_h: drop hydrogens after building (the conformers are built with them).
        val_fraction / seed: the val carve-out of train and the seeded visiting order.
        candidates: ETKDG embeddings per molecule; the lowest-MMFF-energy one is kept.
        threads: RDKit ``numThreads`` for the candidates' embedding and MMFF (0 = all cores).
        xtb_fmax / xtb_max_steps: ``xtb`` relaxation convergence (Eh/Bohr) and step budget.
        workers: processes over molecules (default ``min(2, cpu_count)``).
        cache_dir / rebuild: conformer store root (default :func:`default_cache_dir`) / ignore it.
    """
    if conformers not in METHODS:
        raise ValueError(f"moses: conformers must be one of {METHODS}, got {conformers!r}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"moses: val_fraction must be in (0, 1), got {val_fraction}")
    t0 = time.perf_counter()
    by_split = moses_splits(val_fraction, seed)
    sizes = {s: np.arange(len(v)) for s, v in by_split.items()}
    chosen = subset_splits(sizes, int(subset)) if subset is not None else sizes
    wanted = {s: by_split[s][idx] for s, idx in chosen.items()}
    settings = {"method": conformers, "seed": seed, "candidates": int(candidates),
                "threads": int(threads), "mmff_iters": int(mmff_iters),
                "xtb_options": {"fmax": float(xtb_fmax), "max_steps": int(xtb_max_steps)}}
    store_fp = fingerprint_of({"dataset": "moses", "version": BUILD_VERSION, "versions": _versions(),
                               **{k: v for k, v in settings.items() if k != "threads"}})
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    store = DatasetCache(root, f"moses-{conformers}", store_fp)
    hit = None if rebuild else store.load()
    if hit is not None:
        packed, meta = hit
        failures: dict[str, str] = dict(meta.get("failures", {}))
    else:
        packed, failures = Molecules.from_records([]), {}
    have = {s: k for k, s in enumerate(packed.smiles.tolist())}
    todo = list(dict.fromkeys(s for v in wanted.values() for s in v.tolist()
                              if s not in have and s not in failures))
    t_build = time.perf_counter()
    if todo:
        n_workers = workers if workers is not None else max(1, min(2, os.cpu_count() or 1))
        results = build_many(todo, settings, n_workers, progress)
        new = []
        for s, (record, reason) in zip(todo, results):
            if record is None:
                failures[s] = reason
            else:
                new.append(record)
        if new:
            packed = _concat(packed, Molecules.from_records(new))
        have = {s: k for k, s in enumerate(packed.smiles.tolist())}
        store.store(packed, {"failures": failures, "settings": settings})
    seconds_build = time.perf_counter() - t_build
    index, splits, skipped, start = [], {}, [], 0
    for split, smiles in wanted.items():
        rows = [have[s] for s in smiles.tolist() if s in have]
        skipped += [{"split": split, "smiles": s, "reason": failures[s]}
                    for s in smiles.tolist() if s in failures]
        index += rows
        splits[split] = np.arange(start, start + len(rows))
        start += len(rows)
    if not index:
        raise ValueError(f"moses: no conformer could be built ({len(skipped)} failures; "
                         f"first: {skipped[:3]})")
    data = packed.take(np.asarray(index, np.int64))
    data.names = np.array([f"{split}/{k}" for split, idx in splits.items() for k in range(len(idx))], dtype=str)
    if remove_h:
        data = data.without_hydrogens()
    reasons: dict[str, int] = {}
    for row in skipped:
        reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
    present = {PERIODIC_TABLE[z] for z in np.unique(data.numbers).tolist()}
    elements = tuple(e for e in ELEMENTS if e != "H" or not remove_h) + \
        tuple(sorted(present - set(ELEMENTS)))
    name = f"moses[{conformers}" + (f",subset={subset}]" if subset is not None else "]") + \
        ("[noH]" if remove_h else "")
    info = {
        "source": "molsets wheel (MOSES SMILES)", "cache": str(store.dir),
        "from_cache": not todo, "built": len(todo), "seconds_build": round(seconds_build, 2),
        "seconds_per_molecule": round(seconds_build / len(todo), 4) if todo else None,
        "failures": len(skipped), "failures_by_reason": reasons, "skipped": skipped[:500],
        "level_of_theory": "ETKDGv3 + MMFF94" + (" + GFN2-xTB (tblite) relaxation" if conformers == "xtb" else ""),
        "split": f"MOSES train/test/test_scaffolds; val = {val_fraction:.0%} of train (seed {seed})",
        "seconds_load": round(time.perf_counter() - t0, 2),
    }
    log.info("moses: %d molecules (%s), %d built in %.1f s, %d failed", len(data),
             ", ".join(f"{s} {len(v)}" for s, v in splits.items()), len(todo), seconds_build, len(skipped))
    return MolDataset(
        name=name, packed=data, elements=elements, prop_names=("energy",),
        prop_units=("kcal/mol (" + ("GFN2-xTB total" if conformers == "xtb" else "MMFF94") + ")",),
        splits=splits, fingerprint=fingerprint_of([store_fp, subset, val_fraction, seed, remove_h]),
        cache_dir=store.dir, info=info)


def _concat(a: Molecules, b: Molecules) -> Molecules:
    """Two containers as one (b's offsets shifted)."""
    if len(a) == 0:
        return b
    props = np.concatenate([a.props.reshape(len(a), -1), b.props.reshape(len(b), -1)])
    return Molecules(
        numbers=np.concatenate([a.numbers, b.numbers]), pos=np.concatenate([a.pos, b.pos]),
        charges=np.concatenate([a.charges, b.charges]),
        atom_ptr=np.concatenate([a.atom_ptr, a.atom_ptr[-1] + b.atom_ptr[1:]]),
        bonds=np.concatenate([a.bonds, b.bonds]),
        bond_ptr=np.concatenate([a.bond_ptr, a.bond_ptr[-1] + b.bond_ptr[1:]]),
        props=props, smiles=np.concatenate([a.smiles, b.smiles]),
        names=np.concatenate([a.names, b.names]), bond_ok=np.concatenate([a.bond_ok, b.bond_ok]))
