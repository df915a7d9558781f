"""Report pieces of learning curves: quality against compute, and time-to-threshold ratios.

Inputs are what a study leaves on disk: ``<space>/curve.json`` (harness/study/curves.py),
``<space>/controls.json`` (its prior control: the floor a generator that learned nothing
reaches) and ``<space>/state.json`` (autoencoder seconds).

* :func:`plot_learning_curves` — one row per metric (quality, validity, molecule stability),
  two panels: against generator training seconds and against counted training FLOPs (log
  axes), each space's prior control as a dashed floor in its colour, and a shaded band for
  the points' 95 % intervals where the curve recorded them.
* :func:`time_to_threshold` — per space and metric, the first curve point at or above a
  threshold (no interpolation between points: the figure is an upper bound at the curve's
  resolution) with its training seconds, seconds including the autoencoder, FLOPs and step;
  "not reached" (None) when no point reaches it; ratios between every pair of spaces.
* :func:`threshold_table` — that as a markdown table; :func:`curves_section` — the report
  section (plot + table + the stated thresholds) for ``report.md``.

Curve ``quality`` is quality/v2 without its FCD term (the curve suite has no FCD), so the
floor drawn for quality is the prior control's quality recomputed the same way.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.core.io import atomic_path, read_json
from harness.results.curves import QUALITY_NOTE, curve_band, curve_series, read_curve

__all__ = ["CURVE_KEYS", "DEFAULT_THRESHOLDS", "load_curves", "prior_floor",
           "plot_learning_curves", "time_to_threshold", "threshold_table", "curves_section"]

#: (metric key, label) of the rows of the curve plot
CURVE_KEYS = (("quality", "quality (no FCD)"), ("edm.validity", "validity"),
              ("edm.mol_stability", "mol stability"))
#: the stated thresholds of the time-to-threshold table
DEFAULT_THRESHOLDS = {"edm.validity": 0.5, "edm.atom_stability": 0.8, "edm.mol_stability": 0.5}


def load_curves(root: Path, spaces: list[str]) -> dict[str, dict[str, Any]]:
    """``{space: curve}`` for the spaces with a readable ``curve.json`` holding points."""
    out = {}
    for name in spaces:
        curve = read_curve(Path(root) / name / "curve.json")
        if curve and curve["points"]:
            out[name] = curve
    return out


def prior_floor(root: Path, name: str) -> dict[str, float]:
    """The prior control's values of one space (``controls.json`` -> controls.prior.values),
    with ``quality`` recomputed without FCD like a curve's; ``{}`` without controls."""
    from metrics.intervals import quality

    try:
        values = read_json(Path(root) / name / "controls.json")["controls"]["prior"]["values"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    values = dict(values)
    values["quality"] = quality({k: v for k, v in values.items() if k != "fcd"})
    return values


def _ae_seconds(root: Path, name: str) -> float:
    try:
        sec = read_json(Path(root) / name / "state.json").get("seconds", {})
    except (OSError, ValueError):
        return math.nan
    return float(sec.get("fit_space", 0.0)) + float(sec.get("encode", 0.0))


def plot_learning_curves(root: str | Path, spaces: list[str], path: str | Path,
                         keys: tuple[tuple[str, str], ...] = CURVE_KEYS) -> Path | None:
    """Quality / validity / molecule stability against training seconds and FLOPs (see the
    module docstring); None when no space has a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root, path = Path(root), Path(path)
    curves = load_curves(root, spaces)
    if not curves:
        return None
    fig, axes = plt.subplots(len(keys), 2, figsize=(10, 3.0 * len(keys)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(spaces):
        if name not in curves:
            continue
        colour = colours[i % len(colours)]
        floor = prior_floor(root, name)
        for r, (key, label) in enumerate(keys):
            for c, x in enumerate(("train_seconds", "flops")):
                ax = axes[r][c]
                xs, ys = curve_series(curves[name], key, x)
                if xs:
                    ax.plot(xs, ys, "o-", color=colour, label=name, lw=1.2, ms=3)
                bx, lo, hi = curve_band(curves[name], key, x)
                if bx:                      # the points' 95 % Wilson intervals
                    ax.fill_between(bx, lo, hi, color=colour, alpha=0.15, lw=0)
                f = floor.get(key)
                if isinstance(f, (int, float)) and math.isfinite(f):
                    ax.axhline(f, color=colour, ls="--", lw=0.8, alpha=0.7)
                ax.set_xscale("log")
                ax.set_ylim(-0.03, 1.03)            # every curve metric is a fraction
                ax.grid(alpha=0.3)
                if c == 0:
                    ax.set_ylabel(label)
    axes[0][0].set_title("against generator training seconds")
    axes[0][1].set_title("against counted training FLOPs")
    axes[-1][0].set_xlabel("training seconds (curve evaluation excluded)")
    axes[-1][1].set_xlabel("FLOPs (denoiser forward + backward)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][0].legend(handles, labels, fontsize=8, title="dashed: prior control",
                          title_fontsize=7)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def time_to_threshold(root: str | Path, spaces: list[str],
                      thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Compute to reach each threshold, per space, and its ratios between spaces.

    Returns:
        ``{"thresholds": {key: value}, "spaces": {space: {key: {"step", "seconds",
        "seconds_with_ae", "flops", "value"} or None}}, "ratios": {key: {"seconds" |
        "flops": {a: {b: t_a / t_b}}}}}`` — a ratio is None when either space did not
        reach the threshold; spaces without a curve are absent.
    """
    root = Path(root)
    thresholds = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
    curves = load_curves(root, spaces)
    reached: dict[str, dict[str, Any]] = {}
    for name, curve in curves.items():
        ae = _ae_seconds(root, name)
        reached[name] = {}
        for key, thr in thresholds.items():
            hit = None
            for p in curve["points"]:
                v = p.get("values", {}).get(key)
                if isinstance(v, (int, float)) and math.isfinite(v) and v >= thr:
                    hit = {"step": p["step"], "seconds": p["train_seconds"],
                           "seconds_with_ae": p["train_seconds"] + ae, "flops": p["flops"],
                           "value": v}
                    break
            reached[name][key] = hit
    ratios: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {}
    for key in thresholds:
        ratios[key] = {}
        for unit in ("seconds", "flops"):
            table = {}
            for a in reached:
                table[a] = {}
                for b in reached:
                    ha, hb = reached[a][key], reached[b][key]
                    ok = ha is not None and hb is not None and hb[unit] > 0
                    table[a][b] = ha[unit] / hb[unit] if ok else None
            ratios[key][unit] = table
    return {"thresholds": thresholds, "spaces": reached, "ratios": ratios}


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "–"
    if unit == "flops":
        return f"{x:.2e}"
    return f"{x:.3g}"


def threshold_table(result: dict[str, Any]) -> str:
    """Markdown: per space and threshold, training seconds (with autoencoder), FLOPs, and the
    ratio to the fastest space that reached it (FLOPs); ``not reached`` otherwise."""
    spaces = list(result["spaces"])
    if not spaces:
        return ""
    head = ["space"]
    for key, thr in result["thresholds"].items():
        head += [f"{key} ≥ {thr:g}: s (+AE)", "FLOPs", "× fastest"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name in spaces:
        cells = [f"`{name}`"]
        for key in result["thresholds"]:
            hit = result["spaces"][name][key]
            if hit is None:
                cells += ["not reached", "–", "–"]
                continue
            hits = [result["spaces"][s][key] for s in spaces if result["spaces"][s][key]]
            best = min(h["flops"] for h in hits)
            cells += [f"{_fmt(hit['seconds'])} ({_fmt(hit['seconds_with_ae'])})",
                      _fmt(hit["flops"], "flops"),
                      _fmt(hit["flops"] / best if best > 0 else None)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curves_section(root: str | Path, spaces: list[str],
                   thresholds: dict[str, float] | None = None) -> list[str]:
    """``report.md`` lines: the curve plot (``plots/learning_curves.png``), the stated
    thresholds and the time-to-threshold table; ``[]`` when no space has a curve."""
    root = Path(root)
    img = plot_learning_curves(root, spaces, root / "plots" / "learning_curves.png")
    if img is None:
        return []
    result = time_to_threshold(root, spaces, thresholds)
    stated = ", ".join(f"{k} ≥ {v:g}" for k, v in result["thresholds"].items())
    return ["## Learning curves", "",
            f"Each point: {_curve_sizes(root, spaces)} scored with edm + distributions at a "
            f"log-spaced training step; curve quality is {QUALITY_NOTE}. Dashed lines: the "
            "space's prior control (its decoder without a trained generator). Seconds are "
            "generator training seconds on this machine (load-dependent; curve evaluation "
            "excluded); FLOPs are counted (denoiser forward + backward per step x steps).", "",
            f"![learning curves]({img.relative_to(root)})", "",
            f"Time to threshold ({stated}): the first curve point at or above it (an upper "
            "bound at the curve's resolution); `+AE` adds the autoencoder's fitting and "
            "encoding seconds; `× fastest` = FLOPs relative to the space that got there with "
            "the fewest.", "", threshold_table(result), ""]


def _curve_sizes(root: Path, spaces: list[str]) -> str:
    curves = load_curves(root, spaces)
    first = next(iter(curves.values()))
    return (f"{first.get('n_samples')} molecules (seed {first.get('seed')}, "
            f"`{first.get('sampler')}`, {first.get('steps')} steps)")
