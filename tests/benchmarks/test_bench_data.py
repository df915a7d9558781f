"""Data-layer benchmarks (skipped by default; run with `make bench` or
`pytest tests/benchmarks/test_bench_data.py --benchmark-enable --benchmark-only`)."""
import numpy as np
import pytest

from harness.core.data import load_dataset


@pytest.fixture(scope="module")
def qm9_full():
    return load_dataset("qm9", progress=False)


def test_bench_qm9_cold_preprocessing(benchmark, tmp_path):
    """Full QM9 from the CSVs into an empty cache (2 worker processes). Target < 2 min."""
    ds = benchmark.pedantic(lambda: load_dataset("qm9", cache_dir=tmp_path, workers=2, progress=False,
                                                 rebuild=True), rounds=1, iterations=1)
    assert len(ds) == 130_831


def test_bench_qm9_reload_from_cache(benchmark, qm9_full):
    """Reload the preprocessed dataset from the cache. Target < 3 s."""
    ds = benchmark.pedantic(lambda: load_dataset("qm9", progress=False), rounds=5, iterations=1)
    assert ds.info["from_cache"]


def test_bench_collation_throughput(benchmark, qm9_full):
    """Random batches of 64 training molecules collated to dense padded MolBatch."""
    train = qm9_full.split("train")
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(train), 64, replace=False) for _ in range(50)]

    def run():
        for idx in batches:
            train.batch(idx)

    benchmark.pedantic(run, rounds=5, iterations=1)
    benchmark.extra_info["molecules_per_second"] = 50 * 64 / benchmark.stats.stats.mean
