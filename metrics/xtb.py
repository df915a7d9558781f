"""``xtb``: GFN2-xTB energetics of the samples (``tblite``; engine in :mod:`harness.core.xtb`).

Per molecule (the first ``max_molecules`` samples, valid or not -- xTB needs no bonds):

1. **Screening.** Molecules xTB is not run on are counted and named in
   ``metadata["not_computed"]`` with the reason: odd electron count (radical), net formal
   charge (unless ``allow_charged``), an element outside GFN2-xTB. The net charge is the sum of
   the resolved formal charges (given, or assigned by ``rdDetermineBonds``; 0 where
   perception failed).
2. **Single point** at the sample's geometry: ``E`` (Hartree). An SCF failure is counted
   and named too.
3. **Relaxation** (``relax``): L-BFGS over Cartesian coordinates with a per-atom step cap,
   converged at max atomic gradient < ``fmax`` Eh/Bohr (see :func:`harness.core.xtb.relax`).
   ``ΔE = E(relaxed) - E(sample)`` (kcal/mol, <= 0: closer to 0 = the sample was closer to a
   minimum) and the heavy-atom RMSD (Å, Kabsch, same atom order) between the sample and the
   relaxed geometry.

Outputs (medians: a few clashing samples have astronomically high energies; means are in the
metadata):

* ``xtb.computed``: molecules with a single point / molecules tried;
* ``xtb.energy_per_atom`` (kcal/mol per atom): median ``E / n_atoms``;
* ``xtb.delta_e`` (kcal/mol): median ΔE over relaxed molecules; ``xtb.rmsd`` (Å): median
  heavy-atom RMSD; ``xtb.converged``: converged relaxations / relaxations attempted;
* distribution distances to the reference split's molecules (a seeded subset of
  ``reference_size``, computed once and cached): ``xtb.energy_w1`` / ``xtb.delta_e_w1`` --
  Wasserstein-1 of the per-atom energies (kcal/mol/atom) / of ΔE (kcal/mol);
  ``xtb.energy_tv``, ``xtb.energy_jsd``, ``xtb.delta_e_tv``, ``xtb.delta_e_jsd`` -- total
  variation and Jensen-Shannon divergence (base 2, in [0, 1]) between histograms on
  ``n_bins`` shared bins spanning the reference's 0.5-99.5 % quantile range, with values
  outside it counted in the edge bins (so clashing outliers are not lost).

Level of theory: GFN2-xTB in vacuum (tblite, electronic temperature 300 K default); GEOM's
conformers were CREST/GFN2-xTB optimised, so on GEOM a perfect generator has ΔE near 0.
Spin: every computed molecule is a closed-shell singlet (``uhf = 0``); a species whose ground
state is not (O₂ is a triplet) is computed as a singlet, and the metadata says so
(``spin``); molecules with an odd electron count are not computed (step 1).
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
from scipy.stats import wasserstein_distance

from harness.core.registry import METRICS
from harness.core.xtb import (HARTREE_KCAL, METHOD, XtbError, kabsch_rmsd, relax, screen,
                              singlepoint, tblite_version)
from metrics.base import Metric, nan, ratio
from metrics.samples import Samples

_RELAX_KEYS = ("fmax", "max_steps", "max_step", "memory")

#: what the metadata says about spin (tblite is run with uhf = 0 throughout)
SPIN_NOTE = ("closed-shell singlet (uhf = 0) for every computed molecule: a species whose "
             "ground state is not a singlet (e.g. O2, a triplet) is computed as a singlet")


def _xtb_chunk(jobs: Sequence[tuple]) -> list[dict[str, Any]]:
    """Worker: one dict per (numbers, pos, charge, options) job."""
    out = []
    for numbers, pos, charge, opts in jobs:
        row: dict[str, Any] = {"n": len(numbers)}
        t0 = time.perf_counter()
        try:
            if opts["relax"]:
                r = relax(numbers, pos, charge, **{k: opts[k] for k in _RELAX_KEYS})
                row.update(energy=r.energy_start, energy_relaxed=r.energy, pos=r.pos.astype(np.float32),
                           steps=r.steps, evaluations=r.evaluations, converged=r.converged)
            else:
                row["energy"] = singlepoint(numbers, pos, charge)[0]
        except XtbError as err:
            row["error"] = str(err)
        row["seconds"] = time.perf_counter() - t0
        out.append(row)
    return out


def _median(values) -> float:
    a = np.asarray(values, np.float64)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if len(a) else nan()


def _mean(values) -> float:
    a = np.asarray(values, np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else nan()


def histogram_distances(x: np.ndarray, ref: np.ndarray, n_bins: int = 50) -> tuple[float, float]:
    """(total variation, Jensen-Shannon divergence base 2) between histograms of ``x`` and
    ``ref`` on ``n_bins`` equal bins over ref's 0.5-99.5 % quantiles; values outside land in
    the edge bins. NaN when either side is empty."""
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    x, ref = x[np.isfinite(x)], ref[np.isfinite(ref)]
    if not len(x) or not len(ref):
        return nan(), nan()
    lo, hi = np.quantile(ref, [0.005, 0.995])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, n_bins + 1)
    p = np.bincount(np.clip(np.searchsorted(edges, x, "right") - 1, 0, n_bins - 1), minlength=n_bins)
    q = np.bincount(np.clip(np.searchsorted(edges, ref, "right") - 1, 0, n_bins - 1), minlength=n_bins)
    p, q = p / p.sum(), q / q.sum()
    tv = 0.5 * float(np.abs(p - q).sum())
    m = 0.5 * (p + q)
    kl = lambda a: float(np.sum(np.where(a > 0, a * np.log2(np.where(a > 0, a, 1) / np.where(m > 0, m, 1)), 0.0)))
    return tv, 0.5 * kl(p) + 0.5 * kl(q)


def run_xtb(samples: Samples, options: dict[str, Any]) -> dict[str, Any]:
    """xTB on every molecule of ``samples``: per-molecule arrays and the not-computed list.

    Returns a dict with ``energy_per_atom`` [M] (kcal/mol/atom, NaN where not computed),
    ``delta_e`` [M] (kcal/mol), ``rmsd`` [M] (Å), ``converged`` [M] bool, ``steps`` [M],
    ``not_computed`` (name, reason) list, ``relax_failed`` list, ``seconds``.
    """
    from metrics.parallel import chunked_map

    t0 = time.perf_counter()
    m = len(samples)
    resolved = samples.resolved_bonds()
    net = np.bincount(samples.mol_of_atom, weights=resolved.charges, minlength=m).round().astype(int)
    opts = {k: options[k] for k in _RELAX_KEYS}
    opts["relax"] = bool(options["relax"])
    not_computed: list[dict[str, str]] = []
    jobs, index = [], []
    for k in range(m):
        atoms = samples.atoms(k)
        reason = screen(samples.numbers[atoms], int(net[k]), options["allow_charged"])
        if reason:
            not_computed.append({"molecule": samples.names[k], "reason": reason})
            continue
        jobs.append((samples.numbers[atoms], samples.pos[atoms], int(net[k]), opts))
        index.append(k)
    rows = chunked_map(_xtb_chunk, jobs, workers=options["workers"], min_items=8, chunks_per_worker=8)
    energy = np.full(m, np.nan)
    relaxed = np.full(m, np.nan)
    steps = np.zeros(m, np.int64)
    converged = np.zeros(m, bool)
    computed = np.zeros(m, bool)
    relaxed_pos: dict[int, np.ndarray] = {}
    relax_failed = []
    for k, row in zip(index, rows):
        if "error" in row:
            not_computed.append({"molecule": samples.names[k], "reason": row["error"]})
            continue
        computed[k] = True
        energy[k] = row["energy"]
        if "energy_relaxed" in row:
            relaxed[k] = row["energy_relaxed"]
            steps[k] = row["steps"]
            converged[k] = row["converged"]
            relaxed_pos[k] = row["pos"]
            if not row["converged"]:
                relax_failed.append({"molecule": samples.names[k],
                                     "reason": f"not converged in {row['steps']} steps"})
    rmsd = np.full(m, np.nan)
    if relaxed_pos:
        keys = sorted(relaxed_pos)
        sub = samples.take(keys)
        z, start, mask = (t.numpy() for t in sub.dense(0, len(sub)))
        end = np.zeros_like(start)
        end[mask] = np.concatenate([relaxed_pos[k] for k in keys])
        heavy = mask & (z != 1)
        heavy = np.where(heavy.any(1, keepdims=True), heavy, mask)   # all-H molecule: all atoms
        rmsd[keys] = kabsch_rmsd(start, end, heavy)
    return {
        "energy_per_atom": energy * HARTREE_KCAL / samples.counts, "energy_hartree": energy,
        "delta_e": (relaxed - energy) * HARTREE_KCAL, "rmsd": rmsd, "converged": converged,
        "steps": steps, "computed": computed, "not_computed": not_computed, "relax_failed": relax_failed,
        "seconds": time.perf_counter() - t0,
    }


@METRICS.register("xtb")
class XtbMetric(Metric):
    """GFN2-xTB single-point energy, relaxation ΔE and RMSD, energy distribution distances."""

    name = "xtb"
    version = 1
    needs = frozenset({"coords", "bonds", "reference"})
    outputs = {
        "xtb.computed": True, "xtb.energy_per_atom": False, "xtb.delta_e": True,
        "xtb.rmsd": False, "xtb.converged": True,
        "xtb.energy_w1": False, "xtb.energy_tv": False, "xtb.energy_jsd": False,
        "xtb.delta_e_w1": False, "xtb.delta_e_tv": False, "xtb.delta_e_jsd": False,
    }
    defaults = {"max_molecules": 200, "relax": True, "fmax": 1e-3, "max_steps": 500,
                "max_step": 0.2, "memory": 20, "allow_charged": False, "reference_size": 200,
                "seed": 0, "n_bins": 50, "workers": None}
    reference_options = ("relax", "fmax", "max_steps", "max_step", "memory", "allow_charged",
                         "reference_size", "seed")
    description = "GFN2-xTB (tblite) energy, relaxation ΔE (kcal/mol), heavy-atom RMSD (Å), energy W1/TV/JSD"

    def compute(self, samples: Samples, reference: Any | None, space: Any | None = None):
        subset = samples.head(self.options["max_molecules"])
        res = run_xtb(subset, self.options)
        n_computed = int(res["computed"].sum())
        relaxed = np.isfinite(res["delta_e"])
        values = {
            "xtb.computed": ratio(n_computed, len(subset)),
            "xtb.energy_per_atom": _median(res["energy_per_atom"]),
            "xtb.delta_e": _median(res["delta_e"]),
            "xtb.rmsd": _median(res["rmsd"]),
            "xtb.converged": ratio(int(res["converged"].sum()), int(relaxed.sum()))
            if self.options["relax"] else nan(),
        }
        values.update(self._distances(res, reference))
        reasons: dict[str, int] = {}
        for row in res["not_computed"]:
            key = row["reason"].split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
        n_tried = max(1, n_computed)
        meta = {
            "method": f"{METHOD} (tblite {tblite_version()}), vacuum",
            "spin": SPIN_NOTE,
            "units": {"energy_per_atom": "kcal/mol per atom", "delta_e": "kcal/mol (relaxed - sample)",
                      "rmsd": "Å (heavy atoms, Kabsch)", "fmax": "Hartree/Bohr", "max_step": "Å"},
            "molecules": len(subset), "computed": n_computed, "relaxed": int(relaxed.sum()),
            "converged": int(res["converged"].sum()),
            "not_computed_by_reason": reasons, "not_computed": res["not_computed"][:200],
            "not_converged": res["relax_failed"][:200],
            "energy_per_atom_mean": _mean(res["energy_per_atom"]), "delta_e_mean": _mean(res["delta_e"]),
            "rmsd_mean": _mean(res["rmsd"]),
            "steps_median": _median(res["steps"][relaxed]) if relaxed.any() else nan(),
            "seconds": round(res["seconds"], 2),
            "seconds_per_molecule": round(res["seconds"] / n_tried, 4),
            "bond_source": "charges from " + subset.bond_source_summary()["label"],
            "per_molecule": [
                {"molecule": subset.names[k], "energy_per_atom": float(res["energy_per_atom"][k]),
                 "delta_e": float(res["delta_e"][k]), "rmsd": float(res["rmsd"][k]),
                 "steps": int(res["steps"][k]), "converged": bool(res["converged"][k])}
                for k in np.flatnonzero(res["computed"])[:1000]],
        }
        if reference is not None:
            meta["reference"] = {k: reference[k] for k in ("molecules", "computed", "relaxed", "seconds")}
            meta["reference"].update(energy_per_atom=_median(reference["energy_per_atom"]),
                                     delta_e=_median(reference["delta_e"]), rmsd=_median(reference["rmsd"]))
        return values, meta

    def _distances(self, res: dict[str, Any], reference: Any | None) -> dict[str, float]:
        keys = ("xtb.energy_w1", "xtb.energy_tv", "xtb.energy_jsd",
                "xtb.delta_e_w1", "xtb.delta_e_tv", "xtb.delta_e_jsd")
        if reference is None:
            return {k: nan() for k in keys}
        out = {}
        for name in ("energy_per_atom", "delta_e"):
            x = res[name][np.isfinite(res[name])]
            r = np.asarray(reference[name], np.float64)
            r = r[np.isfinite(r)]
            short = "energy" if name == "energy_per_atom" else "delta_e"
            out[f"xtb.{short}_w1"] = float(wasserstein_distance(x, r)) if len(x) and len(r) else nan()
            out[f"xtb.{short}_tv"], out[f"xtb.{short}_jsd"] = histogram_distances(x, r, self.options["n_bins"])
        return out

    def compute_reference(self, reference: Any) -> dict[str, Any]:
        """xTB on a seeded subset of ``reference_size`` reference molecules."""
        n = len(reference)
        size = min(n, int(self.options["reference_size"]))
        index = np.sort(np.random.default_rng(self.options["seed"]).permutation(n)[:size])
        if hasattr(reference, "subset"):
            samples = Samples.from_dataset(reference.subset(index))
        else:
            samples = Samples.from_dataset(reference).take(index)
        res = run_xtb(samples, self.options)
        return {"energy_per_atom": res["energy_per_atom"], "delta_e": res["delta_e"],
                "rmsd": res["rmsd"], "molecules": len(samples), "computed": int(res["computed"].sum()),
                "relaxed": int(np.isfinite(res["delta_e"]).sum()), "seconds": round(res["seconds"], 2),
                "not_computed": res["not_computed"][:50]}
