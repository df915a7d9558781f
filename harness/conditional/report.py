"""Tables and plots of conditional generation (see harness/conditional/protocol.py): the EDM-style
MAE table with baselines and published anchors, the predictor table, the guidance plot."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["conditional_table", "conditional_section", "plot_guidance_sweep", "predictor_table"]


def plot_guidance_sweep(rows: Sequence[dict[str, Any]], path: str | Path, prop: str,
                        unit: str = "") -> Path:
    """MAE (left axis) and validity (right axis) against the guidance scale (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.core.io import atomic_path

    scales = [r["scale"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(scales, [r["mae"] for r in rows], "o-", color="tab:blue", label="MAE")
    ax.set_xlabel("guidance scale w")
    ax.set_ylabel(f"{prop} MAE" + (f" ({unit})" if unit else ""), color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(scales, [r.get("validity", np.nan) for r in rows], "s--", color="tab:orange")
    ax2.set_ylabel("validity", color="tab:orange")
    ax2.set_ylim(0, 1.02)
    ax.set_title(f"classifier-free guidance sweep: {prop}")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def _fmt(v) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"


def conditional_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown MAE table (EDM Table 3 layout, report units): ours — Naive, #Atoms, each
    model, QM9 — then the published rows. ``results``: model name -> property -> result
    record (:func:`evaluate_conditional`)."""
    from metrics.conditional import CONDITIONAL_PROPERTIES, PUBLISHED_MAE, REPORT_UNITS

    props = [p for p in CONDITIONAL_PROPERTIES
             if any(p in per for per in results.values())] or list(CONDITIONAL_PROPERTIES)
    first = {p: next(per[p] for per in results.values() if p in per) for p in props} \
        if results else {}
    counts = {model: next((r["count"] for r in per.values() if r.get("count")), None)
              for model, per in results.items()}
    k = max([c["count_candidates"] for c in counts.values() if c and c.get("kind") == "vector"],
            default=1)          # the samples' K (a prior control is one draw)
    count_col = any(counts.values())
    head = "| MAE | " + " | ".join(f"{p} ({REPORT_UNITS[p][1]})" for p in props) + " |"
    if count_col:
        head += f" atom count hit (samples: K = {k}) |"
    lines = [head, "|---" * (len(props) + 1 + count_col) + "|"]

    def row(name, values, cis=None, model=None):
        cells = []
        for p in props:
            ci = (cis or {}).get(p)
            cell = _fmt(values.get(p))
            if ci:
                cell += f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"
                atoms = first.get(p, {}).get("baselines", {}).get("atoms")
                if atoms is not None and ci[1] < atoms:
                    cell += " ✓"       # beats #Atoms: the whole interval lies below it
            cells.append(cell)
        if count_col:
            cells.append(_count_cell(counts.get(model)))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    row("Naive, ours (upper bound)", {p: first[p]["baselines"]["naive"] for p in first})
    row("#Atoms, ours", {p: first[p]["baselines"]["atoms"] for p in first})
    for model, per in results.items():
        row(f"**{model}**", {p: r["report"]["mae"] for p, r in per.items()},
            {p: r["report"].get("mae_ci") for p, r in per.items()}, model)
        if any("groups" in r["report"] and len(r["report"]["groups"]) > 1 for r in per.values()):
            for g in ("in", "ood_low", "ood_high"):
                grouped = {p: r["report"]["groups"].get(g, {}) for p, r in per.items() if "groups" in r["report"]}
                row(f"{model} [{g}]", {p: v.get("mae") for p, v in grouped.items()},
                    {p: v.get("mae_ci") for p, v in grouped.items()})
    row("QM9, ours (lower bound = predictor on Db)", {p: first[p]["baselines"]["qm9"] for p in first})
    for name, vals in PUBLISHED_MAE.items():
        row(f"*{name}, published*", vals)
    return "\n".join(lines)


def _count_cell(count: dict[str, Any] | None) -> str:
    """The share of a row's molecules with their requested atom count ("1 (mask)" for a
    per-atom latent, whose mask sets the count by construction)."""
    if not count or count.get("hit_rate") is None:
        return "–"
    if count.get("by_construction"):
        return f"{count['hit_rate']:.2f} (mask)"
    return f"{count['hit_rate']:.2f}"


def predictor_table(metas: Sequence[dict[str, Any]]) -> str:
    """Markdown table of predictors (their ``predictor.json``): validation and Db MAE, the
    baselines and the published ones, in report units."""
    from metrics.conditional import PUBLISHED_MAE, REPORT_UNITS, to_report_units

    lines = ["| property | size | val MAE | Db MAE (QM9 row) | Naive | #Atoms | published QM9 / "
             "Naive / #Atoms | epochs | train s | mol/s | fingerprint |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in metas:
        p = m["property"]
        unit = REPORT_UNITS.get(p, ("", "", 1.0))[1]
        r = (lambda v: _fmt(to_report_units(p, v)))
        pub = " / ".join(_fmt(PUBLISHED_MAE[k].get(p)) for k in
                         ("QM9 (lower bound)", "Naive (upper bound)", "#Atoms"))
        t = m["training"]
        lines.append(f"| {p} ({unit}) | {m['size']} | {r(t['best_val_mae'])} | {r(m['db']['qm9'])} "
                     f"| {r(m['db']['naive'])} | {r(m['db']['atoms'])} | {pub} | "
                     f"{m['config']['epochs']} | {t['seconds']:.0f} | {t['molecules_per_second']:.0f} "
                     f"| {m['fingerprint']} |")
    return "\n".join(lines)


def _protocol(root: Path, spaces: list[str]) -> str:
    from harness.conditional.protocol import load_targets

    for name in spaces:
        path = root / name / "targets.npz"
        if path.exists():
            return load_targets(path).protocol
    return "?"


def conditional_section(root: Path, spaces: list[str]) -> list[str]:
    """Report lines: one MAE table (spaces and their prior controls beside the baselines)."""
    from harness.core.io import read_json

    results: dict[str, dict[str, Any]] = {}
    for name in spaces:
        path = root / name / "conditional.json"
        if path.exists():
            data = read_json(path)
            prop = data["samples"]["property"]
            results[name] = {prop: data["samples"]}
            results[f"{name} prior (noise)"] = {prop: data["prior"]}
            if "reconstruction" in data:
                results[f"{name} reconstruction (ceiling)"] = {prop: data["reconstruction"]}
    if not results:
        return []
    first = next(iter(results.values()))
    pred = next(iter(first.values()))["predictor"]
    lines = ["## Conditional generation", "",
             f"MAE between the property predicted for each generated molecule and the value "
             f"requested for it (every molecule scored, valid or not, as EDM does), with its "
             f"95 % bootstrap interval over molecules; ✓ = the whole interval lies below the "
             f"#Atoms baseline. Atom count hit: the share of molecules with the atom count "
             f"their target asked for (per-atom latents: 1 by construction, their mask sets it; "
             f"vector latents: K latents drawn per target, the first with the requested count "
             f"kept, else the nearest; `conditional.count_candidates`). Each space's control is its prior (decoded noise) and its "
             f"ceiling the predictor on its reconstructions of generator-half molecules "
             f"against their own values. Targets: `{_protocol(root, spaces)}` protocol. Predictor "
             f"`{pred['fingerprint']}` ({pred['size']} size): MAE on Db {pred['db_mae']:.3g} "
             f"(the QM9 row).", "", conditional_table(results), ""]
    for name in spaces:
        img = root / "plots" / f"guidance_{name}.png"
        if img.exists():
            lines += [f"![guidance sweep of {name}]({img.relative_to(root)})", ""]
    return lines
