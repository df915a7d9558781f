"""Metric families on hand-built molecules whose answers are worked out by hand, property
tests (rotation / translation / permutation invariance), suites, results and caching."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.core.io import atomic_write_json, read_json
from harness.core.types import MolBatch, MolRecord
from metrics import MetricError, MetricResults, Samples, score_molecules
from metrics.base import clear_memory_cache, reference_statistics
from metrics.edm import EdmMetric
from metrics.suites import Member, Suite

torch.set_num_threads(1)

CH = 1.09  # Å
TETRAHEDRON = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float) / math.sqrt(3)
METHANE_SMILES_EDM = "[H]C([H])([H])[H]"


# -- hand-built molecules ------------------------------------------------------------------------
def methane(offset=(0.0, 0.0, 0.0), stretched: float | None = None, bonds: bool = False,
            name: str = "methane") -> MolRecord:
    """CH4 with C-H 1.09 Å; ``stretched`` moves the last H out to that distance (Å)."""
    lengths = [CH, CH, CH, stretched or CH]
    pos = np.vstack([[0, 0, 0], TETRAHEDRON * np.array(lengths)[:, None]]) + np.asarray(offset)
    b = [[0, k, 1] for k in range(1, 5)] if bonds else np.zeros((0, 3))
    return MolRecord(numbers=[6, 1, 1, 1, 1], pos=pos, bonds=b, name=name)


def water(offset=(0.0, 0.0, 0.0), bonds: bool = False) -> MolRecord:
    """H2O, O-H 0.96 Å, H-O-H 104.5 degrees."""
    half = math.radians(104.5) / 2
    pos = np.array([[0, 0, 0], [0.96 * math.sin(half), 0.96 * math.cos(half), 0],
                    [-0.96 * math.sin(half), 0.96 * math.cos(half), 0]]) + np.asarray(offset)
    b = [[0, 1, 1], [0, 2, 1]] if bonds else np.zeros((0, 3))
    return MolRecord(numbers=[8, 1, 1], pos=pos, bonds=b, name="water")


def pentavalent_carbon() -> MolRecord:
    """CH5: five H at 1.09 Å (trigonal bipyramid); no valid valence anywhere."""
    directions = np.array([[0, 0, 1], [0, 0, -1], [1, 0, 0],
                           [-0.5, math.sqrt(3) / 2, 0], [-0.5, -math.sqrt(3) / 2, 0]])
    return MolRecord(numbers=[6, 1, 1, 1, 1, 1], pos=np.vstack([[0, 0, 0], CH * directions]),
                     name="CH5")


def ammonium(bonds: bool = True) -> MolRecord:
    pos = np.vstack([[0, 0, 0], TETRAHEDRON * 1.01])
    return MolRecord(numbers=[7, 1, 1, 1, 1], pos=pos,
                     bonds=[[0, k, 1] for k in range(1, 5)] if bonds else np.zeros((0, 3)),
                     charges=[1, 0, 0, 0, 0], name="NH4+")


def methyl_radical() -> MolRecord:
    pos = np.array([[0, 0, 0], [CH, 0, 0], [-CH / 2, CH * math.sqrt(3) / 2, 0],
                    [-CH / 2, -CH * math.sqrt(3) / 2, 0]])
    return MolRecord(numbers=[6, 1, 1, 1], pos=pos, bonds=[[0, 1, 1], [0, 2, 1], [0, 3, 1]],
                     name="CH3.")


class TinyReference:
    """A reference dataset made of records (the MolDataset interface the metrics use)."""

    def __init__(self, records, fingerprint: str = "", cache_dir: Path | None = None):
        self._records = list(records)
        self.fingerprint = fingerprint
        self.cache_dir = cache_dir
        self.elements = ("H", "C", "N", "O", "F")
        self.name = "tiny"

    def records(self):
        return list(self._records)

    def __len__(self):
        return len(self._records)


def near(a: float, b: float, tol: float = 1e-9) -> bool:
    return abs(a - b) <= tol


@pytest.fixture(autouse=True)
def _fresh_reference_memory():
    clear_memory_cache()
    yield
    clear_memory_cache()


# -- edm profile: golden ----------------------------------------------------------------------------
def test_stable_methane_is_stable_valid_and_unique():
    r = score_molecules([methane()], "edm/v1")
    assert r["edm.atom_stability"] == 1.0
    assert r["edm.mol_stability"] == 1.0
    assert r["edm.validity"] == 1.0
    assert r["edm.uniqueness"] == 1.0
    assert EdmMetric().analyse(Samples.from_records([methane()]))["smiles"] == [METHANE_SMILES_EDM]


def test_stretched_ch_bond_breaks_stability_of_both_atoms():
    # 1.25 Å > 1.09 + 0.10: the H is unbonded (valence 0) and C has valence 3.
    r = score_molecules([methane(stretched=1.25)], "edm/v1")
    assert r["edm.atom_stability"] == pytest.approx(3 / 5)
    assert r["edm.mol_stability"] == 0.0
    # EDM validity adds implicit H, so CH3 + H still sanitises; largest fragment is CH3
    assert r["edm.validity"] == 1.0
    smiles = EdmMetric().analyse(Samples.from_records([methane(stretched=1.25)]))["smiles"]
    assert smiles == ["[H]C([H])[H]"]


def test_bond_just_inside_margin_keeps_methane_stable():
    r = score_molecules([methane(stretched=1.185)], "edm/v1")   # 118.5 pm < 119 pm
    assert r["edm.mol_stability"] == 1.0


def test_two_fragment_record_is_stable_and_judged_by_its_largest_fragment():
    pair = MolRecord(numbers=np.r_[methane().numbers, water().numbers],
                     pos=np.vstack([methane().pos, water(offset=(10, 0, 0)).pos]))
    r = score_molecules([pair], "edm/v1")
    assert r["edm.mol_stability"] == 1.0 and r["edm.validity"] == 1.0
    assert EdmMetric().analyse(Samples.from_records([pair]))["smiles"] == [METHANE_SMILES_EDM]
    rd = score_molecules([pair], "rdkit/v1")
    assert rd["rdkit.validity"] == 1.0
    assert rd["rdkit.connected"] == 0.0 and rd["rdkit.valid_connected"] == 0.0


def test_duplicates_lower_uniqueness():
    moved = methane(offset=(3.0, -2.0, 1.0))
    r = score_molecules([methane(), moved, water()], "edm/v1")
    assert r["edm.validity"] == 1.0
    assert r["edm.uniqueness"] == pytest.approx(2 / 3)
    assert r["edm.valid_unique"] == pytest.approx(2 / 3)


def test_pentavalent_carbon_is_invalid_and_unstable():
    r = score_molecules([pentavalent_carbon()], "edm/v1")
    assert r["edm.validity"] == 0.0
    assert r["edm.atom_stability"] == pytest.approx(5 / 6)   # the five H are fine
    assert r["edm.mol_stability"] == 0.0
    assert math.isnan(r["edm.uniqueness"])                     # no valid molecule
    mixed = score_molecules([methane(), pentavalent_carbon()], "edm/v1")
    assert mixed["edm.validity"] == 0.5 and mixed["edm.uniqueness"] == 1.0


def test_atom_stability_is_micro_averaged_over_all_atoms():
    r = score_molecules([methane(stretched=1.25), water()], "edm/v1")
    assert r["edm.atom_stability"] == pytest.approx((3 + 3) / (5 + 3))
    assert r["edm.mol_stability"] == 0.5


def test_ammonium_is_unstable_under_edm_but_stable_under_charge_aware_rdkit_profile():
    assert score_molecules([ammonium()], "edm/v1")["edm.mol_stability"] == 0.0
    r = score_molecules([ammonium()], "rdkit/v1")
    assert r["rdkit.mol_stability"] == 1.0 and r["rdkit.validity"] == 1.0


def test_novelty_counts_unique_valid_smiles_absent_from_training_smiles():
    reference = TinyReference([methane()])
    r = score_molecules([methane(offset=(1, 1, 1)), water(), water(offset=(5, 0, 0))], "edm/v1",
                        reference)
    assert r["edm.novelty"] == pytest.approx(1 / 2)   # unique: {methane, water}
    assert r.metadata["families"]["edm"]["reference_smiles"] == 1


def test_novelty_is_nan_without_a_reference():
    assert math.isnan(score_molecules([methane()], "edm/v1")["edm.novelty"])


# -- rdkit profile ---------------------------------------------------------------------------------
def test_rdkit_profile_uses_given_bonds_and_records_their_source():
    batch = MolBatch.from_records([methane(bonds=True), water(bonds=True)], ("H", "C", "O"))
    r = score_molecules(batch, "rdkit/v1", bond_source="decoder")
    assert r["rdkit.validity"] == 1.0 and r["rdkit.mol_stability"] == 1.0
    assert r.metadata["bond_source"] == "decoder"
    assert r.metadata["bond_source_detail"]["counts"] == {"given": 2}


def test_rdkit_profile_perceives_bonds_for_bond_free_batches():
    batch = MolBatch.from_records([methane(), water()], ("H", "C", "O"), with_bonds=False)
    r = score_molecules(batch, "rdkit/v1")
    assert r["rdkit.validity"] == 1.0
    assert r.metadata["bond_source"].startswith("rdDetermineBonds")
    assert r.metadata["bond_source_detail"]["counts"] == {"perceived": 2}


def test_radical_is_invalid_and_its_carbon_unstable_in_rdkit_profile():
    r = score_molecules([methyl_radical()], "rdkit/v1")
    assert r["rdkit.validity"] == 0.0
    assert r["rdkit.atom_stability"] == pytest.approx(3 / 4)


def test_failed_bond_perception_counts_as_invalid_and_is_reported():
    ch = MolRecord(numbers=[6, 1], pos=[[0, 0, 0], [1.09, 0, 0]], name="CH")
    r = score_molecules([ch, methane()], "rdkit/v1")
    assert r["rdkit.validity"] == 0.5
    detail = r.metadata["bond_source_detail"]
    assert detail["counts"] == {"failed": 1, "perceived": 1}
    assert detail["perception_failures"][0]["molecule"] == "CH"


def test_rdkit_uniqueness_and_novelty_use_hydrogen_free_canonical_smiles():
    reference = TinyReference([water(bonds=True)])
    r = score_molecules([methane(bonds=True), methane(offset=(2, 0, 0), bonds=True),
                         water(bonds=True)], "rdkit/v1", reference)
    assert r["rdkit.uniqueness"] == pytest.approx(2 / 3)
    assert r["rdkit.novelty"] == pytest.approx(1 / 2)


def test_edm_ignores_given_bonds_and_uses_its_distance_table():
    wrong = methane(bonds=True)
    wrong.bonds = np.array([[0, 1, 3]])          # nonsense bonds must not matter to edm
    r = score_molecules([wrong], "edm/v1")
    assert r["edm.mol_stability"] == 1.0
    assert r.metadata["families"]["edm"]["bond_source"].startswith("edm distance table")


# -- distributions -----------------------------------------------------------------------------------
def test_distributions_are_zero_against_the_same_molecules():
    mols = [methane(bonds=True), water(bonds=True)]
    r = score_molecules(mols, "distributions/v1", TinyReference(mols))
    for key, value in r.items():
        if key.startswith("dist."):
            assert near(value, 0.0, 1e-9), key


def test_stretched_bond_shifts_ch_length_w1_by_a_quarter_of_the_stretch():
    reference = TinyReference([methane(bonds=True)])
    r = score_molecules([methane(stretched=1.25, bonds=True)], "distributions/v1", reference)
    assert r["dist.bond_length_w1.C-H"] == pytest.approx(0.16 / 4, abs=1e-6)
    assert r["dist.bond_length_w1"] == pytest.approx(0.04, abs=1e-6)
    assert r["dist.atom_type_tv"] == 0.0 and r["dist.atom_count_tv"] == 0.0


def test_atom_type_and_count_total_variation_by_hand():
    reference = TinyReference([methane(bonds=True)])
    r = score_molecules([methane(bonds=True), water(bonds=True)], "distributions/v1", reference)
    # types: samples C 1/8, H 6/8, O 1/8 vs C 1/5, H 4/5
    assert r["dist.atom_type_tv"] == pytest.approx(0.5 * (0.075 + 0.05 + 0.125))
    assert r["dist.atom_count_tv"] == pytest.approx(0.5)
    # the tetrahedral H-C-H angle is reproduced exactly
    assert r["dist.bond_angle_w1.H-C-H"] == pytest.approx(0.0, abs=1e-6)


# -- chemistry, PoseBusters, FCD ----------------------------------------------------------------------
def test_qm9_suite_runs_end_to_end_on_relaxed_molecules():
    from test_metrics_edm_reference import embedded

    mols = embedded(["CCO", "CC(=O)N", "c1ccncc1", "OCC#N", "CC1CC1O", "NC(=O)C=O"])
    r = score_molecules(mols, "qm9/v1", TinyReference(mols))
    assert 0 < r["chem.qed"] < 1 and 1 <= r["chem.sa"] <= 10
    assert r["chem.mmff_typed"] == 1.0
    assert r["chem.mmff_strain"] == pytest.approx(0.0, abs=0.05)   # already MMFF minima
    assert r["pb.pass_rate"] == 1.0
    assert r["fcd"] == pytest.approx(0.0, abs=1e-2)                 # same molecules
    assert r["rdkit.novelty"] == 0.0 and r["edm.novelty"] == 0.0
    assert all(isinstance(v, float) for v in r.values())
    assert set(r.higher_is_better) == set(r)


# -- property-based: invariance -------------------------------------------------------------------------
def _rotation(a: float, b: float, c: float) -> np.ndarray:
    """Rotation from three uniform numbers (Shoemake's quaternion method)."""
    q = np.array([math.sqrt(1 - a) * math.sin(2 * math.pi * b), math.sqrt(1 - a) * math.cos(2 * math.pi * b),
                  math.sqrt(a) * math.sin(2 * math.pi * c), math.sqrt(a) * math.cos(2 * math.pi * c)])
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _transform(rec: MolRecord, rot: np.ndarray, shift: np.ndarray, perm: np.ndarray) -> MolRecord:
    inverse = np.argsort(perm)                       # old index -> new index
    bonds = rec.bonds.copy()
    if len(bonds):
        i, j = inverse[bonds[:, 0]], inverse[bonds[:, 1]]
        bonds = np.stack([np.minimum(i, j), np.maximum(i, j), bonds[:, 2]], 1)
    pos = rec.pos.astype(np.float64) @ rot.T + shift
    return MolRecord(numbers=rec.numbers[perm], pos=pos[perm], bonds=bonds,
                     charges=rec.charges[perm], name=rec.name)


_POOL: list[MolRecord] = []


def _pool() -> list[MolRecord]:
    if not _POOL:
        from test_metrics_edm_reference import embedded

        _POOL.extend(embedded(["CCO", "C#CC=O", "CC(N)C(F)F", "OCC1CC1", "CC(=O)OC", "N#CCO",
                               "O=CC=O", "CC(C)(C)O"]))
        # a distorted copy so that not everything is stable / valid
        bad = _POOL[0]
        _POOL.append(MolRecord(numbers=bad.numbers, pos=bad.pos * 1.12, bonds=bad.bonds,
                               name="stretched"))
    return _POOL


def _comparable(r: MetricResults) -> dict[str, float]:
    return {k: v for k, v in r.items()}


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(a=st.floats(0, 1), b=st.floats(0, 1), c=st.floats(0, 1),
       shift=st.tuples(*[st.floats(-20, 20)] * 3), seed=st.integers(0, 2**16))
def test_metrics_are_invariant_to_rotation_translation_and_atom_permutation(a, b, c, shift, seed):
    rng = np.random.default_rng(seed)
    rot = _rotation(a, b, c)
    pool = _pool()
    moved = [_transform(r, rot, np.asarray(shift), rng.permutation(r.n_atoms)) for r in pool]
    reference = TinyReference(pool[:4])
    for suite in ("edm/v1", "rdkit/v1", "distributions/v1"):
        before = score_molecules(pool, suite, reference)
        after = score_molecules(moved, suite, reference)
        assert before.keys() == after.keys()
        for key in before:
            x, y = before[key], after[key]
            # coordinates are stored as float32: angles move by ~1e-4 degrees
            tol = 1e-3 if "angle" in key else 1e-4
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, abs=tol), (suite, key)


