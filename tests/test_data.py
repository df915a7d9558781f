"""Datasets: splits, caching, SDF bad-input handling, DataModule."""
import math
from pathlib import Path

import numpy as np
import pytest

import harness.datasets.qm9 as qm9
from harness.core.data import load_dataset, load_source
from harness.core.data.base import deterministic_split, splits_checksum, subset_splits
from harness.datasets.sdf import NoUsableMolecules

from conftest import QM9_ELEMENTS, QM9_SAMPLE

GOOD_BLOCK = QM9_SAMPLE.read_text().split("$$$$\n")[0] + "$$$$\n"


def test_standard_split_is_deterministic_and_matches_the_recorded_checksum():
    a = deterministic_split(qm9.N_MOLECULES, qm9.SPLIT_SIZES, qm9.SPLIT_SEED)
    b = deterministic_split(qm9.N_MOLECULES, qm9.SPLIT_SIZES, qm9.SPLIT_SEED)
    assert {k: len(v) for k, v in a.items()} == {"train": 100_000, "val": 17_748, "test": 13_083}
    assert splits_checksum(a) == splits_checksum(b) == qm9.SPLIT_CHECKSUM
    everything = np.concatenate(list(a.values()))
    assert len(np.unique(everything)) == qm9.N_MOLECULES  # disjoint and complete


def test_subsets_are_proportional_and_nested():
    splits = deterministic_split(1000, {"train": 700, "val": 200, "test": 100}, 0)
    small, large = subset_splits(splits, 100), subset_splits(splits, 300)
    assert {k: len(v) for k, v in small.items()} == {"train": 70, "val": 20, "test": 10}
    for k in splits:
        assert set(small[k]) <= set(large[k])


# -- QM9 loader on a tiny stand-in CSV (the full load has its own slow test) -------------------
@pytest.fixture
def tiny_qm9(tmp_path, monkeypatch):
    src = qm9.qm9pack_csvs()[0]
    lines = src.read_text().splitlines()[:31]  # header + 30 molecules
    csv = tmp_path / "qm9_part1.csv"
    csv.write_text("\n".join(lines) + "\n")
    sizes = {"train": 20, "val": 6, "test": 4}
    monkeypatch.setattr(qm9, "qm9pack_csvs", lambda: [csv])
    monkeypatch.setattr(qm9, "N_MOLECULES", 30)
    monkeypatch.setattr(qm9, "SPLIT_SIZES", sizes)
    monkeypatch.setattr(qm9, "SPLIT_CHECKSUM", splits_checksum(deterministic_split(30, sizes, 0)))
    calls = []
    real = qm9.preprocess_qm9
    monkeypatch.setattr(qm9, "preprocess_qm9", lambda **kw: calls.append(1) or real(**kw))
    return csv, calls, tmp_path / "cache"


def test_qm9_preprocessing_is_cached_and_reloaded(tiny_qm9):
    csv, calls, cache = tiny_qm9
    ds = load_dataset("qm9", cache_dir=cache, workers=1, progress=False)
    again = load_dataset("qm9", cache_dir=cache, workers=1, progress=False)
    assert len(calls) == 1 and again.info["from_cache"] and not ds.info["from_cache"]
    assert len(ds) == 30 and ds.elements == QM9_ELEMENTS
    assert ds[0].smiles == "C" and ds[0].n_atoms == 5 and len(ds[0].bonds) == 4
    assert ds.prop_names[0] == "mu" and ds.prop_units[0] == "D"
    assert np.array_equal(ds.packed.pos, again.packed.pos)


def test_stale_or_damaged_cache_is_rebuilt(tiny_qm9, monkeypatch):
    csv, calls, cache = tiny_qm9
    ds = load_dataset("qm9", cache_dir=cache, workers=1, progress=False)
    # 1. the source changed -> new fingerprint
    csv.write_text(csv.read_text() + "\n")
    load_dataset("qm9", cache_dir=cache, workers=1, progress=False)
    assert len(calls) == 2
    # 2. the preprocessing code changed -> new fingerprint
    monkeypatch.setattr(qm9, "PREPROCESS_VERSION", qm9.PREPROCESS_VERSION + 100)
    ds = load_dataset("qm9", cache_dir=cache, workers=1, progress=False)
    assert len(calls) == 3
    # 3. the cached arrays were damaged -> checksum mismatch
    data = Path(ds.info["cache"]) / "molecules.npz"
    data.write_bytes(data.read_bytes()[:-100])
    load_dataset("qm9", cache_dir=cache, workers=1, progress=False)
    assert len(calls) == 4


def test_qm9_options_subset_and_remove_h(tiny_qm9):
    csv, calls, cache = tiny_qm9
    full = load_dataset("qm9", cache_dir=cache, workers=1, progress=False)
    sub = load_dataset("qm9", cache_dir=cache, subset=10, progress=False)
    assert len(sub) == 10 and sum(map(len, sub.splits.values())) == 10
    noh = load_dataset("qm9", cache_dir=cache, remove_h=True, progress=False)
    assert noh.elements == ("C", "N", "O", "F") and 1 not in noh.packed.numbers
    r_full, r_noh = full[5], noh[5]
    heavy = r_full.numbers != 1
    np.testing.assert_allclose(r_noh.pos, r_full.pos[heavy])
    n_heavy_bonds = sum(heavy[i] and heavy[j] for i, j, _ in r_full.bonds)
    assert len(r_noh.bonds) == n_heavy_bonds and r_noh.bonds[:, :2].max() < heavy.sum()
    assert noh.fingerprint != full.fingerprint != sub.fingerprint


