"""Conformance checks every diffusion space must pass — built-in or a user's own.

``run_conformance(space_cls)`` builds the space (with its ``test_options()`` when defined),
fits it briefly on the committed QM9 sample if it is trainable, then checks:

* ``spec``: encode's output matches the declared LatentSpec (kind, width, coords, mask);
* ``deterministic``: encoding the same batch twice gives identical latents;
* ``symmetry.<g>``: for g in permutation / rotation / translation / reflection, the latent
  of the transformed molecules equals the declared transform of the latent (relative error
  below ``tolerance``); a ``"none"`` declaration is reported, never failed;
* ``save_load``: a saved and reloaded space encodes and decodes bit-identically;
* ``decode``: decode returns a MolBatch with the batch size, vocabulary, packed atoms, and
  bonds exactly when the space declares ``bond_source == "decoder"``;
* ``reconstruction``: decode(encode(x)) diagnostics from the ``latent`` metric: SMILES match
  and atom-type accuracy must be numbers in [0, 1], the Kabsch RMSD a finite number >= 0
  wherever a molecule kept its atom-type sequence (NaN only when none did); and the
  atom-type accuracy must reach ``min_reconstruction`` (default: the space's declared
  ``expected_reconstruction``, e.g. 1.0 for the lossless ``raw``; None = no floor).

Used by ``tests/test_space_conformance.py`` (parametrised over the registry) and by
``l3dg check-space FILE``.
"""
from __future__ import annotations

import math
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from harness.core.geometry import SYMMETRY_GROUPS
from harness.core.types import LatentBatch, MolBatch


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str = ""
    value: float | None = None


@dataclass
class ConformanceReport:
    #: the component's registry name (a space's, or any kind's: see ``kind``)
    space: str
    checks: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0
    kind: str = "space"

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def table(self) -> str:
        width = max([len(c.name) for c in self.checks] + [10])
        lines = [f"conformance of {self.kind} {self.space!r}", f"  {'check':<{width}}  result  detail"]
        for c in self.checks:
            lines.append(f"  {c.name:<{width}}  {'PASS' if c.passed else 'FAIL':<6}  {c.detail}")
        lines.append(f"  {'overall':<{width}}  {'PASS' if self.passed else 'FAIL':<6}  "
                     f"{sum(c.passed for c in self.checks)}/{len(self.checks)} checks, {self.seconds:.1f} s")
        return "\n".join(lines)


def _sample_data():
    """The committed 200-molecule QM9 sample (train 160 / val 20 / test 20)."""
    from harness.core.data import QM9_SAMPLE_SDF, load_dataset

    return load_dataset("sdf", path=QM9_SAMPLE_SDF, elements=("H", "C", "N", "O", "F"), report=False)


def build_space(space_cls: type, elements: tuple[str, ...], options: dict[str, Any] | None = None):
    opts = dict(getattr(space_cls, "test_options", lambda: {})())
    opts.update(options or {})
    return space_cls(elements=elements, **opts)


def _check(report: ConformanceReport, name: str, fn: Callable[[], tuple[bool, str, float | None]]):
    try:
        passed, detail, value = fn()
    except Exception as err:  # a broken space must show up as a failed row, not a crash
        tb = traceback.extract_tb(err.__traceback__)[-1]
        passed, detail, value = False, f"{type(err).__name__}: {err} ({Path(tb.filename).name}:{tb.lineno})", None
    report.checks.append(CheckResult(name, passed, detail, value))


