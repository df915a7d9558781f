"""The ``invariant`` space (LDM-3DG's cascaded topology + geometry autoencoders).

Symmetry claims are tested in float64 with explicit random rotations, translations,
reflections and atom permutations; training is a tiny 2-epoch fit on the 160 fixture
training molecules (a few seconds on one thread).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rdkit import Chem

from harness.core.chem import record_to_mol
from harness.core.registry import SPACES
from harness.core.types import LatentBatch, MolBatch
from harness.core.geometry import aligned_squared_error, kabsch_rmsd, random_reflection, random_rotation
from spaces._conformers import embed_coordinates, matched_rmsd
from spaces._geometry import GeometryBatch, pair_features
from spaces._topology import record_smiles, smiles_to_tokens
from spaces.base import Space
from spaces.invariant import InvariantSpace

TINY = dict(topo_width=12, geo_width=10, topo_hidden=48, geo_hidden=24, geo_layers=2,
            epochs_topo=4, epochs_geo=4, batch_size=32, lr=5e-3, geo_lr=3e-3,
            stereo_candidates=2, max_val=20)


@pytest.fixture(scope="module")
def untrained(qm9_sample):
    return InvariantSpace(qm9_sample.elements, **TINY)


@pytest.fixture(scope="module")
def fitted(qm9_sample):
    space = InvariantSpace(qm9_sample.elements, **TINY)
    space.fit(qm9_sample.split("train"), qm9_sample.split("val"), progress=False)
    return space


@pytest.fixture(scope="module")
def test_batch(qm9_sample):
    return qm9_sample.split("test").batch(np.arange(8))


# -- helpers ---------------------------------------------------------------------------------
def random_orthogonal(gen: torch.Generator, proper: bool = True) -> torch.Tensor:
    """A random rotation, or (``proper=False``) a rotation followed by a random mirror."""
    rot = random_rotation(gen)
    return rot if proper else random_reflection(gen) @ rot


def transform_batch(batch: MolBatch, seed: int = 0, reflect: bool = False) -> MolBatch:
    """Random rotation (+ reflection) and translation per molecule, and a random permutation
    of each molecule's real atoms applied consistently to pos, types, charges and bonds."""
    gen = torch.Generator().manual_seed(seed)
    batch = batch.to("cpu", dtype=torch.float64)
    B, N = batch.mask.shape
    perm = torch.arange(N).repeat(B, 1)
    for b, n in enumerate(batch.n_atoms.tolist()):
        perm[b, :n] = torch.randperm(n, generator=gen)
    rows = torch.arange(B)[:, None]
    rot = torch.stack([random_orthogonal(gen, proper=not reflect) for _ in range(B)])
    shift = torch.randn(B, 1, 3, generator=gen, dtype=torch.float64) * 5.0
    pos = (batch.pos @ rot.transpose(1, 2) + shift) * batch.mask[..., None]
    return MolBatch(atom_types=batch.atom_types[rows, perm], pos=pos[rows, perm],
                    mask=batch.mask[rows, perm], elements=batch.elements,
                    charges=batch.charges[rows, perm],
                    bonds=batch.bonds[rows[..., None], perm[:, :, None], perm[:, None, :]],
                    names=batch.names)


def sanitised(record) -> Chem.Mol:
    mol = record_to_mol(record)
    Chem.SanitizeMol(mol)
    return mol


# -- interface -------------------------------------------------------------------------------
def test_registered_and_spec(untrained):
    assert SPACES.get("invariant") is InvariantSpace
    assert InvariantSpace.bond_source == "decoder" and InvariantSpace.trainable
    spec = untrained.spec
    assert spec.kind == "vector" and spec.width == 22 and spec.bounded
    assert spec.symmetries == {"permutation": "invariant", "rotation": "invariant",
                               "translation": "invariant", "reflection": "invariant"}
    e3 = InvariantSpace(("H", "C", "N", "O", "F"), geo_encoder="e3nn", **{**TINY, "geo_layers": 3})
    assert e3.spec.symmetries["reflection"] == "none"
    with pytest.raises(ValueError, match="geo_encoder"):
        InvariantSpace(("H", "C"), geo_encoder="schnet")


