"""The ``edm`` profile: EDM-legacy stability, validity, uniqueness and novelty.

Specification: the rules of EDM's public evaluation code (``e3_diffusion_for_molecules``,
``qm9/analyze.py`` and ``qm9/bond_analyze.py``), re-implemented and summarised here.

* **Bond rule.** ``d = 100 * ||x_i - x_j||`` (pm). Order 1 if ``d < single + 10``; then 2 if a
  double length exists for the *ordered* pair and ``d < double + 5``; then 3 if a triple
  length exists and ``d < triple + 3``; else 0. Every unordered pair i < j is tested (no
  cut-off).
* **Pair order.** ``qm9`` profile: the pair is looked up as (type of atom i, type of atom j)
  with i < j in the input order; a pair missing from the single table is no bond (the EDM
  code would raise; no QM9 pair is missing). ``geom`` profile: the pair is sorted by the
  type index of the GEOM decoder order and a missing single entry means no bond. The only
  asymmetric entry is the C=S double length (looked up as C then S only).
* **Stability.** An atom is stable iff its summed bond order is one of the element's allowed
  valences (no charges). Atom stability is micro-averaged: stable atoms / atoms over all
  molecules; molecule stability: molecules whose atoms are all stable / molecules.
* **Validity.** Neutral atoms (implicit H allowed) plus the rule's bonds (``geom``: every
  order set to 1), ``SanitizeMol`` on the whole molecule; valid iff that succeeds. The
  recorded SMILES is that of the largest fragment (most atoms; first on ties), sanitised,
  ``MolToSmiles`` with the explicit H atoms kept, as in EDM.
* **Uniqueness** = distinct SMILES / valid; **novelty** = unique SMILES absent from the
  training set / unique, where the training set's SMILES are built the same way from its
  coordinates (EDM: whole molecule, sanitised, no largest-fragment step); **valid_unique**
  = validity x uniqueness.

The distance test runs on dense padded float64 tensors with ``[n_types, n_types]`` threshold
tables; RDKit is used only to sanitise and write SMILES.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from rdkit import Chem

from harness.core.registry import METRICS
from harness.core.types import ATOMIC_NUMBER
from metrics.base import Metric, nan, quiet_rdkit, ratio
from metrics.samples import Samples

# GEOM decoder order (also the table's element axis).
EDM_ELEMENTS: tuple[str, ...] = ("H", "B", "C", "N", "O", "F", "Al", "Si", "P", "S", "Cl",
                                 "As", "Br", "I", "Hg", "Bi")

# Single-bond lengths (pm), one entry per unordered pair.
SINGLE_PM: dict[tuple[str, str], int] = {
    ("H", "H"): 74, ("H", "B"): 119, ("H", "C"): 109, ("H", "N"): 101, ("H", "O"): 96,
    ("H", "F"): 92, ("H", "Si"): 148, ("H", "P"): 144, ("H", "S"): 134, ("H", "Cl"): 127,
    ("H", "As"): 152, ("H", "Br"): 141, ("H", "I"): 161, ("B", "Cl"): 175,
    ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143, ("C", "F"): 135, ("C", "Si"): 185,
    ("C", "P"): 184, ("C", "S"): 182, ("C", "Cl"): 177, ("C", "Br"): 194, ("C", "I"): 214,
    ("N", "N"): 145, ("N", "O"): 140, ("N", "F"): 136, ("N", "P"): 177, ("N", "S"): 168,
    ("N", "Cl"): 175, ("N", "Br"): 214, ("N", "I"): 222,
    ("O", "O"): 148, ("O", "F"): 142, ("O", "Si"): 163, ("O", "P"): 163, ("O", "S"): 151,
    ("O", "Cl"): 164, ("O", "Br"): 172, ("O", "I"): 194,
    ("F", "F"): 142, ("F", "Si"): 160, ("F", "P"): 156, ("F", "S"): 158, ("F", "Cl"): 166,
    ("F", "Br"): 178, ("F", "I"): 187,
    ("Si", "Si"): 233, ("Si", "S"): 200, ("Si", "Cl"): 202, ("Si", "Br"): 215, ("Si", "I"): 243,
    ("P", "P"): 221, ("P", "S"): 210, ("P", "Cl"): 203, ("P", "Br"): 222,
    ("S", "S"): 204, ("S", "Cl"): 207, ("S", "Br"): 225, ("S", "I"): 234,
    ("Cl", "Cl"): 199, ("Cl", "Br"): 214, ("Br", "Br"): 228, ("I", "I"): 266,
}
# Double-bond lengths (pm), *ordered* (first, second) lookups: symmetric except C->S.
DOUBLE_PM: dict[tuple[str, str], int] = {
    ("C", "C"): 134, ("C", "N"): 129, ("N", "C"): 129, ("C", "O"): 120, ("O", "C"): 120,
    ("C", "S"): 160,  # no ("S", "C") entry: C=S is found only when C comes first
    ("N", "N"): 125, ("N", "O"): 121, ("O", "N"): 121, ("O", "O"): 121,
    ("O", "P"): 150, ("P", "O"): 150, ("P", "S"): 186, ("S", "P"): 186,
}
TRIPLE_PM: dict[tuple[str, str], int] = {
    ("C", "C"): 120, ("C", "N"): 116, ("N", "C"): 116, ("C", "O"): 113, ("O", "C"): 113,
    ("N", "N"): 110,
}
MARGINS_PM: tuple[int, int, int] = (10, 5, 3)

# Allowed summed bond orders (no charges).
ALLOWED_VALENCE: dict[str, tuple[int, ...]] = {
    "H": (1,), "C": (4,), "N": (3,), "O": (2,), "F": (1,), "B": (3,), "Al": (3,), "Si": (4,),
    "P": (3, 5), "S": (4,), "Cl": (1,), "As": (3,), "Br": (1,), "I": (1,), "Hg": (1, 2),
    "Bi": (3, 5),
}
MAX_VALENCE_COLUMN = 8  # valences >= this are never allowed

PROFILES = ("qm9", "geom")


def single_lookup(a: str, b: str) -> int | None:
    """Single-bond length (pm) of an unordered pair, or None."""
    return SINGLE_PM.get((a, b), SINGLE_PM.get((b, a)))


def bond_order_rule(a: str, b: str, distance_pm: float) -> int:
    """The EDM rule for one *ordered* pair (a, b) at ``distance_pm`` (pm); a pair with no
    single-bond length is no bond. Used by the per-pair reference implementation in tests
    and by documentation examples; the metric itself uses :func:`bond_orders`."""
    single = single_lookup(a, b)
    if single is None or not distance_pm < single + MARGINS_PM[0]:
        return 0
    double = DOUBLE_PM.get((a, b))
    if double is not None and distance_pm < double + MARGINS_PM[1]:
        triple = TRIPLE_PM.get((a, b))
        if triple is not None and distance_pm < triple + MARGINS_PM[2]:
            return 3
        return 2
    return 1


def _element_axis() -> tuple[str, ...]:
    # every element RDKit knows gets a row (those outside EDM's tables bond to nothing)
    extra = tuple(s for s in ATOMIC_NUMBER if s not in EDM_ELEMENTS)
    return EDM_ELEMENTS + extra


class ThresholdTables:
    """Lookup tables ``[n_types, n_types]`` (types indexed by atomic number).

    ``single[a, b]``, ``double[a, b]``, ``triple[a, b]``: thresholds in pm (length + margin)
    for the ordered pair (a, b); -inf where the entry does not exist. ``allowed[a, v]``:
    whether summed bond order v is allowed for element a.
    """

    def __init__(self, profile: str = "qm9"):
        if profile not in PROFILES:
            raise ValueError(f"edm profile must be one of {PROFILES}, got {profile!r}")
        self.profile = profile
        size = max(ATOMIC_NUMBER.values()) + 1
        inf = float("-inf")
        single = torch.full((size, size), inf, dtype=torch.float64)
        double = torch.full((size, size), inf, dtype=torch.float64)
        triple = torch.full((size, size), inf, dtype=torch.float64)
        rank = {s: k for k, s in enumerate(_element_axis())}
        for a in ATOMIC_NUMBER:
            for b in ATOMIC_NUMBER:
                za, zb = ATOMIC_NUMBER[a], ATOMIC_NUMBER[b]
                # geom: the lookup is made with the pair sorted by decoder type index
                first, second = (a, b) if profile == "qm9" or rank[a] <= rank[b] else (b, a)
                s = single_lookup(first, second)
                if s is None:
                    continue
                single[za, zb] = s + MARGINS_PM[0]
                if (first, second) in DOUBLE_PM:
                    double[za, zb] = DOUBLE_PM[first, second] + MARGINS_PM[1]
                if (first, second) in TRIPLE_PM:
                    triple[za, zb] = TRIPLE_PM[first, second] + MARGINS_PM[2]
        self.single, self.double, self.triple = single, double, triple
        allowed = torch.zeros((size, MAX_VALENCE_COLUMN + 1), dtype=torch.bool)
        for sym, valences in ALLOWED_VALENCE.items():
            allowed[ATOMIC_NUMBER[sym], list(valences)] = True
        self.allowed = allowed


_TABLES: dict[str, ThresholdTables] = {}


def tables(profile: str) -> ThresholdTables:
    if profile not in _TABLES:
        _TABLES[profile] = ThresholdTables(profile)
    return _TABLES[profile]


def pair_bond_orders(z: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor,
                     profile: str = "qm9") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM bond orders of every unordered pair, vectorised over molecules and pairs.

    Pairs are enumerated as ``(hi, lo)`` with ``hi > lo`` in row-major order (EDM's bond
    insertion order); the table lookup uses (type of ``lo``, type of ``hi``), i.e. the
    input order i < j.

    Args:
        z: [B, N] atomic numbers (0 in padding).
        pos: [B, N, 3] coordinates, Å (float64 recommended: the thresholds are sharp).
        mask: [B, N] real atoms.
    Returns:
        ``order`` [B, P] long (0 for padding pairs), ``hi`` [P], ``lo`` [P] atom indices,
        with P = N (N - 1) / 2.
    """
    t = tables(profile)
    n = z.shape[1]
    hi, lo = torch.tril_indices(n, n, offset=-1, device=z.device)
    diff = pos[:, lo] - pos[:, hi]                                  # [B, P, 3]
    d_pm = 100.0 * torch.sqrt((diff * diff).sum(-1))
    code = z[:, lo] * t.single.shape[1] + z[:, hi]                  # ordered (i, j), i < j
    single = d_pm < t.single.view(-1)[code]
    double = d_pm < t.double.view(-1)[code]
    triple = d_pm < t.triple.view(-1)[code]
    order = single.long() * (1 + double.long() * (1 + triple.long()))
    order = order * (mask[:, lo] & mask[:, hi])
    return order, hi, lo


