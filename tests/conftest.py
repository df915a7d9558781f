"""Shared fixtures. Tests run single-threaded: two busy 2-thread processes on 2 cores slow
each other 25-40x (OpenMP busy-wait)."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from harness.core.data import QM9_SAMPLE_SDF as QM9_SAMPLE  # noqa: E402  (committed, in the package)

FIXTURES = Path(__file__).parent / "fixtures"
QM9_ELEMENTS = ("H", "C", "N", "O", "F")


@pytest.fixture(scope="session")
def qm9_sample():
    """200 QM9 molecules (committed SDF fixture) as a dataset with train/val/test splits."""
    from harness.core.data import load_dataset

    return load_dataset("sdf", path=QM9_SAMPLE, elements=QM9_ELEMENTS,
                        property_fields=("mu", "alpha", "homo", "lumo", "gap", "Cv"))


@pytest.fixture(scope="session")
def qm9_sample_batch(qm9_sample):
    """The first 32 fixture molecules as a padded MolBatch."""
    return qm9_sample.batch(np.arange(32))


@pytest.fixture
def rng():
    return np.random.default_rng(0)
