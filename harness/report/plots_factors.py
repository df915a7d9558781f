"""The paper's factors as curves: quality at equal compute against reconstruction error,
declared symmetry and diffused dimension (issue 11).

A single end-of-training point per space confounds a space's factors with the compute its
generator got. Learning curves (``<space>/curve.json``, every seed's when the study has
``seeds``) give each space's quality at every counted FLOP budget, so the comparison can be
made at *equal* compute: :func:`equal_compute_levels` picks log-spaced FLOP levels inside
the range every space's curve covers, :func:`quality_at` interpolates a curve there (linear
in log FLOPs, no extrapolation), and :func:`plot_factors_at_equal_compute` draws, per level,
quality (mean over seeds, min-max bars) against

* reconstruction RMSD of the space (``latent.recon_rmsd``, Å),
* the space's declared rotation symmetry (``none`` / ``equivariant`` / ``invariant``, from
  the latent spec the fit recorded; unknown for runs that predate it),
* diffused dimension per molecule (``latent.dof``).

When the curves share no FLOP range the plot uses each curve's last point and says so.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.io import atomic_path, read_json
from harness.results.curves import curve_series, read_curve

__all__ = ["equal_compute_levels", "quality_at", "seed_curves", "plot_factors_at_equal_compute"]

SYMMETRY_ORDER = ("none", "equivariant", "invariant")


def seed_curves(root: Path, name: str) -> list[dict[str, Any]]:
    """Every readable curve of space ``name``: the study's own, or one per ``seed-<k>/``."""
    root = Path(root)
    paths = [root / name / "curve.json"] + sorted(root.glob(f"seed-*/{name}/curve.json"))
    return [c for c in (read_curve(p) for p in paths if p.exists()) if c and c["points"]]


def quality_at(curve: dict[str, Any], flops: float, key: str = "quality") -> float:
    """``key`` of ``curve`` at ``flops`` (interpolated linearly in log FLOPs between points;
    NaN outside the curve's range)."""
    xs, ys = curve_series(curve, key, "flops")
    if not xs or not (xs[0] <= flops <= xs[-1]) or flops <= 0:
        return math.nan
    return float(np.interp(math.log10(flops), np.log10(xs), ys))


def equal_compute_levels(curves: dict[str, list[dict[str, Any]]], n: int = 4) -> list[float]:
    """Up to ``n`` log-spaced FLOP levels that every space's every curve covers ([] if none)."""
    spans = [curve_series(c, "quality", "flops")[0] for cs in curves.values() for c in cs]
    spans = [s for s in spans if s]
    if not spans:
        return []
    lo, hi = max(s[0] for s in spans), min(s[-1] for s in spans)
    if not (0 < lo < hi):
        return []
    return [float(x) for x in np.geomspace(lo, hi, n)]


def _symmetry(root: Path, name: str) -> str | None:
    """The declared rotation symmetry the fit recorded (the study's, else any seed's)."""
    for path in [Path(root) / name / "state.json", *sorted(Path(root).glob(f"seed-*/{name}/state.json"))]:
        try:
            return read_json(path)["info"]["fit_space"]["symmetry"].get("rotation")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return None


def plot_factors_at_equal_compute(root: str | Path, spaces: list[str],
                                  flat: dict[str, dict[str, float]], path: str | Path,
                                  levels: int = 4) -> Path | None:
    """The figure of the module docstring (PNG); None when no space has a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root, path = Path(root), Path(path)
    curves = {name: seed_curves(root, name) for name in spaces}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    flops = equal_compute_levels(curves, levels)
    at_end = not flops
    symmetry = {name: _symmetry(root, name) for name in curves}
    panels = [("recon", "reconstruction RMSD (Å)"), ("symmetry", "declared rotation symmetry"),
              ("dim", "diffused dimension per molecule")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    cmap = plt.get_cmap("viridis")
    for li, level in enumerate([None] if at_end else flops):
        colour = cmap(li / max(1, len(flops) - 1)) if not at_end else "tab:blue"
        label = "last curve point" if at_end else f"{level:.2g} FLOPs"
        for ax, (kind, _) in zip(axes, panels):
            xs, ys, lo, hi, names = [], [], [], [], []
            for name, cs in curves.items():
                q = [c["points"][-1]["values"].get("quality", math.nan) if at_end else quality_at(c, level)
                     for c in cs]
                q = [v for v in q if isinstance(v, (int, float)) and math.isfinite(v)]
                if kind == "recon":
                    x = flat.get(name, {}).get("latent.recon_rmsd", math.nan)
                elif kind == "dim":
                    x = flat.get(name, {}).get("latent.dof", math.nan)
                else:
                    x = SYMMETRY_ORDER.index(symmetry[name]) if symmetry[name] in SYMMETRY_ORDER else math.nan
                if not q or not isinstance(x, (int, float)) or not math.isfinite(x):
                    continue
                xs.append(x)
                ys.append(float(np.mean(q)))
                lo.append(ys[-1] - min(q))
                hi.append(max(q) - ys[-1])
                names.append(name)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", color=colour, ms=5, capsize=2,
                            label=label if kind == "recon" else None)
                if li == (0 if at_end else len(flops) - 1):
                    for x, y, n in zip(xs, ys, names):
                        ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for ax, (kind, xlabel) in zip(axes, panels):
        ax.set_xlabel(xlabel)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        if kind == "symmetry":
            ax.set_xticks(range(len(SYMMETRY_ORDER)), SYMMETRY_ORDER)
            ax.set_xlim(-0.5, len(SYMMETRY_ORDER) - 0.5)
            if not any(v in SYMMETRY_ORDER for v in symmetry.values()):
                ax.text(1, 0.5, "declared symmetry not recorded\n(run predates it)", ha="center",
                        fontsize=8, color="grey")
    axes[0].set_ylabel("curve quality (no FCD)")
    axes[0].legend(fontsize=7, title="equal compute" if not at_end else None, title_fontsize=7)
    fig.suptitle("Quality at equal training compute against the paper's factors"
                 + (" (curves share no FLOP range: last points)" if at_end else ""), fontsize=10)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
