"""Chemistry of the valid samples: drug-likeness, synthesisability, force-field energies,
PoseBusters checks and the Fréchet ChemNet Distance.

``chemistry`` (on the molecules the ``rdkit`` profile finds valid, in sample order):

* ``chem.qed``: mean QED; ``chem.sa``: mean synthetic-accessibility score (RDKit Contrib
  ``SA_Score``, 1 easy .. 10 hard); ``chem.logp``: mean Crippen logP. Computed on the
  hydrogen-suppressed molecule.
* ``chem.mmff_energy_per_atom`` (kcal/mol per atom): median MMFF94 energy of the sample's
  own conformer divided by its atom count (H included); ``chem.mmff_strain`` (kcal/mol):
  median energy drop when that conformer is MMFF-relaxed (``Minimize(maxIts)``);
  ``chem.mmff_typed``: fraction of the tried molecules MMFF can type. Medians, because a
  few clashing samples have astronomically high energies (means are in the metadata).
  MMFF runs on the first ``mmff_max_molecules`` valid molecules (``subset: random``: a
  seeded random subset of them, as every capped member of the v2 suites).

``posebusters``: fraction of the first ``max_molecules`` samples (valid or not) passing every
check of PoseBusters' ``mol_fast`` configuration; a NaN check counts as a failure, and so
does a sample whose bonds could not be perceived.

``fcd``: Fréchet ChemNet Distance (``fcd`` package, weights shipped with it, offline) between
the canonical SMILES of the first ``max_molecules`` valid samples and those of a seeded
random subset of ``reference_size`` reference molecules (whose statistics are cached).
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any, Sequence

import numpy as np
from rdkit import Chem

from harness.core.registry import METRICS
from metrics.base import Metric, nan, quiet_rdkit, ratio
from metrics.rdkit_profile import canonical_smiles_of_valid, profile_molecule, rdkit_analysis
from metrics.capping import cap_indices
from metrics.samples import Samples

_SASCORER = None


def sascorer():
    """RDKit Contrib's ``sascorer`` module (fragment scores loaded once)."""
    global _SASCORER
    if _SASCORER is None:
        from rdkit import RDConfig

        path = os.path.join(RDConfig.RDContribDir, "SA_Score")
        if not os.path.isdir(path):
            raise ImportError(f"RDKit Contrib SA_Score not found at {path}")
        if path not in sys.path:
            sys.path.append(path)
        import sascorer as module  # type: ignore[import-not-found]

        module.readFragmentScores()
        _SASCORER = module
    return _SASCORER


def mmff_energies(mol: Chem.Mol, max_iters: int = 2000) -> tuple[float, float] | None:
    """(energy of the given conformer, energy after relaxation) in kcal/mol, or None when
    MMFF94 cannot type the molecule. ``mol`` must be sanitised with explicit H."""
    from rdkit.Chem import rdForceFieldHelpers as ff_helpers

    if not ff_helpers.MMFFHasAllMoleculeParams(mol):
        return None
    mol = Chem.Mol(mol)
    props = ff_helpers.MMFFGetMoleculeProperties(mol)
    field = ff_helpers.MMFFGetMoleculeForceField(mol, props)
    if field is None:
        return None
    before = field.CalcEnergy()
    field.Minimize(maxIts=max_iters)
    return float(before), float(field.CalcEnergy())


def _descriptor_chunk(jobs: Sequence[tuple]) -> list[tuple]:
    """Worker: (qed, sa, logp, mmff (before, after) or None or "skip") per molecule."""
    quiet_rdkit()
    from rdkit.Chem import QED

    scorer = sascorer()
    out = []
    for numbers, bonds, charges, pos, do_mmff, max_iters in jobs:
        mol, valid = profile_molecule(numbers, bonds, charges, pos)
        if not valid:  # cannot happen for molecules the profile found valid
            out.append((nan(), nan(), nan(), "skip"))
            continue
        heavy = Chem.RemoveHs(mol, sanitize=False)
        try:
            Chem.SanitizeMol(heavy)
            properties = QED.properties(heavy)        # ALOGP is Crippen's logP
            qed = float(QED.qed(heavy, qedProperties=properties))
            sa = float(scorer.calculateScore(heavy))
            logp = float(properties.ALOGP)
        except Exception:  # descriptor code on exotic valences
            qed = sa = logp = nan()
        energies: Any = "skip"
        if do_mmff:
            try:
                energies = mmff_energies(mol, max_iters)
            except Exception:
                energies = None
        out.append((qed, sa, logp, energies))
    return out


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, np.float64)
    return arr[np.isfinite(arr)]


def _mean(values: Sequence[float]) -> float:
    arr = _finite(values)
    return float(arr.mean()) if len(arr) else nan()


