"""``geom_stability``: atom and molecule stability with the aromatic-aware, charge-aware
valence table of *GEOM-Drugs Revisited* (Nikitin, Dunn, Koes & Isayev, 2025) -- the
"corrected" family of reference/protocol-differences.md, next to EDM-legacy (``edm`` with
``profile="geom"``: GEOM's sorted pair lookup of EDM's bond tables, single-bond validity) and
MiDi-legacy rules.

Rule. Each atom is described by the tuple ``(a, v)``: ``a`` = number of its aromatic bonds,
``v`` = summed order of its other bonds (single 1, double 2, triple 3). It is stable iff
``(a, v)`` is listed for its element and formal charge in :data:`GEOM_TUPLE_VALENCES`
(built by the paper's authors from the cleaned GEOM-Drugs conformers, H explicit; an element
or charge missing from the table is unstable). Aromatic bonds are not counted as 1.5, which
is what makes the table unambiguous (a fused aromatic carbon is ``(3, 0)``, a pyridine N
``(2, 0)``, a pyrrole NH ``(2, 1)``).

Bonds are the resolved bonds (given, or ``rdDetermineBonds``) with their formal charges; they
are kekulised, so ``aromatic="perceive"`` (default) recovers aromatic bonds by RDKit
sanitisation of each molecule (a molecule that does not sanitise keeps its Kekulé bonds,
counted in the metadata); ``aromatic="kekule"`` scores the Kekulé bonds as they are (the
paper's ``aromatic=false`` mode). Atom stability is micro-averaged (stable atoms / atoms);
molecule stability = molecules whose atoms are all stable / molecules. The tuple lookup is
vectorised over all atoms; only the aromaticity perception loops over molecules.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from harness.core.registry import METRICS
from harness.core.types import ATOMIC_NUMBER
from metrics.base import Metric, quiet_rdkit, ratio
from metrics.samples import Samples

#: element -> formal charge -> allowed (aromatic bonds, valence of the other bonds)
GEOM_TUPLE_VALENCES: dict[str, dict[int, tuple[tuple[int, int], ...]]] = {
    "H": {0: ((0, 1),)},
    "B": {0: ((0, 3),), -1: ((0, 4),)},
    "C": {0: ((0, 4), (2, 2), (2, 1), (3, 0)), -1: ((0, 3), (2, 1), (3, 0)),
          1: ((0, 3), (2, 1), (3, 0))},
    "N": {0: ((0, 3), (2, 0), (2, 1), (3, 0)), 1: ((0, 4), (2, 0), (2, 1), (2, 2), (3, 0)),
          -1: ((0, 2), (2, 0)), -2: ((0, 1),)},
    "O": {0: ((0, 2), (2, 0)), -1: ((0, 1),), 1: ((0, 3),)},
    "F": {0: ((0, 1),)},
    "Si": {0: ((0, 4),), 1: ((0, 5),)},
    "P": {0: ((0, 3), (0, 5)), 1: ((0, 4),)},
    "S": {0: ((0, 2), (0, 3), (0, 6), (2, 0)), 1: ((0, 3), (2, 0), (2, 1), (3, 0)),
          2: ((0, 4), (2, 1), (2, 2)), 3: ((0, 2), (0, 5)), -1: ((0, 1),)},
    "Cl": {0: ((0, 1),), 1: ((0, 2),)},
    "Br": {0: ((0, 1),), 1: ((0, 2),)},
    "I": {0: ((0, 1),), 1: ((0, 2),), 2: ((0, 3),)},
    "Bi": {0: ((0, 3),), 2: ((0, 5),)},
}
AROMATIC_MODES = ("perceive", "kekule")
_CHARGE_OFFSET, _SLOTS = 8, 16           # charges -8..7; aromatic / other valence < 16


def tuple_codes(z: np.ndarray, charge: np.ndarray, n_aromatic: np.ndarray, valence: np.ndarray) -> np.ndarray:
    """One integer per (element, charge, aromatic bonds, other valence); out-of-range values
    map to -1 (never allowed)."""
    z, charge = np.asarray(z, np.int64), np.asarray(charge, np.int64)
    n_aromatic, valence = np.asarray(n_aromatic, np.int64), np.asarray(valence, np.int64)
    ok = (np.abs(charge) < _CHARGE_OFFSET) & (n_aromatic < _SLOTS) & (valence < _SLOTS) & (valence >= 0)
    code = ((z * _SLOTS + charge + _CHARGE_OFFSET) * _SLOTS + n_aromatic) * _SLOTS + valence
    return np.where(ok, code, -1)


def _allowed_codes() -> np.ndarray:
    rows = [(ATOMIC_NUMBER[el], q, a, v) for el, by_charge in GEOM_TUPLE_VALENCES.items()
            for q, tuples in by_charge.items() for a, v in tuples]
    z, q, a, v = (np.array(c) for c in zip(*rows))
    return np.unique(tuple_codes(z, q, a, v))


ALLOWED_CODES = _allowed_codes()


def _aromatic_chunk(jobs: Sequence[tuple]) -> list[np.ndarray | None]:
    """Worker: per molecule, the aromatic flag of each bond row (None: did not sanitise)."""
    quiet_rdkit()
    from rdkit import Chem

    from harness.core.chem import mol_from_arrays

    out = []
    for numbers, bonds, charges in jobs:
        try:
            mol = mol_from_arrays(numbers, None, bonds, charges)
            Chem.SanitizeMol(mol)
            out.append(np.array([b.GetIsAromatic() for b in mol.GetBonds()], bool))
        except Exception:  # sanitisation / kekulisation errors: keep Kekulé bonds
            out.append(None)
    return out


def atom_tuples(samples: Samples, aromatic: str = "perceive", workers: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per atom: aromatic bond count [A], other-bond valence [A], formal charge [A]; and the
    number of molecules whose aromaticity could not be perceived."""
    if aromatic not in AROMATIC_MODES:
        raise ValueError(f"geom_stability: aromatic must be one of {AROMATIC_MODES}, got {aromatic!r}")
    resolved = samples.resolved_bonds()
    m = len(samples)
    is_arom = np.zeros(len(resolved.bonds), bool)
    failed = 0
    if aromatic == "perceive" and len(resolved.bonds):
        from metrics.parallel import chunked_map

        jobs = [(samples.numbers[samples.atoms(k)], resolved.of(k), resolved.charges[samples.atoms(k)])
                for k in range(m)]
        flags = chunked_map(_aromatic_chunk, jobs, workers=workers, min_items=3000)
        for k, f in enumerate(flags):
            if f is None:
                failed += int(len(resolved.of(k)) > 0)
            else:
                is_arom[resolved.bond_ptr[k]:resolved.bond_ptr[k + 1]] = f
    mol_of_bond = np.repeat(np.arange(m), np.diff(resolved.bond_ptr))
    gi = samples.atom_ptr[mol_of_bond] + resolved.bonds[:, 0]
    gj = samples.atom_ptr[mol_of_bond] + resolved.bonds[:, 1]
    ends = np.concatenate([gi, gj])
    arom2 = np.concatenate([is_arom, is_arom])
    order2 = np.concatenate([resolved.bonds[:, 2], resolved.bonds[:, 2]])
    n_arom = np.bincount(ends, weights=arom2, minlength=samples.n_atoms).astype(np.int64)
    valence = np.bincount(ends, weights=order2 * ~arom2, minlength=samples.n_atoms).astype(np.int64)
    return n_arom, valence, resolved.charges, failed


