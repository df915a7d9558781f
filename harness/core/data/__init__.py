"""Datasets: a registry of builders (``qm9``, ``sdf``), split views and a DataModule.

``load_source`` parses the source strings used on the command line::

    qm9            the whole dataset (with its splits)
    qm9:test       one split
    path/to.sdf    a file (or folder) of molecules, all records
    sdf:path:val   one split of a file dataset
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.core.data.base import MolDataset, Molecules, default_cache_dir
from harness.core.registry import DATASETS

#: 200 QM9 molecules with perceived bonds, SMILES and properties (committed, < 400 kB); used by
#: the tests and by `l3dg check-space`. Regenerate with tests/fixtures/make_fixtures.py.
QM9_SAMPLE_SDF = Path(__file__).parent / "qm9_sample.sdf"

__all__ = ["QM9_SAMPLE_SDF", "MolDataset", "Molecules", "default_cache_dir", "load_dataset", "load_source"]


def load_dataset(name: str, **options: Any) -> MolDataset:
    """Build dataset ``name`` from the registry with its options (e.g. ``subset=2000``)."""
    builder = DATASETS.get(name)
    try:
        return builder(**options)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            import inspect

            valid = [p for p in inspect.signature(builder).parameters]
            raise TypeError(f"dataset {name!r}: {err}; valid options: {valid}") from None
        raise


def load_source(text: str, **options: Any) -> MolDataset:
    """A dataset, a split of one, or a molecule file from a source string (see module doc)."""
    path = Path(text)
    if not text.startswith("sdf:") and (path.suffix.lower() in (".sdf", ".xyz")
                                        or (path.exists() and path.is_dir())):
        return load_dataset("sdf", path=path, **options)
    if text.startswith("sdf:"):
        rest = text[4:]
        file, _, split = rest.rpartition(":") if rest.rsplit(":", 1)[-1] in ("train", "val", "test") \
            else (rest, "", "")
        return load_dataset("sdf", path=file, **options).split(split or "all")
    name, _, split = text.partition(":")
    return load_dataset(name, **options).split(split or "all")
