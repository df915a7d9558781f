"""Impossible geometry in ``l3dg eval`` (issue 27, defect 2).

Before: a file of molecules with 1e9 Å coordinates printed "scored as invalid" and got
``rdkit.validity`` 0 but ``edm.validity`` 1.0 and ``edm.novelty`` 1.0 (EDM's distance table
sees isolated atoms, which sanitise with implicit H). Now such a molecule is excluded from
every family: the scores of a file equal those of its possible molecules alone, and
``input.scored_fraction`` counts the excluded ones.
"""
from __future__ import annotations

import math

import pytest

from harness.core import chem
from harness.evaluate import NoUsableMolecules, evaluate_source

from conftest import QM9_SAMPLE

SUITE = "qm9/v1-core"          # edm + rdkit + distributions + chemistry
REFERENCE = f"sdf:{QM9_SAMPLE}:train"


def _records(n_good: int, n_huge: int):
    records = [r for r, _ in chem.read_sdf(QM9_SAMPLE)[0][:n_good + n_huge]]
    for r in records[n_good:]:
        r.pos = r.pos * 1e9
        r.name = f"huge-{r.name}"
    return records


def _write(records, path):
    if path.suffix == ".xyz":
        return chem.write_xyz(records, path)
    return chem.write_sdf([chem.record_to_mol(r) for r in records], path)


def _score(path):
    return evaluate_source(str(path), suite=SUITE, reference=REFERENCE, progress=False,
                           reference_row=None)


@pytest.mark.parametrize("suffix", [".sdf", ".xyz"])
def test_impossible_molecules_are_excluded_from_every_family(tmp_path, suffix):
    mixed = _score(_write(_records(3, 5), tmp_path / f"mixed{suffix}"))
    alone = _score(_write(_records(3, 0), tmp_path / f"good{suffix}"))
    assert mixed["metrics"]["input.scored_fraction"] == pytest.approx(3 / 8)
    families = {k.split(".")[0] for k in mixed["metrics"]}
    assert {"edm", "rdkit", "dist", "chem"} <= families
    for key, value in alone["metrics"].items():
        if key == "input.scored_fraction":
            continue
        other = mixed["metrics"][key]
        assert (math.isnan(value) and math.isnan(other)) or other == pytest.approx(value), key
    skipped = mixed["metadata"]["skipped"]
    assert len(skipped) == 5 and all("impossible geometry" in s["reason"] for s in skipped)
    assert len(mixed["metadata"]["source"]["degenerate_geometry"]) == 5


@pytest.mark.parametrize("suffix", [".sdf", ".xyz"])
def test_a_file_of_only_impossible_molecules_has_nothing_to_score(tmp_path, suffix):
    path = _write(_records(0, 5), tmp_path / f"huge{suffix}")
    with pytest.raises(NoUsableMolecules, match="impossible geometry"):
        _score(path)
