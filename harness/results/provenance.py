"""The provenance block every results file and report carries (``provenance/v1``).

One mapping says what a number came from, so two results can be told apart without
reading their code::

    {"schema": "provenance/v1",
     "code":     {"l3dg", "commit", "dirty", "source": "git" | "package"},
     "packages": {distribution: version | None},          # RDKit, torch, Lightning, e3nn, ...
     "hardware": {"cpu", "cores", "cores_usable", "threads", "omp_num_threads", "cuda"},
     "dataset":  {"name", "source", "checksum", "fingerprint", "split_indices",
                  "splits": {split: {"molecules", "checksum"}}},
     "bonds":    {space: {metric family: bond source}},  # where each family's bonds came from
     "intervals": {interval type: what its ± is over},   # per type of interval used
     "interval_of": {metric: interval type}}

Checksums are the first 16 hex digits of a sha256 (``Molecules.checksum``: every array of
the molecules; ``split_indices``: the split index arrays). Writers take the block from
:func:`provenance_block`; readers of ``results.json`` split it from the rows with
:func:`read_results`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from harness.results.records import code_state, hardware_info, package_versions

SCHEMA = "provenance/v1"
#: the reserved key of ``results.json`` that holds the block (never a space name)
RESULTS_KEY = "provenance"

#: what the ± of each interval type is over
INTERVAL_TYPES = {
    "wilson": "sampling: the molecules of one sample set (one training seed, one sampling "
              "seed), binomial; Wilson score 95 % interval with n = the ratio's denominator",
    "bootstrap": "molecules: percentile bootstrap over the scored molecules of one sample set "
                 "(one training seed, one sampling seed), {n_boot} resamples, fixed seed; the "
                 "generator is not retrained",
    "student_t": "training seeds: one full study per seed {seeds} (autoencoder fit, generator "
                 "training and sampling all repeat with the seed); Student-t 95 % interval of "
                 "the mean over seeds",
    "difference": "lift = samples - control: normal approximation from the two rows' 95 % "
                  "intervals, taken as independent",
    "none": "no interval (e.g. FCD: its ChemNet activations are not resampled)",
}


def interval_type(metric: str, seeds: list[int] | None = None) -> str:
    """The interval type of a metric's ± (``intervals/v1`` rules; ``student_t`` when rows
    are means over training seeds)."""
    from metrics.intervals import _EDM_PROPORTIONS, _RDKIT_PROPORTIONS

    if seeds and len(seeds) > 1:
        return "student_t"
    if metric in _EDM_PROPORTIONS or metric in _RDKIT_PROPORTIONS:
        return "wilson"
    if metric == "fcd" or metric.startswith("latent."):
        return "none"
    return "bootstrap"


def interval_notes(metrics: list[str], seeds: list[int] | None = None,
                   n_boot: int | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """``(types used -> what their ± is over, metric -> type)`` for ``metrics``."""
    of = {m: interval_type(m, seeds) for m in metrics}
    used = sorted(set(of.values()) | {"difference"})
    notes = {t: INTERVAL_TYPES[t].format(n_boot=n_boot if n_boot is not None else "?",
                                         seeds=list(seeds or [])) for t in used}
    return notes, of


def split_provenance(dataset: Any) -> dict[str, Any]:
    """``{"molecules", "checksum"}`` of one split as used (a ``MolDataset``)."""
    return {"name": getattr(dataset, "name", None), "molecules": len(dataset),
            "checksum": dataset.packed.checksum()}


def dataset_provenance(dataset: Any, used: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The dataset's source, checksum and fingerprint, the checksum of its split indices and
    of each split ``used`` (split name -> the ``MolDataset`` a study used, e.g. the capped
    train split)."""
    from harness.core.data.base import splits_checksum

    info = getattr(dataset, "info", {}) or {}
    return {"name": dataset.name, "source": info.get("source"),
            "checksum": dataset.packed.checksum(), "fingerprint": dataset.fingerprint,
            "molecules": len(dataset),
            "split_indices": splits_checksum(dataset.splits) if dataset.splits else None,
            "splits": {k: split_provenance(v) for k, v in (used or {}).items()}}


