"""A study's provenance block (``harness/results/provenance.py``): the dataset and splits it
used, the bonds each metric family used, and what each interval's ± is over.

The dataset part hashes every array of the dataset and of each split the study used (the
capped train split, val, test); it is computed once per dataset fingerprint in a process
(QM9's 130k molecules: about a second).
"""
from __future__ import annotations

from typing import Any

from harness.results.provenance import bond_sources, dataset_provenance, provenance_block
from harness.study.context import StudyContext

_DATASETS: dict[tuple[str, str, str, str], dict[str, Any]] = {}


def study_dataset(study: StudyContext) -> dict[str, Any]:
    """The dataset block of a study (source, checksum, split index and split checksums)."""
    train, val, test = (study.split(w) for w in ("train", "val", "test"))
    key = (study.dataset.fingerprint, train.fingerprint, val.fingerprint, test.fingerprint)
    if key not in _DATASETS:
        _DATASETS[key] = dataset_provenance(study.dataset, {"train": train, "val": val, "test": test})
    return _DATASETS[key]


def study_provenance(study: StudyContext, metrics: list[str] | None = None,
                     spaces: list[str] | None = None) -> dict[str, Any]:
    """The block for a results file of ``study``: ``metrics`` are the keys whose interval
    types it explains; ``spaces`` those whose bond sources it lists (from their
    ``metrics.json``)."""
    config = study.config
    return provenance_block(
        dataset=study_dataset(study),
        bonds=bond_sources(study.root, list(spaces or [])),
        metrics=metrics, seeds=list(config.seeds or []) or None,
        n_boot=config.metrics.bootstrap)


def write_results(study: StudyContext, rows: dict[str, Any]) -> dict[str, Any]:
    """Write ``results.json`` (the rows plus the provenance block under ``"provenance"``,
    atomically) and return the block."""
    from harness.core.io import atomic_write_json
    from harness.results.provenance import RESULTS_KEY

    metrics = sorted({k for row in rows.values() if isinstance(row, dict)
                      for k in (row.get("values") or {})})
    spaces = list(study.config.spaces)
    if study.config.seeds:          # the bonds of each seed's study, per space
        from harness.results.seeds import seed_dir

        block = study_provenance(study, metrics)
        block["bonds"] = {f"seed-{k}": bond_sources(seed_dir(study.root, k), spaces)
                          for k in study.config.seeds}
    else:
        block = study_provenance(study, metrics, spaces)
    atomic_write_json(study.root / "results.json", {**rows, RESULTS_KEY: block})
    return block
