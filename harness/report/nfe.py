"""The quality-vs-NFE part of a study report (``<space>/nfe.json``, written by
``harness.study.nfe``): the smallest NFE that reaches 95 % of a space's best quality, the
report section and its plot."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.core.io import read_json

#: (key, label) of the plot's rows and the table's columns: quality, and atom stability, where
#: spaces still far from whole molecules (quality 0) show what NFE buys them
SHOWN = (("quality", "quality (quality/v2)"), ("edm.atom_stability", "atom stability"))


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
    head = " | ".join(f"NFE → {label} (95 % interval) | NFE to 95 % of best" for _, label in SHOWN)
    lines = ["## Quality against network evaluations (NFE)", "",
             f"![quality vs NFE]({img.relative_to(root)})", "",
             f"| space | family | sampler | {head} |", "|---" * (3 + 2 * len(SHOWN)) + "|"]
    for name, d in data.items():
        sampler = d["rows"][0]["sampler"] if d["rows"] else "–"
        cells = []
        for key, _ in SHOWN:
            parts = []
            for r in d["rows"]:
                v = r.get(key, math.nan)
                ci = (r.get("intervals") or {}).get(key)
                parts.append(f"{r['nfe']}: {v:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
            to95 = (d.get("nfe_to_95_by_metric") or {}).get(key, d["nfe_to_95"] if key == "quality" else None)
            if to95 is None and key != "quality" and not any(key in r for r in d["rows"]):
                cells += ["not recorded", "–"]
                continue
            cells += ["; ".join(parts), str(to95) if to95 is not None else "never above 0"]
        lines.append(f"| {name} | {d['family']} | {sampler} | " + " | ".join(cells) + " |")
    lines += ["", "Each row: the same seed and molecule count at every NFE; sampling seconds per "
              "molecule are on this machine (load-dependent). `NFE to 95 %` = the smallest NFE "
              "whose value reaches 95 % of the space's best row."]
    return lines + [""]


#: line style per generator family, in order of appearance (dotted is the prior control)
LINE_STYLES = ("-", "--", "-.")
STYLE_NAMES = {"-": "solid", "--": "dashed", "-.": "dash-dot"}


def plot_nfe(root: Path, data: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.core.io import atomic_path

    fig, axes = plt.subplots(len(SHOWN), 2, figsize=(10, 3.6 * len(SHOWN)), squeeze=False)
    families = list(dict.fromkeys(d["family"] for d in data.values()))   # one line style each
    styles = {f: LINE_STYLES[i % len(LINE_STYLES)] for i, f in enumerate(families)}
    for k, (name, d) in enumerate(data.items()):
        color = f"C{k % 10}"
        style = styles[d["family"]]
        rows = d["rows"]
        nfe = [r["nfe"] for r in rows]
        sec = [r["seconds_per_molecule"] for r in rows]
        controls = root / name / "controls.json"
        prior = (read_json(controls).get("controls") or {}).get("prior", {}).get("values", {}) \
            if controls.exists() else {}
        for i, (key, label) in enumerate(SHOWN):
            v = [r.get(key, math.nan) for r in rows]
            lo = [((r.get("intervals") or {}).get(key) or [x, x])[0] for r, x in zip(rows, v)]
            hi = [((r.get("intervals") or {}).get(key) or [x, x])[1] for r, x in zip(rows, v)]
            for ax, x in zip(axes[i], (nfe, sec)):
                ax.plot(x, v, "o" + style, color=color, label=f"{name} ({d['family']})", ms=3)
                ax.fill_between(x, lo, hi, color=color, alpha=0.12)
                if math.isfinite(prior.get(key, math.nan)):
                    ax.axhline(prior[key], color=color, ls=":", lw=1)
                ax.set_xscale("log")
                ax.set_ylim(-0.03, 1.03)
                ax.grid(alpha=0.3)
            axes[i][0].set_ylabel(label)
    axes[-1][0].set_xlabel("NFE")
    axes[-1][1].set_xlabel("sampling seconds per molecule")
    axes[0][0].legend(fontsize=7)
    legend = ", ".join(f"{STYLE_NAMES[styles[f]]}: {f}" for f in families)
    fig.suptitle(f"{legend}; dotted: each space's prior control (decoded noise)", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