def pair_valence(order: torch.Tensor, hi: torch.Tensor, lo: torch.Tensor, n: int) -> torch.Tensor:
    """[B, N] summed bond order of each atom from pair orders ``[B, P]``."""
    valence = torch.zeros(order.shape[0], n, dtype=order.dtype, device=order.device)
    valence.index_add_(1, hi, order)
    valence.index_add_(1, lo, order)
    return valence


def bond_orders(z: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor,
                profile: str = "qm9") -> torch.Tensor:
    """Dense ``[B, N, N]`` symmetric EDM bond orders (0 on the diagonal and padding);
    see :func:`pair_bond_orders`."""
    order, hi, lo = pair_bond_orders(z, pos, mask, profile)
    n = z.shape[1]
    dense = torch.zeros(z.shape[0], n, n, dtype=order.dtype, device=order.device)
    dense[:, hi, lo] = order
    dense[:, lo, hi] = order
    return dense


def atom_stability_from_valence(z: torch.Tensor, valence: torch.Tensor, mask: torch.Tensor,
                                profile: str = "qm9") -> torch.Tensor:
    """[B, N] bool: the summed bond order is an allowed valence (False in padding)."""
    allowed = tables(profile).allowed
    return allowed[z, valence.clamp(max=MAX_VALENCE_COLUMN)] & mask


