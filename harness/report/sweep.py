"""``l3dg sweep-report``: what a sweep says about the paper's claim.

Objective vs each factor, parameter importances, the Pareto front (multi-objective) or best
trials, a table, and Spearman rank correlations of generation quality with reconstruction
error, symmetry error and dimension — reported whatever their sign.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.core.io import atomic_write_json, atomic_write_text

FACTORS = (("recon_error", "reconstruction error (1 - SMILES match)"),
           ("recon_rmsd", "reconstruction RMSD (Å)"),
           ("symmetry_error", "symmetry error (mean relative latent change)"),
           ("dimension", "diffused dimension per molecule"))


def load_study(study_name: str, storage: str):
    """The sweep ``study_name`` in ``storage``; a one-line error names a missing SQLite file
    or an unknown sweep (with the sweeps the storage holds)."""
    import optuna

    from harness.errors import RunDirError

    if storage.startswith("sqlite:///"):
        path = Path(storage[len("sqlite:///"):])
        if not path.exists():
            raise RunDirError(f"no sweep storage at {path} (run `l3dg sweep` first, or pass "
                              "--storage URL)")
    names = optuna.get_all_study_names(storage=storage)
    if study_name not in names:
        raise RunDirError(f"no sweep named {study_name!r} in {storage}; sweeps there: "
                          f"{', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=storage)


def completed_trials(study) -> list[dict[str, Any]]:
    import optuna

    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        values = t.values or []
        rows.append({"number": t.number, "objective": values[0] if values else math.nan,
                     "values": list(values), "params": dict(t.params), **dict(t.user_attrs)})
    return rows


def spearman(xs: list[float], ys: list[float]) -> dict[str, Any]:
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None
             and not math.isnan(x) and not math.isnan(y)]
    if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return {"rho": None, "p": None, "n": len(pairs)}
    res = spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
    return {"rho": float(res.statistic), "p": float(res.pvalue), "n": len(pairs)}


#: symmetry errors below this are float32 round-off of an exactly symmetric latent (ties)
SYMMETRY_ROUNDOFF = 1e-4


def claim_tests(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank correlation of the objective with each factor; the paper predicts rho < 0.
    Symmetry errors below :data:`SYMMETRY_ROUNDOFF` count as exactly 0, so round-off noise
    of symmetric latents cannot produce a spurious correlation."""
    out = {}
    for key, label in FACTORS:
        xs = [r.get(key) for r in rows]
        if key == "symmetry_error":
            xs = [0.0 if x is not None and not math.isnan(x) and x < SYMMETRY_ROUNDOFF else x for x in xs]
        res = spearman(xs, [r["objective"] for r in rows])
        rho = res["rho"]
        res["label"] = label
        res["supports_claim"] = None if rho is None else rho < 0
        res.update(_rho_under_noise(xs, rows))
        out[key] = res
    return out


def _rho_under_noise(xs: list, rows: list[dict[str, Any]], draws: int = 1000, seed: int = 0
                     ) -> dict[str, Any]:
    """Spearman's rho when each trial's objective is redrawn within its 95 % interval
    (normal, sd = half-width / 1.96; trials without an interval keep their value): the
    2.5-97.5 % range of rho and whether the claim (rho < 0) survives the noise — i.e. the
    whole range lies below 0. ``{}`` when no trial carries an interval."""
    import numpy as np
    from scipy.stats import spearmanr

    ok = [k for k, x in enumerate(xs) if x is not None and not math.isnan(x)
          and not math.isnan(rows[k]["objective"])]
    cis = [rows[k].get("objective_interval") for k in ok]
    if len(ok) < 3 or not any(cis) or len({xs[k] for k in ok}) < 2:
        return {}
    y = np.array([rows[k]["objective"] for k in ok], np.float64)
    sd = np.array([(c[1] - c[0]) / (2 * 1.959964) if c else 0.0 for c in cis], np.float64)
    rng = np.random.default_rng(seed)
    x = np.array([xs[k] for k in ok], np.float64)
    rhos = []
    for _ in range(draws):
        r = spearmanr(x, y + sd * rng.standard_normal(len(y))).statistic
        if r == r:
            rhos.append(r)
    if not rhos:
        return {}
    lo, hi = (float(v) for v in np.percentile(rhos, [2.5, 97.5]))
    return {"rho_noise_range": [lo, hi], "claim_beyond_noise": hi < 0,
            "noise_draws": len(rhos)}


