"""Named, versioned metric suites and :func:`score_molecules`.

A suite pins each member metric's *version* and options. A changed definition is a new
metric version and therefore a new suite version (``qm9/v2``), never an edit: a suite whose
pinned version differs from the installed metric refuses to run.

Built-in suites:

=================  ==============================================================================
``edm/v1``         EDM-legacy stability / validity / uniqueness / novelty (QM9 pair order)
``edm-geom/v1``    the same with GEOM's sorted pair lookup and single-bond validity
``rdkit/v1``       RDKit profile (given or rdDetermineBonds bonds, charge-aware valence)
``distributions/v1``  atom-type / atom-count / bond-type TV, bond-length and angle W1
``qm9/v1``         edm + rdkit + distributions + chemistry (MMFF on <= 200 molecules)
                   + PoseBusters (first 100 samples) + FCD (<= 1000 samples vs 10k reference)
``qm9/v1-core``    qm9/v1 without the slow members (MMFF, PoseBusters, FCD): quick studies
``qm9/v2-core``    qm9/v1-core + FCD (<= 1000 samples): the default study's suite (quality/v2
                   needs a distribution term that decoded noise cannot fake)
``qm9/v1-full``    qm9/v1 with no sample caps (FCD reference: 100k molecules)
``xtb/v1``         GFN2-xTB single point, relaxation ΔE / heavy-atom RMSD, energy W1/TV/JSD
                   (first 200 samples; reference: 200 seeded reference molecules)
``qm9/v1-xtb``     qm9/v1-core + xtb/v1
``geom/v1``        edm (GEOM lookup) + rdkit + distributions + geom_stability (GEOM-Drugs
                   Revisited aromatic-aware valence tuples) + chemistry (MMFF on <= 200)
``geom/v1-xtb``    geom/v1 + xtb/v1
``latent/v1``      reconstruction, symmetry error and dimensionality of a space
=================  ==============================================================================
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from harness.core.registry import METRICS, SUITES
from metrics.base import (Metric, MetricError, MetricResults, check_values, nan, ratio,
                          reference_statistics)
from metrics.samples import Samples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One metric of a suite: registry name, pinned version, options."""

    metric: str
    version: int
    options: tuple[tuple[str, Any], ...] = ()

    def build(self, overrides: Mapping[str, Any] | None = None) -> Metric:
        cls = METRICS.get(self.metric)
        if cls.version != self.version:
            raise MetricError(
                f"metric {self.metric!r} is version {cls.version} but the suite pins version "
                f"{self.version}; a changed definition needs a new suite version")
        return cls(**{**dict(self.options), **dict(overrides or {})})


@dataclass(frozen=True)
class Suite:
    """A named, versioned list of metrics (``name`` like ``"qm9/v1"``)."""

    name: str
    members: tuple[Member, ...]
    description: str = ""

    @property
    def family(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def version(self) -> str:
        return self.name.split("/", 1)[1] if "/" in self.name else ""

    def metrics(self, options: Mapping[str, Mapping[str, Any]] | None = None) -> list[Metric]:
        """Instantiate the members; ``options`` overrides member options by metric name
        (recorded in the results' metadata, so a changed cap is visible)."""
        options = dict(options or {})
        names = [m.metric for m in self.members]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise KeyError(f"suite {self.name!r} has no metric(s) {unknown}; members: {names}")
        return [m.build(options.get(m.metric)) for m in self.members]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "members": [{"metric": m.metric, "version": m.version, "options": dict(m.options)}
                            for m in self.members]}


def define_suite(name: str, members: Sequence[tuple[str, int, Mapping[str, Any]]],
                 description: str = "") -> Suite:
    """Create and register a suite from ``(metric, version, options)`` triples."""
    if "/" not in name:
        raise ValueError(f"suite names carry a version, like 'qm9/v1'; got {name!r}")
    suite = Suite(name, tuple(Member(m, v, tuple(sorted(dict(o).items()))) for m, v, o in members),
                  description)
    SUITES.add(name, suite)
    return suite


def get_suite(suite: str | Suite) -> Suite:
    return suite if isinstance(suite, Suite) else SUITES.get(suite)


_EDM = ("edm", 1, {"profile": "qm9"})
_RDKIT = ("rdkit", 1, {})
_DIST = ("distributions", 1, {})
define_suite("edm/v1", [_EDM], "EDM-legacy stability, validity, uniqueness, novelty (QM9 rules)")
define_suite("edm-geom/v1", [("edm", 1, {"profile": "geom"})],
             "EDM-legacy rules with GEOM's sorted pair lookup and single-bond validity")