@settings(max_examples=5, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16))
def test_perceived_bond_metrics_are_invariant_to_atom_order(seed):
    rng = np.random.default_rng(seed)
    bare = [MolRecord(numbers=r.numbers, pos=r.pos, name=r.name) for r in _pool()]
    moved = [_transform(r, np.eye(3), np.zeros(3), rng.permutation(r.n_atoms)) for r in bare]
    before = score_molecules(bare, "rdkit/v1")
    after = score_molecules(moved, "rdkit/v1")
    assert before.metadata["bond_source"].startswith("rdDetermineBonds")
    assert _comparable(before) == pytest.approx(_comparable(after), nan_ok=True)


# -- suites, results, caching ----------------------------------------------------------------------------
def test_every_value_is_a_plain_float_and_empty_input_gives_nan():
    r = score_molecules([], "rdkit/v1")
    assert all(isinstance(v, float) and math.isnan(v) for v in r.values())
    assert "input.scored_fraction" in r
    assert r.metadata["counts"]["molecules"] == 0


def test_results_round_trip_through_json_with_nan_as_null(tmp_path):
    r = score_molecules([methane()], "edm/v1")
    path = atomic_write_json(tmp_path / "metrics.json", r.to_json())
    data = read_json(path)
    assert data["metrics"]["edm.novelty"] is None
    back = MetricResults.from_json(data)
    assert back["edm.validity"] == 1.0 and math.isnan(back["edm.novelty"])
    assert data["metadata"]["suite"] == "edm/v1"
    assert data["higher_is_better"]["edm.validity"] is True


