"""Study reports: console/markdown tables, PNG plots and sample grids.

``write_report(run_dir)`` reads only what the study wrote (metrics.json, state.json,
space.json, generator logs, samples.sdf), so it can be rerun at any time (``l3dg report``).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from harness.core.io import atomic_path, atomic_write_text
from harness.report.html import atom_label
from harness.report.tables import (  # noqa: F401
    TABLE_COLUMNS,  # noqa: F401  (re-exported)
    controls_table,
    results_table,
    row_values,
)
from harness.report.tables import fmt as _fmt
from harness.results.state import quality  # noqa: F401  (re-exported)


def _num(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def flatten_rows(rows: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Space -> metric -> float (wall times as ``time.<stage>``; ``quality`` filled in for
    runs scored before it was stored)."""
    out = {}
    for name, row in rows.items():
        values = row_values(row)
        if not math.isfinite(values.get("quality", math.nan)):
            values["quality"] = quality(values)
        out[name] = values
    return out


# -- plots --------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _plt().close(fig)
    return path


def plot_metrics_per_space(flat: dict[str, dict[str, float]], path: Path) -> Path:
    plt = _plt()
    keys = [("edm.validity", "valid"), ("edm.uniqueness", "unique"), ("edm.novelty", "novel"),
            ("edm.atom_stability", "atom stab"), ("edm.mol_stability", "mol stab"),
            ("latent.recon_smiles_match", "recon match")]
    names = list(flat)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys)), 3.6))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        vals = [flat[name].get(k, math.nan) for k, _ in keys]
        ax.bar([j + i * width for j in range(len(keys))], [0 if math.isnan(v) else v for v in vals],
               width, label=name)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels([h for _, h in keys])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8, ncol=min(5, len(names)), loc="upper center", bbox_to_anchor=(0.5, -0.1),
              frameon=False)
    ax.set_title("Generation and reconstruction metrics per space")
    return _save(fig, path)


