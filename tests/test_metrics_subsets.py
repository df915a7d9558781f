"""Capped metric members: v1 suites score the first N molecules, the v2 suites a seeded random
subset kept in file order (issue: a file sorted by size was scored on its extremes)."""
import numpy as np
import pytest

from metrics.samples import cap_indices


def test_cap_indices_rules():
    assert cap_indices(10, None) is None and cap_indices(10, 20, "random") is None
    assert cap_indices(10, 3).tolist() == [0, 1, 2]
    pick = cap_indices(1000, 50, "random", seed=3)
    assert len(pick) == 50 and np.all(np.diff(pick) > 0) and pick.max() > 500
    assert np.array_equal(pick, cap_indices(1000, 50, "random", seed=3))
    assert not np.array_equal(pick, cap_indices(1000, 50, "random", seed=4))
    with pytest.raises(ValueError, match="subset"):
        cap_indices(10, 3, "middle")


def test_v2_suite_scores_a_random_subset_and_says_so():
    from harness.core.data import QM9_SAMPLE_SDF, load_dataset
    from harness.cli.data import subset_notes
    from metrics import score_molecules

    data = load_dataset("sdf", path=QM9_SAMPLE_SDF, elements=("H", "C", "N", "O", "F"), report=False)
    records = sorted(data.records(), key=lambda r: len(r.numbers))   # sorted by size
    opts = {"posebusters": {"max_molecules": 10}}
    v1 = score_molecules(records, suite="qm9/v1-full", options=opts)
    v2 = score_molecules(records, suite="qm9/v2", options=opts)
    pb1 = v1.metadata["families"]["posebusters"]["subset"]
    pb2 = v2.metadata["families"]["posebusters"]["subset"]
    assert pb1 == {"subset": "first", "size": 10, "of": 200}
    assert pb2 == {"subset": "random", "size": 10, "of": 200, "seed": 0}
    notes = subset_notes(v2.metadata)
    assert any("posebusters scored on 10 of 200 molecules, a seeded random subset" in n for n in notes)
