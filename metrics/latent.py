"""Latent-space diagnostics for any diffusion space (it only calls ``encode``/``decode``).

The scored molecules are the *inputs* (e.g. a validation split); the space encodes and
decodes them.

Reconstruction (``decode(encode(x))`` against x):

* ``latent.recon_smiles_match``: fraction of inputs (with a valid input SMILES) whose
  decoded molecule has the same stereo-free canonical SMILES. Decoded bonds come from the
  decoder when ``space.bond_source == "decoder"``, else from ``rdDetermineBonds``.
* ``latent.recon_atom_type_accuracy``: matched atoms / atoms, order-free:
  ``sum_m sum_e min(n_in(m, e), n_out(m, e)) / sum_m max(n_in(m), n_out(m))`` (a decoder
  may emit atoms in another order; extra or missing atoms count as errors).
* ``latent.recon_rmsd`` (Å): Kabsch-aligned coordinate RMSD
  (:func:`harness.core.geometry.kabsch_rmsd`; proper rotations only, so a mirror image is an
  error) over molecules decoded with the same atom-type sequence.
* ``latent.recon_rmsd_symmetric`` (Å): heavy-atom RDKit ``GetBestRMS`` (best alignment
  over all graph automorphisms, so equivalent atoms may swap; hydrogens are left out as is
  conventional, since methyl rotors alone give 6^k all-atom matches) over molecules whose
  SMILES match, up to ``symmetric_rmsd_max`` of them.

Symmetry (``latent.symmetry_error.<g>`` for g = rotation, translation, permutation,
reflection, each separately): the mean over molecules of
``||encode(g x) - rho(g) encode(x)|| / ||encode(x)||`` with ``rho(g)`` what the space's
:class:`~harness.core.types.LatentSpec` declares -- the shared check of
:mod:`harness.core.symmetry` (seeded random transforms; the conformance checks use it too).

Dimensionality: ``latent.dof``: mean diffused degrees of freedom per molecule
(``spec.dim(n)``); ``latent.effective_dim``: principal components needed for ``variance``
(95 %) of the variance of the per-molecule latents (``LatentBatch.flat()``);
``latent.effective_dim_per_atom``: the same over per-atom feature rows (per-atom kinds).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness.core.geometry import SYMMETRY_GROUPS, kabsch_rmsd
from harness.core.registry import METRICS
from harness.core.symmetry import latent_vectors, symmetry_errors
from harness.core.types import ATOMIC_NUMBER, LatentBatch, MolBatch, collate_arrays
from metrics.base import Metric, MetricError, nan, ratio
from metrics.rdkit_profile import profile_molecule, rdkit_analysis
from metrics.samples import Samples

#: metric keys (other modules use these names, not string literals)
RECON_SMILES_MATCH = "latent.recon_smiles_match"
RECON_ATOM_TYPE_ACCURACY = "latent.recon_atom_type_accuracy"
RECON_RMSD = "latent.recon_rmsd"
RECON_RMSD_SYMMETRIC = "latent.recon_rmsd_symmetric"
#: ``latent.symmetry_error.<g>`` for each g of SYMMETRY_GROUPS, in that order
SYMMETRY_ERROR = {g: f"latent.symmetry_error.{g}" for g in SYMMETRY_GROUPS}
DOF = "latent.dof"
EFFECTIVE_DIM = "latent.effective_dim"
EFFECTIVE_DIM_PER_ATOM = "latent.effective_dim_per_atom"


def effective_dimension(features: torch.Tensor, variance: float = 0.95) -> float:
    """Number of principal components explaining ``variance`` of the rows' variance
    (NaN with fewer than 2 rows; 0 when the rows are all equal)."""
    if features.shape[0] < 2:
        return nan()
    x = features.to(torch.float64)
    x = x - x.mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    var = s ** 2
    total = var.sum()
    if total <= 0:
        return 0.0
    cumulative = torch.cumsum(var, 0) / total
    return float(int(torch.searchsorted(cumulative, torch.tensor(variance, dtype=torch.float64)).item()) + 1)


# -- the metric -----------------------------------------------------------------------------
def samples_to_batch(samples: Samples, elements: tuple[str, ...]) -> MolBatch:
    """Padded batch of ``samples`` with their resolved bonds and charges, in the space's
    element vocabulary (a clear error for an element it does not know)."""
    present = {s for s in samples.symbols}
    unknown = sorted(present - set(elements), key=lambda s: ATOMIC_NUMBER[s])
    if unknown:
        raise MetricError(f"latent: the space's vocabulary {list(elements)} lacks {unknown}")
    resolved = samples.resolved_bonds()
    return collate_arrays(samples.numbers, samples.pos.astype(np.float32), resolved.charges,
                          samples.counts, resolved.bonds, np.diff(resolved.bond_ptr),
                          np.zeros((len(samples), 0), np.float32), elements,
                          names=samples.names)


@METRICS.register("latent")
class LatentMetric(Metric):
    """Reconstruction, symmetry error and dimensionality of a space's latent."""

    name = "latent"
    version = 1
    needs = frozenset({"coords", "space"})
    outputs = {
        RECON_SMILES_MATCH: True, RECON_ATOM_TYPE_ACCURACY: True,
        RECON_RMSD: False, RECON_RMSD_SYMMETRIC: False,
        **{key: False for key in SYMMETRY_ERROR.values()},
        DOF: False, EFFECTIVE_DIM: False, EFFECTIVE_DIM_PER_ATOM: False,
    }
    defaults = {"max_molecules": 1000, "batch_size": 256, "symmetry_molecules": 256,
                "symmetric_rmsd_max": 200, "variance": 0.95, "seed": 0, "subset": "first"}
    description = "reconstruction, symmetry error and dimensionality of a space's latent"

    def compute(self, samples: Samples, reference: Any | None, space: Any | None = None):
        if space is None:
            raise MetricError("latent diagnostics need a space (score_molecules(..., space=...))")
        samples, _ = samples.capped(self.options["max_molecules"], self.options["subset"],
                                    self.options["seed"])
        batch = samples_to_batch(samples, tuple(space.elements))
        device = getattr(space, "device", None)
        if device is not None:          # spaces with weights on an accelerator
            batch = batch.to(device)
        bs = int(self.options["batch_size"])
        latents, decoded_parts = [], []
        with torch.no_grad():
            for start in range(0, len(batch), bs):
                part = batch[start:start + bs] if len(batch) > bs else batch
                z = space.encode(part)
                latents.append(z.to("cpu"))
                decoded_parts.append(space.decode(z).to("cpu"))
        values: dict[str, float] = {}
        meta: dict[str, Any] = {"molecules": len(samples), "space": getattr(space, "name", "?"),
                                "decoder_bonds": getattr(space, "bond_source", "perceive")}
        values.update(self._reconstruction(samples, decoded_parts, space, meta))
        values.update(self._symmetry(batch, space, meta))
        latent = LatentBatch.cat(latents) if latents else None
        values.update(self._dimensionality(batch, latent, space, meta))
        return values, meta

    # -- reconstruction --------------------------------------------------------------------
    def _reconstruction(self, samples: Samples, decoded_parts: list[MolBatch], space: Any,
                        meta: dict[str, Any]) -> dict[str, float]:
        from harness.core.molecules import Molecules

        bond_source = "decoder" if getattr(space, "bond_source", "perceive") == "decoder" else "perceive"
        # straight into the flat container (no per-molecule records in between)
        flat = [Molecules.from_batch(part) for part in decoded_parts]
        decoded = Samples.from_molecules(_concat(flat), "given" if bond_source == "decoder" else "perceive",
                                         bonds_known=np.full(sum(map(len, flat)), bond_source == "decoder"))
        decoded.bond_origin = "decoder" if bond_source == "decoder" else "none"
        if len(decoded) != len(samples):
            raise MetricError(f"latent: decode returned {len(decoded)} molecules for {len(samples)}")
        inputs = rdkit_analysis(samples)["smiles"]
        outputs = rdkit_analysis(decoded)["smiles"]
        comparable = [k for k, s in enumerate(inputs) if s is not None]
        matched = [k for k in comparable if outputs[k] == inputs[k]]

        # order-free atom-type accuracy, vectorised with one bincount per side
        size = max(ATOMIC_NUMBER.values()) + 1
        m = len(samples)
        count_in = np.bincount(samples.mol_of_atom * size + samples.numbers,
                               minlength=m * size).reshape(m, size)
        count_out = np.bincount(decoded.mol_of_atom * size + decoded.numbers,
                                minlength=m * size).reshape(m, size)
        overlap = np.minimum(count_in, count_out).sum()
        denominator = np.maximum(samples.counts, decoded.counts).sum()

        # positional Kabsch RMSD where the type sequences agree
        same = [k for k in range(m) if samples.counts[k] == decoded.counts[k] and np.array_equal(
            samples.numbers[samples.atoms(k)], decoded.numbers[decoded.atoms(k)])]
        rmsd = nan()
        if same:
            a = samples.take(same)
            b = decoded.take(same)
            rmsds = []
            for start, stop in a.chunks():
                _, pa, mask = a.dense(start, stop)
                _, pb, _ = b.dense(start, stop)
                rmsds.append(kabsch_rmsd(pb, pa, mask))
            rmsd = float(torch.cat(rmsds).mean())

        # symmetry-aware RMSD over SMILES matches
        from rdkit import Chem
        from rdkit.Chem import rdMolAlign

        sym_values = []
        res_in, res_out = samples.resolved_bonds(), decoded.resolved_bonds()
        for k in matched[: self.options["symmetric_rmsd_max"]]:
            ai, ao = samples.atoms(k), decoded.atoms(k)
            ref, ok_ref = profile_molecule(samples.numbers[ai], res_in.of(k), res_in.charges[ai],
                                           samples.pos[ai])
            probe, ok_probe = profile_molecule(decoded.numbers[ao], res_out.of(k),
                                               res_out.charges[ao], decoded.pos[ao])
            if not (ok_ref and ok_probe):
                continue
            try:  # heavy atoms: methyl rotors alone give 6^k all-atom matches
                sym_values.append(rdMolAlign.GetBestRMS(Chem.RemoveHs(probe), Chem.RemoveHs(ref),
                                                        maxMatches=100000))
            except (RuntimeError, ValueError):
                continue
        meta.update({
            "recon_comparable": len(comparable), "recon_smiles_matched": len(matched),
            "recon_same_type_sequence": len(same), "recon_symmetric_rmsd_molecules": len(sym_values),
            "decoded_bond_source": decoded.bond_source_summary()["label"],
        })
        return {
            RECON_SMILES_MATCH: ratio(len(matched), len(comparable)),
            RECON_ATOM_TYPE_ACCURACY: ratio(int(overlap), int(denominator)),
            RECON_RMSD: rmsd,
            RECON_RMSD_SYMMETRIC: float(np.mean(sym_values)) if sym_values else nan(),
        }

    # -- symmetry --------------------------------------------------------------------------
    def _symmetry(self, batch: MolBatch, space: Any, meta: dict[str, Any]) -> dict[str, float]:
        device = getattr(space, "device", None)
        part = batch[: int(self.options["symmetry_molecules"])] if len(batch) else batch
        generator = torch.Generator().manual_seed(int(self.options["seed"]))
        with torch.no_grad():
            part = part.to("cpu")
            encode = lambda b: space.encode(b if device is None else b.to(device)).to("cpu")
            errors = symmetry_errors(encode, part, generator, SYMMETRY_GROUPS, reduce="mean")
        out = {SYMMETRY_ERROR[kind]: value for kind, value in errors.items()}
        meta["symmetry_declared"] = dict(space.spec.symmetries)
        meta["symmetry_molecules"] = len(part)
        return out

    # -- dimensionality --------------------------------------------------------------------
    def _dimensionality(self, batch: MolBatch, latent: LatentBatch | None, space: Any,
                        meta: dict[str, Any]) -> dict[str, float]:
        spec = space.spec
        dof = spec.dim(batch.n_atoms.cpu())
        dof_mean = float(torch.as_tensor(dof, dtype=torch.float64).mean()) if len(batch) else nan()
        eff = effective_dimension(latent_vectors(latent), self.options["variance"]) \
            if latent is not None else nan()
        per_atom = nan()
        if latent is not None and spec.kind == "per_atom":
            per_atom = effective_dimension(latent.h[latent.mask], self.options["variance"])
        meta["latent_kind"] = spec.kind
        meta["latent_width"] = spec.width
        return {DOF: dof_mean, EFFECTIVE_DIM: eff, EFFECTIVE_DIM_PER_ATOM: per_atom}


def _concat(parts: list):
    """One :class:`~harness.core.molecules.Molecules` from several (offsets shifted)."""
    from harness.core.molecules import Molecules, offsets

    if len(parts) == 1:
        return parts[0]
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])   # noqa: E731
    return Molecules(numbers=cat("numbers"), pos=cat("pos"), charges=cat("charges"),
                     atom_ptr=offsets(np.concatenate([p.counts for p in parts])),
                     bonds=cat("bonds"), bond_ptr=offsets(np.concatenate([np.diff(p.bond_ptr) for p in parts])),
                     props=np.concatenate([p.props.reshape(len(p), -1)[:, :0] for p in parts]),
                     smiles=cat("smiles"), names=cat("names"), bond_ok=cat("bond_ok"))
