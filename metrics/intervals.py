"""95 % intervals for every headline metric, and the versioned quality score.

Rules (``intervals/v1``):

* **Proportions of molecules** (validity, molecule stability, valid-and-unique, novelty, the
  RDKit profile's ratios): Wilson score interval with ``n`` = the ratio's denominator
  (molecules scored; valid molecules for uniqueness; unique valid ones for novelty).
* **Atom stability** (a ratio of sums over atoms, which are not independent): percentile
  bootstrap over molecules.
* **Distribution distances** (``dist.*`` aggregates) and **quality**: percentile bootstrap
  over molecules, ``n_boot`` resamples with a fixed seed (same samples -> same interval).
  A resample keeps each molecule's identity, so uniqueness inside a resample counts a
  molecule as unique when its SMILES was the first occurrence in the original set
  (resampling must not invent duplicates).
* FCD gets no interval (its ChemNet activations are not resampled): its value stands alone
  and the quality interval holds FCD at its point value.

Quality (``quality/v2``)::

    quality = valid_unique x mol_stable x (1 - D)
    D       = mean of the available distribution distances, each in [0, 1]:
              dist.atom_type_tv, dist.atom_count_tv, dist.bond_type_tv, fcd / (fcd + 10)

``quality/v1`` (valid x unique x mol-stable) could not tell a trained generator from decoded
noise when the decoder guarantees valid graphs; the distribution term can.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

QUALITY_VERSION = "quality/v2"
Z95 = 1.959963984540054

#: metric key -> (numerator-count name, denominator name) in the edm family metadata
_EDM_PROPORTIONS = {
    "edm.validity": ("valid", "molecules"),
    "edm.mol_stability": ("stable_molecules", "molecules"),
    "edm.uniqueness": ("unique", "valid"),
    "edm.valid_unique": ("unique", "molecules"),
    "edm.novelty": ("novel", "unique"),
}
_RDKIT_PROPORTIONS = ("rdkit.validity", "rdkit.connected", "rdkit.valid_connected",
                      "rdkit.mol_stability", "rdkit.valid_unique")
DIST_KEYS = ("dist.atom_type_tv", "dist.atom_count_tv", "dist.bond_type_tv",
             "dist.bond_length_w1", "dist.bond_angle_w1")
QUALITY_DIST_KEYS = ("dist.atom_type_tv", "dist.atom_count_tv", "dist.bond_type_tv")


def wilson(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (NaN, NaN when n = 0)."""
    if not n:
        return math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def distribution_term(values: Mapping[str, float]) -> float:
    """``D`` of quality/v2: mean of the available normalised distribution distances."""
    terms = [values.get(k, math.nan) for k in QUALITY_DIST_KEYS]
    fcd = values.get("fcd", math.nan)
    if fcd is not None and isinstance(fcd, (int, float)) and math.isfinite(fcd):
        terms.append(fcd / (fcd + 10.0))
    terms = [t for t in terms if isinstance(t, (int, float)) and math.isfinite(t)]
    return float(np.mean(terms)) if terms else math.nan


def quality(values: Mapping[str, float]) -> float:
    """quality/v2 (see the module docstring); NaN when a needed metric is missing."""
    vu, ms = values.get("edm.valid_unique", math.nan), values.get("edm.mol_stability", math.nan)
    d = distribution_term(values)
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in (vu, ms)):
        return math.nan
    return float(vu * ms * (1.0 - d)) if math.isfinite(d) else float(vu * ms)


def _edm_counts(metadata: Mapping[str, Any]) -> dict[str, float]:
    fam = (metadata.get("families") or {}).get("edm") or {}
    counts = {k: fam.get(k) for k in ("molecules", "valid", "unique", "novel", "stable_molecules")}
    return {k: v for k, v in counts.items() if v is not None}


def proportion_intervals(values: Mapping[str, float], metadata: Mapping[str, Any]
                         ) -> dict[str, list[float]]:
    """Wilson intervals of the molecule-level proportions present in ``values``."""
    out: dict[str, list[float]] = {}
    counts = _edm_counts(metadata)
    n_mol = (metadata.get("counts") or {}).get("molecules")
    for key, (num, den) in _EDM_PROPORTIONS.items():
        if key in values and den in counts and num in counts:
            out[key] = list(wilson(counts[num], counts[den]))
        elif key in values and n_mol and math.isfinite(values[key]):
            out[key] = list(wilson(values[key] * n_mol, n_mol))
    for key in _RDKIT_PROPORTIONS:
        v = values.get(key)
        if v is not None and n_mol and math.isfinite(v):
            out[key] = list(wilson(round(v * n_mol), n_mol))
    return out


