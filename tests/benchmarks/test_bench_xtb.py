"""GFN2-xTB (tblite) throughput on one core (skipped by default; run with
`OMP_NUM_THREADS=1 pytest tests/benchmarks/test_bench_xtb.py --benchmark-enable --benchmark-only`).

* QM9-sized (the committed 200-molecule QM9 sample, 18 atoms on average with H): single
  points at the DFT geometry; relaxations from the DFT geometry and from a geometry shaken by
  0.1 Å Gaussian noise (a stand-in for generated samples).
* Drug-sized (MOSES test SMILES, ~40 atoms with H): single points and relaxations from raw
  ETKDG geometries (no force field), i.e. what the ``xtb`` metric meets on decoded samples
  and what the ``moses`` dataset's ``conformers="xtb"`` does after MMFF.

Each benchmark records molecules per second, mean atoms and mean optimiser steps in
``extra_info``; the relaxation settings are the ``xtb`` metric's defaults (fmax 1e-3 Eh/Bohr,
0.2 Å step cap).
"""
from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

pytest.importorskip("tblite")

from harness.core.xtb import relax, singlepoint  # noqa: E402

N_QM9 = 40
N_DRUG = 12


@pytest.fixture(scope="module")
def qm9_molecules():
    from harness.core.data import QM9_SAMPLE_SDF, load_dataset

    ds = load_dataset("sdf", path=QM9_SAMPLE_SDF)
    return [(ds[k].numbers, ds[k].pos.astype(np.float64)) for k in range(N_QM9)]


@pytest.fixture(scope="module")
def qm9_shaken(qm9_molecules):
    rng = np.random.default_rng(0)
    return [(z, x + rng.normal(0, 0.1, x.shape)) for z, x in qm9_molecules]


@pytest.fixture(scope="module")
def drug_molecules():
    if importlib.util.find_spec("moses") is None:
        pytest.skip("molsets not installed")
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from harness.datasets.moses import moses_files, read_smiles

    out = []
    for smiles in read_smiles(moses_files()["test"])[:N_DRUG]:
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        params = AllChem.ETKDGv3()
        params.randomSeed = 0
        AllChem.EmbedMolecule(mol, params)
        out.append((np.array([a.GetAtomicNum() for a in mol.GetAtoms()]),
                    mol.GetConformer().GetPositions()))
    return out


def _rate(benchmark, molecules, fn):
    steps = []

    def run():
        steps.clear()
        for z, x in molecules:
            steps.append(fn(z, x))

    benchmark.pedantic(run, rounds=2, iterations=1)
    seconds = benchmark.stats.stats.mean
    benchmark.extra_info["molecules"] = len(molecules)
    benchmark.extra_info["molecules_per_second"] = round(len(molecules) / seconds, 2)
    benchmark.extra_info["mean_atoms"] = round(float(np.mean([len(z) for z, _ in molecules])), 1)
    if steps and steps[0] is not None:
        benchmark.extra_info["mean_steps"] = round(float(np.mean(steps)), 1)


def _sp(z, x):
    singlepoint(z, x)


def _relax(z, x):
    return relax(z, x).steps


def test_bench_singlepoints_qm9(benchmark, qm9_molecules):
    _rate(benchmark, qm9_molecules, _sp)


def test_bench_relax_qm9_dft_geometry(benchmark, qm9_molecules):
    _rate(benchmark, qm9_molecules, _relax)


def test_bench_relax_qm9_shaken(benchmark, qm9_shaken):
    _rate(benchmark, qm9_shaken, _relax)


def test_bench_singlepoints_drug(benchmark, drug_molecules):
    _rate(benchmark, drug_molecules, _sp)


def test_bench_relax_drug_etkdg(benchmark, drug_molecules):
    _rate(benchmark, drug_molecules, _relax)
