"""The ``rdkit`` profile: validity, connectivity and charge-aware stability on real bonds.

Bonds come from the molecule when its source provides them (a space that decodes bonds, an
SDF bond block, a dataset), else from ``rdDetermineBonds`` (charge 0, Hückel retry); see
:mod:`metrics.samples`. Every result records the bond source and per-source counts.

Definitions (all hydrogens are explicit atoms; no implicit H is ever added):

* **validity**: the whole molecule, with its formal charges, passes ``SanitizeMol`` and has
  no radical electron (an under-valent atom is a radical here, not a place for an implicit
  H). A molecule whose bonds could not be perceived is invalid.
* **connected**: the molecule is one fragment (over all molecules); **valid_connected**:
  both.
* **atom stability**: the atom's summed bond order (kekulised 1/2/3) is allowed for its
  element *and formal charge* (:data:`CHARGE_AWARE_VALENCE`, corrected chemistry: neutral C
  is 4 only, N+ is 4, O- is 1, ...); micro-averaged over all atoms. **mol stability**: all
  atoms stable.
* **uniqueness** over valid molecules, **novelty** over unique valid molecules against the
  reference split's SMILES built the same way (its own bonds; stereo-free canonical SMILES
  without H, whole molecule); **valid_unique** = validity x uniqueness.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from rdkit import Chem

from harness.core.registry import METRICS
from harness.core.types import ATOMIC_NUMBER
from metrics.base import Metric, nan, quiet_rdkit, ratio
from metrics.samples import Samples

# element -> {formal charge: allowed summed bond orders}
CHARGE_AWARE_VALENCE: dict[str, dict[int, tuple[int, ...]]] = {
    "H": {0: (1,)},
    "B": {0: (3,), -1: (4,)},
    "C": {0: (4,), 1: (3,), -1: (3,)},
    "N": {0: (3,), 1: (4,), -1: (2,)},
    "O": {0: (2,), 1: (3,), -1: (1,)},
    "F": {0: (1,)},
    "Al": {0: (3,), -1: (4,)},
    "Si": {0: (4,)},
    "P": {0: (3, 5), 1: (4,), -1: (2,)},
    "S": {0: (2, 4, 6), 1: (3,), -1: (1,)},
    "Cl": {0: (1,)},
    "As": {0: (3, 5), 1: (4,)},
    "Se": {0: (2, 4, 6)},
    "Br": {0: (1,)},
    "I": {0: (1, 3, 5)},
    "Hg": {0: (1, 2)},
    "Bi": {0: (3, 5)},
}
CHARGE_OFFSET = 3          # charges -3..+3 index columns 0..6
MAX_VALENCE_COLUMN = 8


def _allowed_table() -> np.ndarray:
    """[Z, charge + 3, valence] bool."""
    size = max(ATOMIC_NUMBER.values()) + 1
    table = np.zeros((size, 2 * CHARGE_OFFSET + 1, MAX_VALENCE_COLUMN + 1), bool)
    for sym, by_charge in CHARGE_AWARE_VALENCE.items():
        for charge, valences in by_charge.items():
            table[ATOMIC_NUMBER[sym], charge + CHARGE_OFFSET, list(valences)] = True
    return table


ALLOWED = _allowed_table()


def stable_atoms(samples: Samples) -> np.ndarray:
    """[A] bool: each atom's summed bond order (resolved bonds) is allowed for its element
    and formal charge. Vectorised over all atoms and bonds."""
    resolved = samples.resolved_bonds()
    mol_of_bond = np.repeat(np.arange(len(samples)), np.diff(resolved.bond_ptr))
    base = samples.atom_ptr[mol_of_bond]
    valence = np.zeros(samples.n_atoms, np.int64)
    np.add.at(valence, base + resolved.bonds[:, 0], resolved.bonds[:, 2])
    np.add.at(valence, base + resolved.bonds[:, 1], resolved.bonds[:, 2])
    charge = resolved.charges + CHARGE_OFFSET
    in_range = (charge >= 0) & (charge < ALLOWED.shape[1])
    ok = ALLOWED[samples.numbers, np.clip(charge, 0, ALLOWED.shape[1] - 1),
                 np.clip(valence, 0, MAX_VALENCE_COLUMN)]
    return ok & in_range & (valence <= MAX_VALENCE_COLUMN)


_BOND_TYPE = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}


def build_molecule(numbers: Sequence[int], bonds: np.ndarray, charges: Sequence[int],
                   pos: np.ndarray | None = None) -> Chem.Mol:
    """Explicit-H molecule from arrays: atoms with formal charges and no implicit H, bonds
    ``[m, 3]`` (i, j, order 1/2/3), optional conformer (Å). Unsanitised. (The same molecule
    as :func:`harness.core.chem.mol_from_arrays`, built from Python lists: this is the hot loop
    of every RDKit-based metric.)"""
    mol = Chem.RWMol()
    for z, q in zip(np.asarray(numbers).tolist(), np.asarray(charges).tolist()):
        atom = Chem.Atom(z)
        if q:
            atom.SetFormalCharge(q)
        atom.SetNoImplicit(True)
        mol.AddAtom(atom)
    for i, j, order in np.asarray(bonds).reshape(-1, 3).tolist():
        mol.AddBond(i, j, _BOND_TYPE[order])
    if pos is not None:
        from rdkit.Geometry import Point3D

        conf = Chem.Conformer(len(numbers))
        for k, (x, y, z) in enumerate(np.asarray(pos, np.float64).tolist()):
            conf.SetAtomPosition(k, Point3D(x, y, z))
        conf.Set3D(True)
        mol.AddConformer(conf, assignId=True)
    mol = mol.GetMol()
    mol.UpdatePropertyCache(strict=False)
    return mol


def has_radicals(mol: Chem.Mol) -> bool:
    atom = mol.GetAtomWithIdx
    return any(atom(k).GetNumRadicalElectrons() for k in range(mol.GetNumAtoms()))


def profile_molecule(numbers: Sequence[int], bonds: np.ndarray, charges: Sequence[int],
                     pos: np.ndarray | None = None) -> tuple[Chem.Mol, bool]:
    """The profile's molecule (explicit H, given charges, no implicit H) and whether it is
    valid (sanitises, no radicals). The molecule is sanitised in place when valid."""
    mol = build_molecule(numbers, bonds, charges, pos)
    try:
        Chem.SanitizeMol(mol)
    except Exception:  # RDKit raises several chemistry exception types
        return mol, False
    return mol, not has_radicals(mol)


def canonical_smiles_of_valid(mol: Chem.Mol) -> str:
    """Stereo-free canonical SMILES without H of a sanitised molecule."""
    return Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False), isomericSmiles=False)


def _profile_chunk(jobs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]
                   ) -> list[tuple[bool, int, str | None]]:
    """Worker: (valid, fragments, SMILES or None) per (numbers, bonds, charges)."""
    quiet_rdkit()
    out = []
    for numbers, bonds, charges in jobs:
        mol, valid = profile_molecule(numbers, bonds, charges)
        fragments = len(Chem.GetMolFrags(mol)) if mol.GetNumAtoms() else 0
        out.append((valid, fragments, canonical_smiles_of_valid(mol) if valid else None))
    return out


def rdkit_analysis(samples: Samples, workers: int | None = None) -> dict[str, Any]:
    """Per-molecule validity, fragment count and SMILES on the resolved bonds (cached on
    ``samples``; the chemistry, FCD and PoseBusters families reuse it)."""
    key = ("rdkit", samples.bond_mode)
    if key in samples.cache:
        return samples.cache[key]
    from metrics.parallel import chunked_map

    resolved = samples.resolved_bonds()
    jobs = [(samples.numbers[samples.atoms(k)], resolved.of(k), resolved.charges[samples.atoms(k)])
            for k in range(len(samples))]
    results = chunked_map(_profile_chunk, jobs, workers=workers, min_items=5000)
    failed = resolved.status == "failed"
    valid = np.array([v for v, _, _ in results], bool) & ~failed
    out = {
        "valid": valid,
        "fragments": np.array([f for _, f, _ in results], np.int64),
        "smiles": [s if ok else None for (_, _, s), ok in zip(results, valid)],
        "perception_failed": failed,
    }
    samples.cache[key] = out
    return out


@METRICS.register("rdkit")
class RdkitProfileMetric(Metric):
    """RDKit validity / connectivity / charge-aware stability / uniqueness / novelty."""

    name = "rdkit"
    version = 1
    needs = frozenset({"coords", "bonds", "reference"})
    outputs = {
        "rdkit.validity": True, "rdkit.connected": True, "rdkit.valid_connected": True,
        "rdkit.atom_stability": True, "rdkit.mol_stability": True, "rdkit.uniqueness": True,
        "rdkit.novelty": True, "rdkit.valid_unique": True,
    }
    defaults = {"workers": None}
    description = "RDKit sanitisation on given or rdDetermineBonds bonds, charge-aware valence"

    def compute(self, samples: Samples, reference: Any | None, space: Any | None = None):
        m = len(samples)
        res = rdkit_analysis(samples, self.options["workers"])
        stable = stable_atoms(samples)
        stable_per_mol = np.bincount(samples.mol_of_atom, weights=stable, minlength=m)
        mol_stable = stable_per_mol == samples.counts
        valid = res["valid"]
        connected = res["fragments"] == 1
        smiles = [s for s in res["smiles"] if s is not None]
        unique = set(smiles)
        values = {
            "rdkit.validity": ratio(int(valid.sum()), m),
            "rdkit.connected": ratio(int(connected.sum()), m),
            "rdkit.valid_connected": ratio(int((valid & connected).sum()), m),
            "rdkit.atom_stability": ratio(int(stable.sum()), samples.n_atoms),
            "rdkit.mol_stability": ratio(int(mol_stable.sum()), m),
            "rdkit.uniqueness": ratio(len(unique), len(smiles)),
        }
        values["rdkit.valid_unique"] = values["rdkit.validity"] * values["rdkit.uniqueness"] \
            if smiles else (0.0 if m else nan())
        meta: dict[str, Any] = {
            "bond_source": samples.bond_source_summary(),
            "molecules": m, "atoms": samples.n_atoms, "stable_atoms": int(stable.sum()),
            "stable_molecules": int(mol_stable.sum()), "valid": int(valid.sum()),
            "connected": int(connected.sum()), "unique": len(unique),
            "perception_failed": int(res["perception_failed"].sum()),
        }
        if reference is None:
            values["rdkit.novelty"] = nan()
            meta["novelty"] = "no reference set"
        else:
            novel = sum(1 for s in unique if s not in reference["smiles"])
            values["rdkit.novelty"] = ratio(novel, len(unique))
            meta["novel"] = novel
            meta["reference_smiles"] = len(reference["smiles"])
        return values, meta

    def compute_reference(self, reference: Any) -> dict[str, Any]:
        """The reference split's canonical SMILES from its own bonds (perceived where the
        dataset has none)."""
        samples = Samples.from_dataset(reference)
        res = rdkit_analysis(samples, self.options["workers"])
        smiles = [s for s in res["smiles"] if s is not None]
        return {"smiles": frozenset(smiles), "molecules": len(samples), "valid": len(smiles),
                "bond_source": samples.bond_source_summary()["label"]}
