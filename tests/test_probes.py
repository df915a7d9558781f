"""The probes stage (#26.1-3) on the tiny preset: interpolation (dark-area rate), noise
restart, memorisation; atom matching + Kabsch alignment; report rows."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from harness.study.probes import RESTART_T, match_atoms, slerp
from harness.study.runner import Study
from harness.study.stages import STAGES


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    study = Study.from_source("tiny", [f"output_dir={tmp_path_factory.mktemp('probes')}"])
    study.run()
    return study.root


def test_probes_json_per_space(run_dir):
    assert STAGES[-1] == "probes"            # runs with the controls (on by default)
    for name in ("raw", "flat"):
        p = json.loads((run_dir / name / "probes.json").read_text())
        assert p["version"] == "probes/v1"
        interp = p["interpolation"]
        assert interp["reason"] or interp["paths"]
        for block in interp["paths"].values():
            assert block["n"] == interp["pairs"] * interp["points"]
            assert "rdkit.valid_connected" in block["intervals"]
        assert sorted(map(float, p["restart"]["levels"])) == list(RESTART_T)
        m = p["memorisation"]
        assert m["valid"] >= 0 and m["rmsd_max"] == 0.5
    flat = json.loads((run_dir / "flat" / "probes.json").read_text())
    assert set(flat["interpolation"]["paths"]) == {"linear", "spherical"}
    nn = flat["memorisation"]["latent_nn"]
    assert nn["samples_to_train"]["mean"] > 0 and nn["train_to_train"]["n"] > 0
    raw = json.loads((run_dir / "raw" / "probes.json").read_text())
    assert "skipped" in raw["memorisation"]["latent_nn"]


def test_report_has_the_probe_rows_and_plot(run_dir):
    md = (run_dir / "report.md").read_text()
    assert "## Latent probes" in md and "restart t = 0.5" in md and "interpolation (spherical)" in md
    assert (run_dir / "plots" / "noise_restart.png").stat().st_size > 0


def test_match_atoms_recovers_permutation_and_rotation():
    rng = np.random.default_rng(0)
    za = np.array([6, 6, 8, 1, 1, 1])
    xa = rng.normal(size=(6, 3)) * 1.5
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    perm = np.array([1, 0, 2, 5, 3, 4])
    zb, xb = za[perm], xa[perm] @ q.T + 3.0                  # shuffled, rotated, shifted copy
    found, R = match_atoms(za, xa, zb, xb)
    assert (zb[found] == za).all()
    aligned = (xb[found] - xb.mean(0)) @ R.T
    assert np.abs(aligned - (xa - xa.mean(0))).max() < 1e-6


def test_slerp_keeps_the_norm_between_equal_norm_vectors():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    mid = slerp(a, b, 0.5)
    assert math.isclose(float(mid.norm()), 3.0, rel_tol=1e-6)
    assert torch.allclose(slerp(a, a, 0.3), a)