define_suite("rdkit/v1", [_RDKIT], "RDKit validity / connectivity / charge-aware stability")
define_suite("distributions/v1", [_DIST], "distribution distances to the reference split")
define_suite("qm9/v1", [
    _EDM, _RDKIT, _DIST,
    ("chemistry", 1, {"mmff_max_molecules": 200}),
    ("posebusters", 1, {"max_molecules": 100}),
    ("fcd", 1, {"max_molecules": 1000, "reference_size": 10000}),
], "QM9 benchmark: edm + rdkit + distributions + chemistry, capped PoseBusters and FCD")
define_suite("qm9/v1-core", [
    _EDM, _RDKIT, _DIST, ("chemistry", 1, {"mmff_max_molecules": 0}),
], "qm9/v1 without MMFF, PoseBusters and FCD (fast path for quick studies)")
define_suite("qm9/v2-core", [
    _EDM, _RDKIT, _DIST, ("chemistry", 1, {"mmff_max_molecules": 0}),
    ("fcd", 1, {"max_molecules": 1000, "reference_size": 10000}),
], "qm9/v1-core + FCD: the quick suite whose distribution term tells a generator from noise")
define_suite("qm9/v1-full", [
    _EDM, _RDKIT, _DIST,
    ("chemistry", 1, {"mmff_max_molecules": None}),
    ("posebusters", 1, {"max_molecules": None}),
    ("fcd", 1, {"max_molecules": None, "reference_size": 100000}),
], "qm9/v1 with no sample caps")
# v2: every capped member scores a seeded random subset (``subset: random``), so a file sorted
# by size is not scored on its extremes; the subset's rule, size and seed are in the metadata
_RANDOM = {"subset": "random", "subset_seed": 0}
define_suite("qm9/v2", [
    _EDM, _RDKIT, _DIST,
    ("chemistry", 1, {"mmff_max_molecules": 200, **_RANDOM}),
    ("posebusters", 1, {"max_molecules": 100, **_RANDOM}),
    ("fcd", 1, {"max_molecules": 1000, "reference_size": 10000, **_RANDOM}),
], "qm9/v1 with capped members scored on seeded random subsets (l3dg eval's default)")
define_suite("qm9/v3-core", [
    _EDM, _RDKIT, _DIST, ("chemistry", 1, {"mmff_max_molecules": 0}),
    ("fcd", 1, {"max_molecules": 1000, "reference_size": 10000, **_RANDOM}),
], "qm9/v2-core with FCD on a seeded random subset beyond 1,000 valid samples")
_XTB = ("xtb", 1, {"max_molecules": 200, "reference_size": 200})
define_suite("xtb/v1", [_XTB],
             "GFN2-xTB (tblite) energy, relaxation ΔE / RMSD and energy distances (<= 200 samples)")
define_suite("qm9/v1-xtb", [
    _EDM, _RDKIT, _DIST, ("chemistry", 1, {"mmff_max_molecules": 0}), _XTB,
], "qm9/v1-core + GFN2-xTB energetics (xtb/v1)")
define_suite("geom/v1", [
    ("edm", 1, {"profile": "geom"}), _RDKIT, _DIST, ("geom_stability", 1, {}),
    ("chemistry", 1, {"mmff_max_molecules": 200}),
], "GEOM-Drugs / drug-like: EDM-legacy (GEOM lookup) + rdkit + distributions + "
   "GEOM-Drugs Revisited stability + chemistry")
