"""The report's "Latent probes" section: interpolation (dark-area rate), noise restart
(quality vs t beside the prior and reconstruction rows) and memorisation, from each space's
``probes.json`` (``harness/study/probes.py``) and ``controls.json``."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.report.tables import fmt_ci


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _cell(block: dict[str, Any], key: str) -> str:
    v = (block.get("values") or {}).get(key)
    v = math.nan if v is None else float(v)
    return fmt_ci(v, (block.get("intervals") or {}).get(key))


def plot_restart(root: Path, spaces: list[str], path: Path) -> Path | None:
    """Quality vs restart level t per space, with its prior (t = 1 without the generator)
    and reconstruction (t = 0) controls as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.core.io import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    drawn = False
    for name in spaces:
        levels = (_read(root / name / "probes.json").get("restart") or {}).get("levels") or {}
        pts = sorted((float(t), (b.get("values") or {}).get("quality")) for t, b in levels.items())
        pts = [(t, q) for t, q in pts if q is not None]
        if not pts:
            continue
        line, = ax.plot([t for t, _ in pts], [q for _, q in pts], "o-", label=name)
        ctl = (_read(root / name / "controls.json").get("controls") or {})
        for control, style in (("prior", ":"), ("reconstruction", "--")):
            q = ((ctl.get(control) or {}).get("values") or {}).get("quality")
            if q is not None:
                ax.axhline(q, ls=style, color=line.get_color(), lw=0.8)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("restart level t (fraction of the schedule)")
    ax.set_ylabel("quality/v2")
    ax.set_title("Noise restart (dashed: reconstruction, dotted: prior)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def probes_section(root: Path, spaces: list[str]) -> list[str]:
    """Markdown lines (empty when no space has ``probes.json``)."""
    root = Path(root)
    have = {n: _read(root / n / "probes.json") for n in spaces}
    have = {n: p for n, p in have.items() if p}
    if not have:
        return []
    lines = ["## Latent probes", "",
             "**Interpolation** (dark-area rate): interior points on the path between the latents "
             "of pairs of test molecules, decoded and scored (per-atom latents: same-composition "
             "pairs, atoms matched and Kabsch-aligned). **Noise restart**: test latents noised to "
             "t of the schedule and denoised by the trained generator (t = 1 is a fresh sample). "
             "**Memorisation**: valid samples whose canonical SMILES is in the training set, and "
             "among them those with a training conformer within 0.5 Å RMSD.", "",
             "| space | row | n | quality | valid+conn | mol st | atom st |", "|---" * 7 + "|"]
    keys = ("quality", "rdkit.valid_connected", "edm.mol_stability", "edm.atom_stability")
    for name, p in have.items():
        interp = p.get("interpolation") or {}
        if interp.get("reason"):
            lines.append(f"| {name} | interpolation | – | {interp['reason']} | | | |")
        for path, block in (interp.get("paths") or {}).items():
            lines.append(f"| {name} | interpolation ({path}) | {block.get('n')} | "
                         + " | ".join(_cell(block, k) for k in keys) + " |")
        restart = p.get("restart") or {}
        if restart.get("reason"):
            lines.append(f"| {name} | noise restart | – | {restart['reason']} | | | |")
        for t, block in (restart.get("levels") or {}).items():
            lines.append(f"| {name} | restart t = {t} | {block.get('n')} | "
                         + " | ".join(_cell(block, k) for k in keys) + " |")
        ctl = _read(root / name / "controls.json").get("controls") or {}
        for control in ("prior", "reconstruction"):
            if control in ctl:
                lines.append(f"| {name} | {control} (controls) | {ctl[control].get('molecules')} | "
                             + " | ".join(_cell(ctl[control], k) for k in keys) + " |")
    lines += ["", "| space | valid samples | in training set | same conformer (≤ 0.5 Å) | "
                  "latent NN: samples → train | train → train |", "|---" * 6 + "|"]
    for name, p in have.items():
        m = p.get("memorisation") or {}
        nn = m.get("latent_nn") or {}

        def share(k, iv):
            return fmt_ci(math.nan if m.get(k) is None else m[k], m.get(iv))

        def dist(block):
            return fmt_ci(math.nan if (block or {}).get("mean") is None else block["mean"],
                          (block or {}).get("interval")) if isinstance(block, dict) else "–"

        lines.append(f"| {name} | {m.get('valid', '–')} | {share('share_in_train', 'interval')} | "
                     f"{share('share_conformer', 'conformer_interval')} "
                     f"({m.get('conformer_within', 0)}/{m.get('conformer_checked', 0)}) | "
                     + (f"{dist(nn.get('samples_to_train'))} | {dist(nn.get('train_to_train'))} |"
                        if "skipped" not in nn else f"{nn['skipped']} | – |"))
    plot = plot_restart(root, list(have), root / "plots" / "noise_restart.png")
    if plot:
        lines += ["", f"![noise restart]({plot.relative_to(root)})"]
    return lines + [""]