def test_encode_shape_bounds_deterministic(fitted, test_batch):
    a, b = fitted.encode(test_batch), fitted.encode(test_batch)
    assert a.h.shape == (8, fitted.spec.width)
    assert torch.equal(a.h, b.h)
    assert a.h.abs().max() <= 1.0 and torch.isfinite(a.h).all()
    assert fitted.last_encode_info["unknown_tokens"] == 0


def test_latent_invariant_to_rotation_translation_permutation(fitted, test_batch):
    geometry = fitted.geometry
    try:
        geometry.double()
        base = fitted.encode(test_batch.to("cpu", dtype=torch.float64)).h
        moved = fitted.encode(transform_batch(test_batch, seed=1)).h
        mirrored = fitted.encode(transform_batch(test_batch, seed=2, reflect=True)).h
    finally:
        geometry.float()
    assert base.dtype == torch.float64
    # topology part: canonical SMILES, so exactly equal; geometry part: float64 round-off
    t = fitted.topo_width
    assert torch.equal(base[:, :t], moved[:, :t])
    assert torch.allclose(base, moved, atol=1e-9, rtol=0)
    assert torch.allclose(base, mirrored, atol=1e-9, rtol=0)  # E(3): reflection too


def test_e3nn_encoder_is_se3_invariant_and_chirality_aware(qm9_sample):
    space = InvariantSpace(qm9_sample.elements, geo_encoder="e3nn",
                           **{**TINY, "geo_layers": 3, "geo_hidden": 16})
    # molecules with a stereocentre: their mirror images are different molecules
    chiral = [i for i in range(len(qm9_sample)) if Chem.FindMolChiralCenters(
        sanitised(qm9_sample[i]), includeUnassigned=True, useLegacyImplementation=False)][:4]
    batch = qm9_sample.batch(np.array(chiral))
    space.geometry.double()
    base = space.encode(batch.to("cpu", dtype=torch.float64)).h
    moved = space.encode(transform_batch(batch, seed=3)).h
    mirrored = space.encode(transform_batch(batch, seed=4, reflect=True)).h
    rotation_error = (base - moved).abs().max()
    assert rotation_error < 1e-11
    t = space.topo_width
    # untrained, the pseudoscalar signal is small (~1e-7) but far above float64 round-off
    gap = (base[:, t:] - mirrored[:, t:]).abs().amax(1)
    assert (gap > 1e3 * rotation_error + 1e-10).all(), gap


# -- training --------------------------------------------------------------------------------
def test_fit_lowers_losses_and_reports(fitted):
    stats = fitted.fit_stats
    for part in ("topology", "geometry"):
        history = stats[part]["history"]
        assert len(history) == 4 and history[-1]["loss"] < history[0]["loss"], (part, history)
    assert stats["train_used"] == 160 and stats["vocab_size"] == len(fitted.vocab)
    val = stats["val"]
    assert 0.0 <= val["topology_exact_match"] <= 1.0
    # geometry decoder with the true graph: finite and not far from the ETKDG start
    print(f"\nheavy-atom Kabsch RMSD (val, 4 epochs): {val['geometry_heavy_rmsd_median']:.3f} Å; "
          f"ETKDG start {val['init_heavy_rmsd_median']:.3f} Å")
    assert math.isfinite(val["geometry_heavy_rmsd_median"])
    assert val["geometry_heavy_rmsd_median"] < val["init_heavy_rmsd_median"] + 0.5