def _median(values: Sequence[float]) -> float:
    arr = _finite(values)
    return float(np.median(arr)) if len(arr) else nan()


@METRICS.register("chemistry")
class ChemistryMetric(Metric):
    """QED, SA score, logP, MMFF energy per atom and strain of valid samples."""

    name = "chemistry"
    version = 1
    needs = frozenset({"coords", "bonds"})
    outputs = {"chem.qed": True, "chem.sa": False, "chem.logp": None,
               "chem.mmff_energy_per_atom": False, "chem.mmff_strain": False,
               "chem.mmff_typed": True}
    defaults = {"max_molecules": None, "mmff_max_molecules": 500, "mmff_max_iters": 2000,
                "workers": None, "subset": "first", "subset_seed": 0}
    description = "QED, SA (RDKit Contrib), Crippen logP; MMFF94 energy/atom and relaxation strain"

    def compute(self, samples: Samples, reference: Any | None, space: Any | None = None):
        from metrics.parallel import chunked_map

        res = rdkit_analysis(samples, self.options["workers"])
        valid = np.flatnonzero(res["valid"])
        mode, seed = self.options["subset"], self.options["subset_seed"]
        keep = cap_indices(len(valid), self.options["max_molecules"], mode, seed)
        valid = valid if keep is None else valid[keep]
        mmff_cap = self.options["mmff_max_molecules"]
        mmff_pick = cap_indices(len(valid), mmff_cap, mode, seed + 1)
        mmff_ranks = set(range(len(valid)) if mmff_pick is None else mmff_pick.tolist())
        resolved = samples.resolved_bonds()
        jobs = []
        for rank, k in enumerate(valid.tolist()):
            atoms = samples.atoms(k)
            do_mmff = rank in mmff_ranks
            jobs.append((samples.numbers[atoms], resolved.of(k), resolved.charges[atoms],
                         samples.pos[atoms] if do_mmff else None, do_mmff,
                         self.options["mmff_max_iters"]))
        sascorer()  # load the fragment table once, before any worker forks
        results = chunked_map(_descriptor_chunk, jobs, workers=self.options["workers"], min_items=500)
        qed = [r[0] for r in results]
        sa = [r[1] for r in results]
        logp = [r[2] for r in results]
        tried = [(k, r[3]) for k, r in zip(valid.tolist(), results) if r[3] != "skip"]
        typed = [(k, e) for k, e in tried if e is not None]
        per_atom = [e[0] / samples.counts[k] for k, e in typed]
        strain = [e[0] - e[1] for k, e in typed]
        values = {
            "chem.qed": _mean(qed), "chem.sa": _mean(sa), "chem.logp": _mean(logp),
            "chem.mmff_energy_per_atom": _median(per_atom), "chem.mmff_strain": _median(strain),
            "chem.mmff_typed": ratio(len(typed), len(tried)),
        }
        meta = {
            "bond_source": samples.bond_source_summary()["label"],
            "units": {"mmff_energy_per_atom": "kcal/mol per atom", "mmff_strain": "kcal/mol"},
            "molecules": len(valid), "mmff_tried": len(tried), "mmff_typed": len(typed),
            "mmff_energy_per_atom_mean": _mean(per_atom), "mmff_strain_mean": _mean(strain),
            "mmff_non_finite": int(sum(1 for v in per_atom if not math.isfinite(v))),
            "aggregation": "qed/sa/logp: mean; mmff: median over typed molecules",
            "subset": {"rule": mode, "seed": seed, "valid": int(res["valid"].sum()),
                       "descriptors_on": len(valid), "mmff_on": len(mmff_ranks)},
        }
        return values, meta


