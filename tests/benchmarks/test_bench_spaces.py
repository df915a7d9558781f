"""Space benchmarks (skipped by default): encode / decode throughput on QM9 batches and
autoencoder training time per epoch on the quick subset.

    .venv/bin/python -m pytest tests/benchmarks/test_bench_spaces.py --benchmark-enable --benchmark-only
"""
import numpy as np
import pytest
import torch

from harness.core.data import load_dataset
from harness.core.registry import SPACES

BUILTIN = ["raw", "per_atom", "flat", "invariant"]
QUICK = {"per_atom": {"epochs": 1}, "flat": {"epochs": 1}, "invariant": {"epochs_topo": 1, "epochs_geo": 1}}


@pytest.fixture(scope="module")
def quick():
    torch.set_num_threads(2)
    return load_dataset("qm9", subset=3000, progress=False)


@pytest.fixture(scope="module")
def fitted(quick):
    """Each space fitted for one epoch on the quick training split (timing not measured here)."""
    out = {}
    for name in BUILTIN:
        space = SPACES.get(name)(elements=quick.elements, **QUICK.get(name, {}))
        if space.trainable:
            space.fit(quick.split("train"), None, progress=False)
        out[name] = space
    return out


@pytest.mark.parametrize("name", BUILTIN)
def test_bench_encode(benchmark, quick, fitted, name):
    batch = quick.split("test").batch(np.arange(256))
    benchmark.pedantic(lambda: fitted[name].encode(batch), rounds=3, iterations=1)
    benchmark.extra_info["molecules_per_second"] = 256 / benchmark.stats.stats.mean


@pytest.mark.parametrize("name", BUILTIN)
def test_bench_decode(benchmark, quick, fitted, name):
    latent = fitted[name].encode(quick.split("test").batch(np.arange(256)))
    benchmark.pedantic(lambda: fitted[name].decode(latent), rounds=3, iterations=1)
    benchmark.extra_info["molecules_per_second"] = 256 / benchmark.stats.stats.mean


@pytest.mark.parametrize("name", ["per_atom", "flat", "invariant"])
def test_bench_autoencoder_epoch(benchmark, quick, name):
    """One training epoch of the space's autoencoder(s) on the quick subset's train split
    (2,293 molecules), with the default preset's options."""
    import yaml

    from harness.config import PRESET_DIR

    options = yaml.safe_load((PRESET_DIR / "default.yaml").read_text())["spaces"][name]
    options = {**options, **QUICK[name]}

    def fit():
        space = SPACES.get(name)(elements=quick.elements, **options)
        space.fit(quick.split("train"), None, progress=False)

    benchmark.pedantic(fit, rounds=1, iterations=1)