def test_geometry_decoder_beats_untrained(fitted, untrained, qm9_sample):
    """The geometry AE with the true graph and the stereo-aware ETKDG start: the trained
    network's loss on validation molecules is lower than the (same-seed) untrained one's."""
    val = qm9_sample.split("val")
    idx = np.arange(len(val))
    batch = val.batch(idx)
    init = torch.zeros_like(batch.pos)
    for b, record in enumerate(val.records()):
        mol = sanitised(record)
        Chem.AssignStereochemistryFrom3D(mol)
        init[b, : record.n_atoms] = torch.from_numpy(embed_coordinates(mol, 0, True)[0])
    gb = GeometryBatch(batch.atom_types, batch.charges, batch.bonds, batch.mask, batch.pos, init)
    with torch.no_grad():
        trained = fitted.geometry.loss(gb)
        before = untrained.geometry.loss(gb)
    print(f"\ngeometry loss on val: untrained {float(before['loss']):.4f}, trained "
          f"{float(trained['loss']):.4f}; bond RMSE {float(before['bond_rmse']):.4f} -> "
          f"{float(trained['bond_rmse']):.4f} Å")
    assert torch.isfinite(trained["loss"])
    assert trained["loss"] < before["loss"]


# -- decode ----------------------------------------------------------------------------------
def test_decode_random_latents_gives_valid_molecules(fitted):
    gen = torch.Generator().manual_seed(0)
    h = torch.rand(6, fitted.spec.width, generator=gen) * 2 - 1
    out = fitted.decode(LatentBatch(h=h, spec=fitted.spec))
    assert len(out) == 6 and out.bonds is not None and out.elements == fitted.elements
    assert torch.isfinite(out.pos).all()
    assert fitted.last_decode_info["invalid_topology"] == 0 and not fitted.last_decode_relaxed
    for record in out.to_records():
        mol = sanitised(record)  # raises if the decoded graph is not a valid molecule
        assert mol.GetNumAtoms() == record.n_atoms >= 1
        assert record.n_atoms == 1 or len(record.bonds) > 0


def test_reconstruction_round_trip(fitted, test_batch, monkeypatch):
    """Decoded molecules carry bonds from the topology and coordinates from the geometry
    decoder. A 4-epoch topology AE rarely reproduces a graph exactly, so the greedy topology
    decoder is replaced by the inputs' own SELFIES: every molecule then has its own graph,
    and each decoded geometry is compared with the input's (heavy-atom Kabsch RMSD over
    graph isomorphisms)."""
    refs = test_batch.to_records()
    z = fitted.encode(test_batch)
    learned = [record_smiles(r) == record_smiles(d) for r, d in zip(refs, fitted.decode(z).to_records())]
    truth = ["".join(smiles_to_tokens(record_smiles(r))) for r in refs]
    monkeypatch.setattr(fitted, "_greedy", lambda z_topo: truth)
    decs = fitted.decode(z).to_records()
    matches = [record_smiles(r) == record_smiles(d) for r, d in zip(refs, decs)]
    rmsds = [matched_rmsd(r, d, allow_reflection=True) for r, d, ok in zip(refs, decs, matches) if ok]
    print(f"\nlearned topology exact {sum(learned)}/8; heavy RMSD with true graphs "
          f"{np.round(rmsds, 3).tolist()}")
    assert len(rmsds) == len(refs), "a true graph did not survive decoding"
    assert all(np.isfinite(rmsds)) and max(rmsds) < 3.0


def test_relax_option_labels_rows(qm9_sample, fitted, test_batch, tmp_path):
    fitted.save(tmp_path)
    relaxed = Space.load(tmp_path)
    relaxed.relax = True
    out = relaxed.decode(relaxed.encode(test_batch[:2]))
    assert relaxed.last_decode_relaxed and relaxed.last_decode_info["relaxed"]
    assert all(name.endswith(":relaxed") for name in out.names)


def test_save_load_round_trip(fitted, test_batch, tmp_path):
    fitted.save(tmp_path)
    loaded = Space.load(tmp_path)
    assert isinstance(loaded, InvariantSpace) and loaded.options == fitted.options
    assert loaded.vocab == fitted.vocab and loaded.fit_stats["train_used"] == 160
    a, b = fitted.encode(test_batch), loaded.encode(test_batch)
    assert torch.equal(a.h, b.h)
    da, db = fitted.decode(a), loaded.decode(b)
    assert torch.equal(da.pos, db.pos) and torch.equal(da.bonds, db.bonds)


