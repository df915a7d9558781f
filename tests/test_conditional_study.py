"""A conditional study end to end on the committed QM9 sample (tiny sizes): the generator
trains on the generator half, samples carry their requested values, the conditional stage
scores them with the (tiny) predictor beside its baselines and the prior control."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.core.chem import read_sdf
from harness.study.runner import Study

CONFIG = {
    "extends": "tiny", "study": "cond",
    "data": {"dataset": "sdf", "options": {"path": "harness/core/data/qm9_sample.sdf",
                                           "elements": ["H", "C", "N", "O", "F"], "report": False,
                                           "property_fields": ["alpha"]}},
    "spaces": {"raw": {}},
    "generator": {"context": ["alpha"]},
    "conditional": {"property": "alpha", "n_samples": 6, "predictor_size": "tiny",
                    "guidance_scales": [0.0, 2.0]},
}


def test_conditional_study_scores_requested_values(tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.setenv("L3DG_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "cond.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    study = Study.from_source(str(path), [f"output_dir={tmp_path}"])
    full = study.dataset.split("train")
    assert len(study.split("train")) < len(full)          # only the generator half Db
    study.run()
    d = study.root / "raw"
    out = json.loads((d / "conditional.json").read_text())
    assert out["samples"]["property"] == "alpha"
    assert {"naive", "atoms", "qm9"} <= set(out["samples"]["baselines"])
    assert "mae" in out["samples"]["report"] and "mae" in out["prior"]["report"]
    # the ceiling: the predictor on the space's reconstructions of generator-half molecules
    assert out["reconstruction"]["score"]["n"] == 6 and "mae" in out["reconstruction"]["report"]
    assert [r["scale"] for r in out["guidance"]] == [0.0, 2.0]
    records, skipped = read_sdf(d / "samples.sdf", perceive_missing_bonds=False, check_geometry=False)
    assert len(records) + len(skipped) == 6
    for _, props in records:
        assert float(props["alpha"]) > 0 and props["space"] == "raw" and "edm_valid" in props
    report = (study.root / "report.md").read_text()
    assert "## Conditional generation" in report and "raw prior (noise)" in report
    assert "raw reconstruction (ceiling)" in report
    assert "[" in report.split("**raw**")[1].split("\n")[0]          # the MAE carries its interval
    from harness.cli import main

    monkeypatch.setattr("sys.argv", ["l3dg"])
    assert main(["run", "--resume", str(study.root)]) == 0       # every stage done: prints the tables
    printed = capsys.readouterr().out
    assert "## Conditional generation" in printed and "#Atoms, ours" in printed


def test_vector_latents_can_be_told_the_target_atom_count(tmp_path, monkeypatch):
    """``conditional.atom_count_context``: a vector-latent generator is conditioned on
    (value, atom count) under EDM targets; a per-atom one keeps its mask for the count."""
    import dataclasses

    import yaml

    from harness.conditional.protocol import ConditionalTargets
    from harness.study.conditional import generator_context, load_targets
    from harness.core.types import LatentSpec

    monkeypatch.setenv("L3DG_CACHE_DIR", str(tmp_path / "cache"))
    config = {**CONFIG, "spaces": {"flat": {}},
              "conditional": {**CONFIG["conditional"], "atom_count_context": True,
                              "guidance_scales": []}}
    path = tmp_path / "cond.yaml"
    path.write_text(yaml.safe_dump(config))
    study = Study.from_source(str(path), [f"output_dir={tmp_path}"])
    vector = LatentSpec(kind="vector", width=8)
    per_atom = LatentSpec(kind="per_atom", width=8, has_coords=True)
    assert generator_context(study.config, "flat", vector) == ["alpha", "n_atoms"]
    assert generator_context(study.config, "flat", per_atom) == ["alpha"]
    ldm = dataclasses.replace(study.config, conditional=dataclasses.replace(
        study.config.conditional, protocol="ldm"))
    assert generator_context(ldm, "flat", vector) == ["alpha"]     # ldm targets carry no count
    study.run()
    gen = study.load_generator("flat")
    assert list(gen.config.context) == ["alpha", "n_atoms"] and gen.context_dim == 2
    targets = load_targets(study.root / "flat" / "targets.npz")
    table, norm = study.context_table(["alpha", "n_atoms"])
    counts = study.split("train").atom_counts
    assert abs(norm["mean"][1] - counts.mean()) < 1e-3
    ctx = targets.context(norm)
    assert ctx.shape == (len(targets), 2)
    assert np.allclose(ctx[:, 1].numpy() * norm["std"][1] + norm["mean"][1], targets.n_atoms, atol=1e-3)
    no_counts = ConditionalTargets("alpha", targets.values, None, targets.groups, "ldm")
    with pytest.raises(ValueError, match="carry none"):
        no_counts.context(norm)
    assert (study.root / "flat" / "conditional.json").exists()
