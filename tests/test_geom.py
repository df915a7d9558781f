"""GEOM-Drugs loaders on tiny files written in each layout by tests/fixtures/geom/make_geom_fixtures.py."""
from __future__ import annotations

import importlib.util
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.datasets.geom import (GEOM_ELEMENTS, UnsafePickleError, load_geom, read_rdkit_pickle)

HERE = Path(__file__).parent / "fixtures" / "geom"


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_geom_fixtures", HERE / "make_geom_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fx():
    return _fixture_module()


@pytest.fixture(scope="module")
def geom_dirs(tmp_path_factory, fx):
    return fx.write_fixtures(tmp_path_factory.mktemp("geom"))


def _load(path, tmp_path, **kw):
    return load_geom(path, cache_dir=tmp_path / "cache", progress=False, **kw)


def test_edm_arrays_and_split(geom_dirs, fx, tmp_path):
    ds = _load(geom_dirs["edm"], tmp_path)
    n_conf = sum(n for _, n in fx.MOLECULES)
    assert len(ds) == n_conf and ds.elements == GEOM_ELEMENTS
    perm = np.load(geom_dirs["edm"] / "geom_permutation.npy")
    n_val = int(n_conf * 0.1)
    assert np.array_equal(ds.splits["val"], perm[:n_val])
    assert np.array_equal(ds.splits["test"], perm[n_val:2 * n_val])
    assert np.array_equal(ds.splits["train"], perm[2 * n_val:])
    # atoms per conformer and coordinates as written (rows [id, Z, x, y, z])
    sizes = np.load(geom_dirs["edm"] / "geom_drugs_n_30.npy")
    assert np.array_equal(ds.atom_counts, sizes)
    rows = np.load(geom_dirs["edm"] / "geom_drugs_30.npy")
    assert np.allclose(ds.packed.pos, rows[:, 2:], atol=1e-5)
    assert np.array_equal(ds.packed.numbers, rows[:, 1].astype(int))
    assert not ds.packed.bond_ok.any() and len(ds.packed.bonds) == 0   # EDM arrays carry no bonds
    noh = _load(geom_dirs["edm"], tmp_path, remove_h=True)
    assert (noh.packed.numbers != 1).all() and "H" not in noh.elements
    small = _load(geom_dirs["edm"] / "geom_drugs_30.npy", tmp_path, filter_size=20, remove_h=True)
    assert (small.atom_counts <= 20).all()


