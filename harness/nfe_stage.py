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

from harness.core.io import atomic_write_json, read_json

#: keys kept per row (plus their intervals)
ROW_KEYS = ("quality", "edm.validity", "edm.valid_unique", "edm.mol_stability", "fcd")


def run_nfe(study: Any, name: str, space: Any, directory: Path) -> dict[str, Any]:
    """The ``nfe`` stage (only when ``sampling.nfe_sweep`` is set)."""
    from generators.nfe import quality_vs_nfe
    from harness.scoring import score_batch

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
           "nfe_to_95": nfe_to_fraction(rows, 0.95)}
    atomic_write_json(directory / "nfe.json", out)
    return {"nfe": [r["nfe"] for r in rows], "nfe_to_95": out["nfe_to_95"]}


def nfe_to_fraction(rows: list[dict[str, Any]], fraction: float = 0.95, key: str = "quality"):
    """Smallest NFE whose ``key`` reaches ``fraction`` of the best row's (None if no row
    has a positive value)."""
    vals = [(r["nfe"], r.get(key, math.nan)) for r in rows]
    vals = [(n, v) for n, v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    best = max((v for _, v in vals), default=math.nan)
    if not vals or not best > 0:
        return None
    return min(n for n, v in vals if v >= fraction * best)


def nfe_section(root: Path, spaces: list[str]) -> list[str]:
    """Report lines: the quality-vs-NFE plot and the 95 %-NFE table (empty without data)."""
    data = {}
    for name in spaces:
        path = root / name / "nfe.json"
        if path.exists():
            data[name] = read_json(path)
    if not data:
        return []
    img = plot_nfe(root, data, root / "plots" / "quality_vs_nfe.png")
    lines = ["## Quality against network evaluations (NFE)", "",
             f"![quality vs NFE]({img.relative_to(root)})", "",
             "| space | family | sampler | NFE → quality (95 % interval) | NFE to 95 % of best |",
             "|---|---|---|---|---|"]
    for name, d in data.items():
        cells = []
        for r in d["rows"]:
            ci = (r.get("intervals") or {}).get("quality")
            q = r.get("quality", math.nan)
            cells.append(f"{r['nfe']}: {q:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
        sampler = d["rows"][0]["sampler"] if d["rows"] else "–"
        lines.append(f"| {name} | {d['family']} | {sampler} | {'; '.join(cells)} | "
                     f"{d['nfe_to_95'] if d['nfe_to_95'] is not None else 'never above 0'} |")
    return lines + [""]


def plot_nfe(root: Path, data: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.core.io import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, (name, d) in enumerate(data.items()):
        color = f"C{k}"
        rows = d["rows"]
        nfe = [r["nfe"] for r in rows]
        sec = [r["seconds_per_molecule"] for r in rows]
        q = [r.get("quality", math.nan) for r in rows]
        lo = [((r.get("intervals") or {}).get("quality") or [v, v])[0] for r, v in zip(rows, q)]
        hi = [((r.get("intervals") or {}).get("quality") or [v, v])[1] for r, v in zip(rows, q)]
        for ax, x in zip(axes, (nfe, sec)):
            ax.plot(x, q, "o-", color=color, label=f"{name} ({d['family']})")
            ax.fill_between(x, lo, hi, color=color, alpha=0.15)
        controls = root / name / "controls.json"
        if controls.exists():
            prior = (read_json(controls).get("controls") or {}).get("prior", {}).get("values", {})
            if math.isfinite(prior.get("quality", math.nan)):
                for ax in axes:
                    ax.axhline(prior["quality"], color=color, ls=":", lw=1)
    for ax, label in zip(axes, ("NFE", "sampling seconds per molecule")):
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("quality (quality/v2)")
    axes[0].legend(fontsize=7)
    fig.suptitle("dotted: each space's prior control (decoded noise)", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
