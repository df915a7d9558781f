"""Metric benchmarks (skipped by default; run with `make bench` or
`pytest tests/benchmarks/test_bench_metrics.py --benchmark-enable --benchmark-only`).

* ``edm`` stability + validity + uniqueness on 10,000 QM9 molecules (target < 6 s on 2
  cores), with values checked against the per-pair reference implementation of the rules
  (tests/test_metrics_edm_reference.py), whose own time is recorded as extra info.
* The ``qm9/v1`` suite on 500 molecules (the quick-study path) and ``l3dg eval qm9:test``
  whole (reference statistics warm).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the reference implementation

from harness.core.data import load_dataset  # noqa: E402
from metrics import Samples, score_molecules  # noqa: E402
from metrics.base import clear_memory_cache  # noqa: E402
from metrics.edm import EdmMetric  # noqa: E402

torch.set_num_threads(1)
N_EDM = 10_000


@pytest.fixture(scope="module")
def qm9():
    return load_dataset("qm9", progress=False)


@pytest.fixture(scope="module")
def edm_molecules(qm9):
    return qm9.split("test").subset(np.arange(N_EDM))


def test_bench_edm_stability_validity_uniqueness_10k(benchmark, edm_molecules):
    """EDM stability + validity + uniqueness of 10,000 QM9 test molecules; equal to the
    per-pair reference. Target < 6 s on 2 cores."""
    from test_metrics_edm_reference import reference_edm

    def run():
        samples = Samples.from_dataset(edm_molecules)   # fresh: nothing cached between rounds
        return score_molecules(samples, "edm/v1"), samples

    (values, samples) = benchmark.pedantic(run, rounds=3, iterations=1)
    records = edm_molecules.records()
    t0 = time.perf_counter()
    ref = reference_edm(records)
    benchmark.extra_info["reference_implementation_seconds"] = round(time.perf_counter() - t0, 2)
    for key in ("edm.atom_stability", "edm.mol_stability", "edm.validity", "edm.uniqueness"):
        benchmark.extra_info[key] = values[key]
        assert values[key] == ref[key], key
    assert EdmMetric().analyse(samples)["smiles"] == ref["smiles"]


def test_bench_qm9_suite_500_molecules(benchmark, qm9):
    """The qm9/v1 suite on 500 test molecules, reference statistics warm (quick studies)."""
    train = qm9.split("train")
    subset = qm9.split("test").subset(np.arange(500))
    score_molecules(subset.subset(np.arange(10)), "qm9/v1", train)      # warm the caches
    result = benchmark.pedantic(lambda: score_molecules(Samples.from_dataset(subset), "qm9/v1", train),
                                rounds=3, iterations=1)
    benchmark.extra_info["seconds_by_family"] = result.metadata["seconds"]


def test_bench_qm9_core_suite_500_molecules(benchmark, qm9):
    """qm9/v1-core (no MMFF, PoseBusters, FCD) on 500 test molecules."""
    train = qm9.split("train")
    subset = qm9.split("test").subset(np.arange(500))
    score_molecules(subset.subset(np.arange(10)), "qm9/v1-core", train)
    result = benchmark.pedantic(lambda: score_molecules(Samples.from_dataset(subset), "qm9/v1-core", train),
                                rounds=3, iterations=1)
    benchmark.extra_info["seconds_by_family"] = result.metadata["seconds"]


def test_bench_eval_qm9_test_whole(benchmark):
    """`l3dg eval qm9:test` (13,083 molecules, qm9/v1) with warm reference statistics."""
    from harness.evaluate import evaluate_source

    result = benchmark.pedantic(lambda: evaluate_source("qm9:test", progress=False),
                                rounds=1, iterations=1)
    benchmark.extra_info["seconds_by_family"] = result["metadata"]["seconds"]
    assert result["metadata"]["counts"]["molecules"] == 13_083


def test_bench_reference_statistics_cold(benchmark, qm9, tmp_path):
    """Reference statistics of qm9:train for qm9/v1 from scratch (once per split; cached)."""
    from metrics.base import reference_statistics
    from metrics.suites import get_suite

    train = qm9.split("train")
    train.cache_dir = tmp_path            # a cold cache, not the user's
    timings = {}

    def run():
        clear_memory_cache()
        for metric in get_suite("qm9/v1").metrics():
            if "reference" in metric.needs:
                t0 = time.perf_counter()
                reference_statistics(metric, train, refresh=True)
                timings[metric.name] = round(time.perf_counter() - t0, 2)

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["seconds_by_family"] = timings
    clear_memory_cache()
