"""Usability minors of issue 27: overrides after options, a full disk that names the file,
and a warning for files without any explicit hydrogen."""
from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest
from rdkit import Chem

from harness.cli import main
from harness.core import chem
from harness.core.io import atomic_write_text

from conftest import QM9_SAMPLE


def test_overrides_may_follow_options(capsys):
    assert main(["config", "tiny", "--json", "generator.max_steps=7"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["generator"]["max_steps"] == 7


def test_an_unknown_option_shows_the_sub_command_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["config", "tiny", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: l3dg config" in err and "--bogus" in err


def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    target = tmp_path / "report.html"
    with pytest.raises(OSError) as exc:
        atomic_write_text(target, "<html>")
    assert exc.value.errno == errno.ENOSPC and str(target) in str(exc.value)
    assert not list(tmp_path.iterdir())                    # no temporary file left behind


def _heavy_atoms_only(path: Path, n: int = 6) -> Path:
    records = [r for r, _ in chem.read_sdf(QM9_SAMPLE)[0][:n]]
    mols = [Chem.RemoveHs(chem.record_to_mol(r), sanitize=False) for r in records]
    return chem.write_sdf(mols, path)


def test_a_file_without_hydrogens_is_warned_about_once(tmp_path, caplog):
    from harness.evaluate import evaluate_source

    path = _heavy_atoms_only(tmp_path / "noh.sdf")
    with caplog.at_level(logging.WARNING, logger="harness.evaluate"):
        result = evaluate_source(str(path), suite="edm/v1", reference=None, progress=False,
                                 reference_row=None)
    warnings = [r.getMessage() for r in caplog.records if "explicit hydrogen" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0]
    assert all(family in warnings[0] for family in ("edm", "rdkit", "distributions"))
    assert result["metadata"]["source"]["no_explicit_h"] is True
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="harness.evaluate"):
        evaluate_source(str(QM9_SAMPLE), suite="edm/v1", reference=None, progress=False,
                        reference_row=None, limit=5)
    assert not [r for r in caplog.records if "explicit hydrogen" in r.getMessage()]