# -- PoseBusters ------------------------------------------------------------------------------
@METRICS.register("posebusters")
class PoseBustersMetric(Metric):
    """PoseBusters ``mol_fast`` pass rate (NaN checks fail)."""

    name = "posebusters"
    version = 1
    needs = frozenset({"coords", "bonds"})
    outputs = {"pb.pass_rate": True}
    defaults = {"max_molecules": 100, "config": "mol_fast", "subset": "first", "subset_seed": 0}
    description = "PoseBusters all-checks pass rate (NaN = fail)"

    def compute(self, samples: Samples, reference: Any | None, space: Any | None = None):
        import pandas as pd
        from posebusters import PoseBusters

        subset, subset_meta = samples.capped(self.options["max_molecules"], self.options["subset"],
                                             self.options["subset_seed"])
        resolved = subset.resolved_bonds()
        analysis = rdkit_analysis(subset)
        mols, index = [], []
        for k in range(len(subset)):
            if resolved.status[k] == "failed":
                continue
            atoms = subset.atoms(k)
            mol, _ = profile_molecule(subset.numbers[atoms], resolved.of(k),
                                      resolved.charges[atoms], subset.pos[atoms])
            mols.append(mol)
            index.append(k)
        passed = np.zeros(len(subset), bool)
        check_rates: dict[str, float] = {}
        if mols:
            buster = PoseBusters(config=self.options["config"])
            frames = []
            try:
                frames.append(buster.bust(mols, None, None, full_report=False))
            except Exception:  # one bad molecule must not sink the batch: go one by one
                for mol in mols:
                    try:
                        frames.append(buster.bust([mol], None, None, full_report=False))
                    except Exception:
                        frames.append(None)
            if len(frames) == 1 and frames[0] is not None and len(frames[0]) == len(mols):
                table = frames[0].reset_index(drop=True)
            else:
                rows = [f.reset_index(drop=True) if f is not None else pd.DataFrame([{}])
                        for f in frames]
                table = pd.concat(rows, ignore_index=True)
            checks = table.apply(pd.to_numeric, errors="coerce").fillna(0.0).astype(bool)
            passed[index] = checks.all(axis=1).to_numpy() if checks.shape[1] else False
            check_rates = {c: ratio(int(checks[c].sum()), len(subset)) for c in checks.columns}
        meta = {
            "molecules": len(subset), "passed": int(passed.sum()),
            "bond_source": subset.bond_source_summary()["label"],
            "config": self.options["config"], "check_pass_rates": check_rates,
            "perception_failed": int((resolved.status == "failed").sum()),
            "rdkit_valid": int(analysis["valid"].sum()), "subset": subset_meta,
        }
        return {"pb.pass_rate": ratio(int(passed.sum()), len(subset))}, meta


# -- FCD --------------------------------------------------------------------------------------
def chemnet_statistics(smiles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean [512] and covariance [512, 512] of ChemNet activations (``fcd`` package)."""
    import fcd

    model = fcd.load_ref_model()
    # n_jobs=0: tokenise in-process (the default forks a DataLoader worker per call)
    activations = fcd.get_predictions(model, list(smiles), batch_size=256, n_jobs=0, device="cpu")
    return activations.mean(0), np.cov(activations.T)


@METRICS.register("fcd")
class FcdMetric(Metric):
    """Fréchet ChemNet Distance to the reference split."""

    name = "fcd"
    version = 1
    needs = frozenset({"coords", "bonds", "reference"})
    outputs = {"fcd": False}
    defaults = {"max_molecules": 1000, "reference_size": 10000, "seed": 0, "subset": "first",
                "subset_seed": 0}
    reference_options = ("reference_size", "seed")
    description = "Fréchet ChemNet Distance on canonical SMILES (fcd package)"

    def compute(self, samples: Samples, reference: Any | None, space: Any | None = None):
        if reference is None:
            return {"fcd": nan()}, {"note": "no reference set"}
        import fcd

        smiles = [s for s in rdkit_analysis(samples)["smiles"] if s is not None]
        keep = cap_indices(len(smiles), self.options["max_molecules"], self.options["subset"],
                           self.options["subset_seed"])
        of = len(smiles)
        smiles = smiles if keep is None else [smiles[i] for i in keep]
        meta = {"molecules": len(smiles), "reference_molecules": reference["molecules"],
                "subset": {"rule": "all" if keep is None else self.options["subset"],
                           "size": len(smiles), "of_valid": of, "seed": self.options["subset_seed"]},
                "bond_source": samples.bond_source_summary()["label"]}
        if len(smiles) < 2:
            meta["note"] = "fewer than 2 valid samples"
            return {"fcd": nan()}, meta
        mu, sigma = chemnet_statistics(smiles)
        value = fcd.calculate_frechet_distance(mu1=mu, sigma1=sigma, mu2=reference["mu"],
                                               sigma2=reference["sigma"])
        return {"fcd": float(value)}, meta

    def compute_reference(self, reference: Any) -> dict[str, Any]:
        n = len(reference)
        size = min(n, int(self.options["reference_size"]))
        index = np.sort(np.random.default_rng(self.options["seed"]).permutation(n)[:size])
        subset = reference.subset(index) if hasattr(reference, "subset") else reference
        samples = Samples.from_dataset(subset)
        if not hasattr(reference, "subset"):
            samples = samples.take(index)
        smiles = [s for s in rdkit_analysis(samples)["smiles"] if s is not None]
        if len(smiles) < 2:
            raise ValueError(f"fcd: the reference has {len(smiles)} valid molecule(s); need 2+")
        mu, sigma = chemnet_statistics(smiles)
        return {"mu": mu, "sigma": sigma, "molecules": len(smiles)}


__all__ = ["ChemistryMetric", "PoseBustersMetric", "FcdMetric", "canonical_smiles_of_valid"]