def atom_stability(z: torch.Tensor, order: torch.Tensor, mask: torch.Tensor,
                   profile: str = "qm9") -> torch.Tensor:
    """[B, N] bool from dense orders ``[B, N, N]``."""
    return atom_stability_from_valence(z, order.sum(-1), mask, profile)


# -- RDKit part ----------------------------------------------------------------------------
_RDKIT_BOND = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}


def build_validity_molecule(numbers: Sequence[int], edges: np.ndarray) -> Chem.RWMol:
    """Neutral atoms (implicit H allowed, as EDM) plus bonds ``[(i, j, order)]``, added in
    the order given (EDM adds them as i > j in row-major order)."""
    mol = Chem.RWMol()
    for z in np.asarray(numbers).tolist():
        mol.AddAtom(Chem.Atom(z))
    for i, j, order in np.asarray(edges).reshape(-1, 3).tolist():
        mol.AddBond(i, j, _RDKIT_BOND[order])
    return mol


def edm_smiles(mol: Chem.Mol) -> str | None:
    """EDM's ``mol2smiles``: sanitise in place, then ``MolToSmiles``; None when sanitisation
    fails."""
    try:
        Chem.SanitizeMol(mol)
    except (ValueError, RuntimeError):   # RuntimeError: RDKit pre-condition violations
        return None
    return Chem.MolToSmiles(mol)


