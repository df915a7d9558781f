"""Quality against NFE in a study, with both generator families side by side (a space under
an ``@alias``), and the family/sampler check at config time."""
from __future__ import annotations

import json

import pytest

from harness.config import ConfigError, load_config, validate_components
from harness.report.nfe import nfe_to_fraction
from harness.study.runner import Study

OVERRIDES = ["spaces={flat: {width: 16, hidden: 32, layers: 1, epochs: 1}, "
             "flat@flow: {width: 16, hidden: 32, layers: 1, epochs: 1}}",
             "generator_overrides={flat@flow: {family: flow}}", "sampling.nfe_sweep=[2, 4]",
             "controls=false", "metrics.bootstrap=0"]


def test_both_families_get_a_quality_vs_nfe_table(tmp_path):
    study = Study.from_source("tiny", [f"output_dir={tmp_path}", *OVERRIDES])
    study.run()
    diff = json.loads((study.root / "flat" / "nfe.json").read_text())
    flow = json.loads((study.root / "flat@flow" / "nfe.json").read_text())
    assert diff["family"] == "diffusion" and flow["family"] == "flow"
    assert [r["nfe"] for r in diff["rows"]] == [2, 4]
    assert [r["nfe"] for r in flow["rows"]] == [1, 3]           # heun: 2 steps - 1
    assert all(r["seconds_per_molecule"] > 0 for r in diff["rows"] + flow["rows"])
    # the alias reuses its twin's fitted space and latents (same type, options, data, seed)
    state = json.loads((study.root / "flat@flow" / "state.json").read_text())
    assert state["info"]["fit_space"]["shared_from"] == "flat" == state["info"]["encode"]["shared_from"]
    twin = json.loads((study.root / "flat" / "state.json").read_text())
    assert state["seconds"]["fit_space"] == twin["seconds"]["fit_space"]
    assert (study.root / "flat@flow" / "latents.pt").read_bytes() == (study.root / "flat" / "latents.pt").read_bytes()
    report = (study.root / "report.md").read_text()
    assert set(diff["nfe_to_95_by_metric"]) == {"quality", "edm.atom_stability"}
    assert all("edm.atom_stability" in r for r in diff["rows"])
    assert "NFE → atom stability" in report
    assert "Quality against network evaluations" in report and (study.root / "plots" / "quality_vs_nfe.png").exists()


def test_nfe_to_95_percent():
    rows = [{"nfe": 5, "quality": 0.2}, {"nfe": 10, "quality": 0.58}, {"nfe": 20, "quality": 0.6}]
    assert nfe_to_fraction(rows, 0.95) == 10
    assert nfe_to_fraction([{"nfe": 5, "quality": 0.0}]) is None


def test_a_sampler_of_the_wrong_family_fails_at_config_time():
    config = load_config("tiny", ["generator.family=flow", "sampling.sampler=ddpm"])
    with pytest.raises(ConfigError, match="sampling.sampler"):
        validate_components(config)
