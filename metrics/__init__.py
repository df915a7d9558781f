"""Metric families (one file each) and named, versioned suites.

Importing this package imports every module beside it (``_private`` helpers excepted), which
registers every built-in metric in ``harness.core.registry.METRICS`` and every suite in
``SUITES``; a new metric file is found the moment it exists. Entry points for callers:

* :func:`score_molecules` — score a MolBatch / records / RDKit molecules with a suite;
* :class:`MetricResults` — metric key -> float, plus ``metadata`` and ``higher_is_better``;
* :class:`Samples` — the packed molecules metric families share.
"""
from rdkit import RDLogger

RDLogger.DisableLog("rdApp.*")  # sanitisation failures are results here, not log noise

from harness.core.registry import import_submodules  # noqa: E402
from metrics.base import Metric, MetricError, MetricResults, reference_statistics  # noqa: E402
from metrics.samples import Samples  # noqa: E402

import_submodules(__name__, __path__)

from metrics.suites import Suite, define_suite, get_suite, score_molecules  # noqa: E402

__all__ = ["Metric", "MetricError", "MetricResults", "Samples", "Suite", "define_suite",
           "get_suite", "reference_statistics", "score_molecules"]