def test_suite_refuses_a_metric_whose_version_changed():
    suite = Suite("edm/v0", (Member("edm", 99),))
    with pytest.raises(MetricError, match="new suite version"):
        score_molecules([methane()], suite)


def test_unknown_suite_and_option_errors_list_the_valid_names():
    with pytest.raises(KeyError, match="qm9/v1"):
        score_molecules([methane()], "nope/v1")
    with pytest.raises(TypeError, match="valid options"):
        EdmMetric(margin=3)


def test_reference_statistics_are_computed_once_and_cached_on_disk(tmp_path, monkeypatch):
    calls = []
    original = EdmMetric.compute_reference

    def counting(self, reference):
        calls.append(1)
        return original(self, reference)

    monkeypatch.setattr(EdmMetric, "compute_reference", counting)
    reference = TinyReference([methane()], fingerprint="tiny-v1", cache_dir=tmp_path)
    metric = EdmMetric()
    first = reference_statistics(metric, reference)
    second = reference_statistics(metric, reference)
    assert first is second and len(calls) == 1
    files = list((tmp_path / "metric-reference").rglob("*.npz"))
    assert len(files) == 1 and files[0].name.startswith("edm-v1-")
    clear_memory_cache()
    third = reference_statistics(metric, reference)
    assert third["smiles"] == first["smiles"] and len(calls) == 1     # read from disk
    assert not list(tmp_path.rglob("*.tmp"))                          # atomic writes


