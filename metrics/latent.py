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
* ``latent.recon_rmsd`` (Å): Kabsch-aligned coordinate RMSD (proper rotations only, so a
  mirror image is an error) over molecules decoded with the same atom-type sequence.
* ``latent.recon_rmsd_symmetric`` (Å): heavy-atom RDKit ``GetBestRMS`` (best alignment
  over all graph automorphisms, so equivalent atoms may swap; hydrogens are left out as is
  conventional, since methyl rotors alone give 6^k all-atom matches) over molecules whose
  SMILES match, up to ``symmetric_rmsd_max`` of them.

Symmetry (``latent.symmetry_error.<g>`` for g = rotation, translation, permutation,
reflection, each separately): the mean over molecules of
``||encode(g x) - rho(g) encode(x)|| / ||encode(x)||``, where ``rho(g)`` is what the space's
:class:`~harness.core.types.LatentSpec` declares: per-atom latents permute with the atoms;
declared-equivariant coordinates ``x`` rotate / reflect / translate; everything else is
expected to stay unchanged (so a ``"none"`` declaration reports how much the latent moves).
Transforms are random (seeded): a uniform rotation, a mirror across a random plane, a
translation ~ N(0, (5 Å)^2) per axis, a random permutation of each molecule's atoms.

Dimensionality: ``latent.dof``: mean diffused degrees of freedom per molecule
(``spec.dim(n)``); ``latent.effective_dim``: principal components needed for ``variance``
(95 %) of the variance of the per-molecule latents (``LatentBatch.flat()``);
``latent.effective_dim_per_atom``: the same over per-atom feature rows (per-atom kinds).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from harness.core.registry import METRICS
from harness.core.types import ATOMIC_NUMBER, LatentBatch, MolBatch, collate_arrays
from metrics.base import Metric, MetricError, nan, ratio
from metrics.rdkit_profile import profile_molecule, rdkit_analysis
from metrics.samples import Samples

TRANSFORMS = ("rotation", "translation", "permutation", "reflection")


