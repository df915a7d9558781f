"""Scoring property-conditional generation: targets, MAE, baselines, published anchors.

Two target protocols:

* **EDM** (Hoogeboom et al., 2022; GeoLDM): per sample, draw the atom count from the
  histogram of the generator's training half (``Db``), then the property from its
  1000-bin histogram *given that atom count* (uniform inside the bin; EDM's
  ``DistributionProperty``); the generator samples with that (count, value) context.
* **LDM-3DG** (You et al., 2024): in-distribution targets evenly spaced between the training
  minimum and maximum; out-of-distribution targets below the minimum and above the maximum,
  out to ``ood_factor`` (1.5) times the extreme value, reported separately. "1.5 x min" is
  read as *1.5 times further from zero* so that it lies outside the range for either sign:
  the low end is ``min * 1.5`` when ``min < 0`` and ``min / 1.5`` when ``min > 0`` (and the
  high end ``max * 1.5`` / ``max / 1.5``); an empty interval (e.g. ``min == 0``) gives no
  targets on that side.

Score: mean absolute error between the predictor's output on each generated molecule and
the value requested for it.

**Invalid molecules (EDM rule).** Every generated molecule is scored, valid or not: the
predictor sees atom types and coordinates only, so RDKit validity does not enter the MAE.
Only a molecule that cannot be fed to the predictor at all (no atoms, an element outside the
vocabulary, non-finite coordinates, an empty ``l3dg_invalid`` SDF record) is left out; it
is counted in ``n_unscorable``. ``mae_valid`` (MAE over EDM-valid molecules) is reported
beside ``mae`` when validity is known.

Baselines (EDM Table 3), all on ``Db`` with the same predictor:

* **Naive** (upper bound): the predictor's outputs on ``Db`` against *shuffled* ``Db`` labels;
* **#Atoms**: a predictor that sees only the atom count (the median property per count on
  ``Da``, the L1-optimal function of the count; unseen counts use the nearest seen count);
* **QM9** (lower bound): the predictor on ``Db`` against its true labels.

Units: values are in the dataset's units (QM9: ``homo``/``lumo``/``gap`` in Ha); tables use
EDM's report units (meV for orbital energies) via :func:`to_report_units`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ATOM_COUNT", "CONDITIONAL_PROPERTIES", "HARTREE_TO_MEV", "PUBLISHED_MAE", "REPORT_UNITS",
           "NumAtomsBaseline", "PropertyHistogram", "baseline_maes", "edm_targets",
           "ldm_targets", "mae", "mae_interval", "score_conditional", "to_report_units"]

HARTREE_TO_MEV = 27211.386245988
#: the context column of a molecule's atom count (conditioning on it as well as a property)
ATOM_COUNT = "n_atoms"
#: the six properties of the protocol, in EDM's table order
CONDITIONAL_PROPERTIES = ("alpha", "gap", "homo", "lumo", "mu", "Cv")
#: property -> (dataset unit, report unit, factor dataset -> report)
REPORT_UNITS: dict[str, tuple[str, str, float]] = {
    "alpha": ("bohr^3", "Bohr^3", 1.0),
    "gap": ("Ha", "meV", HARTREE_TO_MEV),
    "homo": ("Ha", "meV", HARTREE_TO_MEV),
    "lumo": ("Ha", "meV", HARTREE_TO_MEV),
    "mu": ("D", "D", 1.0),
    "Cv": ("cal/(mol K)", "cal/mol K", 1.0),
}
#: published MAE (EDM protocol; report units) — EDM Table 3 and GeoLDM Table 3.
PUBLISHED_MAE: dict[str, dict[str, float]] = {
    "Naive (upper bound)": dict(alpha=9.01, gap=1470, homo=645, lumo=1457, mu=1.616, Cv=6.857),
    "#Atoms": dict(alpha=3.86, gap=866, homo=426, lumo=813, mu=1.053, Cv=1.971),
    "EDM": dict(alpha=2.76, gap=655, homo=356, lumo=584, mu=1.111, Cv=1.101),
    "GeoLDM": dict(alpha=2.37, gap=587, homo=340, lumo=522, mu=1.108, Cv=1.025),
    "QM9 (lower bound)": dict(alpha=0.10, gap=64, homo=39, lumo=36, mu=0.043, Cv=0.040),
}


def to_report_units(prop: str, value):
    """Dataset units -> EDM's report units (identity for properties without an entry)."""
    factor = REPORT_UNITS.get(prop, ("", "", 1.0))[2]
    return np.asarray(value, np.float64) * factor if np.ndim(value) else float(value) * factor