def validity_smiles(numbers: Sequence[int], edges: np.ndarray) -> tuple[bool, str | None]:
    """(valid, SMILES of the largest fragment) per the EDM validity rule."""
    mol = build_validity_molecule(numbers, edges)
    try:
        Chem.SanitizeMol(mol)
    except (ValueError, RuntimeError):   # a generated graph RDKit cannot even check: invalid
        return False, None
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    if len(frags) == 1:  # the single fragment's SMILES is the molecule's
        return True, Chem.MolToSmiles(mol)
    largest = max(frags, key=lambda m: m.GetNumAtoms())
    return True, edm_smiles(Chem.Mol(largest))


def whole_molecule_smiles(numbers: Sequence[int], edges: np.ndarray) -> str | None:
    """SMILES of the whole molecule (training-set SMILES, EDM's ``retrieve_qm9_smiles``)."""
    return edm_smiles(build_validity_molecule(numbers, edges))


def _validity_chunk(jobs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[bool, str | None]]:
    quiet_rdkit()
    return [validity_smiles(z, e) for z, e in jobs]


def _whole_smiles_chunk(jobs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[str | None]:
    quiet_rdkit()
    return [whole_molecule_smiles(z, e) for z, e in jobs]


class EdmAnalysis:
    """Per-molecule EDM results for a :class:`Samples` (one pass over dense chunks).

    Attributes:
        atoms_stable: [M] stable atoms per molecule; atoms: [M] atoms per molecule.
        mol_stable: [M] bool.
        edges: per molecule, [m, 3] (i, j, order) with i > j in EDM's insertion order
            (orders set to 1 in the ``geom`` profile's validity).
    """

    def __init__(self, samples: Samples, profile: str = "qm9"):
        m = len(samples)
        self.atoms = samples.counts.copy()
        self.atoms_stable = np.zeros(m, np.int64)
        self.mol_stable = np.zeros(m, bool)
        edge_chunks: list[tuple[np.ndarray, np.ndarray]] = []
        for start, stop in samples.chunks():
            z, pos, mask = samples.dense(start, stop)
            order, hi, lo = pair_bond_orders(z, pos, mask, profile)
            valence = pair_valence(order, hi, lo, z.shape[1])
            stable = atom_stability_from_valence(z, valence, mask, profile)
            n_stable = stable.sum(1).numpy()
            self.atoms_stable[start:stop] = n_stable
            self.mol_stable[start:stop] = n_stable == mask.sum(1).numpy()
            # edges (b, hi, lo) in row-major pair order: EDM's bond insertion order
            b, p = order.nonzero(as_tuple=True)
            o = order[b, p]
            if profile == "geom":
                o = torch.ones_like(o)
            edge_chunks.append((b.numpy() + start, torch.stack([hi[p], lo[p], o], 1).numpy()))
        if edge_chunks:
            mol_of_edge = np.concatenate([c[0] for c in edge_chunks])
            edges = np.concatenate([c[1] for c in edge_chunks])
        else:
            mol_of_edge, edges = np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
        split_at = np.searchsorted(mol_of_edge, np.arange(1, m))
        self.edges = np.split(edges, split_at) if m else []


@METRICS.register("edm")
class EdmMetric(Metric):
    """EDM-legacy atom/molecule stability, validity, uniqueness, novelty, V×U."""

    name = "edm"
    version = 1
    needs = frozenset({"coords", "reference"})
    outputs = {
        "edm.atom_stability": True, "edm.mol_stability": True, "edm.validity": True,
        "edm.uniqueness": True, "edm.novelty": True, "edm.valid_unique": True,
    }
    defaults = {"profile": "qm9", "workers": None}
    reference_options = ("profile",)
    description = "EDM-legacy distance-table stability and RDKit validity (reference/metrics-edm.md)"

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options["profile"] not in PROFILES:
            raise ValueError(f"edm: profile must be one of {PROFILES}, got {self.options['profile']!r}")

    def analyse(self, samples: Samples) -> dict[str, Any]:
        """Stability counts, per-molecule validity and SMILES (cached on ``samples``)."""
        profile = self.options["profile"]
        key = ("edm", profile)
        if key in samples.cache:
            return samples.cache[key]
        from metrics.parallel import chunked_map

        analysis = EdmAnalysis(samples, profile)
        jobs = [(samples.numbers[samples.atoms(k)], analysis.edges[k]) for k in range(len(samples))]
        # ~0.1 ms per molecule: a pool only pays off for very large sets
        results = chunked_map(_validity_chunk, jobs, workers=self.options["workers"], min_items=30000)
        out = {
            "atoms": analysis.atoms, "atoms_stable": analysis.atoms_stable,
            "mol_stable": analysis.mol_stable,
            "valid": np.array([v for v, _ in results], bool),
            "smiles": [s for v, s in results if v],
        }
        samples.cache[key] = out
        return out

    def compute(self, samples: Samples, reference: Any | None, space: Any | None = None):
        res = self.analyse(samples)
        m = len(samples)
        n_atoms = int(res["atoms"].sum())
        valid_smiles: list[str | None] = res["smiles"]
        n_valid = len(valid_smiles)
        unique = set(valid_smiles)
        values = {
            "edm.atom_stability": ratio(int(res["atoms_stable"].sum()), n_atoms),
            "edm.mol_stability": ratio(int(res["mol_stable"].sum()), m),
            "edm.validity": ratio(n_valid, m),
            "edm.uniqueness": ratio(len(unique), n_valid),
        }
        values["edm.valid_unique"] = values["edm.validity"] * values["edm.uniqueness"] \
            if n_valid else (0.0 if m else nan())
        meta: dict[str, Any] = {
            "bond_source": f"edm distance table ({self.options['profile']} pair order)",
            "molecules": m, "atoms": n_atoms, "stable_atoms": int(res["atoms_stable"].sum()),
            "stable_molecules": int(res["mol_stable"].sum()), "valid": n_valid,
            "unique": len(unique),
        }
        if reference is None:
            values["edm.novelty"] = nan()
            meta["novelty"] = "no reference set"
        else:
            train: frozenset[str] = reference["smiles"]
            novel = sum(1 for s in unique if s not in train)
            values["edm.novelty"] = ratio(novel, len(unique))
            meta["novel"] = novel
            meta["reference_smiles"] = len(train)
        return values, meta

    def compute_reference(self, reference: Any) -> dict[str, Any]:
        """Training-set SMILES built from its coordinates with the same rule (whole
        molecule, sanitised; molecules that fail sanitisation are left out, as in EDM)."""
        from metrics.parallel import chunked_map

        samples = Samples.from_dataset(reference)
        analysis = EdmAnalysis(samples, self.options["profile"])
        jobs = [(samples.numbers[samples.atoms(k)], analysis.edges[k]) for k in range(len(samples))]
        smiles = chunked_map(_whole_smiles_chunk, jobs, workers=self.options["workers"], min_items=30000)
        kept = [s for s in smiles if s is not None]
        return {"smiles": frozenset(kept), "molecules": len(samples), "sanitised": len(kept)}