# -- geometry -------------------------------------------------------------------------------
def random_rotation(generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """[3, 3] uniformly random proper rotation (QR of a Gaussian matrix, sign-fixed)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


def random_reflection(generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """[3, 3] mirror across a random plane through the origin (``I - 2 n n^T``)."""
    n = torch.randn(3, generator=generator, dtype=torch.float64)
    n = n / n.norm()
    return (torch.eye(3, dtype=torch.float64) - 2 * torch.outer(n, n)).to(dtype)


def kabsch_rmsd(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-molecule RMSD after optimal superposition by a proper rotation.

    Args:
        pred, target: [B, N, 3] Å. mask: [B, N] real atoms (same in both).
    Returns:
        [B] RMSD, Å.
    """
    w = mask[..., None].to(torch.float64)
    n = w.sum(1).clamp(min=1)                                   # [B, 1]
    p = pred.to(torch.float64)
    q = target.to(torch.float64)
    p = (p - (p * w).sum(1, keepdim=True) / n[:, None]) * w
    q = (q - (q * w).sum(1, keepdim=True) / n[:, None]) * w
    h = p.transpose(1, 2) @ q                                    # [B, 3, 3]
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    diag = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    rot = vt.transpose(1, 2) @ diag @ u.transpose(1, 2)          # q ~ rot p
    aligned = p @ rot.transpose(1, 2)
    return torch.sqrt(((aligned - q) ** 2 * w).sum((1, 2)) / n[:, 0])


def transform_batch(batch: MolBatch, kind: str, generator: torch.Generator
                    ) -> tuple[MolBatch, dict[str, Any]]:
    """Apply a random transform of ``kind`` to every molecule; returns the new batch and
    the parameters (``matrix`` [3, 3], ``shift`` [B, 3] or ``perm`` [B, N])."""
    mask = batch.mask
    if kind in ("rotation", "reflection"):
        mat = (random_rotation if kind == "rotation" else random_reflection)(generator, batch.pos.dtype)
        return replace(batch, pos=(batch.pos @ mat.T) * mask[..., None]), {"matrix": mat}
    if kind == "translation":
        shift = 5.0 * torch.randn(len(batch), 1, 3, generator=generator, dtype=torch.float64)
        shift = shift.to(batch.pos.dtype)
        return replace(batch, pos=(batch.pos + shift) * mask[..., None]), {"shift": shift}
    if kind == "permutation":
        keys = torch.rand(mask.shape, generator=generator, dtype=torch.float64)
        keys = torch.where(mask, keys, torch.full_like(keys, 2.0))  # padding stays last
        perm = keys.argsort(dim=1)                                  # [B, N]
        take = lambda t: torch.gather(t, 1, perm.view(*perm.shape, *([1] * (t.dim() - 2))).expand_as(t))
        changes: dict[str, Any] = {"atom_types": take(batch.atom_types), "pos": take(batch.pos),
                                   "mask": take(batch.mask)}
        if batch.charges is not None:
            changes["charges"] = take(batch.charges)
        if batch.bonds is not None:
            rows = torch.gather(batch.bonds, 1, perm[:, :, None].expand_as(batch.bonds))
            changes["bonds"] = torch.gather(rows, 2, perm[:, None, :].expand_as(batch.bonds))
        return replace(batch, **changes), {"perm": perm}
    raise ValueError(f"unknown transform {kind!r}; valid: {TRANSFORMS}")


def expected_latent(latent: LatentBatch, kind: str, params: dict[str, Any]) -> LatentBatch:
    """``rho(g) z``: how the space's declared symmetry says the latent should transform."""
    spec = latent.spec
    declared = spec.symmetries.get(kind, "none")
    if spec.kind == "vector":
        return latent
    h, x, mask = latent.h, latent.x, latent.mask
    if kind == "permutation":
        perm = params["perm"][:, : h.shape[1]]
        h = torch.gather(h, 1, perm[..., None].expand_as(h))
        mask = torch.gather(mask, 1, perm)
        if x is not None:
            x = torch.gather(x, 1, perm[..., None].expand_as(x))
    elif x is not None and declared == "equivariant":
        if kind in ("rotation", "reflection"):
            x = x @ params["matrix"].to(x.dtype).T
        elif kind == "translation":
            x = x + params["shift"].to(x.dtype)
        x = x * mask[..., None]
    return LatentBatch(h=h, spec=spec, x=x, mask=mask)


def latent_vectors(latent: LatentBatch) -> torch.Tensor:
    """[B, D'] float64 per-molecule latent (padding zeroed)."""
    return latent.flat().to(torch.float64)


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
        "latent.recon_smiles_match": True, "latent.recon_atom_type_accuracy": True,
        "latent.recon_rmsd": False, "latent.recon_rmsd_symmetric": False,
        **{f"latent.symmetry_error.{k}": False for k in TRANSFORMS},
        "latent.dof": False, "latent.effective_dim": False, "latent.effective_dim_per_atom": False,
    }
    defaults = {"max_molecules": 1000, "batch_size": 256, "symmetry_molecules": 256,
                "symmetric_rmsd_max": 200, "variance": 0.95, "seed": 0}
    description = "reconstruction, symmetry error and dimensionality of a space's latent"

    def compute(self, samples: Samples, reference: Any | None, space: Any | None = None):
        if space is None:
            raise MetricError("latent diagnostics need a space (score_molecules(..., space=...))")
        samples = samples.head(self.options["max_molecules"])
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
        decoded_records = [r for part in decoded_parts for r in part.to_records()]
        bond_source = "decoder" if getattr(space, "bond_source", "perceive") == "decoder" else "perceive"
        known = np.full(len(decoded_records), bond_source == "decoder")
        decoded = Samples.from_records(decoded_records, "given" if bond_source == "decoder" else "perceive",
                                       bonds_known=known)
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
            "latent.recon_smiles_match": ratio(len(matched), len(comparable)),
            "latent.recon_atom_type_accuracy": ratio(int(overlap), int(denominator)),
            "latent.recon_rmsd": rmsd,
            "latent.recon_rmsd_symmetric": float(np.mean(sym_values)) if sym_values else nan(),
        }

    # -- symmetry --------------------------------------------------------------------------
    def _symmetry(self, batch: MolBatch, space: Any, meta: dict[str, Any]) -> dict[str, float]:
        device = getattr(space, "device", None)
        part = batch[: int(self.options["symmetry_molecules"])] if len(batch) else batch
        generator = torch.Generator().manual_seed(int(self.options["seed"]))
        out: dict[str, float] = {}
        with torch.no_grad():
            part = part.to("cpu")
            encode = lambda b: space.encode(b if device is None else b.to(device)).to("cpu")
            base = encode(part)
            for kind in TRANSFORMS:
                moved, params = transform_batch(part, kind, generator)
                got = latent_vectors(encode(moved))
                want = latent_vectors(expected_latent(base, kind, params))
                if got.shape != want.shape:
                    out[f"latent.symmetry_error.{kind}"] = nan()
                    continue
                norm = latent_vectors(base).norm(dim=1).clamp(min=1e-12)
                out[f"latent.symmetry_error.{kind}"] = float(((got - want).norm(dim=1) / norm).mean())
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
        return {"latent.dof": dof_mean, "latent.effective_dim": eff,
                "latent.effective_dim_per_atom": per_atom}
