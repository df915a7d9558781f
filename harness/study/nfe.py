"""Quality against the number of function evaluations (NFE), per space and generator family.

With ``sampling.nfe_sweep: [5, 10, 20, 50, 100]`` the ``nfe`` stage samples each space's
trained generator at every NFE (``generators.nfe.quality_vs_nfe``: a fixed-step sampler —
``sampling.nfe_sampler`` or the family's default, ``ddim`` for diffusion and ``heun`` for
flow — with the same seed for every row), decodes, and scores with the study's suite and
intervals (``<space>/nfe.json``). The report plots quality against NFE and against sampling
seconds per molecule, each space's prior control as its floor, and prints the smallest NFE
that reaches 95 % of the space's best quality.

Both families in one study: name a space twice with an ``@label`` alias and give the
alias its own generator, e.g. ``spaces: {invariant: {...}, invariant@flow: {...}}`` with
``generator_overrides: {invariant@flow: {family: flow}}`` (``sampling.sampler`` must then be
one both families accept, e.g. ``ddim``, which flow reads as Euler).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.core.io import atomic_write_json
from harness.report.nfe import SHOWN, nfe_to_fraction
from harness.study.context import StudyContext

#: keys kept per row (plus their intervals)
ROW_KEYS = ("quality", "edm.validity", "edm.valid_unique", "edm.atom_stability", "edm.mol_stability",
            "dist.atom_type_tv", "fcd")


def run_nfe(study: StudyContext, name: str, space: Any, directory: Path) -> dict[str, Any]:
    """The ``nfe`` stage (only when ``sampling.nfe_sweep`` is set)."""
    from generators.nfe import quality_vs_nfe
    from harness.study.scoring import score_batch

    s = study.config.sampling
    gen = study.load_generator(name)

    def scorer(decoded):
        values, intervals, _ = score_batch(study, decoded)
        out = {k: values.get(k, math.nan) for k in ROW_KEYS}
        out["intervals"] = {k: intervals[k] for k in ROW_KEYS if k in intervals}
        return out

    rows = quality_vs_nfe(gen, space, scorer, list(s.nfe_sweep), sampler=s.nfe_sampler,
                          n=s.n_samples, seed=study.config.seed, batch_size=s.batch_size)
    out = {"family": getattr(gen, "family", "diffusion"), "rows": rows,
           "nfe_to_95": nfe_to_fraction(rows, 0.95),
           "nfe_to_95_by_metric": {k: nfe_to_fraction(rows, 0.95, k) for k, _ in SHOWN}}
    atomic_write_json(directory / "nfe.json", out)
    return {"nfe": [r["nfe"] for r in rows], "nfe_to_95": out["nfe_to_95"]}
