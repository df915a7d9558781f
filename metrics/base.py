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
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:
    from metrics.samples import Samples

log = logging.getLogger(__name__)

NEEDS = frozenset({"coords", "bonds", "reference", "space"})

#: Bumped when the on-disk layout of cached reference statistics changes (2: data-only npz;
#: version 1 was a pickle and is never read).
REFERENCE_CACHE_FORMAT = 2


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
    return Path(cache_dir) / "metric-reference" / safe / f"{metric.reference_key()}.npz"


def reference_statistics(metric: Metric, reference: Any, refresh: bool = False) -> Any:
    """:meth:`Metric.compute_reference` of ``reference``, computed once and cached.

    The cache key is the reference's ``fingerprint`` (dataset options + split) and the
    metric's :meth:`~Metric.reference_key`; the file lives under the dataset's
    ``cache_dir/metric-reference/`` and is written atomically. A reference without a
    fingerprint is cached in memory only (keyed by object identity).

    The file is *data only* (``.npz``: arrays plus one UTF-8 JSON document, read with
    ``allow_pickle=False``), so a file planted in the cache can at worst be wrong data, which
    the key check rejects; it can never run code. Statistics of types the codec does not
    know are kept in memory only.
    """
    fingerprint = getattr(reference, "fingerprint", "") or f"id:{id(reference)}"
    key = (str(fingerprint), metric.reference_key())
    if not refresh and key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    path = _reference_cache_path(reference, metric)
    if path is not None and path.exists() and not refresh:
        stats = _read_cache(path, key)
        if stats is not _MISSING:
            _MEMORY_CACHE[key] = stats
            return stats
    stats = metric.compute_reference(reference)
    _MEMORY_CACHE[key] = stats
    if path is not None:
        _write_cache(path, key, stats)
    return stats


# -- data-only codec of reference statistics ------------------------------------------------
# JSON for the structure (containers are tagged so dict keys of any scalar type, tuples and
# frozensets round-trip), numeric/string arrays as npz members. No object arrays, no pickle.
_MISSING = object()


def _encode(obj: Any, arrays: dict[str, Any]) -> Any:
    import numpy as np

    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("object arrays are not cached (they would need pickle)")
        name = f"a{len(arrays)}"
        arrays[name] = obj
        return {"t": "array", "v": name}
    if isinstance(obj, dict):
        return {"t": "dict", "v": [[_encode(k, arrays), _encode(v, arrays)] for k, v in obj.items()]}
    for tag, kind in (("list", list), ("tuple", tuple), ("frozenset", frozenset), ("set", set)):
        if isinstance(obj, kind):
            items = sorted(obj, key=repr) if tag in ("frozenset", "set") else obj
            return {"t": tag, "v": [_encode(v, arrays) for v in items]}
    raise TypeError(f"cannot cache a {type(obj).__name__} as data")


def _decode(obj: Any, arrays: Any) -> Any:
    if not isinstance(obj, dict):
        return obj
    tag, value = obj["t"], obj["v"]
    if tag == "array":
        return arrays[value]
    if tag == "dict":
        return {_decode(k, arrays): _decode(v, arrays) for k, v in value}
    kinds = {"list": list, "tuple": tuple, "frozenset": frozenset, "set": set}
    if tag not in kinds:
        raise ValueError(f"unknown tag {tag!r}")
    return kinds[tag](_decode(v, arrays) for v in value)


def _read_cache(path: Path, key: tuple[str, str]) -> Any:
    """The cached statistics, or ``_MISSING`` when the file is unreadable, of another
    format or key, or not plain data (never unpickled)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["__meta__"].tobytes().decode("utf-8"))
            if meta.get("format") != REFERENCE_CACHE_FORMAT or meta.get("key") != list(key):
                return _MISSING
            arrays = {name: data[name] for name in data.files if name != "__meta__"}
        return _decode(meta["stats"], arrays)
    except Exception as err:  # any damage or tampering means "recompute", never a crash
        log.warning("ignoring unreadable reference cache %s (%s: %s)", path, type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "")
        return _MISSING


def _write_cache(path: Path, key: tuple[str, str], stats: Any) -> None:
    import numpy as np

    from harness.core.io import atomic_path

    arrays: dict[str, Any] = {}
    try:
        doc = {"format": REFERENCE_CACHE_FORMAT, "key": list(key), "stats": _encode(stats, arrays)}
    except TypeError as err:
        log.warning("reference statistics of %s kept in memory only (%s)", path.stem, err)
        return
    with atomic_path(path, ".npz") as tmp:
        with open(tmp, "wb") as fh:
            meta = np.frombuffer(json.dumps(doc).encode("utf-8"), np.uint8)
            np.savez(fh, __meta__=meta, **arrays)


def clear_memory_cache() -> None:
    """Forget in-memory reference statistics (tests)."""
    _MEMORY_CACHE.clear()


# every class registered as a metric family must subclass Metric
from harness.core.registry import METRICS as _METRICS  # noqa: E402

_METRICS.set_base(Metric)
