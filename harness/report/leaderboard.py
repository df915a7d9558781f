"""Leaderboard rows: one versioned JSON object per space of a finished run
(``l3dg export RUN --format leaderboard``) or per file of samples made elsewhere
(``l3dg eval FILE --leaderboard OUT``).

A row (documented by ``harness/report/leaderboard.schema.json``, schema ``l3dg-leaderboard/v1``)::

    {"schema_version": "l3dg-leaderboard/v1",
     "suite": {"name", "family", "version", "intervals", "quality"},
     "entry": {"kind": "study" | "eval", "space", "study", "run", "family", "sampler", "steps",
               "n_samples", "source"},
     "metrics": {key: {"value": float | null, "interval": [low, high] | null,
                       "interval_type": "wilson" | "bootstrap" | "student_t" | "none"}},
     "budget": {"flops": counted training FLOPs | null, "flops_per_step", "steps",
                "train_seconds", "ae_seconds", "total_seconds"},           # seconds: wall, s
     "nfe": network evaluations per sample trajectory | null,
     "provenance": {... provenance/v1 ...},
     "manifest_sha256": sha256 of the run's (or input files') manifest}

Rows are written as JSON Lines (one row per line), atomically. A study row's numbers are
exactly its ``results.json`` values; an eval row's intervals are Wilson intervals of the
proportions (bootstrap intervals need the study's resampling and are null there).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from harness.core.io import atomic_write_text

SCHEMA_VERSION = "l3dg-leaderboard/v1"
SCHEMA_FILE = Path(__file__).with_name("leaderboard.schema.json")
#: the export's default file inside the run directory (not listed in its manifest)
DEFAULT_NAME = "leaderboard.jsonl"


def load_schema() -> dict[str, Any]:
    """The row's JSON Schema (``leaderboard.schema.json``)."""
    return json.loads(SCHEMA_FILE.read_text())


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def metric_entries(values: Mapping[str, Any], intervals: Mapping[str, Any],
                   interval_of: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``{key: {"value", "interval", "interval_type"}}`` of every numeric metric (NaN ->
    null; an interval only where both ends are finite)."""
    out = {}
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) and v is not None:
            continue
        iv = intervals.get(key)
        pair = [_finite(iv[0]), _finite(iv[1])] if isinstance(iv, (list, tuple)) and len(iv) == 2 else None
        pair = pair if pair and None not in pair else None
        out[key] = {"value": _finite(v), "interval": pair,
                    "interval_type": interval_of.get(key, "none") if pair else "none"}
    return out


def _suite(metadata: Mapping[str, Any], name: str | None) -> dict[str, Any]:
    intervals = metadata.get("intervals") or {}
    from metrics.intervals import QUALITY_VERSION

    return {"name": metadata.get("suite") or name, "family": metadata.get("suite_family"),
            "version": metadata.get("suite_version"),
            "intervals": intervals.get("rules") if isinstance(intervals, Mapping) else None,
            "quality": QUALITY_VERSION}


def _num_or_none(x: Any) -> float | None:
    try:
        return _finite(float(x)) if x not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _family(config: Mapping[str, Any], name: str) -> str | None:
    """The generator family of space ``name`` (``diffusion`` / ``flow``) as configured."""
    from harness.config import load_config

    try:
        return load_config(dict(config)).generator_for(name).family
    except (ValueError, KeyError, TypeError):
        return (config.get("generator") or {}).get("family")


def study_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """One row per space of a finished study (its ``results.json``, ``config.yaml``,
    ``<space>/state.json`` and ``manifest.json``; a missing manifest is written first)."""
    from harness.results.manifest import NAME, manifest_hash, read_manifest, write_manifest
    from harness.results.provenance import read_results, run_provenance
    from harness.results.state import read_run_config

    root = Path(run_dir)
    config = read_run_config(root)
    results = root / "results.json"
    if not results.exists():
        raise FileNotFoundError(f"{results} is missing: the study has not finished (resume it "
                                f"with `l3dg run --resume {root}`)")
    rows, prov = read_results(results)
    prov = prov or run_provenance(root)
    if not (root / NAME).exists():
        write_manifest(root)
    digest = manifest_hash(read_manifest(root))
    sampling = config.get("sampling") or {}
    out = []
    for name in config.get("spaces") or {}:
        row = rows.get(name)
        if not isinstance(row, Mapping) or row.get("error") or not row.get("values"):
            raise ValueError(f"{results}: space {name!r} has no results"
                             + (f" ({row['error']})" if isinstance(row, Mapping) and row.get("error") else ""))
        info = row.get("info") or {}
        train, sample = info.get("train_generator") or {}, info.get("sample") or {}
        try:
            meta = json.loads((root / name / "metrics.json").read_text())["metadata"]["samples"]
        except (OSError, ValueError, KeyError, TypeError):
            meta = {}
        family = _family(config, name)
        out.append({
            "schema_version": SCHEMA_VERSION,
            "suite": _suite(meta, (config.get("metrics") or {}).get("suite")),
            "entry": {"kind": "study", "space": name, "study": config.get("study"), "run": str(root),
                      "family": family, "sampler": sample.get("sampler", sampling.get("sampler")),
                      "steps": sample.get("steps", sampling.get("steps")),
                      "n_samples": sample.get("n", sampling.get("n_samples")), "source": None},
            "metrics": metric_entries(row.get("values") or {}, row.get("intervals") or {},
                                      prov.get("interval_of") or {}),
            "budget": {"flops": _num_or_none(train.get("flops_total")),
                       "flops_per_step": _num_or_none(train.get("flops_per_step")),
                       "steps": train.get("steps"),
                       "train_seconds": _num_or_none(train.get("train_seconds")),
                       "ae_seconds": _num_or_none(train.get("ae_seconds")),
                       "total_seconds": _num_or_none(train.get("total_seconds"))},
            "nfe": sample.get("nfe"),
            "provenance": prov,
            "manifest_sha256": digest,
        })
    return out


def _file_manifest(files: list[str]) -> dict[str, Any]:
    from harness.results.manifest import sha256_of

    return {"files": {str(f): {"sha256": sha256_of(Path(f)), "bytes": Path(f).stat().st_size}
                      for f in files}}


def _sd_nfe(files: list[str]) -> int | None:
    """The ``nfe`` SD field when every record of the files carries one value (l3dg's own
    samples do), else None."""
    from harness.core.chem import read_sdf

    seen = set()
    for f in files:
        if not str(f).endswith((".sdf", ".sdf.gz")):
            return None
        records, _ = read_sdf(Path(f), perceive_missing_bonds=False)
        seen |= {str(props.get("nfe", "")) for _, props in records}
    if len(seen) == 1 and (value := next(iter(seen))).strip().isdigit():
        return int(value)
    return None


def eval_row(result: Mapping[str, Any], reference_dataset: Any = None) -> dict[str, Any]:
    """The row of an :func:`harness.evaluate.evaluate_source` result (samples made
    elsewhere): Wilson intervals of the proportions, quality/v2 from the values, the input
    files' sha256 as the manifest, no training budget."""
    from harness.results.manifest import manifest_hash
    from harness.results.provenance import dataset_provenance, provenance_block
    from metrics.intervals import proportion_intervals, quality

    meta = result.get("metadata") or {}
    values = dict(result.get("metrics") or {})
    values["quality"] = quality(values)
    intervals = proportion_intervals(values, meta)
    source = meta.get("source") or {}
    files = [str(f) for f in source.get("files") or []]
    dataset = dataset_provenance(reference_dataset) if reference_dataset is not None else {}
    prov = provenance_block(dataset=dataset, bonds={"samples": meta.get("bond_source_by_family")
                                                    or {"all": meta.get("bond_source")}},
                            metrics=list(values))
    prov["reference"] = result.get("reference")
    return {"schema_version": SCHEMA_VERSION,
            "suite": _suite(meta, result.get("suite")),
            "entry": {"kind": "eval", "space": None, "study": None, "run": None, "family": None,
                      "sampler": None, "steps": None,
                      "n_samples": (meta.get("counts") or {}).get("molecules"),
                      "source": str(result.get("source"))},
            "metrics": metric_entries(values, intervals, prov["interval_of"]),
            "budget": {"flops": None, "flops_per_step": None, "steps": None, "train_seconds": None,
                       "ae_seconds": None, "total_seconds": None},
            "nfe": _sd_nfe(files) if files else None,
            "provenance": prov,
            "manifest_sha256": manifest_hash(_file_manifest(files))}


def _plain(row: Mapping[str, Any]) -> Any:
    """The row as plain JSON values (tuples -> lists, NaN / inf -> null)."""
    from harness.core.io import _finite as finite_json

    return finite_json(json.loads(json.dumps(row, default=str)))


def write_rows(rows: list[Mapping[str, Any]], out: str | Path) -> Path:
    """Write rows as JSON Lines (sorted keys, NaN -> null), atomically."""
    text = "".join(json.dumps(_plain(r), sort_keys=True) + "\n" for r in rows)
    return atomic_write_text(out, text)


def write_checked(rows: list[Mapping[str, Any]], out: str | Path) -> Path:
    """Validate every row against the schema, then write them (:func:`write_rows`); a row
    that does not match is a one-line ``ValueError`` and nothing is written."""
    from harness.report.schema_check import validate

    schema = load_schema()
    for row in rows:
        entry = row.get("entry") or {}
        validate(_plain(row), schema, f"leaderboard row {entry.get('space') or entry.get('source')}")
    return write_rows(rows, out)
