"""Repeated seeds and the scope of determinism (same seed, same machine and thread count ->
identical results)."""
from __future__ import annotations

import json
import math

from harness.study.runner import Study


def _values(path):
    rows = json.loads(path.read_text())
    rows.pop("provenance", None)          # the results file's provenance block, not a row
    return {name: {k: v for k, v in row["values"].items()} for name, row in rows.items()}


def test_same_seed_gives_identical_results(tmp_path):
    a = Study.from_source("tiny", [f"output_dir={tmp_path / 'a'}", "controls=false"])
    b = Study.from_source("tiny", [f"output_dir={tmp_path / 'b'}", "controls=false"])
    a.run()
    b.run()
    va, vb = _values(a.root / "results.json"), _values(b.root / "results.json")
    assert va.keys() == vb.keys()
    for name in va:
        for k, v in va[name].items():
            w = vb[name][k]
            assert (v == w) or (isinstance(v, float) and math.isnan(v) and math.isnan(w)), (name, k, v, w)


def test_seeds_run_one_study_each_and_aggregate(tmp_path):
    study = Study.from_source("tiny", [f"output_dir={tmp_path}", "seeds=[0, 1]", "controls=false",
                                       "metrics.bootstrap=0"])
    rows = study.run()
    for k in (0, 1):
        sub = json.loads((study.root / f"seed-{k}" / "results.json").read_text())
        assert set(sub) == {"reference", "raw", "flat", "provenance"}
    raw = rows["raw"]
    assert raw["seeds"] == [0, 1]
    key = "edm.validity"
    per = [raw["per_seed"][k][key] for k in (0, 1)]
    assert math.isclose(raw["values"][key], sum(per) / 2)
    if per[0] != per[1]:
        lo, hi = raw["intervals"][key]
        assert lo < raw["values"][key] < hi
    report = (study.root / "report.md").read_text()
    assert "mean over seeds [0, 1]" in report
