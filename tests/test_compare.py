"""l3dg compare: common spaces side by side, noise verdicts from intervals (any of the
accepted forms, or none), config differences, atomic markdown + JSON output."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.report.compare import (compare_runs, config_differences, flatten, interval_of, noise_verdict,
                             run_labels, to_markdown, write_comparison)


def _run(root: Path, rows: dict, config: dict) -> Path:
    root.mkdir(parents=True)
    (root / "results.json").write_text(json.dumps(rows))
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "record.json").write_text(json.dumps({"git": {"commit": "abc", "dirty": False}}))
    return root


def test_interval_forms_are_all_read():
    assert interval_of({"values": {"m": 0.5, "m.ci": [0.4, 0.6]}}, "m") == (0.4, 0.6)
    assert interval_of({"values": {"m": 0.5, "m.ci": {"low": 0.6, "high": 0.4}}}, "m") == (0.4, 0.6)
    assert interval_of({"values": {"m": 0.5, "m.ci_low": 0.45, "m.ci_high": 0.55}}, "m") == (0.45, 0.55)
    assert interval_of({"values": {"m": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.7}}}, "m") == (0.4, 0.7)
    assert interval_of({"values": {"m": 0.5}, "intervals": {"m": [0.1, 0.9]}}, "m") == (0.1, 0.9)
    assert interval_of({"values": {"m": 0.5}}, "m") is None
    assert interval_of({"values": {"m": 0.5, "m.ci": [None, 0.6]}}, "m") is None


def test_noise_verdicts():
    assert noise_verdict([(0.4, 0.6), (0.5, 0.7)], [0.5, 0.6]) == "within noise"
    assert noise_verdict([(0.4, 0.5), (0.6, 0.7)], [0.45, 0.65]) == "differ"
    assert noise_verdict([None, None], [0.4, 0.6]) == "no intervals"
    assert noise_verdict([None, None], [0.4, 0.4]) == "same"
    assert noise_verdict([None, None], [0.4, math.nan]) == "–"


def test_flatten_and_config_differences():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
    runs = [{"config": {"seed": 0, "g": {"lr": 1e-3, "steps": 4}}, "record": {"git": {"commit": "x"}}},
            {"config": {"seed": 1, "g": {"lr": 1e-3}}, "record": {"git": {"commit": "y"}}}]
    assert config_differences(runs) == {"g.steps": [4, None], "record.git.commit": ["x", "y"],
                                        "seed": [0, 1]}


def test_labels_disambiguate_runs_with_one_study_name(tmp_path):
    assert run_labels([tmp_path / "a" / "tiny", tmp_path / "b" / "tiny"]) == ["a/tiny", "b/tiny"]
    assert run_labels([tmp_path / "x", tmp_path / "y"]) == ["x", "y"]


def test_synthetic_runs_with_and_without_intervals(tmp_path):
    a = _run(tmp_path / "a" / "s", {
        "reference": {"values": {"edm.validity": 0.97}},
        "raw": {"values": {"edm.validity": 0.40, "edm.validity.ci": [0.30, 0.50],
                           "edm.mol_stability": 0.10, "edm.mol_stability.ci": [0.05, 0.15]},
                "seconds": {"train_generator": 10.0}},
        "flat": {"values": {"edm.validity": 0.0}},
    }, {"study": "s", "seed": 0, "generator": {"max_steps": 100}})
    b = _run(tmp_path / "b" / "s", {
        "reference": {"values": {"edm.validity": 0.97}},
        "raw": {"values": {"edm.validity": 0.45, "edm.validity.ci": [0.35, 0.55],
                           "edm.mol_stability": 0.40, "edm.mol_stability.ci": [0.30, 0.50]},
                "seconds": {"train_generator": 12.0}},
        "invariant": {"values": {"edm.validity": 0.9}},
    }, {"study": "s", "seed": 1, "generator": {"max_steps": 200}})
    result = compare_runs([a, b])
    assert result["spaces"] == ["reference", "raw"]
    assert result["only_in"] == {"a/s": ["flat"], "b/s": ["invariant"]}
    raw = {e["metric"]: e for e in result["table"]["raw"]}
    assert raw["edm.validity"]["verdict"] == "within noise"
    assert raw["edm.mol_stability"]["verdict"] == "differ"
    assert raw["edm.mol_stability"]["delta"] == pytest.approx(0.30)
    assert raw["time.train_generator"]["values"] == [10.0, 12.0]
    ref = {e["metric"]: e for e in result["table"]["reference"]}
    assert ref["edm.validity"]["verdict"] == "same"
    assert result["config_differences"] == {"generator.max_steps": [100, 200], "seed": [0, 1]}
    md = to_markdown(result)
    assert "| valid ↑ | 0.400 [0.300, 0.500] | 0.450 [0.350, 0.550] | +0.050 | within noise |" in md
    assert "| mol stab ↑ | 0.100 [0.050, 0.150] | 0.400 [0.300, 0.500] | +0.300 | differ |" in md
    assert "Only in `a/s`: flat" in md and "| `seed` | 0 | 1 |" in md
    assert "carry no intervals" not in md


def test_missing_results_is_a_clear_error(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="results.json is missing"):
        compare_runs([tmp_path / "half", tmp_path / "half"])
    with pytest.raises(ValueError, match="at least two"):
        compare_runs([tmp_path / "half"])


def test_two_real_tiny_runs_seed_0_vs_seed_1(tmp_path, capsys, monkeypatch):
    """Two real (one-space) tiny studies through the CLI: ``l3dg compare`` prints and writes."""
    from harness.study.runner import Study

    overrides = ["spaces={raw: {}}", "metrics.reference_row=false"]
    for seed in (0, 1):
        Study.from_source("tiny", overrides + [f"seed={seed}", f"output_dir={tmp_path / f's{seed}'}"]).run()
    capsys.readouterr()
    out = tmp_path / "cmp"
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(tmp_path / "s0" / "tiny"), str(tmp_path / "s1" / "tiny"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## raw" in printed and "| `seed` | 0 | 1 |" in printed
    data = json.loads((out / "compare.json").read_text())
    assert data["spaces"] == ["raw"] and data["config_differences"]["seed"] == [0, 1]
    entries = {e["metric"]: e for e in data["table"]["raw"]}
    validity = entries["edm.validity"]
    assert all(validity["intervals"]), "the study records Wilson intervals on validity"
    for e in entries.values():        # where both runs carry intervals, a verdict is given
        if all(e["intervals"]) and e["values"][0] != e["values"][1]:
            assert e["verdict"] in ("within noise", "differ"), e
    assert "carry no intervals" not in printed
    assert (out / "compare.md").read_text() == printed.split("\nwrote ")[0]
    # --out FILE.md names both files; default is the current directory
    md, js, _ = write_comparison([tmp_path / "s0" / "tiny", tmp_path / "s1" / "tiny"], tmp_path / "x.md")
    assert md.name == "x.md" and js.name == "x.json" and js.exists()
