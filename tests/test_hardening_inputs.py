"""Hostile or careless input (issue 12): every case is one parametrised test per family.

* cache: the metric reference cache is data, never unpickled;
* sdf bytes / rdkit reasons: non-UTF-8 bytes and unknown elements are one-line skips;
* geometry: huge coordinates and coincident atoms are flagged (loading) or invalid (scoring);
* xyz: a wrong atom-count line costs exactly one frame;
* cli: user errors are one line (``l3dg <cmd>: error: ...``) and exit 2.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.core import chem
from metrics.base import clear_memory_cache, reference_statistics

from conftest import QM9_SAMPLE

SAMPLE_BYTES = QM9_SAMPLE.read_bytes()
BLOCKS = [b + b"$$$$\n" for b in SAMPLE_BYTES.split(b"$$$$\n") if b.strip()]


@pytest.fixture(autouse=True)
def _fresh_reference_memory():
    clear_memory_cache()
    yield
    clear_memory_cache()


def _edm_metric():
    from harness.core.registry import METRICS, load_builtins

    load_builtins()
    return METRICS.get("edm")()


# -- cache: data only ------------------------------------------------------------------------
class _Touch:
    """A pickle that, when loaded, creates ``marker`` (stands in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("planted", ["pickle-as-pkl", "pickle-as-npz", "object-array-npz",
                                     "garbage-npz", "wrong-key-npz"])
def test_reference_cache_never_runs_code_and_recovers(tmp_path, qm9_sample, planted):
    reference = qm9_sample.subset(np.arange(12), "tiny-ref")
    reference.cache_dir = tmp_path / "cache"
    metric = _edm_metric()
    truth = reference_statistics(metric, reference)              # writes the real cache file
    clear_memory_cache()
    written = next(f for f in (tmp_path / "cache" / "metric-reference").rglob("*") if f.is_file())
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"format": 1, "key": ["x"], "stats": _Touch(marker)})
    if planted == "pickle-as-pkl":      # where the old code looked
        written.unlink()
        written.with_suffix(".pkl").write_bytes(payload)
    elif planted == "pickle-as-npz":
        written.write_bytes(payload)
    elif planted == "object-array-npz":
        with open(written, "wb") as fh:
            np.savez(fh, __meta__=np.array([_Touch(marker)], dtype=object))
    elif planted == "garbage-npz":
        written.write_bytes(b"\x00garbage" * 10)
    else:
        with open(written, "wb") as fh:
            np.savez(fh, __meta__=np.frombuffer(b'{"format": 2, "key": ["other"], "stats": 1}',
                                                np.uint8))
    again = reference_statistics(metric, reference)
    assert not marker.exists()
    assert again["smiles"] == truth["smiles"] and again["molecules"] == truth["molecules"]
    clear_memory_cache()
    assert reference_statistics(metric, reference)["smiles"] == truth["smiles"]  # rewritten, readable


@pytest.mark.parametrize("metric_name", ["edm", "rdkit", "distributions"])
def test_reference_cache_round_trips_every_statistic(tmp_path, qm9_sample, metric_name):
    from harness.core.registry import METRICS, load_builtins

    load_builtins()
    reference = qm9_sample.subset(np.arange(12), "tiny-ref")
    reference.cache_dir = tmp_path
    metric = METRICS.get(metric_name)()
    fresh = reference_statistics(metric, reference)
    clear_memory_cache()
    loaded = reference_statistics(metric, reference)
    assert loaded is not fresh
    _assert_same(fresh, loaded)


def _assert_same(a, b):
    assert type(a) is type(b) or (isinstance(a, np.ndarray) and isinstance(b, np.ndarray))
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    else:
        assert a == b or (a != a and b != b)