# -- SDF datasets and bad input -----------------------------------------------------------------
def test_sdf_dataset_reads_fixture_with_splits_and_properties(qm9_sample):
    assert len(qm9_sample) == 200 and qm9_sample.elements == QM9_ELEMENTS
    assert {k: len(v) for k, v in qm9_sample.splits.items()} == {"train": 160, "val": 20, "test": 20}
    assert qm9_sample.prop_names[0] == "mu" and np.isfinite(qm9_sample.packed.props).all()
    assert load_source(str(QM9_SAMPLE)).name == f"sdf:{QM9_SAMPLE.name}"
    assert len(load_source(f"sdf:{QM9_SAMPLE}:test")) == 20


def _block(block: str, title: str) -> str:
    lines = block.splitlines(keepends=True)
    lines[0] = title + "\n"
    return "".join(lines)


def bad_records():
    lines = GOOD_BLOCK.splitlines(keepends=True)
    atom = lines[4]
    nan_block = "".join(lines[:4] + [atom.replace(atom[:10], "       nan", 1)] + lines[5:])
    sulfur_block = "".join(lines[:4] + [atom.replace(" C ", " S ", 1)] + lines[5:])
    dummy_block = "".join(lines[:4] + [atom.replace(" C ", " * ", 1)] + lines[5:])
    malformed = "".join(lines[:3] + ["  x  y  0  0  0  0  0  0  0  0999 V2000\n"] + lines[4:])
    two_d = ("flat\n     RDKit          2D\n\n  2  0  0  0  0  0  0  0  0  0999 V2000\n"
             "    0.0000    0.0000    0.0000 C   0  0\n    1.0900    0.0000    0.0000 H   0  0\n"
             "M  END\n$$$$\n")
    # C and H 5 Å apart, no bonds: perception cannot satisfy the valences
    unbondable = ("far\n     RDKit          3D\n\n  2  0  0  0  0  0  0  0  0  0999 V2000\n"
                  "    0.0000    0.0000    0.0000 C   0  0\n    5.0000    0.0000    0.1000 H   0  0\n"
                  "M  END\n$$$$\n")
    return {
        "NaN or inf": _block(nan_block, "nan"),
        "not in the vocabulary": _block(sulfur_block, "sulfur"),
        "dummy or unknown atom": _block(dummy_block, "dummy"),
        "malformed record": _block(malformed, "broken"),
        "2D coordinates only": two_d,
        "bond perception failed": unbondable,
    }


@pytest.mark.parametrize("reason", list(bad_records()))
def test_each_bad_record_is_reported_with_file_index_and_reason_and_skipped(tmp_path, reason, caplog):
    bad = bad_records()[reason]
    path = tmp_path / "mixed.sdf"
    path.write_text(GOOD_BLOCK + bad + GOOD_BLOCK)
    ds = load_dataset("sdf", path=path, elements=QM9_ELEMENTS)
    assert len(ds) == 2
    (skip,) = ds.info["skipped"]
    assert skip["file"] == str(path) and skip["record"] == 1 and reason in skip["reason"]
    assert f"{path} record 1" in caplog.text


def test_file_without_usable_molecules_is_an_error_naming_the_reasons(tmp_path):
    path = tmp_path / "bad.sdf"
    path.write_text(bad_records()["NaN or inf"])
    with pytest.raises(NoUsableMolecules, match="no usable molecule.*NaN"):
        load_dataset("sdf", path=path)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.sdf"
    path.write_text("")
    with pytest.raises(NoUsableMolecules, match="empty file"):
        load_dataset("sdf", path=path)


def test_folder_of_files_and_bad_split_fractions(tmp_path):
    (tmp_path / "a.sdf").write_text(GOOD_BLOCK * 3)
    (tmp_path / "b.sdf").write_text(GOOD_BLOCK * 2)
    assert len(load_dataset("sdf", path=tmp_path)) == 5
    with pytest.raises(ValueError, match="three fractions"):
        load_dataset("sdf", path=tmp_path, split=(0.5, 0.6, 0.1))


def test_unknown_dataset_and_option_errors_list_the_valid_ones():
    with pytest.raises(KeyError, match="valid datasets: geom, moses, qm9, sdf"):
        load_dataset("qm10")
    with pytest.raises(TypeError, match="valid options"):
        load_dataset("sdf", path=QM9_SAMPLE, bogus=1)


def test_datamodule_yields_padded_batches(qm9_sample):
    from harness.core.data.datamodule import MolDataModule

    dm = MolDataModule(qm9_sample, batch_size=16)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 16 and batch.pos.shape[0] == 16 and batch.mask.any(1).all()
    assert sum(len(b) for b in dm.val_dataloader()) == 20


@pytest.mark.slow
def test_full_qm9_load():
    ds = load_dataset("qm9", progress=False)
    assert len(ds) == 130_831 and ds.elements == QM9_ELEMENTS
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 100_000, "val": 17_748, "test": 13_083}
    assert ds.info["split_checksum"] == qm9.SPLIT_CHECKSUM
    stats = ds.stats()
    assert stats["atoms_per_molecule"]["max"] == 29
    assert stats["bond_perception_failures"] < 0.005 * len(ds)
    assert ds.info["perceived_smiles_disagree_with_dataset"] < 0.01 * len(ds)
    train = ds.split("train")
    batch = train.batch(np.arange(64))
    assert batch.bonds is not None and batch.pos.shape[2] == 3


def _square_chunk(job):
    return [x * x for x in job]


def test_ordered_chunk_map_keeps_input_order_in_a_process_pool():
    from harness.core.data.pool import ordered_chunk_map

    jobs = [list(range(k, k + 3)) for k in range(0, 12, 3)]
    want = [x * x for x in range(12)]
    assert ordered_chunk_map(_square_chunk, jobs, 2, total=12, desc="t", progress=False) == want
    assert ordered_chunk_map(_square_chunk, jobs, 1, total=12, desc="t", progress=False) == want
