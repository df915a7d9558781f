"""Distribution distances between the samples and a reference split.

* ``dist.atom_type_tv``: total variation ``0.5 * sum_e |p(e) - q(e)|`` between element
  frequencies over all atoms (H included).
* ``dist.atom_count_tv``: total variation between atoms-per-molecule histograms.
* ``dist.bond_type_tv``: total variation between bond-type frequencies (element pair and
  order, e.g. ``C-H``, ``C=O``, ``C#N``).
* ``dist.bond_length_w1.<type>`` (Å): Wasserstein-1 between bond-length distributions of
  one bond type; ``dist.bond_angle_w1.<type>`` (degrees): the same for angles a-c-b between
  two bonds at a centre c (type ``a-c-b``, ends in Hill order, bond orders ignored).
  Reported for every type that makes at least ``min_fraction`` of the reference's bonds
  (angles); NaN for a type the samples lack.
* ``dist.bond_length_w1`` / ``dist.bond_angle_w1``: the aggregate, the mean of the per-type
  distances weighted by the types' reference frequencies, over reported types present in
  the samples (the missing ones are listed in the metadata).

Bonds are the resolved bonds (given, or ``rdDetermineBonds``); the reference uses its own.
The reference is summarised by each type's count and ``n_quantiles`` evenly spaced
quantiles (W1 against them differs from the exact value by far less than 1e-3 Å).
Everything is vectorised over atoms, bonds and angles.
"""
from __future__ import annotations

import math

from typing import Any

import numpy as np
from scipy.stats import wasserstein_distance

from harness.core.types import PERIODIC_TABLE
from metrics.base import Metric, nan
from metrics.samples import Samples
from harness.core.registry import METRICS

BOND_SYMBOL = {1: "-", 2: "=", 3: "#"}


def hill_rank(z: np.ndarray) -> np.ndarray:
    """Sort key putting C first, H last, other elements by atomic number."""
    z = np.asarray(z)
    return np.where(z == 6, 0, np.where(z == 1, 1000, z))


def bond_table(samples: Samples) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every resolved bond: (z_first, z_second, order, length Å), ends in Hill order.
    Shapes [E]."""
    resolved = samples.resolved_bonds()
    mol_of_bond = np.repeat(np.arange(len(samples)), np.diff(resolved.bond_ptr))
    gi = samples.atom_ptr[mol_of_bond] + resolved.bonds[:, 0]
    gj = samples.atom_ptr[mol_of_bond] + resolved.bonds[:, 1]
    zi, zj = samples.numbers[gi], samples.numbers[gj]
    swap = hill_rank(zi) > hill_rank(zj)
    za, zb = np.where(swap, zj, zi), np.where(swap, zi, zj)
    length = np.linalg.norm(samples.pos[gi] - samples.pos[gj], axis=1)
    return za, zb, resolved.bonds[:, 2], length


def angle_table(samples: Samples) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every angle a-c-b between two bonds sharing centre c: (z_end1, z_centre, z_end2,
    angle in degrees), ends in Hill order. Shapes [T]."""
    resolved = samples.resolved_bonds()
    mol_of_bond = np.repeat(np.arange(len(samples)), np.diff(resolved.bond_ptr))
    gi = samples.atom_ptr[mol_of_bond] + resolved.bonds[:, 0]
    gj = samples.atom_ptr[mol_of_bond] + resolved.bonds[:, 1]
    centre = np.concatenate([gi, gj])
    neighbour = np.concatenate([gj, gi])
    order = np.argsort(centre, kind="stable")
    centre, neighbour = centre[order], neighbour[order]
    degree = np.bincount(centre, minlength=samples.n_atoms)
    empty = np.zeros(0)
    if len(degree) == 0 or degree.max(initial=0) < 2:
        return empty.astype(np.int64), empty.astype(np.int64), empty.astype(np.int64), empty
    max_degree = int(degree.max())
    first = np.concatenate([[0], np.cumsum(degree)[:-1]])
    slot = np.arange(len(centre)) - first[centre]
    table = np.full((samples.n_atoms, max_degree), -1, np.int64)
    table[centre, slot] = neighbour
    s, t = np.triu_indices(max_degree, k=1)
    a, b = table[:, s], table[:, t]                       # [A, pairs]
    c = np.broadcast_to(np.arange(samples.n_atoms)[:, None], a.shape)
    ok = (a >= 0) & (b >= 0)
    a, b, c = a[ok], b[ok], c[ok]
    v1 = samples.pos[a] - samples.pos[c]
    v2 = samples.pos[b] - samples.pos[c]
    cos = (v1 * v2).sum(1) / np.maximum(np.linalg.norm(v1, axis=1) * np.linalg.norm(v2, axis=1), 1e-12)
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    za, zb, zc = samples.numbers[a], samples.numbers[b], samples.numbers[c]
    swap = hill_rank(za) > hill_rank(zb)
    return np.where(swap, zb, za), zc, np.where(swap, za, zb), angle