def run_conformance(space_cls: type, options: dict[str, Any] | None = None, fit: bool = True,
                    tolerance: float = 1e-3, n_molecules: int = 32, seed: int = 0,
                    progress: bool = False, min_reconstruction: float | None = None
                    ) -> ConformanceReport:
    """Run every check on ``space_cls``; never raises for a failing space (see the report).

    ``tolerance``: largest relative latent error of a declared symmetry (max over molecules).
    ``min_reconstruction``: floor on the reconstruction atom-type accuracy (default: the
    space's ``expected_reconstruction``)."""
    from harness.core.symmetry import symmetry_errors

    t0 = time.perf_counter()
    name = getattr(space_cls, "registry_name", None) or getattr(space_cls, "name", space_cls.__name__)
    report = ConformanceReport(space=name)
    data = _sample_data()
    state: dict[str, Any] = {}

    def construct():
        space = build_space(space_cls, data.elements, options)
        if fit and getattr(space, "trainable", False):
            space.fit(data.split("train"), data.split("val"), progress=progress)
        state["space"] = space
        state["batch"] = data.split("test").batch(np.arange(min(n_molecules, len(data.split("test")))))
        return True, f"built{' and fitted' if fit and space.trainable else ''} with {space.options}", None

    _check(report, "construct", construct)
    if "space" not in state:
        report.seconds = time.perf_counter() - t0
        return report
    space, batch = state["space"], state["batch"]

    def spec():
        z = space.encode(batch)
        s = space.spec
        if not isinstance(z, LatentBatch) or z.spec != s:
            return False, "encode must return a LatentBatch carrying space.spec", None
        if s.kind == "vector":
            ok = z.h.shape == (len(batch), s.width)
        else:
            ok = (z.h.shape == (len(batch), batch.max_atoms, s.width) and z.mask is not None
                  and torch.equal(z.mask.cpu(), batch.mask.cpu())
                  and (not s.has_coords or z.x.shape == (len(batch), batch.max_atoms, 3)))
        finite = bool(torch.isfinite(z.flat()).all())
        dims = s.dim(batch.n_atoms)
        return ok and finite, (f"{s.kind}, width {s.width}, coords {s.has_coords}, dim(n) mean "
                               f"{float(torch.as_tensor(dims, dtype=torch.float64).mean()):.1f}"
                               + ("" if finite else ", NON-FINITE values")), None

    def deterministic():
        a, b = space.encode(batch), space.encode(batch)
        same = torch.equal(a.flat(), b.flat())
        return same, "identical" if same else "two encodes of one batch differ", None

    _check(report, "spec", spec)
    _check(report, "deterministic", deterministic)

    declared = space.spec.symmetries
    generator = torch.Generator().manual_seed(seed)
    for kind in SYMMETRY_GROUPS:
        def symmetry(kind=kind):
            err = symmetry_errors(space.encode, batch, generator, (kind,), reduce="max")[kind]
            how = declared.get(kind, "none")
            if how == "none":
                return True, f"declared none (measured relative change {err:.2e})", err
            return err < tolerance, f"declared {how}: relative error {err:.2e} (tol {tolerance:g})", err
        _check(report, f"symmetry.{kind}", symmetry)

    def save_load():
        from spaces.base import Space

        with tempfile.TemporaryDirectory() as tmp:
            space.save(Path(tmp) / "space")
            other = Space.load(Path(tmp) / "space")
        if type(other) is not type(space):
            return False, f"load gave {type(other).__name__}", None
        z1, z2 = space.encode(batch), other.encode(batch)
        same_z = torch.equal(z1.flat(), z2.flat())
        d1, d2 = space.decode(z1), other.decode(z1)
        same_d = torch.equal(d1.pos, d2.pos) and torch.equal(d1.atom_types, d2.atom_types)
        return same_z and same_d, ("exact" if same_z and same_d else
                                   f"latents equal: {same_z}, decodes equal: {same_d}"), None

    def decode():
        out = space.decode(space.encode(batch))
        problems = []
        if not isinstance(out, MolBatch):
            return False, f"decode returned {type(out).__name__}, not MolBatch", None
        if len(out) != len(batch):
            problems.append(f"{len(out)} molecules for {len(batch)}")
        if tuple(out.elements) != tuple(space.elements):
            problems.append("element vocabulary changed")
        packed = (out.mask.long().diff(dim=1) <= 0).all()
        if not packed:
            problems.append("real atoms must come first in each row")
        wants_bonds = getattr(space, "bond_source", "perceive") == "decoder"
        if wants_bonds != (out.bonds is not None):
            problems.append(f"bond_source={space.bond_source!r} but bonds are "
                            f"{'missing' if out.bonds is None else 'present'}")
        if not torch.isfinite(out.pos).all():
            problems.append("non-finite coordinates")
        return not problems, "; ".join(problems) or "well-formed MolBatch", None

    def reconstruction():
        from metrics.latent import (
            RECON_ATOM_TYPE_ACCURACY,
            RECON_RMSD,
            RECON_SMILES_MATCH,
            LatentMetric,
        )
        from metrics.samples import Samples

        metric = LatentMetric(max_molecules=len(batch), symmetry_molecules=8)
        values, meta = metric.compute(Samples.from_batch(batch, "given"), None, space=space)
        match, accuracy, rmsd = (values[k] for k in (RECON_SMILES_MATCH, RECON_ATOM_TYPE_ACCURACY,
                                                     RECON_RMSD))
        problems = [f"{name} {v} is not a number in [0, 1]" for name, v in
                    (("SMILES match", match), ("atom-type accuracy", accuracy))
                    if not (isinstance(v, float) and 0.0 <= v <= 1.0)]
        kept_sequence = meta.get("recon_same_type_sequence", 0)
        rmsd_ok = (math.isfinite(rmsd) and rmsd >= 0.0) if kept_sequence else math.isnan(rmsd)
        if not rmsd_ok:
            problems.append(f"Kabsch RMSD {rmsd} over {kept_sequence} molecules that kept their "
                            "atom-type sequence")
        floor = (min_reconstruction if min_reconstruction is not None
                 else getattr(space, "expected_reconstruction", None))
        if floor is not None and not accuracy >= floor:
            problems.append(f"atom-type accuracy {accuracy:.3f} below the expected {floor:g}")
        detail = (f"recon_smiles_match {match:.3f}, recon_atom_type_accuracy {accuracy:.3f}, "
                  f"recon_rmsd {rmsd:.3f}")
        return not problems, detail + ("; " + "; ".join(problems) if problems else ""), match

    _check(report, "save_load", save_load)
    _check(report, "decode", decode)
    _check(report, "reconstruction", reconstruction)
    report.seconds = time.perf_counter() - t0
    return report