def bootstrap_intervals(samples: Any, values: Mapping[str, float], reference_stats: Any,
                        n_boot: int = 100, seed: int = 0) -> dict[str, list[float]]:
    """Percentile-bootstrap intervals (over molecules) of atom stability, the ``dist.*``
    aggregates and quality/v2, from a :class:`~metrics.samples.Samples` that was just scored
    (its cached EDM analysis and resolved bonds are reused, never recomputed per resample)."""
    from metrics.distributions import DistributionMetric

    m = len(samples)
    edm = next((v for k, v in samples.cache.items() if isinstance(k, tuple) and k[0] == "edm"), None)
    if m < 2 or edm is None:
        return {}
    rng = np.random.default_rng(seed)
    stable_atoms_per_mol = np.asarray(edm["atoms_stable"], np.float64)   # [M] per molecule
    atoms_per_mol = np.asarray(edm["atoms"], np.float64)
    valid = np.asarray(edm["valid"], bool)
    first = np.zeros(m, bool)                       # valid and the first of its SMILES
    seen: set[str] = set()
    for k, smi in zip(np.flatnonzero(valid), edm["smiles"]):
        if smi not in seen:
            seen.add(smi)
            first[k] = True
    stable = np.asarray(edm["mol_stable"], bool)
    resolved = samples.resolved_bonds() if reference_stats is not None else None
    metric = DistributionMetric()
    fcd = values.get("fcd", math.nan)
    draws: dict[str, list[float]] = {"edm.atom_stability": [], "quality": []}
    for key in DIST_KEYS:
        draws[key] = []
    for _ in range(n_boot):
        idx = rng.integers(0, m, m)
        draws["edm.atom_stability"].append(stable_atoms_per_mol[idx].sum() / atoms_per_mol[idx].sum())
        dist_values: dict[str, float] = {}
        if resolved is not None:
            sub = samples.take(idx)
            sub.attach_resolved_bonds(resolved.take(idx, samples.atom_ptr))
            dist_values, _ = metric.compute(sub, reference_stats, None)
            for key in DIST_KEYS:
                draws[key].append(dist_values.get(key, math.nan))
        q_values = {"edm.valid_unique": first[idx].mean(), "edm.mol_stability": stable[idx].mean(),
                    "fcd": fcd, **dist_values}
        draws["quality"].append(quality(q_values))
    point = dict(values)
    point["quality"] = quality(values)
    out = {}
    for key, xs in draws.items():
        arr = np.asarray(xs, np.float64)
        arr = arr[np.isfinite(arr)]
        centre = point.get(key, math.nan)
        if len(arr) >= max(10, n_boot // 2) and math.isfinite(centre):
            # centred on the point value: resampling with replacement biases distances
            # upwards, so the percentile range is used as a noise scale, not a location
            half = (np.percentile(arr, 97.5) - np.percentile(arr, 2.5)) / 2
            lo, hi = centre - half, centre + half
            if key in ("edm.atom_stability", "quality") or key.endswith("_tv"):
                lo, hi = max(0.0, lo), min(1.0, hi)
            out[key] = [float(lo), float(max(lo, hi))]
    return out


def score_with_intervals(samples: Any, suite: str, reference: Any, options: Any = None,
                         n_boot: int = 100, seed: int = 0, progress: bool = False):
    """Score ``samples`` with ``suite`` and attach 95 % intervals and quality/v2.

    Returns ``(values, intervals, metadata)``: ``values`` includes ``quality``;
    ``intervals`` maps metric key -> ``[low, high]``; ``metadata`` is the suite's, plus the
    interval rules' version and ``n_boot``."""
    from metrics.base import reference_statistics
    from metrics.distributions import DistributionMetric
    from metrics.suites import score_molecules

    results = score_molecules(samples, suite=suite, reference=reference, options=options,
                              progress=progress)
    values = dict(results)
    values["quality"] = quality(values)
    intervals = proportion_intervals(values, results.metadata)
    if n_boot and reference is not None and hasattr(samples, "cache") and len(samples) > 1:
        ref_stats = reference_statistics(DistributionMetric(), reference)
        intervals.update(bootstrap_intervals(samples, values, ref_stats, n_boot, seed))
    metadata = dict(results.metadata, intervals={"rules": "intervals/v1", "n_boot": n_boot,
                                                 "quality": QUALITY_VERSION})
    return values, intervals, metadata


def difference_interval(a: float, a_ci: list[float] | None, b: float, b_ci: list[float] | None
                        ) -> list[float] | None:
    """95 % interval of ``a - b`` from two independent 95 % intervals (normal approximation
    of each half-width). None when either interval is missing."""
    if not a_ci or not b_ci or not all(map(math.isfinite, (a, b, *a_ci, *b_ci))):
        return None
    se = math.hypot((a_ci[1] - a_ci[0]) / (2 * Z95), (b_ci[1] - b_ci[0]) / (2 * Z95))
    d = a - b
    return [d - Z95 * se, d + Z95 * se]


def within_noise(interval: list[float] | None) -> bool | None:
    """True when a difference's interval contains 0 (None when unknown)."""
    if interval is None:
        return None
    return interval[0] <= 0.0 <= interval[1]
