"""A damaged fitted space (issue 27, defect 3) and ``l3dg sample --space`` typos.

Before: a garbage ``<space>/space/weights.pt`` gave PyTorch's UnpicklingError traceback
(which suggests ``weights_only=False``) from ``l3dg sample`` — after it had written another
space's SDF — and from ``l3dg run --resume``. Now both refuse with one line naming the file,
before writing anything.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.study.runner import Study


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    Study.from_source("tiny", [f"output_dir={out}", "study=w"]).run()
    return out / "w"


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "w"
    shutil.copytree(run_dir, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != ".lock"}


GARBAGE = {"text": b"this is not a weights file\n", "pickle-like": b"\x80\x02}q\x00.garbage",
           "truncated-zip": b"PK\x03\x04 truncated"}


def _assert_one_line_naming(err: str, path: Path) -> None:
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line, err
    assert str(path) in line and "corrupt or not a weights file" in line
    assert "weights_only" not in line


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
def test_sample_refuses_a_damaged_space_before_writing(run_dir, tmp_path, capsys, garbage):
    d = _copy(run_dir, tmp_path)
    weights = d / "flat" / "space" / "weights.pt"     # flat comes after raw: raw would be sampled first
    weights.write_bytes(GARBAGE[garbage])
    before = _snapshot(d)
    assert main(["sample", str(d), "--n", "2"]) == 2
    _assert_one_line_naming(capsys.readouterr().err, weights)
    assert _snapshot(d) == before                     # no SDF of raw, nothing else either


def test_resume_with_a_pending_stage_refuses_a_damaged_space(run_dir, tmp_path, capsys):
    d = _copy(run_dir, tmp_path)
    (d / "flat" / "metrics.json").unlink()            # the score stage is pending again
    weights = d / "flat" / "space" / "weights.pt"
    weights.write_bytes(GARBAGE["pickle-like"])
    before = _snapshot(d)
    assert main(["run", "--resume", str(d)]) == 2
    _assert_one_line_naming(capsys.readouterr().err, weights)
    assert _snapshot(d) == before


def test_sample_unknown_space_lists_the_study_spaces(run_dir, tmp_path, capsys):
    d = _copy(run_dir, tmp_path)
    assert main(["sample", str(d), "--space", "nosuch", "--n", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "nosuch" in err and "raw" in err and "flat" in err and "\n" not in err