# -- pieces ----------------------------------------------------------------------------------
def test_unknown_tokens_and_invalid_decodes_are_counted(fitted):
    table, unknown = fitted._token_table([["[C]", "[Xe]", "[O]"]])
    assert unknown == 1
    graphs = fitted._decode_graphs(["", "[C][O]"])
    assert [g.valid for g in graphs] == [False, True]


def test_kabsch_helpers(qm9_sample):
    batch = qm9_sample.batch(np.arange(4)).to("cpu", dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    rot = torch.stack([random_rotation(gen) for _ in range(4)])
    moved = batch.pos @ rot.transpose(1, 2) + 3.0
    assert kabsch_rmsd(batch.pos, moved, batch.mask).max() < 1e-6
    mirror = batch.pos * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert kabsch_rmsd(batch.pos, mirror, batch.mask, allow_reflection=True).max() < 1e-6
    pred = batch.pos.clone().requires_grad_(True)
    aligned_squared_error(pred, moved, batch.mask).sum().backward()
    assert pred.grad.abs().max() < 1e-6  # stationary at the optimum
    # matched RMSD ignores atom order
    record = qm9_sample[3]
    shuffled = transform_batch(qm9_sample.batch([3]), seed=6).to_records()[0]
    assert matched_rmsd(record, shuffled, heavy_only=False) < 1e-4


def test_pair_features_hops():
    # a 4-atom chain 0-1-2-3 plus a padded slot
    bonds = torch.zeros(1, 5, 5, dtype=torch.long)
    for i, j, o in ((0, 1, 1), (1, 2, 2), (2, 3, 1)):
        bonds[0, i, j] = bonds[0, j, i] = o
    mask = torch.tensor([[True, True, True, True, False]])
    feats, bonded, angle = pair_features(bonds, mask)
    assert feats.shape == (1, 5, 5, 5)
    assert bonded[0, 0, 1] and bonded[0, 1, 2] and not bonded[0, 0, 2]
    assert angle[0, 0, 2] and angle[0, 1, 3] and not angle[0, 0, 3]
    assert feats[0, 1, 2, 1] == 1 and feats[0, 0, 3, 4] == 1 and feats[0, :, 4].abs().sum() == 0


def test_ablations_separate_the_latent_from_rdkit(fitted, test_batch):
    space, latent = fitted, fitted.encode(test_batch)
    out = space.ablations(latent)
    assert set(out) == {"conformer_seed", "zgeo_zeroed", "zgeo_shuffled"}
    full = space.decode(latent)
    for name, batch in out.items():
        assert len(batch) == len(latent.h)
        # same topology everywhere: only the geometry differs
        assert torch.equal(batch.atom_types, full.atom_types[:, :batch.atom_types.shape[1]]) or \
            batch.atom_types.shape == full.atom_types.shape
    seed = out["conformer_seed"]
    assert not torch.allclose(seed.pos, full.pos[:, :seed.pos.shape[1]])   # the refiner did something


def test_greedy_decoding_of_more_latents_than_one_chunk(fitted, monkeypatch):
    """Chunks of 512 latents stop at their own longest string: their token tables differ in
    width and must be padded before they are joined (found by a 600-target OOD study)."""
    torch.manual_seed(0)
    z = torch.randn(700, fitted.options["topo_width"])
    want = fitted._greedy(z[:512]) + fitted._greedy(z[512:])
    original = fitted.topology.greedy_decode

    def ragged(zc, *args, **kwargs):     # the first chunk's longest string runs 5 tokens longer
        ids = original(zc, *args, **kwargs)
        return torch.nn.functional.pad(ids, (0, 5)) if len(zc) == 512 else ids

    monkeypatch.setattr(fitted.topology, "greedy_decode", ragged)
    assert fitted._greedy(z) == want and len(want) == 700