def plot_quality_vs(flat: dict[str, dict[str, float]], path: Path) -> Path:
    plt = _plt()
    spaces = {k: v for k, v in flat.items() if k != "reference"}
    panels = [("latent.recon_rmsd", "reconstruction RMSD (Å)"),
              ("latent.recon_smiles_match", "reconstruction SMILES match"),
              ("latent.dof", "diffused dimension (mean per molecule)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (key, label) in zip(axes, panels):
        for name, vals in spaces.items():
            x, y = vals.get(key, math.nan), vals.get("quality", math.nan)
            if not (math.isnan(x) or math.isnan(y)):
                ax.scatter([x], [y], s=50)
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("quality = valid x unique x mol-stable")
    fig.suptitle("Generation quality vs reconstruction and dimension")
    return _save(fig, path)


def _read_csv_losses(directory: Path) -> dict[str, list[tuple[float, float]]]:
    """(step, value) series of every loss column in Lightning CSV logs below ``directory``."""
    series: dict[str, list[tuple[float, float]]] = {}
    for path in sorted(directory.rglob("metrics.csv")):
        with open(path) as fh:
            for row in csv.DictReader(fh):
                step = _num(row.get("step"))
                for k, v in row.items():
                    if "loss" in k and v not in ("", None):
                        series.setdefault(k, []).append((step, _num(v)))
    return series


def plot_training_curves(root: Path, spaces: list[str], path: Path) -> Path | None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    drawn = False
    for name in spaces:
        series = _read_csv_losses(root / name / "generator")
        for key, points in series.items():
            if "train" in key and "epoch" not in key:
                points.sort()
                axes[0].plot([p[0] for p in points], [p[1] for p in points], label=name, lw=1)
                drawn = True
                break
        meta = root / name / "space" / "space.json"
        if meta.exists():
            stats = json.loads(meta.read_text()).get("fit_stats", {})
            # one history per autoencoder: top level, or per part (invariant: topology, geometry)
            parts = [(name, stats)] + [(f"{name}/{k}", v) for k, v in stats.items() if isinstance(v, dict)]
            for label, part in parts:
                hist = part.get("history") or []
                if hist and isinstance(hist[0], dict):
                    axes[1].plot(range(1, len(hist) + 1), [h.get("loss", math.nan) for h in hist], label=label)
                    drawn = True
    axes[0].set_title("generator training loss")
    axes[0].set_xlabel("step")
    axes[0].set_yscale("log")
    axes[1].set_title("autoencoder training loss (epoch mean)")
    axes[1].set_xlabel("epoch")
    axes[1].set_yscale("log")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if not drawn:
        _plt().close(fig)
        return None
    return _save(fig, path)


def sample_grid(sdf: Path, path: Path, n: int = 12) -> Path | None:
    """RDKit depiction grid of the first ``n`` samples as written (bonds as in the SDF:
    decoder bonds, or perceived ones; a sample whose bonds could not be perceived is drawn
    as its bare atoms and labelled so)."""
    from rdkit import Chem
    from rdkit.Chem import Draw

    from harness.core.chem import read_sdf

    if not sdf.exists():
        return None
    records, _ = read_sdf(sdf, perceive_missing_bonds=False)
    from harness.core.chem import record_to_mol

    mols, legends = [], []
    for record, props in records[:n]:
        mol = record_to_mol(record)
        try:
            mol = Chem.RemoveHs(mol, sanitize=False)
            mol.UpdatePropertyCache(strict=False)
            Chem.rdDepictor.Compute2DCoords(mol)
        except Exception:  # an undrawable sample still gets a (blank) cell
            mols.append(Chem.Mol())
            legends.append("(not drawable)")
            continue
        mols.append(mol)
        legends.append(Chem.MolToSmiles(mol)[:28] if mol.GetNumBonds() else "no bonds, " + atom_label([a.GetAtomicNum() for a in mol.GetAtoms()]))
    if not mols:
        return None
    image = Draw.MolsToGridImage(mols, molsPerRow=4, subImgSize=(220, 180), legends=legends)
    with atomic_path(path, ".png") as tmp:
        image.save(str(tmp), format="PNG")
    return path


def write_report(root: str | Path) -> Path:
    """Write ``report.md`` and ``plots/*.png`` for a study directory; returns report.md."""
    import yaml

    from harness.results.state import collect_results

    root = Path(root)
    rows = collect_results(root)
    flat = flatten_rows(rows)
    config = yaml.safe_load((root / "config.yaml").read_text()) if (root / "config.yaml").exists() else {}
    record = json.loads((root / "record.json").read_text()) if (root / "record.json").exists() else {}
    spaces = [s for s in (config.get("spaces") or {}) if s in rows]
    plots = root / "plots"
    images = []
    if flat:
        images.append(("Metrics per space", plot_metrics_per_space(flat, plots / "metrics_per_space.png")))
        if spaces:
            images.append(("Quality vs reconstruction and dimension",
                           plot_quality_vs(flat, plots / "quality_vs_recon_and_dim.png")))
            from harness.report.plots_factors import plot_factors_at_equal_compute

            factors = plot_factors_at_equal_compute(root, spaces, flat, plots / "factors_at_equal_compute.png")
            if factors:
                images.append(("Factors at equal compute (from the learning curves)", factors))
    curves = plot_training_curves(root, spaces, plots / "training_curves.png")
    if curves:
        images.append(("Training curves", curves))
    grids = [(name, sample_grid(root / name / "samples.sdf", plots / f"samples_{name}.png"))
             for name in spaces]
    lines = [f"# Study `{config.get('study', root.name)}`", ""]
    data = config.get("data", {})
    lines += [f"Dataset `{data.get('dataset')}` {data.get('options', {})}; suite "
              f"`{config.get('metrics', {}).get('suite')}`; "
              f"{config.get('sampling', {}).get('n_samples')} samples per space with "
              f"`{config.get('sampling', {}).get('sampler')}` "
              f"({config.get('sampling', {}).get('steps')} steps); seed {config.get('seed')}.", ""]
    from harness.report.provenance import code_line, provenance_section

    lines += [f"Code: {code_line(root, record)}; "
              f"torch {record.get('versions', {}).get('torch')}; device "
              f"{'CUDA' if record.get('device', {}).get('cuda') else 'CPU'}.", ""]
    lines += ["## Results", "",
              "Scores are of the decoders' raw output (no force-field relaxation) unless a row "
              "says `relaxed`. The `reference` row scores the dataset's own test molecules "
              "(bonds perceived from coordinates) with the same suite.", "",
              results_table(rows, markdown=True), "",
              *([f"Each row is the mean over seeds {config['seeds']} (one full study per seed in "
                 "`seed-<k>/`); its interval is the 95 % Student-t interval of that mean.", ""]
                if config.get("seeds") else []),
              "Cells are value ± half-width of the 95 % interval (Wilson for proportions, "
              "bootstrap over molecules otherwise); `*` marks a column's best space and `≈` a "
              "space within noise of it. 2D = graph metrics, 3D = geometry metrics. "
              "quality (quality/v2) = valid·unique × mol-stable × (1 − D), D = mean of the "
              "atom-type, atom-count and bond-type TVs and FCD/(FCD+10).", ""]
    ctl = controls_table(rows)
    if ctl:
        lines += ["## Controls", "",
                  "What each decoder makes without the trained generator (`prior`: the "
                  "generator's Gaussian prior through its normaliser; `shuffled`: training-latent "
                  "marginals, each dimension shuffled) and its ceiling (`reconstruction`: "
                  "decode(encode(test molecules))), scored like the samples. `lift vs prior` = "
                  "samples − prior; `≈` = within noise (the 95 % interval of the difference "
                  "contains 0).", "", ctl, ""]
    from harness.conditional.report import conditional_section

    lines += conditional_section(root, spaces)
    from harness.report.nfe import nfe_section
    from harness.report.plots_curves import curves_section

    lines += nfe_section(root, spaces)
    lines += curves_section(root, spaces, (config.get("curves") or {}).get("thresholds") or None)
    from harness.report.probes import probes_section

    lines += probes_section(root, spaces)
    for title, img in images:
        lines += [f"## {title}", "", f"![{title}]({img.relative_to(root)})", ""]
    if any(g for _, g in grids):
        lines += ["## Samples", ""]
        for name, img in grids:
            if img:
                lines += [f"### {name}", "", f"![samples of {name}]({img.relative_to(root)})", ""]
    lines += ["## Wall time per stage (s)", "", "| space | " + " | ".join(
        ["fit_space", "encode", "train_generator", "sample", "score", "controls"]) + " |", "|---" * 7 + "|"]
    for name in spaces:
        sec = rows[name].get("seconds", {})
        lines.append(f"| {name} | " + " | ".join(_fmt(_num(sec.get(s))) for s in
                                                 ["fit_space", "encode", "train_generator", "sample", "score", "controls"]) + " |")
    lines.append("")
    lines += provenance_section(root, record)
    out = root / "report.md"
    atomic_write_text(out, "\n".join(lines))
    return out
