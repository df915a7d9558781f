"""Metric families (one file each) and named, versioned suites.

Importing this package registers every built-in metric in ``harness.core.registry.METRICS`` and
every suite in ``SUITES``. Entry points for callers:

* :func:`score_molecules` — score a MolBatch / records / RDKit molecules with a suite;
* :class:`MetricResults` — metric key -> float, plus ``metadata`` and ``higher_is_better``;
* :class:`Samples` — the packed molecules metric families share.
"""
from rdkit import RDLogger

RDLogger.DisableLog("rdApp.*")  # sanitisation failures are results here, not log noise

from metrics.base import Metric, MetricError, MetricResults, reference_statistics
from metrics.samples import Samples
from metrics import edm, rdkit_profile, distributions, chemistry, latent  # noqa: F401  (register)
from metrics import geom_stability, xtb  # noqa: F401  (register)
from metrics.suites import Suite, define_suite, get_suite, score_molecules

__all__ = ["Metric", "MetricError", "MetricResults", "Samples", "Suite", "define_suite",
           "get_suite", "reference_statistics", "score_molecules"]
