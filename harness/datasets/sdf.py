"""Any user SDF/XYZ file (or a folder of them) as a dataset with a configurable split.

Bad records (malformed blocks, unknown elements, NaN/inf or 2D-only coordinates, bonds that
cannot be perceived, empty files) are reported with file, record index and reason, skipped,
and counted; a source with no usable molecule is an error.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.core.data.base import MolDataset, Molecules, fingerprint_of
from harness.core.registry import DATASETS
from harness.core.types import PERIODIC_TABLE

log = logging.getLogger(__name__)


class NoUsableMolecules(ValueError):
    """A source file or folder yielded no usable molecule."""


@DATASETS.register("sdf")
def load_sdf(path: str | Path, elements: Sequence[str] | None = None,
             split: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
             property_fields: Sequence[str] = (), smiles_field: str = "smiles",
             report: bool = True) -> MolDataset:
    """A dataset from an SDF or XYZ file, or a folder of such files.

    Args:
        path: file or folder.
        elements: element vocabulary; records with other elements are skipped. Default: the
            elements present, ordered by atomic number.
        split: train / val / test fractions (a seeded permutation is cut in that order).
        property_fields: SD property names to read as float properties (NaN if missing).
        smiles_field: SD property holding a reference SMILES (kept as ``record.smiles``).
        report: log each skipped record (file, index, reason) and a summary.
    """
    root = Path(path)
    if not root.exists() and not root.is_absolute():
        # presets name committed files relative to the checkout (e.g. harness/core/data/...)
        packaged = Path(__file__).resolve().parents[2] / root
        root = packaged if packaged.exists() else root
    if not root.exists():
        raise FileNotFoundError(f"sdf dataset: {root} does not exist")
    from harness.core.chem import molecule_files, read_molecules

    try:
        files = molecule_files(root)
    except ValueError as err:
        raise NoUsableMolecules(str(err)) from None
    pairs, skipped = read_molecules(root, elements)
    records = []
    for r, p in pairs:
        r.smiles = p.get(smiles_field, "")
        if property_fields:
            r.props = np.array([_as_float(p.get(k)) for k in property_fields], np.float32)
        records.append(r)
    if report:
        for s in skipped:
            log.warning("skipped %s", s)
    if not records:
        reasons = "; ".join(str(s) for s in skipped[:5]) or "no records"
        raise NoUsableMolecules(f"{root}: no usable molecule ({len(skipped)} record(s) skipped: {reasons})")
    if report and skipped:
        log.warning("%s: %d molecule(s) read, %d skipped", root, len(records), len(skipped))
    if elements is None:
        present = sorted({int(z) for r in records for z in np.unique(r.numbers)})
        elements = tuple(PERIODIC_TABLE[z] for z in present)
    fractions = np.asarray(split, float)
    if len(fractions) != 3 or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"sdf dataset: split must be three fractions summing to 1, got {list(split)}")
    n = len(records)
    perm = np.random.RandomState(seed).permutation(n)
    cuts = np.round(np.cumsum(fractions)[:2] * n).astype(int)
    splits = dict(zip(("train", "val", "test"), np.split(perm, cuts)))
    packed = Molecules.from_records(records)
    return MolDataset(
        name=f"sdf:{root.name}", packed=packed, elements=tuple(elements),
        prop_names=tuple(property_fields), prop_units=tuple("" for _ in property_fields),
        splits=splits,
        fingerprint=fingerprint_of([packed.checksum(), list(elements), list(split), seed]),
        info={"source": str(root), "files": [str(f) for f in files], "molecules": n,
              "skipped": [{"file": s.source, "record": s.index, "reason": s.reason} for s in skipped]},
    )


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _test_options() -> dict:
    """What the dataset conformance check builds it with (``l3dg check sdf``)."""
    from harness.core.data import QM9_SAMPLE_SDF

    return {"path": str(QM9_SAMPLE_SDF), "elements": ["H", "C", "N", "O", "F"], "report": False}


load_sdf.test_options = _test_options
