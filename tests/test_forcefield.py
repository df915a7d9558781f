"""Force-field relaxation of molecules with known bonds (harness/core/forcefield.py) and the
conditional config switch for the relaxed rows."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from harness.core.forcefield import FORCE_FIELD, optimize_molecule, relax_batch
from harness.errors import ConfigError


@pytest.fixture(scope="module")
def batch():
    from harness.core.data import QM9_SAMPLE_SDF, load_dataset

    data = load_dataset("sdf", path=str(QM9_SAMPLE_SDF), report=False)
    return data.split("train").batch(np.arange(6))


def _mmff_energy(record) -> float:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from harness.core.rdmol import record_to_mol

    mol = record_to_mol(record)
    Chem.SanitizeMol(mol)
    props = AllChem.MMFFGetMoleculeProperties(mol)
    return AllChem.MMFFGetMoleculeForceField(mol, props).CalcEnergy()


def test_relaxing_keeps_the_molecules_and_lowers_their_energy(batch):
    """Perturbed coordinates relax back: same atoms, bonds, charges, mask and order; a lower
    MMFF energy for every molecule; padded rows stay zero; names say ``relaxed``."""
    g = torch.Generator().manual_seed(0)
    noisy = replace(batch, pos=(batch.pos + 0.15 * torch.randn(batch.pos.shape, generator=g))
                    * batch.mask[..., None])
    kept = noisy.pos.clone()
    relaxed, info = relax_batch(noisy)
    assert info == {**info, "molecules": 6, "relaxed": 6, "unrelaxed": 0, "force_field": FORCE_FIELD}
    for name in ("atom_types", "mask", "charges", "bonds"):
        assert torch.equal(getattr(relaxed, name), getattr(noisy, name)), name
    assert relaxed.pos.dtype == noisy.pos.dtype
    assert (relaxed.pos[~relaxed.mask] == 0).all()
    assert all(n.endswith(":relaxed") for n in relaxed.names)
    before, after = noisy.to_records(), relaxed.to_records()
    for a, b in zip(before, after):
        assert _mmff_energy(b) < _mmff_energy(a) - 1.0       # kcal/mol
    # the input batch is left as it was
    assert torch.equal(noisy.pos, kept) and not torch.equal(relaxed.pos, kept)


def test_a_batch_without_bonds_is_refused(batch):
    with pytest.raises(ValueError, match="no bonds"):
        relax_batch(replace(batch, bonds=None))


def test_a_molecule_rdkit_cannot_sanitise_keeps_its_coordinates(batch):
    """A pentavalent carbon: counted as ``unrelaxed``, scored as decoded; the others relax."""
    bonds = batch.bonds.clone()
    first = batch.bonds[0]
    heavy = int(torch.nonzero(batch.atom_types[0] == batch.elements.index("C"))[0])
    partners = torch.nonzero(first[heavy] == 0).flatten()
    partners = partners[(partners != heavy) & batch.mask[0, partners]][:2]
    bonds[0, heavy, partners] = bonds[0, partners, heavy] = 2      # + 4 bond orders on one C
    bad = replace(batch, bonds=bonds)
    relaxed, info = relax_batch(bad)
    assert info["unrelaxed"] == 1 and info["relaxed"] == 5
    assert torch.equal(relaxed.pos[0], bad.pos[0])


def test_optimize_molecule_reports_convergence():
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    assert optimize_molecule(mol, max_iters=1) == 1            # stopped at the cap
    assert optimize_molecule(mol, max_iters=500) == 0


def test_relaxed_rows_is_checked():
    from harness.config.conditional import ConditionalConfig

    assert ConditionalConfig().relaxed_rows is True
    with pytest.raises(ConfigError, match="relaxed_rows"):
        ConditionalConfig(relaxed_rows="yes")


def test_the_default_leaves_older_conditional_fingerprints_alone():
    """``relaxed_rows`` enters the conditional stage's fingerprint only when switched off, so
    conditional studies written before it existed resume without a stale-results error."""
    import dataclasses

    from harness.config import load_config
    from harness.study.stages import BY_NAME

    config = load_config("qm9-cond-cpu")
    inputs = BY_NAME["conditional"].inputs
    assert "relaxed_rows" not in inputs(config, "invariant")[0]
    off = dataclasses.replace(config, conditional=dataclasses.replace(config.conditional,
                                                                      relaxed_rows=False))
    assert inputs(off, "invariant")[0]["relaxed_rows"] is False
