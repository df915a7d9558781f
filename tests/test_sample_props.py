"""samples.sdf records carry provenance and per-molecule EDM flags as SD properties; the
flags agree with the edm metric's aggregate on the same molecules."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rdkit import Chem

from harness.core.chem import batch_to_mols, read_sdf, write_sdf
from harness.core.types import MolBatch
from harness.study.sample_props import PROPERTY_NAMES, molecule_flags, sample_properties, set_sample_props


@pytest.fixture(scope="module")
def mixed_batch(qm9_sample):
    """8 real QM9 molecules, one scrambled copy (unstable) and one with NaN coordinates."""
    real = qm9_sample.batch(np.arange(8))
    g = torch.Generator().manual_seed(0)
    bad_pos = real.pos[:2].clone()
    bad_pos[0] = bad_pos[0] * 0.45 + 0.1 * torch.randn(bad_pos[0].shape, generator=g)   # squashed
    bad_pos[1, 0] = float("nan")
    pos = torch.cat([real.pos, bad_pos])
    mask = torch.cat([real.mask, real.mask[:2]])
    types = torch.cat([real.atom_types, real.atom_types[:2]])
    return MolBatch(atom_types=types, pos=pos * mask[..., None], mask=mask, elements=real.elements)


def test_flags_match_the_edm_metric(mixed_batch):
    from metrics import score_molecules

    flags = molecule_flags(mixed_batch)
    assert len(flags) == 10
    assert flags[9]["unscored"] == "coordinates contain NaN or inf" and not flags[9]["edm_valid"]
    assert flags[8]["edm_mol_stable"] is False
    scored = [f for f in flags if "unscored" not in f]
    result = score_molecules(mixed_batch[torch.arange(9)], "edm/v1", None, bond_source="perceive")
    assert np.mean([f["edm_valid"] for f in scored]) == pytest.approx(result["edm.validity"])
    assert np.mean([f["edm_mol_stable"] for f in scored]) == pytest.approx(result["edm.mol_stability"])
    atoms = sum(f["n_atoms"] for f in scored)
    stable = sum(round(f["edm_atom_stability"] * f["n_atoms"]) for f in scored)
    assert stable / atoms == pytest.approx(result["edm.atom_stability"])
    counts = mixed_batch.mask.sum(1)
    assert [f["n_atoms"] for f in flags] == counts.tolist()
    assert [f["n_hydrogens"] for f in flags] == ((mixed_batch.numbers == 1) & mixed_batch.mask).sum(1).tolist()
    assert all(f["smiles"] for f in flags if f["edm_valid"]) and flags[0]["edm_valid"]


def test_sdf_written_with_the_properties_reads_back(mixed_batch, tmp_path):
    flags = molecule_flags(mixed_batch)
    props = sample_properties(len(flags), space="raw", seed=3, sampler="ddim", nfe=50,
                              bonds="perceived", flags=flags, extra={"study": "t",
                                                                      "guidance": [1.0] * 10})
    mols = batch_to_mols(mixed_batch, bond_source="none")
    mols[9] = None                                        # a sample that could not be built
    path = write_sdf(mols, tmp_path / "samples.sdf", props)
    # RDKit, as any viewer or notebook would read it
    supplier = Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False)
    read = [m for m in supplier]
    assert len(read) == 10
    first = read[0].GetPropsAsDict()
    for name in PROPERTY_NAMES:
        assert name in first, name
    assert first["space"] == "raw" and first["sampler"] == "ddim" and str(first["seed"]) == "3"
    assert str(first["nfe"]) == "50" and str(first["sample_index"]) == "0"
    assert str(first["edm_valid"]) == "1" and first["study"] == "t"
    assert int(first["n_atoms"]) == read[0].GetNumAtoms()
    assert int(first["n_hydrogens"]) == sum(a.GetAtomicNum() == 1 for a in read[0].GetAtoms())
    squashed = read[8].GetPropsAsDict()
    assert str(squashed["edm_mol_stable"]) == "0"
    assert read[9].GetProp("l3dg_invalid") == "1" and read[9].GetProp("unscored").startswith("coordinates")
    # the harness's own reader sees the same properties
    records, skipped = read_sdf(path, perceive_missing_bonds=False)
    assert records[0][1]["flags_by"].startswith("edm/qm9") and len(records) + len(skipped) == 10
    for k, (_, p) in enumerate(records):
        assert p["sample_index"] == str(k) and p["space"] == "raw"


def test_set_sample_props_and_length_errors(mixed_batch):
    flags = molecule_flags(mixed_batch[torch.arange(2)])
    props = sample_properties(2, space="flat", seed=0, sampler="ddpm", nfe=None, bonds="decoder",
                              flags=flags)
    mols = set_sample_props([Chem.MolFromSmiles("C"), None], props)
    assert mols[0].GetProp("space") == "flat" and mols[0].GetProp("nfe") == ""
    assert mols[1].GetProp("l3dg_invalid") == "1" and mols[1].GetProp("sample_index") == "1"
    assert not math.isnan(float(mols[0].GetProp("edm_atom_stability")))
    with pytest.raises(ValueError, match="3 flag dicts for 2 records"):
        sample_properties(2, space="x", seed=0, sampler="d", nfe=1, bonds="none", flags=flags + flags[:1])
    with pytest.raises(ValueError, match=r"extra\['a'\] has 1 values for 2 records"):
        sample_properties(2, space="x", seed=0, sampler="d", nfe=1, bonds="none", extra={"a": [1]})
    with pytest.raises(ValueError, match="2 molecules but 1"):
        set_sample_props([None, None], props[:1])