def mae_interval(pred, target, resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> list[float] | None:
    """Percentile-bootstrap interval of the MAE over molecules (seeded; None below 2)."""
    err = np.abs(np.asarray(pred, np.float64) - np.asarray(target, np.float64))
    if err.size < 2:
        return None
    idx = np.random.default_rng(seed).integers(0, err.size, size=(resamples, err.size))
    means = err[idx].mean(axis=1)
    half = (1.0 - level) / 2
    return [float(np.quantile(means, half)), float(np.quantile(means, 1.0 - half))]


def mae(pred, target) -> float:
    """Mean absolute error of two ``[M]`` arrays (NaN for none)."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"mae: shapes differ, {pred.shape} vs {target.shape}")
    return float(np.abs(pred - target).mean()) if pred.size else float("nan")


@dataclass
class NumAtomsBaseline:
    """The '#Atoms' predictor: property from the atom count alone (median per count)."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    medians: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def fit(cls, counts, values) -> "NumAtomsBaseline":
        """``counts: [M]`` atom counts, ``values: [M]`` properties (NaN ignored)."""
        counts, values = np.asarray(counts, np.int64), np.asarray(values, np.float64)
        ok = np.isfinite(values)
        counts, values = counts[ok], values[ok]
        if not len(counts):
            raise ValueError("NumAtomsBaseline.fit: no finite values")
        seen = np.unique(counts)
        medians = np.array([np.median(values[counts == c]) for c in seen])   # <= ~30 counts
        return cls(seen, medians)

    def predict(self, counts) -> np.ndarray:
        counts = np.asarray(counts, np.int64)
        pos = np.clip(np.searchsorted(self.counts, counts), 0, len(self.counts) - 1)
        left = np.clip(pos - 1, 0, len(self.counts) - 1)
        nearer_left = np.abs(self.counts[left] - counts) < np.abs(self.counts[pos] - counts)
        return self.medians[np.where(nearer_left, left, pos)]


def baseline_maes(pred_db, y_db, counts_da, y_da, counts_db, seed: int = 0) -> dict[str, float]:
    """Naive / #Atoms / QM9 MAEs on ``Db`` (dataset units; see the module doc).

    Args:
        pred_db: ``[M]`` predictor outputs on ``Db``; y_db: ``[M]`` true ``Db`` values.
        counts_da / y_da: atom counts and values of ``Da`` (fit the #Atoms baseline).
        counts_db: ``[M]`` atom counts of ``Db``.
        seed: the label shuffle of the Naive baseline.
    """
    pred_db, y_db = np.asarray(pred_db, np.float64), np.asarray(y_db, np.float64)
    shuffled = y_db[np.random.default_rng(seed).permutation(len(y_db))]
    atoms = NumAtomsBaseline.fit(counts_da, y_da).predict(counts_db)
    return {"naive": mae(pred_db, shuffled), "atoms": mae(atoms, y_db), "qm9": mae(pred_db, y_db)}


class PropertyHistogram:
    """EDM's ``DistributionProperty``: per atom count, a ``n_bins`` histogram of the values
    over ``[min, max]`` of that count; samples pick a bin by frequency, then a uniform value
    inside it."""

    def __init__(self, counts, values, n_bins: int = 1000):
        counts, values = np.asarray(counts, np.int64), np.asarray(values, np.float64)
        ok = np.isfinite(values)
        counts, values = counts[ok], values[ok]
        if not len(counts):
            raise ValueError("PropertyHistogram: no finite values")
        self.n_bins = int(n_bins)
        self.tables: dict[int, tuple[np.ndarray, float, float]] = {}
        for c in np.unique(counts):
            v = values[counts == c]
            lo, hi = float(v.min()), float(v.max())
            width = hi - lo + 1e-12
            idx = np.minimum(((v - lo) / width * self.n_bins).astype(np.int64), self.n_bins - 1)
            probs = np.bincount(idx, minlength=self.n_bins).astype(np.float64)
            self.tables[int(c)] = (probs / probs.sum(), lo, width)

    def sample(self, n_atoms, rng: np.random.Generator) -> np.ndarray:
        """``[n]`` values, one per requested atom count (each count must have been seen)."""
        n_atoms = np.asarray(n_atoms, np.int64)
        out = np.empty(len(n_atoms))
        for c in np.unique(n_atoms):   # loop over distinct counts (<= ~30), not samples
            if int(c) not in self.tables:
                raise KeyError(f"PropertyHistogram: no training molecule with {int(c)} atoms; "
                               f"counts seen: {sorted(self.tables)}")
            probs, lo, width = self.tables[int(c)]
            where = np.flatnonzero(n_atoms == c)
            bins = rng.choice(self.n_bins, size=len(where), p=probs)
            out[where] = lo + (bins + rng.random(len(where))) / self.n_bins * width
        return out


def edm_targets(counts, values, n: int, seed: int = 0, n_bins: int = 1000
                ) -> tuple[np.ndarray, np.ndarray]:
    """EDM's conditional targets from the generator's training half.

    Args:
        counts / values: ``[M]`` atom counts and property values of the training molecules.
        n: number of (atom count, value) pairs.

    Returns:
        ``(n_atoms [n] int64, targets [n] float64)``: the count from the count histogram,
        the value from the property histogram given the count.
    """
    counts, values = np.asarray(counts, np.int64), np.asarray(values, np.float64)
    ok = np.isfinite(values)
    rng = np.random.default_rng(seed)
    n_atoms = rng.choice(counts[ok], size=n, replace=True)   # = sampling the histogram
    return n_atoms.astype(np.int64), PropertyHistogram(counts, values, n_bins).sample(n_atoms, rng)


def ldm_targets(values, n: int, n_ood: int | None = None, ood_factor: float = 1.5
                ) -> dict[str, np.ndarray]:
    """LDM-3DG's targets (see the module doc for the OOD rule).

    Args:
        values: training property values (their min and max set the range).
        n: in-distribution targets, evenly spaced over ``[min, max]``.
        n_ood: targets on each OOD side (default ``n``), evenly spaced, excluding the
            range's own end point.

    Returns:
        ``{"in": [n], "ood_low": [k], "ood_high": [k]}`` (dataset units).
    """
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        raise ValueError("ldm_targets: no finite values")
    lo, hi = float(v.min()), float(v.max())
    k = n if n_ood is None else n_ood
    low_end = lo * ood_factor if lo < 0 else lo / ood_factor
    high_end = hi * ood_factor if hi > 0 else hi / ood_factor
    out = {"in": np.linspace(lo, hi, n)}
    out["ood_low"] = np.linspace(low_end, lo, k + 1)[:-1] if low_end < lo else np.zeros(0)
    out["ood_high"] = np.linspace(hi, high_end, k + 1)[1:] if high_end > hi else np.zeros(0)
    return out


def score_conditional(pred, target, valid=None, groups=None) -> dict[str, Any]:
    """MAE of predictions against requested values, overall and per target group.

    Args:
        pred: ``[M]`` predictor outputs (NaN for an unscorable molecule).
        target: ``[M]`` requested values (same units).
        valid: optional ``[M]`` bool validity (gives ``mae_valid`` and ``validity``).
        groups: optional ``[M]`` labels (e.g. ``in`` / ``ood_low`` / ``ood_high``).

    Returns:
        ``{"mae", "mae_ci", "n", "n_scored", "n_unscorable", "mae_valid", "mae_valid_ci",
        "n_valid", "validity", "groups": {label: {same keys}}}``; ``*_ci`` is the 95 %
        percentile-bootstrap interval over molecules (:func:`mae_interval`).
    """
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"score_conditional: {pred.shape} predictions vs {target.shape} targets")
    scored = np.isfinite(pred) & np.isfinite(target)
    out: dict[str, Any] = {"mae": mae(pred[scored], target[scored]),
                           "mae_ci": mae_interval(pred[scored], target[scored]), "n": int(len(pred)),
                           "n_scored": int(scored.sum()), "n_unscorable": int((~scored).sum())}
    if valid is not None:
        valid = np.asarray(valid, bool)
        both = scored & valid
        out.update(mae_valid=mae(pred[both], target[both]),
                   mae_valid_ci=mae_interval(pred[both], target[both]), n_valid=int(valid.sum()),
                   validity=float(valid.mean()) if len(valid) else float("nan"))
    if groups is not None:
        groups = np.asarray(groups)
        out["groups"] = {str(g): score_conditional(pred[groups == g], target[groups == g],
                                                   None if valid is None else valid[groups == g])
                         for g in dict.fromkeys(groups.tolist())}
    return out