def test_edm_errors_name_the_file(geom_dirs, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(geom_dirs["edm"], bad)
    with pytest.raises(FileNotFoundError, match="geom_drugs_5.npy"):
        _load(bad, tmp_path, conformers=5)
    with pytest.raises(ValueError, match="geom_permutation.npy: not a permutation"):
        _load(bad, tmp_path, filter_size=20)                       # permutation of the unfiltered list
    np.save(bad / "geom_drugs_30.npy", np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"geom_drugs_30.npy: expected rows"):
        _load(bad, tmp_path)
    (bad / "geom_permutation.npy").unlink()
    np.save(bad / "geom_drugs_30.npy", np.load(geom_dirs["edm"] / "geom_drugs_30.npy"))
    with pytest.raises(FileNotFoundError, match="geom_permutation.npy"):
        _load(bad, tmp_path)


@pytest.mark.parametrize("layout", ["midi", "sdf"])
def test_per_split_layouts(layout, geom_dirs, fx, tmp_path):
    ds = _load(geom_dirs[layout], tmp_path)
    assert ds.info["format"] == layout and not ds.info["from_cache"]
    want = {s: sum(n for (smi, n), sp in zip(fx.MOLECULES, fx.SPLIT_OF) if sp == s)
            for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in ds.splits.items()} == want
    # split by molecule: no SMILES in two splits; conformers keep bonds and formal charges
    smiles = {s: set(ds.packed.smiles[v]) for s, v in ds.splits.items()}
    assert not (smiles["train"] & smiles["test"]) and not (smiles["train"] & smiles["val"])
    assert ds.packed.bond_ok.all() and len(ds.packed.bonds) > 0
    quat = [k for k in range(len(ds)) if ds[k].smiles == "C[N+](C)(C)CCO"]
    assert quat and all(ds[k].charges.sum() == 1 for k in quat)
    assert ds.prop_names == ("molecule_id",)
    assert len(np.unique(ds.packed.props[:, 0])) == len(fx.MOLECULES)
    # conformers of one molecule share a graph but not coordinates
    first = [k for k in range(len(ds)) if ds.packed.props[k, 0] == 0]
    assert len(first) == 3 and not np.allclose(ds[first[0]].pos, ds[first[1]].pos)
    one = _load(geom_dirs[layout], tmp_path, conformers=1)
    assert len(one) == len(fx.MOLECULES)
    again = _load(geom_dirs[layout], tmp_path)
    assert again.info["from_cache"] and again.packed.checksum() == ds.packed.checksum()


def test_subset_and_registry(geom_dirs, tmp_path):
    from harness.core.data import load_dataset

    ds = load_dataset("geom", path=str(geom_dirs["midi"]), subset=6, cache_dir=str(tmp_path),
                      progress=False)
    assert len(ds) == sum(len(v) for v in ds.splits.values()) <= 7
    assert ds.name.endswith("[subset=6]")


def test_midi_pickle_roundtrip_protocols(geom_dirs, fx):
    for split in ("train", "val"):                                   # protocol 4 and protocol 2
        pairs = read_rdkit_pickle(geom_dirs["midi"] / f"{split}_data.pickle")
        assert pairs and all(isinstance(s, str) and len(m) >= 1 for s, m in pairs)


class _Payload:
    """Unpickling this would run a command (creating a file)."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


def test_unsafe_pickles_are_refused(tmp_path):
    target = tmp_path / "pwned"
    evil = tmp_path / "evil" / "train_data.pickle"
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps([("C", [_Payload(target)])]))
    with pytest.raises(UnsafePickleError, match=r"evil/train_data.pickle: refusing to unpickle (posix|os)\.system"):
        read_rdkit_pickle(evil)
    with pytest.raises(UnsafePickleError, match="train_data.pickle"):
        load_geom(evil.parent, cache_dir=tmp_path / "cache", progress=False)
    assert not target.exists()
    arrays = tmp_path / "arrays.pickle"
    arrays.write_bytes(pickle.dumps([("C", [np.zeros(3)])]))
    with pytest.raises(UnsafePickleError, match="numpy"):
        read_rdkit_pickle(arrays)
    shape = tmp_path / "shape.pickle"
    shape.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="something other than RDKit molecules|not a"):
        read_rdkit_pickle(shape)


def test_detect_format_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds none of"):
        load_geom(tmp_path, progress=False)
    with pytest.raises(ValueError, match="format must be"):
        load_geom(tmp_path, format="xyz", progress=False)


# -- geom_stability: GEOM-Drugs Revisited aromatic-aware valence tuples --------------------
def test_geom_stability_on_geom_molecules(geom_dirs, tmp_path):
    from metrics import score_molecules

    ds = _load(geom_dirs["midi"], tmp_path)
    for mode in ("perceive", "kekule"):
        res = score_molecules(ds, "geom/v1", options={"geom_stability": {"aromatic": mode},
                                                      "chemistry": {"mmff_max_molecules": 0}})
        assert res["geom.atom_stability"] == 1.0 and res["geom.mol_stability"] == 1.0
        assert res.metadata["families"]["geom_stability"]["aromatic"] == mode
    # EDM-legacy rules (GEOM lookup) call real drug molecules unstable (aromatic rings, S(=O)2)
    assert 0.5 < res["edm.atom_stability"] < 1.0


def test_geom_stability_tuples():
    from metrics.geom_stability import ALLOWED_CODES, atom_tuples, tuple_codes
    from metrics.samples import Samples
    from harness.core.chem import mol_to_record
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("c1ccc2[nH]ccc2c1"))       # indole: fused C (3, 0), NH (2, 1)
    AllChem.EmbedMolecule(mol, randomSeed=0)
    samples = Samples.from_records([mol_to_record(mol)], "given")
    arom, val, charges, failed = atom_tuples(samples, "perceive")
    z = samples.numbers
    assert failed == 0
    assert sorted(zip(arom[z == 6], val[z == 6])).count((3, 0)) == 2
    assert (arom[z == 7][0], val[z == 7][0]) == (2, 1)
    assert set(zip(arom[z == 1], val[z == 1])) == {(0, 1)}
    k_arom, k_val, _, _ = atom_tuples(samples, "kekule")
    assert (k_arom == 0).all() and set(k_val[z == 6]) == {4}
    ok = np.isin(tuple_codes(z, charges, arom, val), ALLOWED_CODES)
    assert ok.all()
    # neutral 4-valent N and 3-valent C are not allowed; N+ with 4 bonds is
    assert not np.isin(tuple_codes([7, 6], [0, 0], [0, 0], [4, 3]), ALLOWED_CODES).any()
    assert np.isin(tuple_codes([7], [1], [0], [4]), ALLOWED_CODES).all()
    assert tuple_codes([6], [12], [0], [4])[0] == -1
