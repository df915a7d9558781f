"""The metric interface, results container and cached reference statistics.

A **metric** here is a *family* of related numbers computed together because they share
work (EDM stability and validity share one distance test; the RDKit profile's validity,
stability, uniqueness and novelty share one RDKit molecule per sample). Each family:

* has a registry ``name`` and an integer ``version``; a changed definition is a new version,
  never an edit, and a suite pins the versions it was defined with;
* declares what it ``needs`` (``coords``, ``bonds``, ``reference``, ``space``);
* declares its ``outputs`` (result key -> higher_is_better: True, False, or None when no
  direction is better, e.g. logP); families with per-type outputs declare a prefix;
* optionally computes **reference statistics** once per reference split (training SMILES,
  distribution quantiles, FCD mean/covariance); :func:`reference_statistics` caches them in
  memory and on disk (atomic writes) keyed by the dataset fingerprint and the metric's
  ``name``/``version``/reference-relevant options.

Every value is a plain Python float (NaN where undefined, e.g. uniqueness with no valid
molecule); counts and provenance go into the metadata.
"""
from __future__ import annotations

import abc
import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:
    from metrics.samples import Samples

log = logging.getLogger(__name__)

NEEDS = frozenset({"coords", "bonds", "reference", "space"})

#: Bumped when the on-disk layout of cached reference statistics changes.
REFERENCE_CACHE_FORMAT = 1


class MetricError(ValueError):
    """A metric cannot run with what it was given (missing reference, space, ...)."""


def quiet_rdkit() -> None:
    """Silence RDKit's log: failed sanitisation is a result here, not noise. Called at the
    start of every RDKit loop because other libraries (PoseBusters) re-enable the log."""
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")