def provenance_block(dataset: Mapping[str, Any] | None = None,
                     bonds: Mapping[str, Any] | None = None,
                     metrics: list[str] | None = None, seeds: list[int] | None = None,
                     n_boot: int | None = None, code: Mapping[str, Any] | None = None,
                     packages: Mapping[str, Any] | None = None,
                     hardware: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The block (see the module docstring); ``code`` / ``packages`` / ``hardware`` default to
    this process's (pass a run's recorded ones to keep what produced it)."""
    notes, of = interval_notes(sorted(metrics or []), seeds, n_boot)
    return {"schema": SCHEMA, "code": dict(code or code_state()),
            "packages": dict(packages or package_versions()),
            "hardware": dict(hardware or hardware_info()),
            "dataset": dict(dataset or {}), "bonds": dict(bonds or {}),
            "intervals": notes, "interval_of": of}


def bond_sources(root: Path, spaces: list[str]) -> dict[str, Any]:
    """Per space (and the reference row): metric family -> where its bonds came from, as
    recorded in ``<space>/metrics.json`` (``bond_source_by_family``)."""
    out: dict[str, Any] = {}
    for name in ["reference", *spaces]:
        path = Path(root) / name / "metrics.json"
        try:
            meta = json.loads(path.read_text())["metadata"]["samples"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        out[name] = meta.get("bond_source_by_family") or {"all": meta.get("bond_source")}
    return out


def read_results(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(rows, provenance)`` of a ``results.json`` (provenance ``{}`` in files written
    before it existed); rows are the spaces and the reference row only."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of rows per space, got {type(data).__name__}")
    prov = data.pop(RESULTS_KEY, None)
    return data, prov if isinstance(prov, dict) else {}


def run_provenance(root: Path, record: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A run directory's provenance: ``results.json``'s block, else ``record.json``'s, else
    what the record's older keys say (versions, git, device); ``{}`` when nothing does."""
    root = Path(root)
    results = root / "results.json"
    if results.exists():
        try:
            prov = read_results(results)[1]
            if prov:
                return prov
        except (OSError, ValueError):
            pass
    if record is None:
        try:
            record = json.loads((root / "record.json").read_text())
        except (OSError, ValueError):
            record = {}
    record = record or {}
    if isinstance(record.get("provenance"), dict):
        return record["provenance"]
    if not record:
        return {}
    git = record.get("git") or {}
    versions = record.get("versions") or {}
    device = record.get("device") or {}
    return {"schema": SCHEMA, "code": {"l3dg": versions.get("l3dg"), **git,
                                       "source": "git" if git.get("commit") else "package"},
            "packages": versions,
            "hardware": {"threads": device.get("cpu_threads"), "cuda": device.get("cuda")}}


def _flat(d: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(d, Mapping):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}"))
    return out


#: the parts of a block :func:`provenance_differences` compares, in this order
COMPARED = ("packages", "code", "dataset", "hardware")


def provenance_differences(blocks: list[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Dotted keys (``packages.rdkit``, ``code.commit``, ``dataset.checksum``,
    ``dataset.splits.train.checksum``, ``hardware.threads``) whose values differ between the
    blocks; a key a block lacks shows as None. Empty when there is nothing to compare."""
    flats = []
    for block in blocks:
        flat: dict[str, Any] = {}
        for part in COMPARED:
            if isinstance((block or {}).get(part), Mapping):
                flat.update(_flat(block[part], part))
        flats.append(flat)
    keys = [k for part in COMPARED for k in sorted({k for f in flats for k in f})
            if k.split(".")[0] == part]
    return {k: [f.get(k) for f in flats] for k in keys
            if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1}
