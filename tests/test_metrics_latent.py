"""Latent diagnostics (reconstruction, symmetry error, dimensionality) on spaces whose
answers are known: the identity ``raw`` space, a sorted-atom vector space (order-free but
rotation-dependent), and a decoder that drops one atom."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.core.registry import SPACES
from harness.core.types import LatentBatch, LatentSpec, MolBatch
from harness.core.geometry import kabsch_rmsd, random_rotation
from harness.core.symmetry import transform_batch
from metrics import score_molecules
from metrics.latent import effective_dimension
from spaces.base import Space

torch.set_num_threads(1)

ELEMENTS = ("H", "C", "N", "O", "F")
MAX_ATOMS = 29


class SortedVectorSpace(Space):
    """Vector latent: atoms sorted by type then x, one-hot + centred coordinates, padded to
    29 atoms and flattened. Permutation- and translation-invariant, not rotation-invariant;
    decodes atoms in its own (sorted) order."""

    name = "test_sorted_vector"
    bond_source = "perceive"
    slot = len(ELEMENTS) + 3

    @property
    def spec(self) -> LatentSpec:
        return LatentSpec("vector", width=MAX_ATOMS * self.slot, symmetry=(
            ("permutation", "invariant"), ("rotation", "none"), ("translation", "invariant"),
            ("reflection", "none")))

    def encode(self, batch: MolBatch) -> LatentBatch:
        m = batch.mask[..., None].to(batch.pos.dtype)
        com = (batch.pos * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)
        pos = (batch.pos - com) * m
        key = torch.where(batch.mask, batch.atom_types * 1000.0 + pos[..., 0], torch.full_like(pos[..., 0], 1e9))
        order = key.argsort(1)
        types = torch.gather(batch.atom_types, 1, order)
        pos = torch.gather(pos, 1, order[..., None].expand_as(pos))
        mask = torch.gather(batch.mask, 1, order)
        onehot = F.one_hot(types, len(ELEMENTS)).to(pos.dtype) * mask[..., None]
        flat = torch.cat([onehot, pos], -1)
        flat = F.pad(flat, (0, 0, 0, MAX_ATOMS - flat.shape[1]))
        return LatentBatch(h=flat.flatten(1), spec=self.spec)

    def decode(self, latent: LatentBatch) -> MolBatch:
        slots = latent.h.view(len(latent), MAX_ATOMS, self.slot)
        mask = slots[..., : len(ELEMENTS)].sum(-1) > 0.5
        n = int(mask.sum(1).max())
        types = slots[:, :n, : len(ELEMENTS)].argmax(-1) * mask[:, :n]
        return MolBatch(atom_types=types, pos=slots[:, :n, len(ELEMENTS):] * mask[:, :n, None],
                        mask=mask[:, :n], elements=ELEMENTS)


class DropLastAtomSpace(Space):
    """The raw space, except that decoding loses each molecule's last atom."""

    name = "test_drop_last"
    bond_source = "perceive"

    def __init__(self, elements):
        super().__init__(elements)
        self.raw = SPACES.get("raw")(elements)

    @property
    def spec(self) -> LatentSpec:
        return self.raw.spec

    def encode(self, batch):
        return self.raw.encode(batch)

    def decode(self, latent):
        out = self.raw.decode(latent)
        last = out.mask.sum(1) - 1
        mask = out.mask.clone()
        mask[torch.arange(len(out)), last] = False
        return MolBatch(atom_types=out.atom_types * mask, pos=out.pos * mask[..., None], mask=mask,
                        elements=out.elements)


@pytest.fixture(scope="module")
def molecules(qm9_sample):
    return qm9_sample.batch(np.arange(24))


def test_identity_space_reconstructs_exactly_and_respects_its_declared_symmetry(molecules):
    space = SPACES.get("raw")(ELEMENTS)
    r = score_molecules(molecules, "latent/v1", space=space)
    assert r["latent.recon_smiles_match"] == 1.0
    assert r["latent.recon_atom_type_accuracy"] == 1.0
    assert r["latent.recon_rmsd"] < 1e-5
    assert r["latent.recon_rmsd_symmetric"] < 1e-4
    for kind in ("rotation", "translation", "permutation", "reflection"):
        assert r[f"latent.symmetry_error.{kind}"] < 1e-5, kind
    n = molecules.n_atoms.double()
    assert r["latent.dof"] == pytest.approx(float((n * len(ELEMENTS) + 3 * (n - 1)).mean()))
    assert 1 <= r["latent.effective_dim"] <= r["latent.dof"] * 10
    assert 1 <= r["latent.effective_dim_per_atom"] <= len(ELEMENTS)
    assert r.metadata["families"]["latent"]["symmetry_declared"]["rotation"] == "equivariant"


def test_reordering_decoder_is_scored_order_free_and_rotation_error_is_reported(molecules):
    r = score_molecules(molecules, "latent/v1", space=SortedVectorSpace(ELEMENTS))
    assert r["latent.recon_atom_type_accuracy"] == 1.0
    assert r["latent.recon_smiles_match"] == 1.0
    assert r["latent.recon_rmsd_symmetric"] < 1e-4          # matched through the graph
    assert r["latent.symmetry_error.rotation"] > 0.1           # coordinates in the latent
    assert r["latent.symmetry_error.translation"] < 1e-5
    assert r["latent.symmetry_error.permutation"] < 1e-5
    assert r["latent.dof"] == MAX_ATOMS * SortedVectorSpace.slot
    assert math.isnan(r["latent.effective_dim_per_atom"])


def test_lost_atoms_lower_atom_type_accuracy_by_the_count_lost(molecules):
    r = score_molecules(molecules, "latent/v1", space=DropLastAtomSpace(ELEMENTS))
    n = molecules.n_atoms.sum().item()
    assert r["latent.recon_atom_type_accuracy"] == pytest.approx((n - len(molecules)) / n)
    assert r["latent.recon_smiles_match"] < 0.5
    assert math.isnan(r["latent.recon_rmsd"])   # no molecule keeps its type sequence


def test_kabsch_rmsd_ignores_rotation_and_translation_but_not_reflection():
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(3, 7, 3, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[2, 5:] = False
    pos = pos * mask[..., None]
    rot = random_rotation(g)
    moved = (pos @ rot.T + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)) * mask[..., None]
    assert kabsch_rmsd(moved, pos, mask).max() < 1e-10
    mirrored = pos * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert kabsch_rmsd(mirrored, pos, mask).min() > 1e-3


def test_permutation_transform_keeps_bonds_consistent(molecules):
    moved, params = transform_batch(molecules, "permutation", torch.Generator().manual_seed(1))
    assert torch.equal(moved.mask, molecules.mask)
    b = 3
    perm = params["perm"][b]
    assert torch.equal(moved.bonds[b], molecules.bonds[b][perm][:, perm])
    assert torch.equal(moved.atom_types[b], molecules.atom_types[b][perm])


def test_effective_dimension_counts_components_for_95_percent_variance():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(3, 10, generator=g, dtype=torch.float64)
    features = torch.randn(200, 3, generator=g, dtype=torch.float64) @ basis
    assert effective_dimension(features) <= 3
    assert effective_dimension(torch.ones(5, 4)) == 0.0
    assert math.isnan(effective_dimension(torch.ones(1, 4)))
