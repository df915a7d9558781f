import numpy as np
import pytest
from rdkit import Chem

from harness.core.chem import (batch_to_mols, canonical_smiles, mols_to_batch, perceive_bonds,
                          read_sdf, read_xyz, record_to_mol, write_sdf, write_xyz)
from harness.core.types import MolBatch, MolRecord

from conftest import QM9_ELEMENTS, QM9_SAMPLE


def test_molbatch_rdkit_molbatch_round_trip_keeps_elements_coordinates_and_bonds(qm9_sample_batch):
    mols = batch_to_mols(qm9_sample_batch, bond_source="batch")
    back = mols_to_batch(mols, QM9_ELEMENTS)
    assert back.atom_types.tolist() == qm9_sample_batch.atom_types.tolist()
    assert (back.pos - qm9_sample_batch.pos).abs().max() < 1e-4
    assert back.bonds.tolist() == qm9_sample_batch.bonds.tolist()


def test_sdf_write_read_round_trip(tmp_path, qm9_sample_batch):
    mols = batch_to_mols(qm9_sample_batch)
    path = write_sdf(mols, tmp_path / "out.sdf", [{"k": i} for i in range(len(mols))])
    records, skipped = read_sdf(path, QM9_ELEMENTS)
    assert not skipped and len(records) == len(mols)
    assert [p["k"] for _, p in records] == [str(i) for i in range(len(mols))]
    for (rec, _), mol in zip(records, mols):
        assert np.abs(rec.pos - mol.GetConformer().GetPositions()).max() < 1e-4
        assert canonical_smiles(record_to_mol(rec)) == canonical_smiles(mol)


def test_xyz_round_trip_perceives_the_same_molecule(tmp_path, qm9_sample):
    records = [qm9_sample[i] for i in range(10)]
    write_xyz(records, tmp_path / "m.xyz")
    back, skipped = read_xyz(tmp_path / "m.xyz", QM9_ELEMENTS)
    assert not skipped and len(back) == 10
    for a, b in zip(records, back):
        np.testing.assert_allclose(a.pos, b.pos, atol=1e-5)
        assert canonical_smiles(record_to_mol(a)) == canonical_smiles(record_to_mol(b))


def test_bond_perception_recovers_the_dataset_smiles(qm9_sample):
    agree = 0
    for i in range(50):
        r = qm9_sample[i]
        agree += canonical_smiles(perceive_bonds(r.numbers, r.pos)) == Chem.MolToSmiles(
            Chem.MolFromSmiles(r.smiles), isomericSmiles=False)
    assert agree >= 48  # zwitterions may perceive as the neutral resonance form


def test_canonical_smiles_stereo_variants():
    mol = Chem.AddHs(Chem.MolFromSmiles("C/C=C/C"))
    from rdkit.Chem import AllChem

    AllChem.EmbedMolecule(mol, randomSeed=1)
    assert canonical_smiles(mol) == "CC=CC"
    assert canonical_smiles(mol, stereo=True) == "C/C=C/C"


def test_canonical_smiles_is_none_for_an_unsanitisable_molecule():
    rec = MolRecord(numbers=[6, 1], pos=[[0, 0, 0], [1, 0, 0]], bonds=[[0, 1, 3]])
    assert canonical_smiles(record_to_mol(rec)) is None


def test_batch_to_mols_requires_bonds_for_batch_source():
    batch = MolBatch.from_records([MolRecord(numbers=[1, 1], pos=[[0, 0, 0], [0.74, 0, 0]])],
                                  QM9_ELEMENTS, with_bonds=False)
    with pytest.raises(ValueError, match="carries no bonds"):
        batch_to_mols(batch, "batch")
    (mol,) = batch_to_mols(batch, "perceive")
    assert mol.GetNumBonds() == 1


def test_xyz_reader_skips_bad_count_lines_without_looping(tmp_path, qm9_sample):
    good = tmp_path / "g.xyz"
    write_xyz([qm9_sample[0]], good)
    path = tmp_path / "mixed.xyz"
    path.write_text(good.read_text() + "foo\n-2\n" + good.read_text())
    records, skipped = read_xyz(path, QM9_ELEMENTS)
    assert len(records) == 2 and len(skipped) == 2
    assert "expected an atom count" in skipped[0].reason and "must be positive" in skipped[1].reason


def test_records_with_impossible_bonds_are_rejected():
    with pytest.raises(ValueError, match="bond indices"):
        MolRecord(numbers=[6, 1, 1], pos=np.zeros((3, 3)), bonds=[[1, 4, 1]])
    with pytest.raises(ValueError, match="bond orders must be 1, 2 or 3"):
        MolRecord(numbers=[6, 6], pos=np.zeros((2, 3)), bonds=[[0, 1, 4]])