def write_sweep_report(study_name: str, storage: str, out_dir: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    from harness.core.io import atomic_path

    study = load_study(study_name, storage)
    root = Path(out_dir or study.user_attrs.get("storage_root") or Path("runs/sweeps") / study_name)
    root.mkdir(parents=True, exist_ok=True)
    rows = completed_trials(study)
    if not rows:
        from harness.errors import RunDirError

        raise RunDirError(f"sweep {study_name!r} has no completed trial to report "
                          f"({len(study.trials)} trials in storage)")
    states = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    tests = claim_tests(rows)
    importances: dict[str, float] = {}
    if len(rows) >= 2 and len(study.directions) == 1:
        try:
            importances = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError, ZeroDivisionError) as err:  # too few / constant params
            importances = {"(not computable)": float("nan")}
            importances_note = str(err)
    if len(study.directions) > 1:
        front = [t.number for t in study.best_trials]
    else:
        front = [r["number"] for r in sorted(rows, key=lambda r: -r["objective"])[:5]]

    images = []
    if rows:
        fig, axes = plt.subplots(1, len(FACTORS), figsize=(4 * len(FACTORS), 3.4))
        spaces = sorted({r.get("space", "?") for r in rows})
        for ax, (key, label) in zip(axes, FACTORS):
            for sp in spaces:
                pts = [(r.get(key), r["objective"]) for r in rows if r.get("space") == sp
                       and r.get(key) is not None and not math.isnan(r.get(key))]
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=sp, s=30)
            rho = tests[key]["rho"]
            ax.set_title(f"rho = {rho:.2f}" if rho is not None else "rho n/a", fontsize=9)
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel("objective (quality)")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        with atomic_path(root / "objective_vs_factors.png", ".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)
        images.append(("Objective vs factors", "objective_vs_factors.png"))
        params = sorted({p for r in rows for p in r["params"]})
        fig, axes = plt.subplots(1, max(1, len(params)), figsize=(3.4 * max(1, len(params)), 3.2))
        axes = axes if len(params) > 1 else [axes]
        for ax, p in zip(axes, params):
            pts = [(r["params"][p], r["objective"]) for r in rows if p in r["params"]]
            xs = [str(x) if isinstance(x, str) else x for x, _ in pts]
            ax.scatter(xs, [y for _, y in pts], s=30)
            ax.set_xlabel(p)
            ax.grid(alpha=0.3)
        with atomic_path(root / "objective_vs_params.png", ".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)
        images.append(("Objective vs parameters", "objective_vs_params.png"))
        if importances and not any(math.isnan(v) for v in importances.values()):
            fig, ax = plt.subplots(figsize=(5, 0.5 + 0.4 * len(importances)))
            ax.barh(list(importances), list(importances.values()))
            ax.set_xlabel("importance (fANOVA)")
            with atomic_path(root / "param_importances.png", ".png") as tmp:
                fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
            plt.close(fig)
            images.append(("Parameter importances", "param_importances.png"))

    lines = [f"# Sweep `{study_name}`", "", f"Storage: `{storage}`; trials by state: {states}; "
             f"directions: {[d.name.lower() for d in study.directions]}.", "",
             "## The paper's claim", "",
             "Lower reconstruction error, better symmetry preservation and lower dimension should "
             "give better generation (Spearman rho < 0 supports the claim):", "",
             "| factor | rho | p | n | supports claim | rho with each objective redrawn in its "
             "95 % interval | beyond noise |", "|---|---|---|---|---|---|---|"]
    for key, res in tests.items():
        rho = "n/a" if res["rho"] is None else f"{res['rho']:.3f}"
        p = "n/a" if res["p"] is None else f"{res['p']:.3g}"
        rng = res.get("rho_noise_range")
        noise = "n/a (no intervals)" if rng is None else f"[{rng[0]:.2f}, {rng[1]:.2f}]"
        beyond = "n/a" if rng is None else ("yes" if res["claim_beyond_noise"] else "no")
        lines.append(f"| {res['label']} | {rho} | {p} | {res['n']} | "
                     f"{'n/a' if res['supports_claim'] is None else ('yes' if res['supports_claim'] else 'no')} "
                     f"| {noise} | {beyond} |")
    lines += ["", "## Trials", "", "| trial | space | objective | recon error | symmetry error | dimension | params |",
              "|---|---|---|---|---|---|---|"]
    fmt = lambda x: "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"
    for r in sorted(rows, key=lambda r: -r["objective"]):
        lines.append(f"| {r['number']} | {r.get('space')} | {fmt(r['objective'])} | {fmt(r.get('recon_error'))} | "
                     f"{fmt(r.get('symmetry_error'))} | {fmt(r.get('dimension'))} | {r['params']} |")
    lines += ["", f"{'Pareto front' if len(study.directions) > 1 else 'Best trials'}: {front}", ""]
    families = sorted({r["params"]["family"] for r in rows if "family" in r["params"]})
    if families:    # the generator family was a factor (sweep.families)
        lines += ["## By generator family", "", "| family | trials | mean objective | best |",
                  "|---|---|---|---|"]
        for fam in families:
            obj = [r["objective"] for r in rows if r["params"].get("family") == fam]
            lines.append(f"| {fam} | {len(obj)} | {fmt(sum(obj) / len(obj))} | {fmt(max(obj))} |")
        lines.append("")
    if importances:
        lines += ["## Parameter importances", ""] + [f"- {k}: {v:.3f}" for k, v in importances.items()] + [""]
    for title, img in images:
        lines += [f"## {title}", "", f"![{title}]({img})", ""]
    out = root / "sweep_report.md"
    atomic_write_text(out, "\n".join(lines))
    atomic_write_json(root / "sweep_report.json", {"study": study_name, "states": states,
                                                   "claim_tests": tests, "importances": importances,
                                                   "front": front, "trials": rows})
    return out
