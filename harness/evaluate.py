"""Standalone scorer behind ``l3dg eval SOURCE [--suite NAME] [--reference qm9:train]``.

SOURCE is an SDF/XYZ file (or a folder of them) of molecules — ours or another tool's — or
a dataset split such as ``qm9:test``, so the data itself can be scored. Bonds in an SDF are
used as given; records without bonds (XYZ, bond-free SDF) get ``rdDetermineBonds`` bonds in
the bond-based metrics, and the results say which source each molecule's bonds came from.

Every table carries a **reference row**: for a file source, the same suite on the
reference dataset's held-out split (``qm9:train`` -> ``qm9:test``), truncated to the
source's molecule count so size-dependent metrics (uniqueness, FCD) are comparable; that row
is cached on disk. A dataset source is itself a data row.

JSON written with ``--out`` (atomically)::

    {"source": ..., "suite": ..., "reference": ...,
     "metrics": {key: value}, "higher_is_better": {key: bool|null},
     "metadata": {suite, members, counts, bond_source, skipped (file, record, reason), ...},
     "reference_row": {"source": ..., "metrics": {...}, "metadata": {...}} | null}
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harness.core.io import atomic_write_json

log = logging.getLogger(__name__)

#: what a file without any explicit hydrogen does to each metric family (warned once)
NO_H_WARNING = ("{path}: no molecule has an explicit hydrogen. edm: validity adds implicit H "
                "(heavy-atom graphs count as valid) but stability counts only the atoms present "
                "and novelty compares H-free SMILES with explicit-H training SMILES (≈ 1); "
                "rdkit: no implicit H, so under-valent atoms are radicals (invalid); "
                "distributions: atom-type/count distances see no H; chemistry/fcd: only "
                "rdkit-valid molecules (none). Add hydrogens for comparable scores.")

__all__ = ["NoUsableMolecules", "evaluate_source", "format_table", "load_samples", "table_rows"]


def _log(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


class NoUsableMolecules(ValueError):
    """The source holds no molecule that can be scored (empty, text only, all records bad)."""


def _is_file_source(source: str) -> bool:
    from harness.core.chem import molecule_format

    path = Path(source)
    return molecule_format(path) is not None or path.is_dir()


def _check_source(source: str) -> None:
    """A missing path is reported as a missing path, not as an unknown dataset."""
    if _is_file_source(source) or source.startswith("sdf:"):
        return
    from harness.core.registry import DATASETS, load_builtins

    load_builtins()
    if source.partition(":")[0] in DATASETS.names():
        return
    if Path(source).exists():
        raise ValueError(f"{source}: not a molecule file (.sdf, .mol, .xyz, or their .gz) "
                         "or a folder of them")
    raise FileNotFoundError(f"{source} does not exist (not a file or folder, and not a "
                            f"dataset: {', '.join(DATASETS.names())})")


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")


def _degenerate(records) -> list[dict]:
    """Records with :func:`~harness.core.chem.geometry_problem` coordinates (huge values,
    coincident atoms), as ``{"index", "name", "reason"}``. They are excluded from every
    metric family (no family can score them consistently: EDM's distance table would see
    isolated atoms and call them valid) and counted in ``input.scored_fraction``."""
    from harness.core.chem import geometry_problem

    out = []
    for k, r in enumerate(records):
        problem = geometry_problem(r.pos) if np.isfinite(r.pos).all() else None
        if problem:
            out.append({"index": k, "name": r.name, "reason": problem})
    return out


def load_samples(source: str, limit: int | None = None):
    """(Samples, description) for a source string.

    Files are read with bond perception off so that bonds present in the file are kept as
    ``file`` bonds and the rest are perceived (and labelled) by the bond-based metrics.
    Unparseable records are skipped (``metadata.skipped``); molecules with impossible
    geometry are excluded from every metric family too: listed in ``metadata.skipped`` and
    ``description.degenerate_geometry``, and counted in ``input.scored_fraction``.

    Raises:
        FileNotFoundError: the path does not exist.
        NoUsableMolecules: nothing to score (empty file, text only, every record bad).
    """
    from metrics.samples import Samples

    _check_limit(limit)
    _check_source(source)
    if _is_file_source(source):
        from harness.core.chem import molecule_files, read_molecules, scan_folder

        root = Path(source)
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")
        files = molecule_files(root)
        ignored = [{"path": str(p), "reason": why} for p, why in scan_folder(root)[1]] \
            if root.is_dir() else []
        pairs, skip = read_molecules(root, None, perceive=False, check_geometry=False,
                                     report_ignored=False)
        records = [r for r, _ in pairs]
        skipped = [{"source": s.source, "index": s.index, "reason": s.reason} for s in skip]
        if not records:
            reasons = "; ".join(str(s) for s in skip[:3]) or "no records"
            raise NoUsableMolecules(f"{root}: no molecule to score ({len(skip)} record(s) "
                                    f"skipped: {reasons})")
        read = len(records)
        if limit is not None:
            records = records[:limit]
        degenerate = _degenerate(records)
        if degenerate:
            skipped += [{"source": str(root), "index": d["index"], "name": d["name"],
                         "reason": f"impossible geometry: {d['reason']}"} for d in degenerate]
            drop = {d["index"] for d in degenerate}
            records = [r for k, r in enumerate(records) if k not in drop]
            if not records:
                raise NoUsableMolecules(f"{root}: no molecule to score (every one has impossible "
                                        f"geometry; first: {degenerate[0]['reason']})")
        samples = Samples.from_records(records, "auto", skipped=skipped)
        samples.bond_origin = "file"
        description = {"kind": "file", "path": str(root), "files": [str(f) for f in files],
                       "ignored_files": ignored,
                       "records_read": read, "records_skipped": len(skip),
                       "parsed_fraction": read / (read + len(skip)) if read + len(skip) else math.nan,
                       "degenerate_geometry": degenerate}
        return samples, description
    from harness.core.data import load_source

    dataset = load_source(source)
    if len(dataset) == 0:
        raise NoUsableMolecules(f"{source}: the split holds no molecule")
    samples = Samples.from_dataset(dataset, limit=limit)
    description = {"kind": "dataset", "name": getattr(dataset, "name", source),
                   "fingerprint": getattr(dataset, "fingerprint", ""), "molecules": len(dataset)}
    return samples, description


def _held_out_split(reference: str | None) -> str | None:
    """``qm9:train`` -> ``qm9:test``: the split whose molecules form the reference row."""
    if not reference:
        return None
    match = re.fullmatch(r"(.+):train", reference)
    return f"{match.group(1)}:test" if match else None


def _row_cache_path(reference_ds: Any, key: Mapping[str, Any]) -> Path | None:
    cache_dir = getattr(reference_ds, "cache_dir", None)
    if cache_dir is None:
        return None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return Path(cache_dir) / "metric-rows" / f"{digest}.json"


def _reference_row(row_source: str, suite: str, reference_ds: Any, n: int | None,
                   progress: bool) -> dict[str, Any]:
    from metrics import MetricResults, get_suite, score_molecules as score
    from metrics.samples import Samples
    from harness.core.data import load_source

    row_ds = load_source(row_source)
    samples = Samples.from_dataset(row_ds, limit=n)
    suite_obj = get_suite(suite)
    key = {"suite": suite_obj.describe(), "row": getattr(row_ds, "fingerprint", row_source),
           "molecules": len(samples), "reference": getattr(reference_ds, "fingerprint", "")}
    path = _row_cache_path(reference_ds, key)
    if path is not None and path.exists():
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == json.loads(json.dumps(key, default=str)):
                _log(progress, f"reference row {row_source}: cached ({path})")
                return cached["row"]
        except (OSError, ValueError, KeyError):
            pass
    _log(progress, f"reference row {row_source} ({len(samples)} molecules)")
    results: MetricResults = score(samples, suite_obj, reference_ds, progress=progress)
    row = {"source": row_source, **results.to_json()}
    if path is not None:
        atomic_write_json(path, {"key": key, "row": row})
    return row


def evaluate_source(source: str, suite: str = "qm9/v2", reference: str | None = "qm9:train",
                    out: Path | str | None = None, limit: int | None = None,
                    progress: bool = True, reference_row: str | None = "auto") -> dict[str, Any]:
    """Score a file of molecules or a dataset split with a suite.

    Args:
        source: SDF/XYZ path (file or folder) or dataset split (``qm9:test``).
        suite: suite name (``qm9/v2``, ``edm/v1``, ...).
        reference: dataset split the reference statistics come from (training SMILES for
            novelty, distributions, FCD); None for none (those metrics are NaN).
        out: JSON path (written atomically).
        limit: score only the first ``limit`` molecules.
        progress: timing lines on stderr.
        reference_row: split scored as the table's reference row; ``"auto"``: the
            reference's held-out split for file sources, none for dataset sources.

    Returns:
        The JSON-ready result (see the module doc).
    """
    from metrics import score_molecules as score

    t0 = time.perf_counter()
    if out is not None and Path(out).is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name, e.g. {Path(out) / 'metrics.json'}")
    _log(progress, f"eval {source} with {suite}")
    samples, description = load_samples(source, limit)
    if description["kind"] == "file" and len(samples) and not (samples.numbers == 1).any():
        description["no_explicit_h"] = True
        log.warning(NO_H_WARNING.format(path=source))
    reference_ds = None
    if reference:
        from harness.core.data import load_source

        reference_ds = load_source(reference)
    results = score(samples, suite, reference_ds, progress=progress)
    results.metadata["source"] = description
    payload: dict[str, Any] = {"source": source, "suite": suite, "reference": reference,
                               **results.to_json()}
    if reference_row == "auto":
        reference_row = _held_out_split(reference) if description["kind"] == "file" else None
    payload["reference_row"] = None
    if reference_row:
        payload["reference_row"] = _reference_row(reference_row, suite, reference_ds,
                                                  len(samples), progress)
    payload["metadata"]["seconds_wall"] = round(time.perf_counter() - t0, 3)
    if out is not None:
        atomic_write_json(out, payload)
        _log(progress, f"wrote {out}")
    return payload


def table_rows(result: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Rows for :func:`format_table` from an :func:`evaluate_source` result: the source,
    then its reference row (if any)."""
    rows = {str(result["source"]): dict(result["metrics"])}
    ref = result.get("reference_row")
    if ref:
        rows[f"{ref['source']} (reference)"] = dict(ref["metrics"])
    return rows


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4f}"
    return str(value)


def format_table(rows: Mapping[str, Mapping[str, Any]],
                 higher_is_better: Mapping[str, bool | None] | None = None) -> str:
    """A plain-text table: one line per metric, one column per row (source).

    Args:
        rows: row label (e.g. ``samples.sdf``, ``qm9:test (reference)``) -> metric -> value.
        higher_is_better: optional direction per metric, shown as ↑ / ↓ after the name.
    """
    labels = list(rows)
    metrics: list[str] = []
    for values in rows.values():
        metrics += [k for k in values if k not in metrics]
    arrows = {True: " ↑", False: " ↓"}
    names = [m + arrows.get((higher_is_better or {}).get(m), "") for m in metrics]
    cells = [[_fmt(rows[label].get(m)) for label in labels] for m in metrics]
    width0 = max([len("metric")] + [len(n) for n in names])
    widths = [max([len(label)] + [len(c[k]) for c in cells]) for k, label in enumerate(labels)]
    line = lambda first, rest: "  ".join([first.ljust(width0)] + [r.rjust(w) for r, w in zip(rest, widths)])
    out = [line("metric", labels), line("-" * width0, ["-" * w for w in widths])]
    out += [line(n, c) for n, c in zip(names, cells)]
    return "\n".join(out)