define_suite("geom/v1-xtb", [
    ("edm", 1, {"profile": "geom"}), _RDKIT, _DIST, ("geom_stability", 1, {}),
    ("chemistry", 1, {"mmff_max_molecules": 200}), _XTB,
], "geom/v1 + GFN2-xTB energetics (xtb/v1)")
define_suite("latent/v1", [("latent", 1, {})],
             "latent reconstruction, symmetry error and dimensionality of a space")


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("rdkit", "torch", "numpy", "scipy", "fcd", "posebusters", "l3dg"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def reference_info(reference: Any) -> dict[str, Any] | None:
    if reference is None:
        return None
    return {"name": getattr(reference, "name", type(reference).__name__),
            "fingerprint": getattr(reference, "fingerprint", ""),
            "molecules": len(reference)}


def score_molecules(molecules: Any, suite: str | Suite = "qm9/v1", reference: Any | None = None,
                    bond_source: str = "auto", space: Any | None = None,
                    options: Mapping[str, Mapping[str, Any]] | None = None,
                    progress: bool = False) -> MetricResults:
    """Score molecules with a suite.

    Args:
        molecules: a :class:`~harness.core.types.MolBatch` (``bonds`` or None), a sequence of
            :class:`~harness.core.types.MolRecord` or RDKit molecules (None = a failed sample),
            a dataset, or :class:`Samples`.
        suite: suite name (``"qm9/v1"``) or :class:`Suite`.
        reference: reference dataset or a source string (``"qm9:train"``) (``MolDataset``-like: ``records()`` or ``packed``,
            ``fingerprint``, ``cache_dir``); metrics needing one give NaN without it.
        bond_source: ``"auto"`` (given bonds where the input has them, else
            rdDetermineBonds), ``"perceive"`` (always perceive), or a label meaning "use the
            given bonds" (``"decoder"``, ``"dataset"``, ``"file"``, ``"given"``); pass a
            space's ``bond_source`` (``"decoder"`` / ``"perceive"``) for decoded samples.
        space: the space, for the latent diagnostics.
        options: per-metric option overrides, e.g. ``{"posebusters": {"max_molecules": 20}}``
            (recorded in ``metadata["members"]``; the suite's defaults define its version).
        progress: log each family's time to stderr.

    Every ratio is over the molecules that could be scored; inputs that could not (None,
    no atoms, NaN coordinates, unparseable records) are listed in ``metadata["skipped"]``
    and ``input.scored_fraction`` = scored / (scored + skipped) says how many there were
    (multiply a ratio by it for a per-sample rate).

    Returns:
        :class:`MetricResults`: metric key -> float, with ``metadata`` (suite, members,
        counts, bond source, skipped inputs, reference, per-family metadata, timings,
        versions) and ``higher_is_better``.
    """
    suite = get_suite(suite)
    if isinstance(reference, str):      # a source string such as "qm9:train"
        from harness.core.data import load_source

        reference = load_source(reference)
    samples = Samples.coerce(molecules, bond_source)
    results = MetricResults()
    families: dict[str, Any] = {}
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    members = suite.metrics(options)
    for metric in members:
        t0 = time.perf_counter()
        if "space" in metric.needs and space is None:
            values = {k: nan() for k in metric.outputs}
            meta: dict[str, Any] = {"skipped": "needs a space (none given)"}
        else:
            ref_stats = None
            if "reference" in metric.needs and reference is not None and len(samples):
                ref_stats = reference_statistics(metric, reference)
            values, meta = metric.compute(samples, ref_stats, space)
            values = check_values(metric, values)
        timings[metric.name] = round(time.perf_counter() - t0, 3)
        if progress:
            print(f"  {suite.name}: {metric.name} in {timings[metric.name]:.2f} s",
                  file=sys.stderr, flush=True)
        for key, value in values.items():
            results[key] = value
            results.higher_is_better[key] = metric.higher_is_better(key)
        families[metric.name] = {**metric.identity, **meta}
    n_skipped = len(samples.skipped)
    if any("space" not in m.needs for m in members):   # sample suites, not latent diagnostics
        results["input.scored_fraction"] = ratio(len(samples), len(samples) + n_skipped)
        results.higher_is_better["input.scored_fraction"] = True
    bond_info = None
    if any(k[0] == "resolved_bonds" for k in samples.cache if isinstance(k, tuple)):
        bond_info = samples.bond_source_summary()
    per_family = {}
    for name, meta in families.items():
        label = meta.get("bond_source")
        if label is not None:
            per_family[name] = label["label"] if isinstance(label, dict) else str(label)
    if bond_info:
        overall = bond_info["label"]
    else:
        overall = " + ".join(dict.fromkeys(per_family.values())) or "not used"
    results.metadata = {
        "suite": suite.name, "suite_family": suite.family, "suite_version": suite.version,
        "members": [m.identity for m in members],
        "option_overrides": dict(options or {}),
        "counts": {"molecules": len(samples), "atoms": samples.n_atoms,
                   "skipped": len(samples.skipped)},
        "skipped": samples.skipped[:100],
        "bond_source": overall,
        "bond_source_by_family": per_family,
        "bond_source_detail": bond_info,
        "reference": reference_info(reference),
        "families": families,
        "seconds": {"total": round(time.perf_counter() - t_all, 3), **timings},
        "versions": _versions(),
    }
    return results
