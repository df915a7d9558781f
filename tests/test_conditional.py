"""Property-conditional generation (EDM protocol): halves, predictors, targets, scores, CLI.

Predictors train on the committed 200-molecule QM9 sample at the ``tiny`` size (2 epochs,
width 8) so every test runs in seconds; ``tests/fixtures/conditional_alpha.sdf`` holds 10
QM9 test molecules whose SD field ``alpha`` is the true value plus a known offset
``k - 4.5`` (bohr^3, record k), one H2S (S: outside the vocabulary, unscorable) and one empty
``l3dg_invalid`` record.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.conditional.protocol import (ConditionalConfig, evaluate_conditional, evaluate_sdf,
                                          get_predictor, guidance_sweep, load_predictor_data,
                                          predict_molecules, sample_targets)
from harness.conditional.report import conditional_table, plot_guidance_sweep
from harness.core.data import QM9_SAMPLE_SDF
from harness.core.data.base import deterministic_split, splits_checksum
from harness.core.data.halves import QM9_HALVES_CHECKSUM, halves_indices, property_halves
from metrics.conditional import (CONDITIONAL_PROPERTIES, HARTREE_TO_MEV, NumAtomsBaseline,
                                 PropertyHistogram, baseline_maes, edm_targets, ldm_targets,
                                 score_conditional)
from metrics.property_predictor import PropertyPredictor, load_predictor, predict_batch

FIXTURE_SDF = Path(__file__).parent / "fixtures" / "conditional_alpha.sdf"


@pytest.fixture(scope="module")
def sample_data():
    return load_predictor_data(str(QM9_SAMPLE_SDF))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("predictors")


@pytest.fixture(scope="module")
def alpha_predictor(sample_data, cache):
    return get_predictor("alpha", sample_data, size="tiny", cache_dir=cache)


# -- halves ---------------------------------------------------------------------------------
def test_halves_follow_edms_seed_42_permutation():
    train = np.arange(100, 110)
    h = halves_indices(train)
    perm = np.random.RandomState(42).permutation(10)
    assert h["Da"].tolist() == (100 + perm[:5]).tolist()
    assert h["Db"].tolist() == (100 + perm[5:]).tolist()


def test_qm9_halves_checksum_is_stable():
    """Recomputed from the standard split alone (no QM9 load): 50,000 + 50,000, disjoint."""
    from harness.datasets.qm9 import N_MOLECULES, SPLIT_CHECKSUM, SPLIT_SEED, SPLIT_SIZES

    splits = deterministic_split(N_MOLECULES, SPLIT_SIZES, SPLIT_SEED)
    assert splits_checksum(splits) == SPLIT_CHECKSUM
    h = halves_indices(splits["train"])
    assert len(h["Da"]) == len(h["Db"]) == 50_000
    assert not np.intersect1d(h["Da"], h["Db"]).size
    assert splits_checksum(h) == QM9_HALVES_CHECKSUM


def test_property_halves_of_a_dataset(sample_data):
    halves, info = property_halves(sample_data)
    train_names = set(sample_data.split("train").packed.names.tolist())
    a, b = (set(halves[k].packed.names.tolist()) for k in ("Da", "Db"))
    assert not a & b and a | b == train_names
    assert info["sizes"] == {"Da": len(train_names) // 2, "Db": len(train_names) - len(train_names) // 2}
    assert info["verified"] is False        # only the full QM9 is checked against the constant
    assert property_halves(sample_data)[1]["checksum"] == info["checksum"]
    with pytest.raises(KeyError, match="no split 'nope'"):
        property_halves(sample_data, split="nope")


# -- predictor ------------------------------------------------------------------------------
def test_predictor_is_invariant(sample_data):
    torch.manual_seed(0)
    model = PropertyPredictor(5, hidden=16, layers=2).double()
    b = sample_data.batch(np.arange(6)).to("cpu", torch.float64)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    perm = torch.randperm(b.max_atoms)
    moved = dataclasses.replace(b, pos=b.pos @ q.T + 2.5)
    permuted = dataclasses.replace(b, pos=b.pos[:, perm], atom_types=b.atom_types[:, perm],
                                   mask=b.mask[:, perm])
    ref = model.normalised(b.atom_types, b.pos, b.mask)
    assert torch.allclose(ref, model.normalised(moved.atom_types, moved.pos, moved.mask), atol=1e-9)
    assert torch.allclose(ref, model.normalised(permuted.atom_types, permuted.pos, permuted.mask),
                          atol=1e-9)


@pytest.mark.parametrize("prop", CONDITIONAL_PROPERTIES)
def test_predictors_for_all_six_properties_train_and_cache(prop, sample_data, cache):
    p = get_predictor(prop, sample_data, size="tiny", cache_dir=cache)
    meta = p.meta
    assert meta["property"] == prop and meta["config"]["epochs"] == 2
    assert [r["epoch"] for r in meta["curve"]] == [0, 1]
    assert all(np.isfinite(meta["db"][k]) for k in ("naive", "atoms", "qm9"))
    assert meta["db_molecules"] == meta["halves"]["sizes"]["Db"]
    weights = p.path / "weights.pt"
    stamp = weights.stat().st_mtime_ns
    again = get_predictor(prop, sample_data, size="tiny", cache_dir=cache)
    assert again.path == p.path and weights.stat().st_mtime_ns == stamp     # loaded, not retrained
    b = sample_data.batch(np.arange(4))
    assert np.allclose(predict_batch(again.model, b), predict_batch(p.model, b), atol=1e-6)
    other = get_predictor(prop, sample_data, size="tiny", overrides={"epochs": 1}, cache_dir=cache)
    assert other.path != p.path                                             # config -> new fingerprint


def test_predictor_weights_are_a_plain_state_dict(alpha_predictor):
    state = torch.load(alpha_predictor.path / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model, meta = load_predictor(alpha_predictor.path)
    assert meta["fingerprint"] == alpha_predictor.meta["fingerprint"]


def test_db_mae_and_baselines_are_what_they_claim(alpha_predictor, sample_data):
    from metrics.property_predictor import predict

    halves, _ = property_halves(sample_data)
    k = sample_data.prop_names.index("alpha")
    db, da = halves["Db"], halves["Da"]
    pred = predict(alpha_predictor.model, db)
    y = db.packed.props[:, k].astype(float)
    assert np.isclose(alpha_predictor.db_mae, np.abs(pred - y).mean(), rtol=1e-5)
    expect = baseline_maes(pred, y, da.atom_counts, da.packed.props[:, k], db.atom_counts, seed=0)
    assert np.allclose([alpha_predictor.meta["db"][m] for m in ("naive", "atoms", "qm9")],
                       [expect[m] for m in ("naive", "atoms", "qm9")], rtol=1e-5)


# -- scoring on synthetic data --------------------------------------------------------------
def test_baselines_on_synthetic_data():
    counts_da = np.array([1, 1, 1, 2, 2, 5])
    y_da = np.array([0.0, 1.0, 5.0, 2.0, 4.0, 10.0])
    nab = NumAtomsBaseline.fit(counts_da, y_da)
    assert nab.predict([1, 2, 3, 4, 5, 9]).tolist() == [1.0, 3.0, 3.0, 10.0, 10.0, 10.0]
    y_db = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, 2.0, 2.0, 4.0])
    counts_db = np.array([1, 2, 2, 5])
    out = baseline_maes(pred, y_db, counts_da, y_da, counts_db, seed=3)
    shuffled = y_db[np.random.default_rng(3).permutation(4)]
    assert out["qm9"] == pytest.approx(0.375)
    assert out["naive"] == pytest.approx(np.abs(pred - shuffled).mean())
    assert out["atoms"] == pytest.approx(np.abs(np.array([1.0, 3.0, 3.0, 10.0]) - y_db).mean())


def test_score_conditional_counts_unscorable_and_groups():
    pred = np.array([1.0, 2.0, np.nan, 4.0])
    target = np.array([1.5, 1.0, 3.0, 4.0])
    s = score_conditional(pred, target, valid=[True, False, False, True], groups=["a", "a", "b", "b"])
    assert s["mae"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert (s["n"], s["n_scored"], s["n_unscorable"]) == (4, 3, 1)
    assert s["mae_valid"] == pytest.approx(0.25) and s["validity"] == 0.5
    assert s["groups"]["a"]["mae"] == pytest.approx(0.75)
    assert s["groups"]["b"]["n_unscorable"] == 1


def test_edm_targets_draw_value_given_atom_count():
    counts = np.array([3] * 50 + [7] * 50)
    values = np.concatenate([np.linspace(0, 1, 50), np.linspace(10, 11, 50)])
    n_atoms, t = edm_targets(counts, values, 400, seed=1)
    assert set(n_atoms.tolist()) == {3, 7}
    assert (t[n_atoms == 3] >= 0).all() and (t[n_atoms == 3] <= 1 + 1e-9).all()
    assert (t[n_atoms == 7] >= 10).all() and (t[n_atoms == 7] <= 11 + 1e-9).all()
    assert 0.35 < (n_atoms == 3).mean() < 0.65
    again = edm_targets(counts, values, 400, seed=1)
    assert np.array_equal(again[0], n_atoms) and np.array_equal(again[1], t)
    with pytest.raises(KeyError, match="no training molecule with 4 atoms"):
        PropertyHistogram(counts, values).sample([4], np.random.default_rng(0))


def test_ldm_targets_in_range_and_ood_outside_it():
    pos = ldm_targets(np.array([2.0, 5.0, 8.0]), n=4, n_ood=3)
    assert pos["in"].tolist() == [2.0, 4.0, 6.0, 8.0]
    assert (pos["ood_low"] < 2).all() and pos["ood_low"].min() == pytest.approx(2 / 1.5)
    assert (pos["ood_high"] > 8).all() and pos["ood_high"].max() == pytest.approx(12.0)
    neg = ldm_targets(np.array([-0.4, -0.2]), n=2, n_ood=2)    # homo-like: all negative
    assert neg["ood_low"].min() == pytest.approx(-0.6) and (neg["ood_low"] < -0.4).all()
    assert neg["ood_high"].max() == pytest.approx(-0.2 / 1.5) and (neg["ood_high"] > -0.2).all()
    assert len(ldm_targets(np.array([0.0, 3.0]), n=2)["ood_low"]) == 0   # min 0: no low side


# -- evaluation of generated molecules ------------------------------------------------------
def test_evaluate_conditional_on_dataset_molecules(alpha_predictor, sample_data):
    halves, _ = property_halves(sample_data)
    targets = sample_targets("alpha", halves["Db"], 12, "edm", seed=0)
    assert targets.n_atoms is not None and len(targets) == 12
    batch = halves["Db"].batch(np.arange(12))
    r = evaluate_conditional(batch, targets, alpha_predictor)
    pred = predict_batch(alpha_predictor.model, batch)
    assert r["report"]["mae"] == pytest.approx(np.abs(pred - targets.values).mean(), rel=1e-6)
    assert r["score"]["validity"] > 0.8                   # real QM9 molecules
    assert r["baselines"]["qm9"] == pytest.approx(alpha_predictor.db_mae)
    table = conditional_table({"dataset molecules": {"alpha": r}})
    assert "#Atoms, ours" in table and "*EDM, published* | 2.760" in table


def test_orbital_energies_are_reported_in_meV(sample_data, cache):
    p = get_predictor("gap", sample_data, size="tiny", cache_dir=cache)
    batch = sample_data.batch(np.arange(5))
    r = evaluate_conditional(batch, np.zeros(5), p, validity=False)
    assert r["report_unit"] == "meV"
    assert r["report"]["mae"] == pytest.approx(r["score"]["mae"] * HARTREE_TO_MEV)


def test_unknown_elements_are_unscorable(alpha_predictor, sample_data):
    batch = sample_data.batch(np.arange(3))
    other = dataclasses.replace(batch, elements=("H", "C", "N", "S", "F"))   # O -> S
    pred = predict_molecules(alpha_predictor, other)
    has_o = (batch.atom_types == 3).any(1).numpy()
    assert np.isnan(pred[has_o]).all() and np.isfinite(pred[~has_o]).all()


def test_eval_condition_scores_a_conditional_sdf(alpha_predictor, sample_data, cache, tmp_path):
    from harness.cli import main
    from harness.core.chem import read_molecules

    out = tmp_path / "cond.json"
    rc = main(["eval", str(FIXTURE_SDF), "--condition", "alpha", "--predictor-size", "tiny",
               "--predictor-data", str(QM9_SAMPLE_SDF), "--cache-dir", str(cache),
               "--out", str(out), "--quiet"])
    assert rc == 0
    result = json.loads(out.read_text())
    s = result["report"]
    assert (s["n"], s["n_unscorable"]) == (12, 2)         # H2S + the empty invalid record
    assert result["predictor"]["fingerprint"] == alpha_predictor.meta["fingerprint"]
    pairs, _ = read_molecules(FIXTURE_SDF, None, perceive=False)
    from harness.core.types import MolBatch

    records = [r for r, _ in pairs[:10]]
    pred = predict_batch(alpha_predictor.model, MolBatch.from_records(records, alpha_predictor.elements))
    requested = np.array([float(p["alpha"]) for _, p in pairs[:10]])
    assert s["mae"] == pytest.approx(np.abs(pred - requested).mean(), rel=1e-5)
    direct = evaluate_sdf(FIXTURE_SDF, "alpha", alpha_predictor, field_name="alpha_true")
    assert direct["report"]["n_unscorable"] == 2
    with pytest.raises(ValueError, match="lack the SD field <nope>"):
        evaluate_sdf(FIXTURE_SDF, "alpha", alpha_predictor, field_name="nope")


def test_guidance_sweep_rows_and_plot(alpha_predictor, sample_data, tmp_path):
    halves, _ = property_halves(sample_data)
    targets = sample_targets("alpha", halves["Db"], 6, "edm", seed=0)
    db = halves["Db"]

    def sample(scale: float):   # stands in for sample_conditional(gen, space, targets, norm, w)
        return db.batch(np.arange(6) + int(scale))

    rows = guidance_sweep(sample, targets, alpha_predictor, [0.0, 1.0, 2.0])
    assert [r["scale"] for r in rows] == [0.0, 1.0, 2.0]
    assert all(np.isfinite(r["mae"]) and 0 <= r["validity"] <= 1 for r in rows)
    path = plot_guidance_sweep(rows, tmp_path / "guidance.png", "alpha", "Bohr^3")
    assert path.stat().st_size > 1000


def test_conditional_presets_load():
    from harness.config import load_config, load_raw

    for preset in ("qm9-cond-cpu", "qm9-cond-gpu"):
        raw = load_raw(preset)
        section = raw.pop("conditional", None) or {}
        cfg = ConditionalConfig(**section)
        assert cfg.property in CONDITIONAL_PROPERTIES and cfg.protocol in ("edm", "ldm")
        config = load_config(raw)
        assert config.generator.context == [cfg.property]


# -- physics check (GFN2-xTB) ---------------------------------------------------------------
def test_xtb_properties_of_water_and_calibration(sample_data):
    from harness.conditional.xtb import xtb_calibration, xtb_check
    from metrics.xtb_properties import xtb_properties

    water = xtb_properties([8, 1, 1], np.array([[0, 0, 0], [0.757, 0.586, 0], [-0.757, 0.586, 0.0]]))
    assert water["homo"] < 0 < water["lumo"] and water["gap"] == pytest.approx(water["lumo"] - water["homo"])
    assert 1.5 < water["mu"] < 3.0                                  # D
    cal = xtb_calibration(sample_data, "gap", n=12)
    assert cal["molecules"] == 12 and cal["mae_linear"] <= cal["mae_raw"] + 1e-12
    test = sample_data.split("test")
    y = test.packed.props[:6, test.prop_names.index("gap")]
    check = xtb_check(test.batch(np.arange(6)), y, "gap", cal)
    assert check["n_unscorable"] == 0 and np.isfinite(check["mae"])
    with pytest.raises(ValueError, match="not available from a single point"):
        xtb_calibration(sample_data, "alpha", n=5)


def test_mae_carries_a_bootstrap_interval_and_the_table_marks_a_win_over_atoms():
    from harness.conditional.report import conditional_table
    from metrics.conditional import mae_interval, score_conditional

    rng = np.random.default_rng(0)
    target = rng.normal(size=400)
    pred = target + rng.normal(scale=0.5, size=400)
    score = score_conditional(pred, target)
    lo, hi = score["mae_ci"]
    assert lo < score["mae"] < hi and hi - lo < 0.1
    assert mae_interval(pred[:1], target[:1]) is None
    record = {"report": {"mae": 0.4, "mae_ci": [0.35, 0.45]},
              "baselines": {"naive": 2.0, "atoms": 1.0, "qm9": 0.1}}
    table = conditional_table({"space": {"alpha": record}})
    assert "0.400 [0.350, 0.450] ✓" in table
    record["report"]["mae_ci"] = [0.3, 1.2]        # interval reaches past #Atoms: no mark
    assert "✓" not in conditional_table({"space": {"alpha": record}})
