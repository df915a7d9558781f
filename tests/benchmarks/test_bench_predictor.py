"""Property-predictor benchmarks (skipped by default): training and inference throughput of
the conditional protocol's evaluator at the ``cpu`` and ``edm`` sizes, on QM9 batches of 96
(training) / 256 (inference), one thread.

    .venv/bin/python -m pytest tests/benchmarks/test_bench_predictor.py --benchmark-enable --benchmark-only
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.conditional.protocol import PREDICTOR_SIZES
from harness.core.data import load_dataset
from metrics.property_predictor import PropertyPredictor, predict_batch


@pytest.fixture(scope="module")
def quick():
    torch.set_num_threads(1)
    return load_dataset("qm9", subset=3000, progress=False).split("train")


@pytest.mark.parametrize("size", ["cpu", "edm"])
def test_bench_predictor_train_step(benchmark, quick, size):
    s = PREDICTOR_SIZES[size]
    torch.manual_seed(0)
    model = PropertyPredictor(len(quick.elements), s["hidden"], s["layers"], s["attention"])
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    batch = quick.batch(np.arange(96))
    y = torch.randn(96)

    def step():
        loss = F.l1_loss(model.normalised(batch.atom_types, batch.pos, batch.mask), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    benchmark.pedantic(step, rounds=4, iterations=1, warmup_rounds=1)
    benchmark.extra_info["molecules_per_second"] = 96 / benchmark.stats.stats.mean


@pytest.mark.parametrize("size", ["cpu", "edm"])
def test_bench_predictor_inference(benchmark, quick, size):
    s = PREDICTOR_SIZES[size]
    model = PropertyPredictor(len(quick.elements), s["hidden"], s["layers"], s["attention"])
    batch = quick.batch(np.arange(256))
    benchmark.pedantic(lambda: predict_batch(model, batch), rounds=3, iterations=1)
    benchmark.extra_info["molecules_per_second"] = 256 / benchmark.stats.stats.mean
