"""Leaderboard-ready export (#26.5): ``l3dg export RUN --format leaderboard`` and
``l3dg eval FILE --leaderboard OUT`` write versioned rows that match
``harness/report/leaderboard.schema.json`` (checked with the harness's own small validator,
itself tested here)."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from harness.cli import main
from harness.report.leaderboard import (
    SCHEMA_FILE,
    SCHEMA_VERSION,
    load_schema,
    study_rows,
    write_checked,
)
from harness.report.schema_check import errors, validate
from harness.results.manifest import manifest_hash, read_manifest, verify_manifest
from harness.study.runner import Study

REPO = Path(__file__).resolve().parents[1]
REFERENCE = "sdf:harness/core/data/qm9_sample.sdf:train"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    study = Study.from_source("tiny", [f"output_dir={tmp_path_factory.mktemp('lb')}"])
    study.run()
    return study.root


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- the validator ------------------------------------------------------------------------------
SCHEMA = {"type": "object", "required": ["a"], "additionalProperties": False,
          "properties": {"a": {"type": ["integer", "null"], "minimum": 0},
                         "b": {"enum": ["x", "y"]}, "c": {"$ref": "#/$defs/pair"},
                         "d": {"type": "string", "pattern": "^[0-9a-f]+$"},
                         "e": {"type": "object", "additionalProperties": {"type": "number"}},
                         "f": {"const": "v1"}},
          "$defs": {"pair": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}}}}


def test_validator_accepts_and_names_every_violation():
    assert errors({"a": 1, "b": "x", "c": [0.1, 2], "d": "ab12", "e": {"k": 1.5}, "f": "v1"}, SCHEMA) == []
    assert errors({"a": None}, SCHEMA) == []
    found = errors({"a": -1, "b": "z", "c": [1], "d": "XYZ", "e": {"k": "no"}, "f": "v2", "g": 1}, SCHEMA)
    assert found == ["$.a: -1 < minimum 0", "$.b: 'z' is not one of ['x', 'y']",
                     "$.c: 1 items < minItems 2", "$.d: 'XYZ' does not match '^[0-9a-f]+$'",
                     "$.e.k: expected number, got str", "$.f: expected 'v1', got 'v2'",
                     "$.g: key not allowed by the schema"]
    assert errors({}, SCHEMA) == ["$: missing required key 'a'"]
    assert errors({"a": True}, SCHEMA) == ["$.a: expected integer or null, got bool"]
    assert errors({"a": 1, "c": [1, "x"]}, SCHEMA) == ["$.c[1]: expected number, got str"]
    with pytest.raises(ValueError, match=r"row does not match its schema: \$: missing required key 'a'"):
        validate({}, SCHEMA, "row")


def test_validator_refuses_keywords_it_does_not_check():
    with pytest.raises(ValueError, match="unsupported keyword"):
        errors(1, {"oneOf": [{"type": "integer"}]})
    with pytest.raises(ValueError, match="local"):
        errors(1, {"$ref": "http://example.com/s.json"})


def test_the_schema_uses_only_what_the_validator_checks_and_ships_with_the_package():
    schema = load_schema()
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    errors({}, schema)          # walks the top level: no unsupported keyword there
    for sub in (*schema["properties"].values(), *schema["$defs"].values()):
        errors(None, sub, schema)
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["harness"]
    assert any(SCHEMA_FILE in (REPO / "harness").glob(g) for g in globs)


# -- l3dg export --------------------------------------------------------------------------------
def test_export_writes_one_valid_row_per_space(run_dir, capsys):
    assert main(["export", str(run_dir), "--format", "leaderboard"]) == 0
    assert "wrote 2 row(s)" in capsys.readouterr().out
    rows = _rows(run_dir / "leaderboard.jsonl")
    assert [r["entry"]["space"] for r in rows] == ["raw", "flat"]
    schema = load_schema()
    results = json.loads((run_dir / "results.json").read_text())
    for row in rows:
        assert errors(row, schema) == [], row["entry"]["space"]
        name = row["entry"]["space"]
        values = results[name]["values"]
        for key in ("edm.validity", "quality", "dist.atom_type_tv"):
            assert row["metrics"][key]["value"] == values[key]
            assert row["metrics"][key]["interval"] == results[name]["intervals"][key]
        assert row["metrics"]["edm.validity"]["interval_type"] == "wilson"
        assert row["metrics"]["quality"]["interval_type"] == "bootstrap"
        info = results[name]["info"]
        assert row["budget"]["flops"] == info["train_generator"]["flops_total"] > 0
        assert row["budget"]["train_seconds"] >= 0 and row["nfe"] == 5 == info["sample"]["nfe"]
        assert row["entry"]["family"] == "diffusion" and row["suite"]["name"] == "qm9/v1-core"
        assert row["suite"]["version"] == "v1-core" and row["suite"]["intervals"] == "intervals/v1"
        assert row["provenance"] == results["provenance"]
        assert row["manifest_sha256"] == manifest_hash(read_manifest(run_dir))
    # the export is derived from the manifest, so it is not an artefact the manifest lists
    assert verify_manifest(run_dir)["added"] == []


def test_export_to_a_named_file_and_errors(run_dir, tmp_path, capsys):
    out = tmp_path / "sub" / "rows.jsonl"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert len(_rows(out)) == 2
    assert main(["export", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err


def test_an_invalid_row_writes_nothing(run_dir, tmp_path):
    row = study_rows(run_dir)[0]
    row["nfe"] = "five"
    out = tmp_path / "bad.jsonl"
    with pytest.raises(ValueError, match=r"leaderboard row raw does not match its schema: \$.nfe"):
        write_checked([row], out)
    assert not out.exists()


# -- l3dg eval --leaderboard --------------------------------------------------------------------
def test_eval_writes_the_same_row_for_samples_made_elsewhere(run_dir, tmp_path):
    sdf = run_dir / "raw" / "samples.sdf"
    out = tmp_path / "eval.jsonl"
    assert main(["eval", str(sdf), "--suite", "qm9/v1-core", "--reference", REFERENCE,
                 "--leaderboard", str(out), "--quiet"]) == 0
    (row,) = _rows(out)
    assert errors(row, load_schema()) == []
    assert row["entry"]["kind"] == "eval" and row["entry"]["source"] == str(sdf)
    assert row["budget"]["flops"] is None and row["nfe"] == 5         # NFE from the SD fields
    assert row["provenance"]["dataset"]["splits"] == {}
    assert row["provenance"]["dataset"]["name"].endswith(":train")
    study = {r["entry"]["space"]: r for r in study_rows(run_dir)}["raw"]
    for key in ("edm.validity", "edm.valid_unique", "edm.atom_stability", "dist.atom_type_tv", "quality"):
        assert row["metrics"][key]["value"] == pytest.approx(study["metrics"][key]["value"]), key
    for key in ("edm.validity", "edm.valid_unique"):       # Wilson intervals: the same n
        assert row["metrics"][key]["interval"] == pytest.approx(study["metrics"][key]["interval"])
    files = {str(sdf): {"sha256": read_manifest(run_dir)["files"]["raw/samples.sdf"]["sha256"],
                        "bytes": sdf.stat().st_size}}
    assert row["manifest_sha256"] == manifest_hash({"files": files})
