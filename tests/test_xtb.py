"""GFN2-xTB engine (harness.core.xtb) and the ``xtb`` metric family."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("tblite")

from harness.core.types import MolRecord  # noqa: E402
from harness.core.xtb import (BOHR_ANGSTROM, HARTREE_KCAL, XtbError, kabsch_rmsd, relax,  # noqa: E402
                              screen, singlepoint)

WATER_Z = np.array([8, 1, 1])
# a distorted water (O-H 1.05 / 0.90 Å, angle ~ 120 deg)
WATER_BAD = np.array([[0.0, 0.0, 0.0], [1.05, 0.0, 0.0], [-0.45, 0.78, 0.0]])


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def test_screen_reasons():
    assert screen(WATER_Z, 0) is None
    assert "radical" in screen([6, 1, 1, 1], 0)                    # methyl radical
    assert "charged" in screen([7, 1, 1, 1, 1], 1)                 # ammonium refused by default
    assert screen([7, 1, 1, 1, 1], 1, allow_charged=True) is None
    assert "outside GFN2-xTB" in screen([92, 1], 0)
    assert screen([], 0) == "no atoms"


def test_singlepoint_energy_gradient_and_quiet(capfd):
    e, g = singlepoint(WATER_Z, WATER_BAD)
    assert -5.2 < e < -4.9                                         # GFN2 water ~ -5.07 Eh
    assert g.shape == (3, 3) and np.isfinite(g).all()
    # gradient (Eh/Bohr) against a central finite difference of the energy
    h = 1e-3                                                        # Å
    shift = np.zeros_like(WATER_BAD)
    shift[1, 0] = h
    fd = (singlepoint(WATER_Z, WATER_BAD + shift)[0] - singlepoint(WATER_Z, WATER_BAD - shift)[0]) / (2 * h)
    assert fd * BOHR_ANGSTROM == pytest.approx(g[1, 0], rel=1e-3, abs=1e-5)
    out = capfd.readouterr()
    assert out.out == ""                                            # tblite prints nothing


def test_singlepoint_failure_is_an_error():
    with pytest.raises(XtbError, match="tblite rejected|SCF failed|non-finite"):
        singlepoint([6, 6], np.zeros((2, 3)))                       # atoms on top of each other


def test_relax_reaches_a_minimum():
    r = relax(WATER_Z, WATER_BAD, fmax=1e-4)
    assert r.converged and r.grad_max < 1e-4
    assert r.delta_e_kcal < -1.0                                    # it was distorted
    assert r.energy == pytest.approx(singlepoint(WATER_Z, r.pos)[0], abs=1e-9)
    oh = np.linalg.norm(r.pos[1:] - r.pos[0], axis=1)
    assert np.allclose(oh, 0.96, atol=0.03)                         # GFN2 O-H ~ 0.96 Å
    # a relaxed structure stays put
    again = relax(WATER_Z, r.pos, fmax=1e-4)
    assert again.steps == 0 and abs(again.delta_e_kcal) < 1e-6


def test_relax_caps_each_step():
    r = relax(WATER_Z, WATER_BAD, max_steps=1, max_step=0.01)
    assert r.steps == 1 and not r.converged
    assert np.linalg.norm(r.pos - WATER_BAD, axis=1).max() <= 0.01 + 1e-12


def test_kabsch_rmsd_batched(rng):
    a = rng.normal(size=(2, 6, 3))
    rot = random_rotation(rng)
    b = a @ rot.T + np.array([1.0, -2.0, 3.0])
    assert np.allclose(kabsch_rmsd(a, b), 0.0, atol=1e-10)
    # a mirror image is not superposable by a proper rotation
    assert (kabsch_rmsd(a, a * np.array([1, 1, -1])) > 1e-3).all()
    # padding (mask False) is ignored; a known displacement gives its RMSD
    c = b.copy()
    c[0, 5] += 100.0                                                # padding atom
    mask = np.ones((2, 6), bool)
    mask[0, 5] = False
    assert kabsch_rmsd(a, c, mask)[0] == pytest.approx(0.0, abs=1e-10)
    d = np.zeros((1, 2, 3))
    e = d.copy()
    e[0, 1, 0] = 1.0                                                # a bond stretched by 1 Å
    assert kabsch_rmsd(d, e)[0] == pytest.approx(0.5)               # both ends move 0.5 Å
    assert math.isnan(kabsch_rmsd(d, e, np.zeros((1, 2), bool))[0])


def test_histogram_distances():
    from metrics.xtb import histogram_distances

    x = np.linspace(0, 1, 200)
    tv, jsd = histogram_distances(x, x)
    assert tv == pytest.approx(0.0) and jsd == pytest.approx(0.0)
    tv, jsd = histogram_distances(x + 10.0, x)                      # all in the top edge bin
    assert tv == pytest.approx(1.0 - 4 / 200, abs=0.02) and 0.9 < jsd <= 1.0
    assert all(math.isnan(v) for v in histogram_distances(np.array([]), x))


def _records(qm9_sample, n):
    return [qm9_sample[k] for k in range(n)]


def test_metric_counts_and_names_what_xtb_cannot_do(qm9_sample):
    from metrics import score_molecules

    records = _records(qm9_sample, 3)
    methyl = MolRecord(numbers=[6, 1, 1, 1], pos=[[0, 0, 0], [1.08, 0, 0], [-0.54, 0.94, 0],
                                                  [-0.54, -0.94, 0]], name="methyl-radical")
    ammonium = MolRecord(numbers=[7, 1, 1, 1, 1],
                         pos=[[0, 0, 0], [0.59, 0.59, 0.59], [-0.59, -0.59, 0.59],
                              [-0.59, 0.59, -0.59], [0.59, -0.59, -0.59]],
                         bonds=[[0, 1, 1], [0, 2, 1], [0, 3, 1], [0, 4, 1]],
                         charges=[1, 0, 0, 0, 0], name="ammonium")
    reference = qm9_sample.subset(np.arange(20, 24))
    res = score_molecules(records + [methyl, ammonium], "xtb/v1", reference=reference,
                          options={"xtb": {"workers": 1, "reference_size": 4}})
    meta = res.metadata["families"]["xtb"]
    assert res["xtb.computed"] == pytest.approx(3 / 5)
    reasons = {row["molecule"]: row["reason"] for row in meta["not_computed"]}
    assert "radical" in reasons["methyl-radical"] and "charged" in reasons["ammonium"]
    assert meta["not_computed_by_reason"] == {"odd electron count": 1, "charged": 1}
    # QM9 DFT geometries are close to GFN2 minima: small ΔE and RMSD, all converged
    assert -5.0 < res["xtb.delta_e"] < 0.0
    assert 0.0 < res["xtb.rmsd"] < 0.2
    assert res["xtb.converged"] == 1.0
    assert -2000 < res["xtb.energy_per_atom"] < -300                # kcal/mol per atom
    for key in ("xtb.energy_w1", "xtb.delta_e_w1", "xtb.energy_tv", "xtb.delta_e_jsd"):
        assert math.isfinite(res[key]) and res[key] >= 0
    assert meta["reference"]["computed"] == 4
    assert len(meta["per_molecule"]) == 3


def test_metric_single_points_only_and_distorted_samples(qm9_sample):
    from metrics import score_molecules

    records = _records(qm9_sample, 2)
    shaken = []
    rng = np.random.default_rng(0)
    for r in records:
        shaken.append(MolRecord(numbers=r.numbers, pos=r.pos + rng.normal(0, 0.15, r.pos.shape),
                                bonds=r.bonds, name=r.name + "-shaken"))
    base = score_molecules(records, "xtb/v1", options={"xtb": {"workers": 1}})
    bad = score_molecules(shaken, "xtb/v1", options={"xtb": {"workers": 1}})
    assert bad["xtb.delta_e"] < base["xtb.delta_e"] - 5.0             # distortion costs energy
    assert bad["xtb.rmsd"] > base["xtb.rmsd"]
    assert math.isnan(base["xtb.energy_w1"])                         # no reference given
    sp = score_molecules(records, "xtb/v1", options={"xtb": {"workers": 1, "relax": False}})
    assert math.isnan(sp["xtb.delta_e"]) and math.isnan(sp["xtb.converged"])
    assert sp["xtb.energy_per_atom"] == pytest.approx(base["xtb.energy_per_atom"], rel=1e-9)


def test_suites_registered():
    from metrics import get_suite

    assert [m.metric for m in get_suite("xtb/v1").members] == ["xtb"]
    members = [m.metric for m in get_suite("qm9/v1-xtb").members]
    assert members[-1] == "xtb" and "edm" in members and "distributions" in members
    assert HARTREE_KCAL == pytest.approx(627.5095, abs=1e-3)
