"""Molecule files a user has (issue 27): gzip'd SDF/XYZ, single-record .mol files, folders
with other entries, and a study directory given to ``l3dg eval``.

Before: a ``.sdf.gz`` in a folder was skipped without a word (the lone file was refused), a
``.mol`` file was refused, and ``l3dg eval RUN_DIR`` said only "no .sdf or .xyz files".
"""
from __future__ import annotations

import gzip
import json

import pytest

from harness.cli import main
from harness.core import chem

from conftest import QM9_SAMPLE

BLOCKS = [b + b"$$$$\n" for b in QM9_SAMPLE.read_bytes().split(b"$$$$\n") if b.strip()]


def _eval(args, capsys):
    rc = main(["eval", *args, "--suite", "rdkit/v1", "--reference", "none", "--quiet"])
    return rc, capsys.readouterr()


def test_gzipped_sdf_in_a_folder_is_read_and_other_entries_are_named(tmp_path, capsys):
    folder = tmp_path / "mols"
    folder.mkdir()
    (folder / "a.sdf.gz").write_bytes(gzip.compress(b"".join(BLOCKS[:3])))
    (folder / "b.sdf").write_bytes(b"".join(BLOCKS[3:5]))
    (folder / "notes.txt").write_text("not molecules\n")
    (folder / "sub").mkdir()
    out = tmp_path / "m.json"
    rc, cap = _eval([str(folder), "--out", str(out)], capsys)
    assert rc == 0, cap.err
    result = json.loads(out.read_text())
    assert result["metadata"]["counts"]["molecules"] == 5           # 3 from a.sdf.gz + 2
    source = result["metadata"]["source"]
    assert [p.split("/")[-1] for p in source["files"]] == ["a.sdf.gz", "b.sdf"]
    ignored = {e["path"].split("/")[-1]: e["reason"] for e in source["ignored_files"]}
    assert set(ignored) == {"notes.txt", "sub"}
    assert "not a molecule file" in ignored["notes.txt"] and "folder" in ignored["sub"]
    assert "notes.txt" in cap.out and "sub" in cap.out               # named on the terminal


@pytest.mark.parametrize("name", ["one.sdf.gz", "one.xyz.gz", "one.mol", "ONE.SDF.GZ"])
def test_a_lone_gzipped_or_mol_file_is_scored(tmp_path, capsys, name):
    record = chem.read_sdf(QM9_SAMPLE)[0][0][0]
    if "xyz" in name:
        data = chem.records_to_xyz([record]).encode()
    else:
        data = BLOCKS[0] if name.endswith(".mol") else b"".join(BLOCKS[:4])
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.lower().endswith(".gz") else data)
    out = tmp_path / "m.json"
    rc, cap = _eval([str(path), "--out", str(out)], capsys)
    assert rc == 0, cap.err
    expected = 4 if name.lower().endswith("sdf.gz") else 1
    assert json.loads(out.read_text())["metadata"]["counts"]["molecules"] == expected


def test_a_damaged_gzip_is_one_named_skip(tmp_path):
    folder = tmp_path / "mols"
    folder.mkdir()
    (folder / "bad.sdf.gz").write_bytes(gzip.compress(b"".join(BLOCKS[:3]))[:40])
    (folder / "good.sdf").write_bytes(BLOCKS[0])
    pairs, skipped = chem.read_molecules(folder)
    assert len(pairs) == 1
    (s,) = skipped
    assert s.source.endswith("bad.sdf.gz") and "gzip" in s.reason and "\n" not in s.reason


def test_dataset_folder_scan_warns_about_each_entry_it_does_not_read(tmp_path, caplog):
    folder = tmp_path / "mols"
    folder.mkdir()
    (folder / "a.sdf.gz").write_bytes(gzip.compress(b"".join(BLOCKS[:2])))
    (folder / "README").write_text("x")
    with caplog.at_level("WARNING", logger="harness.core.chem"):
        pairs, _ = chem.read_molecules(folder)
    assert len(pairs) == 2
    assert any("README" in r.getMessage() and "not read" in r.getMessage() for r in caplog.records)


def test_eval_of_a_study_directory_offers_its_samples(tmp_path, capsys):
    run = tmp_path / "run"
    for space in ("flat", "raw"):
        (run / space).mkdir(parents=True)
        (run / space / "samples.sdf").write_bytes(b"".join(BLOCKS[:2]))
    (run / "config.yaml").write_text("study: run\n")
    rc, cap = _eval([str(run)], capsys)
    assert rc == 2
    line = cap.err.strip()
    assert "\n" not in line and "flat/samples.sdf" in line and "raw/samples.sdf" in line
