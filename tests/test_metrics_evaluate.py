"""The standalone scorer (``l3dg eval``): files and dataset splits, skipped records, bond
provenance, the reference row, JSON output and the printed table."""
from __future__ import annotations

import math

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from harness.core.chem import records_to_xyz, write_sdf
from harness.core.data import QM9_SAMPLE_SDF
from harness.evaluate import evaluate_source, format_table, table_rows
from metrics import score_molecules
from harness.core.io import read_json

torch.set_num_threads(1)


def _embedded(smiles: str) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    AllChem.MMFFOptimizeMolecule(mol)
    mol.SetProp("_Name", smiles)
    return mol


@pytest.fixture(scope="module")
def sample_sdf(tmp_path_factory):
    """Three good molecules (two identical) and one malformed record."""
    path = tmp_path_factory.mktemp("eval") / "samples.sdf"
    write_sdf([_embedded(s) for s in ("CCO", "CCO", "C#N")], path)
    with open(path, "a") as fh:
        fh.write("broken\n\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\nnot an atom line\n$$$$\n")
    return path


def test_sdf_source_is_scored_with_its_own_bonds_and_skipped_records_reported(sample_sdf, tmp_path):
    out = tmp_path / "metrics.json"
    result = evaluate_source(str(sample_sdf), suite="rdkit/v1", reference=None, out=out,
                             progress=False)
    assert result["metrics"]["rdkit.validity"] == 1.0
    assert result["metrics"]["rdkit.uniqueness"] == pytest.approx(2 / 3)
    meta = result["metadata"]
    assert meta["bond_source"] == "file"
    assert meta["counts"] == {"molecules": 3, "atoms": 9 + 9 + 3, "skipped": 1}
    assert meta["skipped"][0]["index"] == 3 and meta["skipped"][0]["reason"]
    assert meta["source"]["parsed_fraction"] == pytest.approx(3 / 4)
    written = read_json(out)
    assert written["metrics"]["rdkit.novelty"] is None          # NaN -> null, no reference
    assert written["suite"] == "rdkit/v1" and written["reference_row"] is None


def test_xyz_source_gets_perceived_bonds_and_says_so(tmp_path):
    from harness.core.chem import mol_to_record

    path = tmp_path / "samples.xyz"
    path.write_text(records_to_xyz([mol_to_record(_embedded(s)) for s in ("CCO", "C=O")]))
    result = evaluate_source(str(path), suite="rdkit/v1", reference=None, progress=False)
    assert result["metrics"]["rdkit.validity"] == 1.0
    assert result["metadata"]["bond_source"].startswith("rdDetermineBonds")


def test_file_source_gets_a_reference_row_from_the_held_out_split(sample_sdf):
    reference = f"sdf:{QM9_SAMPLE_SDF}:train"
    result = evaluate_source(str(sample_sdf), suite="edm/v1", reference=reference,
                             progress=False)
    row = result["reference_row"]
    assert row["source"] == f"sdf:{QM9_SAMPLE_SDF}:test"
    assert row["metadata"]["counts"]["molecules"] == 3          # as many as the source
    assert 0 <= result["metrics"]["edm.novelty"] <= 1
    rows = table_rows(result)
    assert list(rows) == [str(sample_sdf), f"{row['source']} (reference)"]


def test_dataset_split_is_scored_as_data_without_an_extra_row():
    result = evaluate_source(f"sdf:{QM9_SAMPLE_SDF}:test", suite="distributions/v1",
                             reference=f"sdf:{QM9_SAMPLE_SDF}:train", progress=False, limit=15)
    assert result["reference_row"] is None
    assert result["metadata"]["source"]["kind"] == "dataset"
    assert result["metadata"]["counts"]["molecules"] == 15
    assert result["metrics"]["dist.atom_type_tv"] < 0.1
    assert result["metadata"]["bond_source"] == "dataset"


def test_format_table_puts_metrics_down_and_sources_across():
    text = format_table({"ours.sdf": {"edm.validity": 0.5, "fcd": math.nan},
                         "qm9:test (reference)": {"edm.validity": 0.98, "fcd": 0.1}},
                        {"edm.validity": True, "fcd": False})
    lines = text.splitlines()
    assert "ours.sdf" in lines[0] and "qm9:test (reference)" in lines[0]
    assert lines[2].startswith("edm.validity ↑") and "0.5000" in lines[2] and "0.9800" in lines[2]
    assert lines[3].startswith("fcd ↓") and "–" in lines[3]


def test_score_molecules_accepts_a_reference_source_string_and_option_overrides():
    mols = [_embedded(s) for s in ("CCO", "CC(=O)N", "OCC#N")]
    r = score_molecules(mols, "qm9/v1", reference=f"sdf:{QM9_SAMPLE_SDF}:train",
                        options={"posebusters": {"max_molecules": 2}, "fcd": {"max_molecules": 3}})
    assert r.metadata["families"]["posebusters"]["molecules"] == 2
    assert r.metadata["option_overrides"]["posebusters"] == {"max_molecules": 2}
    assert math.isfinite(r["fcd"]) and math.isfinite(r["dist.bond_length_w1"])
    with pytest.raises(KeyError, match="members"):
        score_molecules(mols, "edm/v1", options={"fcd": {}})


def test_missing_source_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_source(str(tmp_path / "nope.sdf"), suite="edm/v1", reference=None, progress=False)