def nan() -> float:
    return float("nan")


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` as a float, NaN when the denominator is 0."""
    return float(numerator) / float(denominator) if denominator else nan()


class Metric(abc.ABC):
    """Base class of metric families.

    Subclasses set the class attributes and implement :meth:`compute` (and, when they need
    a reference split, :meth:`compute_reference`).

    Class attributes:
        name: registry name (``"edm"``, ``"rdkit"``, ...); result keys start with ``key_prefix``.
        version: integer definition version.
        needs: subset of ``{"coords", "bonds", "reference", "space"}``.
        outputs: result key -> higher_is_better (True / False / None).
        dynamic_outputs: key prefix -> higher_is_better, for keys only known at run time
            (per-type distribution distances).
        defaults: option name -> default value; unknown options are an error.
        reference_options: the options that change :meth:`compute_reference`'s result
            (they key the cache; a sample cap, say, does not).
    """

    name: ClassVar[str] = "base"
    version: ClassVar[int] = 1
    needs: ClassVar[frozenset[str]] = frozenset({"coords"})
    outputs: ClassVar[dict[str, bool | None]] = {}
    dynamic_outputs: ClassVar[dict[str, bool | None]] = {}
    defaults: ClassVar[dict[str, Any]] = {}
    reference_options: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise TypeError(f"metric {self.name!r}: unknown option(s) {unknown}; "
                            f"valid options: {sorted(self.defaults) or 'none'}")
        self.options: dict[str, Any] = {**self.defaults, **options}
        bad = set(self.needs) - NEEDS
        if bad:
            raise TypeError(f"metric {self.name!r} declares unknown needs {sorted(bad)}")

    # -- the interface ----------------------------------------------------------------------
    @abc.abstractmethod
    def compute(self, samples: "Samples", reference: Any | None,
                space: Any | None = None) -> tuple[dict[str, float], dict[str, Any]]:
        """Score ``samples``. Returns ``(values, metadata)``: ``values`` maps result keys to
        floats (every key of :attr:`outputs` must be present, NaN if undefined)."""

    def compute_reference(self, reference: Any) -> Any:
        """Statistics of a reference dataset (a :class:`~harness.core.data.MolDataset`-like
        object); called once per split and cached. Metrics without ``"reference"`` in
        :attr:`needs` never get here."""
        return None

    # -- helpers ----------------------------------------------------------------------------
    @property
    def identity(self) -> dict[str, Any]:
        """JSON-ready description (name, version, options) recorded with results."""
        return {"name": self.name, "version": self.version, "options": dict(self.options)}

    def higher_is_better(self, key: str) -> bool | None:
        if key in self.outputs:
            return self.outputs[key]
        for prefix, value in self.dynamic_outputs.items():
            if key.startswith(prefix):
                return value
        return None

    def reference_key(self) -> str:
        """File-name-safe cache key for :meth:`compute_reference`'s result."""
        relevant = {k: self.options[k] for k in self.reference_options}
        digest = hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode())
        return f"{self.name}-v{self.version}-{digest.hexdigest()[:12]}"

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


class MetricResults(dict):
    """Metric key -> float, plus ``metadata`` and each key's ``higher_is_better``.

    ``to_json()`` gives ``{"metrics": {...}, "higher_is_better": {...}, "metadata": {...}}``
    (NaN becomes ``null`` when written with :func:`harness.core.io.atomic_write_json`).
    """

    def __init__(self, values: Mapping[str, float] | None = None,
                 metadata: Mapping[str, Any] | None = None,
                 higher_is_better: Mapping[str, bool | None] | None = None):
        super().__init__(values or {})
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.higher_is_better: dict[str, bool | None] = dict(higher_is_better or {})

    def to_json(self) -> dict[str, Any]:
        return {"metrics": {k: float(v) for k, v in self.items()},
                "higher_is_better": dict(self.higher_is_better),
                "metadata": self.metadata}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "MetricResults":
        values = {k: (nan() if v is None else float(v)) for k, v in data["metrics"].items()}
        return cls(values, data.get("metadata", {}), data.get("higher_is_better", {}))

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v:.4g}" for k, v in self.items())
        return f"MetricResults({body})"


def check_values(metric: Metric, values: Mapping[str, float]) -> dict[str, float]:
    """Every declared output present and every value a plain float."""
    missing = sorted(set(metric.outputs) - set(values))
    if missing:
        raise RuntimeError(f"metric {metric.name!r} did not return {missing}")
    out = {}
    for key, value in values.items():
        if not isinstance(value, float):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise RuntimeError(f"metric {metric.name!r}: {key} is {value!r}, not a float") from None
        out[key] = value
    return out


# -- reference statistics ---------------------------------------------------------------------
_MEMORY_CACHE: dict[tuple[str, str], Any] = {}


def _reference_cache_path(reference: Any, metric: Metric) -> Path | None:
    cache_dir = getattr(reference, "cache_dir", None)
    fingerprint = getattr(reference, "fingerprint", "")
    if cache_dir is None or not fingerprint:
        return None
    safe = hashlib.sha256(str(fingerprint).encode()).hexdigest()[:20]
    return Path(cache_dir) / "metric-reference" / safe / f"{metric.reference_key()}.pkl"


def reference_statistics(metric: Metric, reference: Any, refresh: bool = False) -> Any:
    """:meth:`Metric.compute_reference` of ``reference``, computed once and cached.

    The cache key is the reference's ``fingerprint`` (dataset options + split) and the
    metric's :meth:`~Metric.reference_key`; the file lives under the dataset's
    ``cache_dir/metric-reference/`` and is written atomically. A reference without a
    fingerprint is cached in memory only (keyed by object identity).
    """
    fingerprint = getattr(reference, "fingerprint", "") or f"id:{id(reference)}"
    key = (str(fingerprint), metric.reference_key())
    if not refresh and key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    path = _reference_cache_path(reference, metric)
    if path is not None and path.exists() and not refresh:
        try:
            with open(path, "rb") as fh:
                stored = pickle.load(fh)
            if stored.get("format") == REFERENCE_CACHE_FORMAT and stored.get("key") == list(key):
                _MEMORY_CACHE[key] = stored["stats"]
                return stored["stats"]
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, KeyError) as err:
            log.warning("ignoring unreadable reference cache %s (%s)", path, err)
    stats = metric.compute_reference(reference)
    _MEMORY_CACHE[key] = stats
    if path is not None:
        from harness.core.io import atomic_path

        with atomic_path(path, ".pkl") as tmp:
            with open(tmp, "wb") as fh:
                pickle.dump({"format": REFERENCE_CACHE_FORMAT, "key": list(key), "stats": stats},
                            fh, protocol=pickle.HIGHEST_PROTOCOL)
    return stats


def clear_memory_cache() -> None:
    """Forget in-memory reference statistics (tests)."""
    _MEMORY_CACHE.clear()