@METRICS.register("geom_stability")
class GeomStabilityMetric(Metric):
    """Atom / molecule stability with GEOM-Drugs Revisited's aromatic-aware valence tuples."""

    name = "geom_stability"
    version = 1
    needs = frozenset({"coords", "bonds"})
    outputs = {"geom.atom_stability": True, "geom.mol_stability": True}
    defaults = {"aromatic": "perceive", "workers": None}
    description = "stability by (aromatic bonds, other valence) tuples per element and charge (GEOM-Drugs Revisited)"

    def compute(self, samples: Samples, reference: Any | None, space: Any | None = None):
        n_arom, valence, charges, failed = atom_tuples(samples, self.options["aromatic"],
                                                       self.options["workers"])
        stable = np.isin(tuple_codes(samples.numbers, charges, n_arom, valence), ALLOWED_CODES)
        unstable_per_mol = np.bincount(samples.mol_of_atom, weights=~stable, minlength=len(samples))
        mol_stable = (unstable_per_mol == 0) & (samples.counts > 0)
        z_bad, n_bad = np.unique(samples.numbers[~stable], return_counts=True)
        from harness.core.types import PERIODIC_TABLE

        meta = {
            "bond_source": samples.bond_source_summary()["label"],
            "aromatic": self.options["aromatic"], "aromaticity_not_perceived": failed,
            "atoms": samples.n_atoms, "stable_atoms": int(stable.sum()),
            "molecules": len(samples), "stable_molecules": int(mol_stable.sum()),
            "unstable_atoms_by_element": {PERIODIC_TABLE[int(z)]: int(n) for z, n in zip(z_bad, n_bad)},
            "table": "GEOM-Drugs Revisited geom_drugs_h_tuple_valencies",
        }
        return {"geom.atom_stability": ratio(int(stable.sum()), samples.n_atoms),
                "geom.mol_stability": ratio(int(mol_stable.sum()), len(samples))}, meta
