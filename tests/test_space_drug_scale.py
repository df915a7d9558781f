"""Drug-scale molecules (~100 atoms with H): every space fits, encodes and decodes them at tiny
widths, with size-grouped batches, gradient checkpointing and the topology sequence cap.

The molecules are RDKit ETKDG conformers (seeded) of long alkanes, a PEG chain, a
triglyceride, a fatty amide and atorvastatin (elements H, C, N, O, F only)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from harness.core.data import load_dataset
from harness.core.registry import SPACES
from harness.core.types import LatentBatch
from spaces._autoencoder import SizeGroupedBatches

torch.set_num_threads(1)

ELEMENTS = ("H", "C", "N", "O", "F")
SMILES = [
    "C" * 30, "C" * 32, "C" * 33,                                  # 92, 98, 101 atoms
    "OCC" + "OCC" * 11 + "O",                                       # PEG, 87
    "CCCCCCCC(=O)OCC(COC(=O)CCCCCCC)OC(=O)CCCCCCC",                # tricaprylin, 83
    "CCCCCCCCCCCCCCCCNC(=O)CCCCCCCCCCCCCC",                        # fatty amide, 96
    "FC(F)(F)" + "C" * 28,                                          # 89
    "CC(C)c1c(C(=O)Nc2ccccc2)c(-c2ccccc2)c(-c2ccc(F)cc2)n1CC[C@@H](O)C[C@@H](O)CC(=O)O",  # 76
]
#: longest SELFIES above (atorvastatin, 68 tokens) fits under this cap
CAP = 80


@pytest.fixture(scope="module")
def drugs(tmp_path_factory):
    path = tmp_path_factory.mktemp("drugs") / "drugs.sdf"
    with Chem.SDWriter(str(path)) as writer:
        for k, smi in enumerate(SMILES):
            mol = Chem.AddHs(Chem.MolFromSmiles(smi))
            assert AllChem.EmbedMolecule(mol, randomSeed=k) == 0
            mol.SetProp("_Name", f"drug{k}")
            writer.write(mol)
    data = load_dataset("sdf", path=path, elements=ELEMENTS, split=(0.75, 0.125, 0.125), report=False)
    assert data.atom_counts.max() >= 100
    return data


def test_size_grouped_batches_respect_the_pair_budget():
    counts = np.random.default_rng(0).integers(5, 110, 400)
    sampler = SizeGroupedBatches(counts, batch_size=64, max_pairs=40_000, seed=1)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(second) == len(sampler)
    assert sorted(i for b in first for i in b) == list(range(400))        # each molecule once
    assert all(len(b) <= 64 and len(b) * counts[b].max() ** 2 <= 40_000 for b in first)
    assert first != second and sorted(map(tuple, first)) == sorted(map(tuple, second))
    assert list(SizeGroupedBatches(counts, 64, 40_000, seed=1)) == first  # seeded
    spread = np.mean([counts[b].max() - counts[b].min() for b in first])
    assert spread < 20                                # similar sizes share a batch


def test_raw_and_flat_handle_100_atoms(drugs):
    batch = drugs.batch(np.arange(len(drugs)))
    raw = SPACES.get("raw")(ELEMENTS)
    out = raw.decode(raw.encode(batch))
    assert torch.equal(out.atom_types, batch.atom_types)
    flat = SPACES.get("flat")(ELEMENTS, width=8, hidden=16, layers=1, epochs=1, batch_size=4)
    flat.fit(drugs.split("train"), None, progress=False)
    assert flat.options["max_atoms"] >= 100
    assert len(flat.decode(flat.encode(batch))) == len(batch)


def test_per_atom_fits_and_samples_100_atoms_with_checkpointing(drugs):
    space = SPACES.get("per_atom")(ELEMENTS, k=2, hidden=8, layers=2, epochs=1, batch_size=8,
                                   checkpoint=True, max_batch_pairs=2 * 101 ** 2)
    stats = space.fit(drugs.split("train"), drugs.split("val"), progress=False)
    assert np.isfinite(stats["final"]["loss"])
    batch = drugs.batch(np.arange(len(drugs)))
    latent = space.encode(batch)
    noise = LatentBatch(h=torch.randn_like(latent.h), x=torch.randn_like(latent.x), mask=latent.mask,
                        spec=latent.spec)
    out = space.decode(noise)
    assert out.n_atoms.max() >= 100 and torch.isfinite(out.pos).all()


def test_checkpointing_gives_the_same_gradients(drugs):
    from spaces._e3nn_encoder import E3nnInvariantEncoder
    from spaces._geometry import GeometryAutoencoder, GeometryBatch

    batch = drugs.batch(np.arange(2))
    gb = GeometryBatch(batch.atom_types, batch.charges, batch.bonds, batch.mask, batch.pos, batch.pos)
    grads = []
    for checkpoint in (False, True):
        torch.manual_seed(0)
        net = GeometryAutoencoder(5, 4, 8, 2, checkpoint=checkpoint).train()
        net.loss(gb)["loss"].backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    outs = []
    for checkpoint in (False, True):
        torch.manual_seed(0)
        enc = E3nnInvariantEncoder(8, 5, 8, 4, 3, checkpoint=checkpoint)
        h = torch.randn(2, batch.max_atoms, 8).requires_grad_(True)
        enc(h, batch.pos, batch.mask, torch.zeros(2, batch.max_atoms, batch.max_atoms, 5)).sum().backward()
        outs.append(h.grad)
    assert torch.allclose(outs[0], outs[1], rtol=1e-5, atol=1e-7)


def test_invariant_fits_and_samples_100_atoms(drugs):
    space = SPACES.get("invariant")(ELEMENTS, topo_width=8, geo_width=8, topo_hidden=16,
                                    geo_hidden=8, geo_layers=2, epochs_topo=1, epochs_geo=1,
                                    batch_size=8, stereo_candidates=2, max_selfies_len=CAP,
                                    checkpoint=True, max_batch_pairs=2 * 101 ** 2)
    stats = space.fit(drugs.split("train"), drugs.split("val"), progress=False)
    assert stats["train_used"] == len(drugs.split("train"))
    batch = drugs.batch(np.arange(len(drugs)))
    z = space.encode(batch)
    assert space.last_encode_info["too_long"] == 0 and torch.isfinite(z.h).all()
    out = space.decode(z)
    assert len(out) == len(batch) and torch.isfinite(out.pos).all()


def test_selfies_longer_than_the_cap_are_skipped_and_reported(drugs, caplog):
    """The default cap (48 tokens) is below atorvastatin's 68."""
    space = SPACES.get("invariant")(ELEMENTS, topo_width=8, geo_width=8, topo_hidden=16,
                                    geo_hidden=8, geo_layers=1, epochs_topo=1, epochs_geo=1,
                                    batch_size=8, stereo_candidates=1, max_selfies_len=48)
    batch = drugs.batch(np.arange(len(drugs)))
    with caplog.at_level(logging.WARNING, logger="spaces.invariant"):
        space.encode(batch)
    assert space.last_encode_info["too_long"] == 1                   # atorvastatin, 68 tokens
    assert "max_selfies_len=48" in caplog.text and "drug7" in caplog.text
    tiny_cap = SPACES.get("invariant")(ELEMENTS, max_selfies_len=10, epochs_topo=1, epochs_geo=1)
    with pytest.raises(ValueError, match="raise spaces.invariant.max_selfies_len"):
        tiny_cap.fit(drugs.split("train"), None, progress=False)