def bond_keys(za: np.ndarray, zb: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Integer code per bond type (decoded by :func:`bond_label`)."""
    return (za * 128 + zb) * 4 + order


def bond_label(code: int) -> str:
    order, pair = code % 4, code // 4
    return f"{PERIODIC_TABLE[pair // 128]}{BOND_SYMBOL.get(order, '~')}{PERIODIC_TABLE[pair % 128]}"


def angle_keys(za: np.ndarray, zc: np.ndarray, zb: np.ndarray) -> np.ndarray:
    return (za * 128 + zc) * 128 + zb


def angle_label(code: int) -> str:
    zb, rest = code % 128, code // 128
    return f"{PERIODIC_TABLE[rest // 128]}-{PERIODIC_TABLE[rest % 128]}-{PERIODIC_TABLE[zb]}"


def group_values(keys: np.ndarray, values: np.ndarray) -> dict[int, np.ndarray]:
    """Key -> sorted values of that key (one sort, no loop over elements)."""
    if len(keys) == 0:
        return {}
    order = np.lexsort((values, keys))
    keys, values = keys[order], values[order]
    uniq, starts = np.unique(keys, return_index=True)
    bounds = list(starts[1:]) + [len(keys)]
    return {int(k): values[s:e] for k, s, e in zip(uniq, starts, bounds)}


def quantile_summary(values: np.ndarray, n_quantiles: int) -> np.ndarray:
    """``n_quantiles`` evenly spaced quantiles (midpoints) of sorted ``values`` (all of them
    when there are fewer)."""
    if len(values) <= n_quantiles:
        return np.asarray(values, np.float64)
    levels = (np.arange(n_quantiles) + 0.5) / n_quantiles
    return np.quantile(values, levels)


def total_variation(p: dict[Any, float], q: dict[Any, float]) -> float:
    """``0.5 * sum |p - q|`` of two count dictionaries normalised to frequencies."""
    sp, sq = sum(p.values()), sum(q.values())
    if not sp or not sq:
        return nan()
    # sorted keys: a sum over a set's order would depend on PYTHONHASHSEED (last-digit drift)
    keys = sorted(set(p) | set(q), key=str)
    return 0.5 * math.fsum(abs(p.get(k, 0) / sp - q.get(k, 0) / sq) for k in keys)


def _counts(keys: np.ndarray) -> dict[int, int]:
    uniq, counts = np.unique(keys, return_counts=True)
    return {int(k): int(c) for k, c in zip(uniq, counts)}


def summarise(samples: Samples, n_quantiles: int | None = None) -> dict[str, Any]:
    """Element, atom-count, bond-type counts and per-type bond-length / angle values (or
    their quantile summaries when ``n_quantiles``)."""
    za, zb, order, length = bond_table(samples)
    bkeys = bond_keys(za, zb, order)
    ea, ec, eb, angle = angle_table(samples)
    akeys = angle_keys(ea, ec, eb)
    lengths = group_values(bkeys, length)
    angles = group_values(akeys, angle)
    if n_quantiles:
        lengths = {k: quantile_summary(v, n_quantiles) for k, v in lengths.items()}
        angles = {k: quantile_summary(v, n_quantiles) for k, v in angles.items()}
    return {
        "elements": {PERIODIC_TABLE[k]: v for k, v in _counts(samples.numbers).items()},
        "atom_counts": _counts(samples.counts),
        "bond_counts": _counts(bkeys), "angle_counts": _counts(akeys),
        "bond_lengths": lengths, "bond_angles": angles,
    }


def _per_type_w1(gen: dict[int, np.ndarray], ref: dict[int, np.ndarray],
                 ref_counts: dict[int, int], min_fraction: float, label) -> tuple[dict, float, list]:
    total = sum(ref_counts.values())
    kept = sorted((k for k, c in ref_counts.items() if total and c / total >= min_fraction),
                  key=lambda k: -ref_counts[k])
    per_type, weights, missing = {}, {}, []
    for k in kept:
        if k in gen and len(gen[k]):
            per_type[label(k)] = float(wasserstein_distance(gen[k], ref[k]))
            weights[label(k)] = ref_counts[k]
        else:
            per_type[label(k)] = nan()
            missing.append(label(k))
    wsum = sum(weights.values())
    aggregate = sum(per_type[t] * w for t, w in weights.items()) / wsum if wsum else nan()
    return per_type, aggregate, missing


@METRICS.register("distributions")
class DistributionMetric(Metric):
    """Atom-type, atom-count and bond-type TV; per-type bond-length and angle W1."""

    name = "distributions"
    version = 1
    needs = frozenset({"coords", "bonds", "reference"})
    outputs = {
        "dist.atom_type_tv": False, "dist.atom_count_tv": False, "dist.bond_type_tv": False,
        "dist.bond_length_w1": False, "dist.bond_angle_w1": False,
    }
    dynamic_outputs = {"dist.bond_length_w1.": False, "dist.bond_angle_w1.": False}
    defaults = {"min_fraction": 0.01, "n_quantiles": 2000}
    reference_options = ("n_quantiles",)
    description = "TV of atom types / counts / bond types; W1 of bond lengths (Å) and angles (deg)"

    def compute(self, samples: Samples, reference: Any | None, space: Any | None = None):
        if reference is None:
            return {k: nan() for k in self.outputs}, {"note": "no reference set"}
        gen = summarise(samples)
        values = {
            "dist.atom_type_tv": total_variation(gen["elements"], reference["elements"]),
            "dist.atom_count_tv": total_variation(gen["atom_counts"], reference["atom_counts"]),
            "dist.bond_type_tv": total_variation(gen["bond_counts"], reference["bond_counts"]),
        }
        lengths, agg_len, miss_len = _per_type_w1(gen["bond_lengths"], reference["bond_lengths"],
                                                  reference["bond_counts"],
                                                  self.options["min_fraction"], bond_label)
        angles, agg_ang, miss_ang = _per_type_w1(gen["bond_angles"], reference["bond_angles"],
                                                 reference["angle_counts"],
                                                 self.options["min_fraction"], angle_label)
        values["dist.bond_length_w1"] = agg_len
        values["dist.bond_angle_w1"] = agg_ang
        values.update({f"dist.bond_length_w1.{t}": v for t, v in lengths.items()})
        values.update({f"dist.bond_angle_w1.{t}": v for t, v in angles.items()})
        meta = {
            "bond_source": samples.bond_source_summary(),
            "units": {"bond_length_w1": "Å", "bond_angle_w1": "degrees"},
            "bonds": int(sum(gen["bond_counts"].values())),
            "angles": int(sum(gen["angle_counts"].values())),
            "missing_bond_types": miss_len, "missing_angle_types": miss_ang,
            "reference_molecules": reference["molecules"],
        }
        return values, meta

    def compute_reference(self, reference: Any) -> dict[str, Any]:
        samples = Samples.from_dataset(reference)
        out = summarise(samples, self.options["n_quantiles"])
        out["molecules"] = len(samples)
        out["bond_source"] = samples.bond_source_summary()["label"]
        return out