def test_bond_source_label_is_validated():
    with pytest.raises(ValueError, match="bond_source"):
        score_molecules([methane()], "rdkit/v1", bond_source="openbabel")


def test_space_metrics_are_skipped_with_a_note_when_no_space_is_given():
    r = score_molecules([methane()], "latent/v1")
    assert all(math.isnan(v) for v in r.values())
    assert "needs a space" in r.metadata["families"]["latent"]["skipped"]


def test_worker_pool_gives_the_same_results_as_the_serial_loop():
    from metrics.edm import EdmAnalysis, _validity_chunk
    from metrics.parallel import chunked_map
    from metrics.rdkit_profile import _profile_chunk
    from metrics.samples import _perceive_chunk

    records = [methane(), water(), pentavalent_carbon(), methane(stretched=1.3)] * 3
    samples = Samples.from_records(records)
    edges = EdmAnalysis(samples).edges
    jobs = [(samples.numbers[samples.atoms(k)], edges[k]) for k in range(len(samples))]
    assert chunked_map(_validity_chunk, jobs, workers=2, min_items=1) == _validity_chunk(jobs)
    bare = [(samples.numbers[samples.atoms(k)], samples.pos[samples.atoms(k)]) for k in range(len(samples))]
    pooled = chunked_map(_perceive_chunk, bare, workers=2, min_items=1)
    serial = _perceive_chunk(bare)
    assert [r[2] for r in pooled] == [r[2] for r in serial]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(pooled, serial) if a[0] is not None)
    resolved = samples.resolved_bonds()
    profile_jobs = [(samples.numbers[samples.atoms(k)], resolved.of(k), resolved.charges[samples.atoms(k)])
                    for k in range(len(samples))]
    assert chunked_map(_profile_chunk, profile_jobs, workers=2, min_items=1) == _profile_chunk(profile_jobs)


def test_diverged_samples_are_skipped_and_counted_not_fatal():
    broken = methane()
    broken.pos[2, 0] = np.nan
    r = score_molecules([methane(), broken, None], "edm/v1")
    assert r["edm.validity"] == 1.0                     # over the one scored molecule
    assert r["input.scored_fraction"] == pytest.approx(1 / 3)
    reasons = sorted(s["reason"] for s in r.metadata["skipped"])
    assert reasons == ["coordinates contain NaN or inf", "no molecule (None)"]


def test_invalid_bond_orders_are_a_clear_error():
    bad = methane(bonds=True)
    bad.bonds[0, 2] = 4
    with pytest.raises(ValueError, match="orders must be 1, 2 or 3"):
        score_molecules([bad], "rdkit/v1")
