"""Repeated seeds: ``seeds: [0, 1, 2]`` runs the whole study once per seed and reports the
mean over seeds with its spread.

Layout: ``runs/<study>/seed-<k>/`` is a complete study with ``seed: k`` (its own
``config.yaml``, ``results.json``, report, resumable stages); ``runs/<study>/results.json``
aggregates them. Every stage is repeated, autoencoder fitting included: a space's
autoencoder is as much a random outcome of its seed as its generator.

An aggregated row holds ``values`` (mean over seeds), ``std`` (sample standard deviation,
ddof = 1), ``intervals`` (95 % Student-t interval of the mean over seeds) and ``per_seed``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def seed_dir(root: Path, seed: int) -> Path:
    return Path(root) / f"seed-{int(seed)}"


def aggregate(root: Path, seeds: list[int], collect_results) -> dict[str, Any]:
    """Mean, std, t-interval and per-seed values of every numeric metric of every row
    (``collect_results``: reads one seed's run directory)."""
    from scipy import stats

    per_seed = {int(k): collect_results(seed_dir(root, k)) for k in seeds
                if (seed_dir(root, k) / "config.yaml").exists()}
    names: list[str] = []
    for rows in per_seed.values():
        names += [n for n in rows if n not in names]
    out: dict[str, Any] = {}
    for name in names:
        have = {k: rows[name] for k, rows in per_seed.items() if name in rows and not rows[name].get("error")}
        missing = [k for k in per_seed if k not in have]
        keys = sorted({key for row in have.values() for key in row.get("values", {})})
        values, std, intervals = {}, {}, {}
        for key in keys:
            xs = np.array([_num(r["values"].get(key)) for r in have.values()], np.float64)
            xs = xs[np.isfinite(xs)]
            if not len(xs):
                values[key] = math.nan
                continue
            values[key] = float(xs.mean())
            if len(xs) > 1:
                std[key] = float(xs.std(ddof=1))
                half = float(stats.t.ppf(0.975, len(xs) - 1) * std[key] / math.sqrt(len(xs)))
                intervals[key] = [values[key] - half, values[key] + half]
        seconds = {}
        for r in have.values():
            for stage, sec in (r.get("seconds") or {}).items():
                seconds[stage] = seconds.get(stage, 0.0) + float(sec) / len(have)
        row = {"values": values, "std": std, "intervals": intervals, "seconds": seconds,
               "seeds": sorted(have), "per_seed": {k: r["values"] for k, r in have.items()}}
        if missing:
            row["error"] = f"seeds {missing} have no results for {name} yet"
        out[name] = row
    return out
