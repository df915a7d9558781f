"""The drug-like ``moses`` dataset: MOSES SMILES (molsets wheel) -> ETKDG + MMFF (or xTB) conformers."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("moses") is None:   # never `import moses`: its pomegranate pin is broken
    pytest.skip("molsets not installed (pip install --no-deps molsets)", allow_module_level=True)

from harness.core.data import load_dataset  # noqa: E402
from harness.datasets import moses as moses_mod  # noqa: E402

FAST = {"workers": 1, "threads": 1, "progress": False}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("moses-cache")


@pytest.fixture(scope="module")
def small(store):
    return load_dataset("moses", subset=12, cache_dir=store, **FAST)


def test_splits_are_mosess_own_plus_seeded_val():
    splits = moses_mod.moses_splits(0.1, seed=0)
    assert set(splits) == {"train", "val", "test", "test_scaffolds"}
    assert len(splits["train"]) + len(splits["val"]) == 1_584_663
    assert len(splits["val"]) == round(0.1 * 1_584_663)
    assert len(splits["test"]) == 176_074 and len(splits["test_scaffolds"]) == 176_225
    assert not set(splits["val"][:2000]) & set(splits["train"][:20000])
    again = moses_mod.moses_splits(0.1, seed=0)
    assert list(again["train"][:50]) == list(splits["train"][:50])     # seeded, deterministic


def test_small_subset_conformers(small):
    assert small.name == "moses[mmff,subset=12]"
    sizes = {k: len(v) for k, v in small.splits.items()}
    assert set(sizes) == {"train", "val", "test", "test_scaffolds"} and sum(sizes.values()) == len(small)
    assert sizes["train"] > sizes["test"] >= 1
    assert small.info["failures"] == 0 and small.info["built"] == len(small)
    assert small.prop_names == ("energy",) and np.isfinite(small.packed.props).all()
    for k in range(len(small)):
        r = small[k]
        assert (r.numbers == 1).any() and len(r.bonds) > 0 and r.smiles
        assert np.ptp(r.pos, axis=0).min() > 0.5                    # 3D, not flat
        i, j = r.bonds[:, 0], r.bonds[:, 1]
        lengths = np.linalg.norm(r.pos[i] - r.pos[j], axis=1)
        assert 0.9 < lengths.min() and lengths.max() < 2.1           # Å, MMFF geometry
    assert set(small.elements) >= {"C", "N", "O", "H"}


def test_cache_reuse_and_nested_subsets(small, store):
    again = load_dataset("moses", subset=12, cache_dir=store, **FAST)
    assert again.info["from_cache"] and again.info["built"] == 0
    assert np.array_equal(again.packed.pos, small.packed.pos)
    bigger = load_dataset("moses", subset=16, cache_dir=store, **FAST)
    assert bigger.info["built"] < 16                                 # the 12 come from the store
    for split, idx in small.splits.items():
        assert list(bigger.packed.smiles[bigger.splits[split]][:len(idx)]) == list(small.packed.smiles[idx])
    noh = load_dataset("moses", subset=12, cache_dir=store, remove_h=True, **FAST)
    assert (noh.packed.numbers != 1).all() and noh.info["built"] == 0


def test_failures_are_counted_and_named(monkeypatch, tmp_path):
    fake = {"train": np.array(["CCO", "not-a-smiles", "c1ccccc1O"], dtype=object),
            "val": np.array(["CC(=O)N"], dtype=object),
            "test": np.array(["C1CC"], dtype=object),
            "test_scaffolds": np.array(["CCN"], dtype=object)}
    monkeypatch.setattr(moses_mod, "moses_splits", lambda val_fraction, seed: fake)
    ds = load_dataset("moses", subset=None, cache_dir=tmp_path, **FAST)
    assert len(ds) == 4 and ds.info["failures"] == 2
    named = {row["smiles"]: row["reason"] for row in ds.info["skipped"]}
    assert named == {"not-a-smiles": "unparseable SMILES", "C1CC": "unparseable SMILES"}
    assert ds.info["failures_by_reason"] == {"unparseable SMILES": 2}
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 2, "val": 1, "test": 0,
                                                         "test_scaffolds": 1}
    again = load_dataset("moses", subset=None, cache_dir=tmp_path, **FAST)
    assert again.info["built"] == 0 and again.info["failures"] == 2   # failures are not retried
    with pytest.raises(ValueError, match="conformers must be"):
        load_dataset("moses", conformers="dft", cache_dir=tmp_path, **FAST)


def test_xtb_option_relaxes_with_gfn2():
    pytest.importorskip("tblite")
    mmff, _ = moses_mod.build_conformer("CC(=O)Nc1ccccc1", "mmff", 0, 1, 1, 2000, {})
    xtb, reason = moses_mod.build_conformer("CC(=O)Nc1ccccc1", "xtb", 0, 1, 1, 2000,
                                            {"fmax": 1e-3, "max_steps": 300})
    assert reason == "" and xtb is not None
    assert xtb.props[0] < -10000                                     # GFN2 total energy, kcal/mol
    assert mmff.props[0] > -1000                                     # MMFF94 energy, kcal/mol
    assert 0.01 < np.abs(xtb.pos - mmff.pos).max() < 1.0             # relaxed from the MMFF start
    from harness.core.xtb import singlepoint

    _, grad = singlepoint(xtb.numbers, xtb.pos)
    assert np.sqrt((grad ** 2).sum(1)).max() < 1e-3
