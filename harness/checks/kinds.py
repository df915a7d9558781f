"""Conformance checks of every plug-in kind but spaces (those are in ``conformance.py``):
datasets, metrics, suites, denoisers, schedules, samplers and generator families — built-in
or a user's file alike (``l3dg check``; ``tests/test_conformance_kinds.py`` iterates over
the registries and rejects a deliberately broken plug-in of each kind).

Each ``check_<kind>(name)`` returns a :class:`~harness.checks.spaces.ConformanceReport` whose
rows say what was checked; a failing component gives failed rows, never an exception.

* dataset — builds with ``options`` (else the builder's ``test_options``; a builder that
  needs its data and declares none says so); molecules exist, coordinates finite (Å), atom
  types inside ``elements``; splits disjoint and inside the data; the same options give the
  same fingerprint and molecules.
* metric — declares name, integer version >= 1, outputs and known needs; scores 20 QM9
  sample molecules (train split as reference) to floats with every declared output, the
  same twice.
* suite — every member resolves to a registered metric of its pinned version.
* denoiser — declares latent kinds; output shapes; padded atoms give zero rows; the context
  input is used; per-atom coordinates: permutation equivariance always, rotation and
  translation (e3nn's random rotations) unless ``equivariant = False`` is declared.
* schedule — ``alpha^2`` in (0, 1], non-increasing, near 1 at t = 0 and near 0 at T = 500;
  ``alpha^2 + sigma^2 = 1``; ``add_noise`` = ``alpha x0 + sigma eps``.
* sampler — belongs to a registered family, declares its NFE rule; driven by its family's
  probe (the exact model of N(0, I) data) it returns N(0, I) samples with the NFE it states.
* family — config section constructible with defaults and round-tripping through
  ``GeneratorConfig``; default and NFE samplers are its own; its module is a
  ``LatentGenerator`` of this family; trains two steps and samples vector and per-atom
  latents (finite, zero CoM, same seed -> same samples, reloaded weights -> same samples).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch

from harness.checks.spaces import ConformanceReport, _check, _sample_data

KINDS = ("datasets", "metrics", "suites", "denoisers", "schedules", "samplers", "families")


def check_component(kind: str, name: str, options: dict[str, Any] | None = None) -> ConformanceReport:
    """The conformance report of registry entry ``name`` of ``kind``."""
    if kind not in KINDS:
        raise KeyError(f"no conformance suite for kind {kind!r} here; kinds: {', '.join(KINDS)} "
                       "(spaces: harness.checks.spaces.run_conformance)")
    t0 = time.perf_counter()
    report = ConformanceReport(space=name, kind=kind[:-1] if kind != "families" else "family")
    globals()[f"_check_{kind}"](report, name, dict(options or {}))
    report.seconds = time.perf_counter() - t0
    return report


# -- datasets ---------------------------------------------------------------------------------
def _check_datasets(report: ConformanceReport, name: str, options: dict[str, Any]) -> None:
    from harness.core.registry import DATASETS

    builder = DATASETS.get(name)
    opts = options or dict(getattr(builder, "test_options", lambda: {})())
    state: dict[str, Any] = {}

    def build():
        if not callable(builder):
            return False, "a dataset builder must be callable (options -> MolDataset)", None
        if not opts and getattr(builder, "needs_options", False):
            return False, "needs options (its data): pass --option KEY=VALUE", None
        state["ds"], state["again"] = builder(**opts), builder(**opts)
        ds = state["ds"]
        missing = [a for a in ("packed", "elements", "splits", "fingerprint", "split") if not hasattr(ds, a)]
        if missing:
            return False, f"the builder returned {type(ds).__name__} without {missing}", None
        return True, f"{len(ds)} molecules with {opts or 'no options'}", float(len(ds))

    _check(report, "build", build)
    if "ds" not in state:
        return
    ds, again = state["ds"], state["again"]

    def molecules():
        p = ds.packed
        if len(ds) == 0 or (np.diff(p.atom_ptr) < 1).any():
            return False, "no molecules, or a molecule without atoms", None
        if not np.isfinite(p.pos).all():
            return False, "non-finite coordinates", None
        known = {e for e in ds.elements}
        from harness.core.types import PERIODIC_TABLE

        symbols = {PERIODIC_TABLE[int(z)] for z in np.unique(p.numbers)}
        if not symbols <= known:
            return False, f"elements {sorted(symbols - known)} are not in ds.elements {list(ds.elements)}", None
        return True, f"{p.n_atoms} atoms, elements {sorted(symbols)}", None

    def splits():
        sets = {k: set(np.asarray(v).tolist()) for k, v in ds.splits.items()}
        if not sets:
            return False, "no splits (train / val / test expected)", None
        for a in sets:
            for b in sets:
                if a < b and sets[a] & sets[b]:
                    return False, f"splits {a} and {b} share molecules", None
        if any(i < 0 or i >= len(ds) for s in sets.values() for i in s):
            return False, "a split indexes outside the data", None
        return True, ", ".join(f"{k} {len(v)}" for k, v in sets.items()), None

    def deterministic():
        same = ds.fingerprint == again.fingerprint and np.array_equal(ds.packed.pos, again.packed.pos)
        return same, "same options, same fingerprint and molecules" if same else \
            "two builds with the same options differ", None

    for check in (molecules, splits, deterministic):
        _check(report, check.__name__, check)


# -- metrics and suites -----------------------------------------------------------------------
def _check_metrics(report: ConformanceReport, name: str, options: dict[str, Any]) -> None:
    from harness.core.registry import METRICS
    from metrics.base import NEEDS
    from metrics.suites import Member, Suite, score_molecules

    cls = METRICS.get(name)
    state: dict[str, Any] = {}

    def declares():
        bad = []
        if not isinstance(cls.version, int) or isinstance(cls.version, bool) or cls.version < 1:
            bad.append(f"version {cls.version!r} (an integer >= 1)")
        if not (getattr(cls, "outputs", None) or getattr(cls, "dynamic_outputs", None)):
            bad.append("no outputs")
        if set(cls.needs) - set(NEEDS):
            bad.append(f"unknown needs {sorted(set(cls.needs) - set(NEEDS))}")
        return not bad, "; ".join(bad) or f"v{cls.version}, needs {sorted(cls.needs)}", None

    def scores():
        if "space" in cls.needs:
            return True, "needs a space: scored by the space conformance (latent metric)", None
        data = _sample_data()
        suite = Suite(f"check/{name}", (Member(name, cls.version, tuple(sorted(options.items()))),))
        test = data.split("test").records()
        runs = [score_molecules(test, suite=suite, reference=data.split("train")) for _ in range(2)]
        values = {k: v for k, v in runs[0].items() if not k.startswith("input.")}
        state["values"] = values
        if not values:
            return False, "scored nothing", None
        bad = [k for k, v in values.items() if not isinstance(v, float)]
        if bad:
            return False, f"values must be Python floats: {bad[:3]}", None
        declared = set(getattr(cls, "outputs", {}) or {})
        missing = sorted(declared - set(values))
        if missing:
            return False, f"declared outputs missing from the results: {missing[:3]}", None
        same = all(v == runs[1].get(k) or (math.isnan(v) and math.isnan(runs[1].get(k, 0.0)))
                   for k, v in values.items())
        return same, f"{len(values)} values on {len(test)} QM9 molecules" + (
            "" if same else "; two runs differ"), None

    _check(report, "declares", declares)
    _check(report, "scores", scores)


def _check_suites(report: ConformanceReport, name: str, options: dict[str, Any]) -> None:
    from harness.core.registry import METRICS, SUITES

    suite = SUITES.get(name)

    def members():
        bad = [f"{m.metric} v{m.version}" for m in suite.members
               if m.metric not in METRICS or METRICS.get(m.metric).version != m.version]
        if bad:
            return False, f"members not registered at their pinned version: {bad}", None
        suite.metrics()
        return True, ", ".join(f"{m.metric} v{m.version}" for m in suite.members), None

    _check(report, "members", members)


# -- denoisers ----------------------------------------------------------------------------------
def _check_denoisers(report: ConformanceReport, name: str, options: dict[str, Any]) -> None:
    from harness.checks.nets import denoiser_checks

    denoiser_checks(report, name, options)


# -- schedules and samplers -------------------------------------------------------------------
def _check_schedules(report: ConformanceReport, name: str, options: dict[str, Any]) -> None:
    from harness.core.registry import SCHEDULES

    cls = SCHEDULES.get(name)

    def shape():
        s = cls(timesteps=500, **options)
        a2 = s.alphas_cumprod
        if tuple(a2.shape) != (501,) or a2.dtype != torch.float64:
            return False, f"alphas_cumprod must be [T + 1] float64, got {tuple(a2.shape)} {a2.dtype}", None
        if not ((a2 > 0) & (a2 <= 1)).all() or (a2[1:] > a2[:-1] + 1e-12).any():
            return False, "alpha^2 must lie in (0, 1] and never increase", None
        if a2[0] < 0.99 or a2[-1] > 0.05:
            return False, f"alpha^2 is {a2[0]:.3g} at t = 0 and {a2[-1]:.3g} at T (want ~1 and ~0)", None
        t = torch.arange(501)
        vp = (s.alpha(t, torch.float64) ** 2 + s.sigma(t, torch.float64) ** 2 - 1).abs().max()
        x0, eps, tt = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 100, 300, 500])
        want = s.alpha(tt)[:, None] * x0 + s.sigma(tt)[:, None] * eps
        noise_ok = torch.allclose(s.add_noise(x0, eps, tt), want, atol=1e-6)
        ok = vp < 1e-9 and noise_ok
        return ok, (f"VP: max |alpha^2 + sigma^2 - 1| = {vp:.1e}; alpha^2 {a2[0]:.4f} -> {a2[-1]:.2e}"
                    + ("" if noise_ok else "; add_noise is not alpha x0 + sigma eps")), float(vp)

    _check(report, "variance_preserving", shape)


def _check_samplers(report: ConformanceReport, name: str, options: dict[str, Any]) -> None:
    from harness.core.registry import FAMILIES, SAMPLERS

    cls = SAMPLERS.get(name)
    family = getattr(cls, "family", None)

    def declares():
        if family not in FAMILIES:
            return False, (f"family {family!r} is not a registered family "
                           f"({', '.join(FAMILIES.names())})"), None
        if not hasattr(cls, "nfe_rule"):
            return False, "declare nfe_rule = (a, b) (NFE = a * steps + b) or None (adaptive)", None
        return True, f"family {family}, NFE rule {cls.nfe_rule}", None

    def exact_model():
        probe = FAMILIES.get(family).probe_sampler
        if probe is None:
            return False, f"family {family!r} declares no probe_sampler", None
        z, nfe, steps = probe(cls, 50)
        std, mean = float(z.std()), float(z.mean().abs())
        ok = bool(torch.isfinite(z).all()) and 0.85 < std < 1.15 and mean < 0.1
        if cls.nfe_rule is not None:
            a, b = cls.nfe_rule
            ok = ok and nfe == a * steps + b
        return ok, f"N(0, I) in 50 steps -> std {std:.3f}, |mean| {mean:.3f}, NFE {nfe}", std

    _check(report, "declares", declares)
    if report.checks[-1].passed:
        _check(report, "exact_model", exact_model)


# -- families -----------------------------------------------------------------------------------
def _check_families(report: ConformanceReport, name: str, options: dict[str, Any]) -> None:
    from generators.base import LatentGenerator
    from generators.config import GeneratorConfig
    from harness.core.registry import FAMILIES

    fam = FAMILIES.get(name)

    def section():
        if not (dataclasses.is_dataclass(fam.config) and fam.config.__dataclass_params__.frozen):
            return False, "the config section must be a frozen dataclass", None
        cfg = GeneratorConfig.from_dict({"family": name})
        again = GeneratorConfig.from_dict(cfg.to_dict())
        ok = again == cfg and cfg.section == fam.config()
        return ok, f"generator.{name}: {', '.join(f.name for f in dataclasses.fields(fam.config))}", None

    def samplers():
        own = fam.samplers()
        bad = [s for s in (fam.default_sampler, fam.nfe_sampler) if s not in own]
        if bad:
            return False, f"default / NFE sampler {bad} is not one of its samplers {own}", None
        return True, f"default {fam.default_sampler} ({fam.default_steps}), NFE {fam.nfe_sampler}", None

    def module():
        cls = fam.generator_class()
        ok = issubclass(cls, LatentGenerator) and cls.family == name
        return ok, f"{cls.__module__}.{cls.__qualname__}" + (
            "" if ok else f" must subclass LatentGenerator with family = {name!r}"), None

    for check in (section, samplers, module):
        _check(report, check.__name__, check)
    if all(c.passed for c in report.checks):
        from harness.checks.nets import family_training_checks

        family_training_checks(report, name, options)
