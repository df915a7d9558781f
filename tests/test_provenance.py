"""Provenance (#26.4) and the report's code line (#26.6): every results file and report
carries the provenance block, each run directory a manifest of sha256s, ``l3dg compare``
names the provenance that differs, and the ``Code:`` line is never ``git unknown`` in a
checkout."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.report.compare import compare_runs, to_markdown
from harness.report.provenance import code_line, describe_code
from harness.results import records
from harness.results.manifest import (
    manifest_hash,
    read_manifest,
    sha256_of,
    verify_manifest,
    write_manifest,
)
from harness.results.provenance import (
    interval_type,
    provenance_block,
    provenance_differences,
    read_results,
)
from harness.study.runner import Study

REPO = Path(__file__).resolve().parents[1]
PARTS = {"schema", "code", "packages", "hardware", "dataset", "bonds", "intervals", "interval_of"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    study = Study.from_source("tiny", [f"output_dir={tmp_path_factory.mktemp('prov')}"])
    study.run()
    return study.root


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()


def _is_commit(sha) -> bool:
    """A full hash of a commit of this checkout."""
    return (isinstance(sha, str) and len(sha) == 40 and subprocess.run(
        ["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=REPO).returncode == 0)


# -- the block ----------------------------------------------------------------------------------
def test_every_results_file_carries_the_block(run_dir):
    rows, prov = read_results(run_dir / "results.json")
    assert set(rows) == {"reference", "raw", "flat"}          # the block is not a row
    assert PARTS <= set(prov) and prov["schema"] == "provenance/v1"
    for name in ("rdkit", "torch", "pytorch-lightning", "e3nn", "optuna", "tblite", "posebusters"):
        assert name in prov["packages"]
    assert prov["packages"]["rdkit"]
    assert _is_commit(prov["code"]["commit"]) and isinstance(prov["code"]["dirty"], bool)
    hw = prov["hardware"]
    assert hw["cpu"] and hw["cores"] >= 1 and hw["threads"] >= 1
    data = prov["dataset"]
    assert data["source"].endswith("qm9_sample.sdf") and len(data["checksum"]) == 16
    assert set(data["splits"]) == {"train", "val", "test"} and data["split_indices"]
    assert data["splits"]["train"]["molecules"] == 160
    assert set(prov["bonds"]) == {"reference", "raw", "flat"}
    assert "edm" in prov["bonds"]["raw"]                      # per metric family
    assert {"wilson", "bootstrap", "difference"} <= set(prov["intervals"])
    assert "100 resamples" in prov["intervals"]["bootstrap"]
    assert prov["interval_of"]["edm.validity"] == "wilson"
    assert prov["interval_of"]["edm.atom_stability"] == "bootstrap"
    for path in (run_dir / "raw" / "metrics.json", run_dir / "raw" / "controls.json",
                 run_dir / "reference" / "metrics.json"):
        block = json.loads(path.read_text())["provenance"]
        assert PARTS <= set(block) and block["dataset"]["checksum"] == data["checksum"], path
    assert set(json.loads((run_dir / "raw" / "controls.json").read_text())["provenance"]["bonds"]) \
        == {"prior", "shuffled", "reconstruction"}
    assert json.loads((run_dir / "record.json").read_text())["provenance"]["dataset"] == data


def test_reports_carry_the_block(run_dir):
    md = (run_dir / "report.md").read_text()
    assert "## Provenance" in md and "tblite" in md and "± (wilson)" in md
    page = (run_dir / "report.html").read_text()
    assert "<summary>Provenance</summary>" in page and "split indices" in page


def test_interval_types_per_metric():
    assert interval_type("edm.mol_stability") == "wilson"
    assert interval_type("rdkit.valid_connected") == "wilson"
    assert interval_type("dist.bond_length_w1") == "bootstrap"
    assert interval_type("fcd") == "none"
    assert interval_type("edm.validity", seeds=[0, 1, 2]) == "student_t"
    block = provenance_block(metrics=["edm.validity"], seeds=[0, 1], n_boot=100)
    assert set(block["intervals"]) == {"student_t", "difference"}
    assert "[0, 1]" in block["intervals"]["student_t"]


# -- the manifest -------------------------------------------------------------------------------
def test_manifest_lists_every_artefact(run_dir, tmp_path):
    manifest = read_manifest(run_dir)
    files = manifest["files"]
    for rel in ("results.json", "record.json", "report.md", "report.html", "config.yaml",
                "raw/samples.sdf", "raw/metrics.json", "raw/controls.json",
                "raw/generator/checkpoints/last.ckpt", "reference/metrics.json"):
        assert rel in files, rel
    assert "manifest.json" not in files and ".lock" not in files
    assert files["raw/samples.sdf"]["sha256"] == sha256_of(run_dir / "raw" / "samples.sdf")
    assert verify_manifest(run_dir) == {"changed": [], "missing": [], "added": []}
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "raw" / "samples.sdf").write_text("tampered\n")
    (copy / "extra.txt").write_text("x")
    (copy / "flat" / "metrics.json").unlink()
    assert verify_manifest(copy) == {"changed": ["raw/samples.sdf"], "missing": ["flat/metrics.json"],
                                     "added": ["extra.txt"]}
    # the hash names the file set, not when it was written
    before = manifest_hash(read_manifest(run_dir))
    write_manifest(copy)
    assert manifest_hash(read_manifest(copy)) != before


def test_report_command_rewrites_the_manifest(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "manifest.json").unlink()
    assert main(["report", str(copy)]) == 0
    assert verify_manifest(copy) == {"changed": [], "missing": [], "added": []}
    (copy / "manifest.json").write_text("{broken")
    with pytest.raises(ValueError, match="manifest.json: damaged"):
        read_manifest(copy)


# -- compare ------------------------------------------------------------------------------------
def _fake_run(root: Path, provenance: dict) -> Path:
    root.mkdir(parents=True)
    rows = {"raw": {"values": {"edm.validity": 0.5}, "intervals": {"edm.validity": [0.4, 0.6]}},
            "provenance": provenance}
    (root / "results.json").write_text(json.dumps(rows))
    (root / "config.yaml").write_text(yaml.safe_dump({"study": "s", "seed": 0}))
    (root / "record.json").write_text(json.dumps({"git": {"commit": "abc", "dirty": False}}))
    return root


def test_compare_names_the_package_version_that_differs(tmp_path, capsys):
    base = {"schema": "provenance/v1", "code": {"commit": "abc", "dirty": False},
            "packages": {"rdkit": "2026.9.1", "torch": "2.13.0"},
            "dataset": {"checksum": "d1", "splits": {"train": {"checksum": "t1"}}},
            "hardware": {"threads": 1}}
    other = json.loads(json.dumps(base))
    other["packages"]["rdkit"] = "2025.3.1"
    a, b = _fake_run(tmp_path / "a", base), _fake_run(tmp_path / "b", other)
    result = compare_runs([a, b])
    assert result["provenance_differences"] == {"packages.rdkit": ["2026.9.1", "2025.3.1"]}
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "## Provenance differences" in out and "`packages.rdkit`" in out and "2025.3.1" in out
    assert "raw" in result["spaces"] and "provenance" not in result["spaces"]


def test_provenance_differences_cover_commit_and_checksums():
    a = {"code": {"commit": "x"}, "dataset": {"checksum": "1", "splits": {"test": {"checksum": "a"}}}}
    b = {"code": {"commit": "y"}, "dataset": {"checksum": "2", "splits": {"test": {"checksum": "a"}}}}
    assert provenance_differences([a, b]) == {"code.commit": ["x", "y"],
                                              "dataset.checksum": ["1", "2"]}
    same = to_markdown({"runs": [{"label": "a", "path": "a"}, {"label": "b", "path": "b"}],
                        "spaces": [], "only_in": {}, "table": {}, "config_differences": {},
                        "provenance_differences": {}})
    assert "Same package versions" in same


def test_two_real_runs_compare_without_provenance_differences_in_code(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    diffs = compare_runs([run_dir, copy])["provenance_differences"]
    assert not any(k.startswith(("packages.", "code.", "dataset.")) for k in diffs)


# -- the code line (#26.6) ----------------------------------------------------------------------
def test_code_line_names_the_commit_in_a_checkout(run_dir):
    commit = json.loads((run_dir / "record.json").read_text())["git"]["commit"]
    assert _is_commit(commit)     # (others may commit while the tests run: not always HEAD)
    line = next(ln for ln in (run_dir / "report.md").read_text().splitlines() if ln.startswith("Code:"))
    assert f"git `{commit[:12]}`" in line and "unknown" not in line and "None" not in line
    page = (run_dir / "report.html").read_text()
    assert f"Code: git <code>{commit[:12]}</code>" in page


def test_code_line_of_a_run_without_a_record_is_this_checkout(tmp_path):
    (tmp_path / "config.yaml").write_text("study: x\n")
    line = code_line(tmp_path, {})
    assert line.startswith(f"git `{_head()[:12]}`") and "recorded none" in line


def test_git_state_without_a_git_binary_reads_the_checkout(monkeypatch):
    head = _head()
    monkeypatch.setenv("PATH", "/nonexistent")
    state = records.git_state()
    assert state == {"commit": head, "dirty": None}
    assert describe_code({"commit": state["commit"], "dirty": None}).endswith("(dirty state unknown)")


def test_outside_a_checkout_the_package_version_names_the_code(monkeypatch, tmp_path):
    monkeypatch.setattr(records, "CODE_ROOT", tmp_path)        # an installed copy, no .git
    assert records.git_state() == {"commit": None, "dirty": None}
    state = records.code_state()
    assert state["source"] == "package" and state["l3dg"] == "0.1.0"
    (tmp_path / "config.yaml").write_text("study: x\n")
    assert code_line(tmp_path, {}) == "l3dg `0.1.0` (the code writing this report; the run recorded none)"
    record = {"git": {"commit": None, "dirty": None}, "versions": {"l3dg": "0.1.0"}}
    assert code_line(tmp_path, record) == "l3dg `0.1.0`"


def test_a_worktree_git_file_is_followed(tmp_path):
    git_dir = tmp_path / "real.git"
    (git_dir / "refs" / "heads").mkdir(parents=True)
    (git_dir / "HEAD").write_text("ref: refs/heads/main\n")
    (git_dir / "packed-refs").write_text("# pack-refs\n" + "a" * 40 + " refs/heads/main\n")
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".git").write_text(f"gitdir: {git_dir}\n")
    assert records._head_from_files(records._git_dir(checkout)) == "a" * 40
