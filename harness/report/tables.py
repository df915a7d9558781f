"""The study's tables: headline metrics grouped 2D | 3D | reconstruction | cost, each value
with its 95 % interval, and per space its controls and lift.

Cells read ``0.85±.05`` (value ± half-width of the 95 % interval, see
``metrics.intervals``). In the main table a ``≈`` after a value marks a space whose
difference to the column's best space lies within noise (the interval of the difference
contains 0); ``*`` marks the best. The controls table gives, per space, the samples, the
prior and shuffled-marginals controls and the reconstruction ceiling, and the lift over the
prior with ``≈`` where it is within noise.

2D (graph) and 3D (geometry) metrics are kept apart: a decoder that builds valid graphs by
construction makes 2D validity say nothing about its geometry.
"""
from __future__ import annotations

import math
from typing import Any

from metrics.intervals import difference_interval, within_noise

#: (group, metric key, header, higher is better); None = no direction (a cost)
COLUMNS: tuple[tuple[str, str, str, bool | None], ...] = (
    ("", "quality", "quality", True),
    ("2D", "edm.validity", "valid", True),
    ("2D", "edm.valid_unique", "V×U", True),
    ("2D", "edm.novelty", "novel", True),
    ("2D", "fcd", "FCD", False),
    ("3D", "edm.atom_stability", "atom st", True),
    ("3D", "edm.mol_stability", "mol st", True),
    ("3D", "dist.bond_length_w1", "bond W1 Å", False),
    ("3D", "dist.atom_type_tv", "type TV", False),
    ("recon", "latent.recon_smiles_match", "match", True),
    ("recon", "latent.recon_rmsd", "RMSD Å", False),
    ("cost", "latent.dof", "dim", None),
    ("cost", "time.fit_space", "AE s", None),
    ("cost", "time.train_generator", "gen s", None),
)
#: (metric key, column header, higher is better) of the main table
TABLE_COLUMNS: tuple[tuple[str, str, bool | None], ...] = tuple((k, h, b) for _, k, h, b in COLUMNS)
#: the narrower set printed in the terminal (~110 columns)
TERMINAL = ("quality", "edm.validity", "edm.valid_unique", "fcd", "edm.atom_stability",
            "edm.mol_stability", "dist.bond_length_w1", "latent.recon_smiles_match",
            "latent.dof", "time.train_generator")
CONTROL_KEYS = ("quality", "edm.validity", "edm.valid_unique", "edm.mol_stability",
                "edm.atom_stability", "dist.atom_type_tv", "fcd")


def _num(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def fmt(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if x != 0 and abs(x) < 0.01:
        return f"{x:.1e}"
    return f"{x:.3f}" if abs(x) < 1 or x != int(x) else f"{x:.0f}"


def _half(h: float) -> str:
    if h == 0:
        return "0"
    text = f"{h:.2f}" if h >= 0.005 else f"{h:.0e}"
    return text[1:] if text.startswith("0.") else text


def fmt_ci(x: float, ci: list[float] | None) -> str:
    """``0.85±.05``; the plain value where there is no interval."""
    if ci is None or not math.isfinite(x) or not all(math.isfinite(c) for c in ci):
        return fmt(x)
    half = (ci[1] - ci[0]) / 2
    if half == 0 and x != 0 and abs(x) < 0.01:
        return f"{fmt(x)}±0"
    if abs(x) <= 1:
        if half >= 0.005 or half == 0:
            return f"{x:.2f}±{_half(half)}"
        return f"{x:.2e}±{_half(half)}" if abs(x) < 0.01 else f"{x:.3f}±{_half(half)}"
    return f"{fmt(x)}±{fmt(half)}"


def row_values(row: dict[str, Any]) -> dict[str, float]:
    values = {k: _num(v) for k, v in (row.get("values") or {}).items()}
    for stage, sec in (row.get("seconds") or {}).items():
        values[f"time.{stage}"] = _num(sec)
    return values


def _marks(rows: dict[str, Any], key: str, better: bool | None) -> dict[str, str]:
    """'*' for the best space in a column, '≈' for those within noise of it."""
    if better is None:
        return {}
    spaces = {n: r for n, r in rows.items() if n != "reference" and not r.get("error")}
    vals = {n: row_values(r).get(key, math.nan) for n, r in spaces.items()}
    vals = {n: v for n, v in vals.items() if math.isfinite(v)}
    if len(vals) < 2:
        return {}
    best = max(vals, key=vals.get) if better else min(vals, key=vals.get)
    out = {best: "*"}
    b_ci = (spaces[best].get("intervals") or {}).get(key)
    for n, v in vals.items():
        if n != best:
            ci = difference_interval(vals[best], b_ci, v, (spaces[n].get("intervals") or {}).get(key))
            if within_noise(ci):
                out[n] = "≈"
    return out


def _cells(rows: dict[str, Any], columns) -> list[list[str]]:
    marks = {key: _marks(rows, key, better) for _, key, _, better in columns}
    body = []
    for name, row in rows.items():
        if row.get("error"):
            body.append([name] + ["missing"] + [""] * (len(columns) - 1))
            continue
        values, cis = row_values(row), row.get("intervals") or {}
        body.append([name] + [fmt_ci(values.get(key, math.nan), cis.get(key)) + marks[key].get(name, "")
                              for _, key, _, _ in columns])
    return body


def _render(headers: list[str], body: list[list[str]], markdown: bool, groups: list[str] | None = None) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(r[i]) for r in [headers] + body) for i in range(len(headers))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    out = []
    if groups:
        spans, cur, start = [], None, 0
        for i, g in enumerate(groups + [None]):
            if g != cur:
                if cur:
                    spans.append((start, i, cur))
                cur, start = g, i
        top = [" " * w for w in widths]
        for a, b, g in spans:
            width = sum(widths[a:b]) + 2 * (b - a - 1)
            top[a] = g.center(width, "─")[:width]
            for k in range(a + 1, b):
                top[k] = ""
        out.append("  ".join(t for t in top if t != "").rstrip())
    return "\n".join(out + [line(headers), line(["-" * w for w in widths])] + [line(r) for r in body])


def results_table(rows: dict[str, Any], markdown: bool = False, terminal: bool = False) -> str:
    """The headline table, one row per space plus the reference row."""
    columns = [c for c in COLUMNS if not terminal or c[1] in TERMINAL]
    headers = ["space"] + [h for _, _, h, _ in columns]
    groups = [""] + [g for g, _, _, _ in columns]
    return _render(headers, _cells(rows, columns), markdown, None if markdown else groups)


def controls_table(rows: dict[str, Any], markdown: bool = True) -> str:
    """Per space: samples, prior, shuffled, reconstruction, and the lift over the prior."""
    headers = ["space", "row"] + list(CONTROL_KEYS)
    body = []
    for name, row in rows.items():
        ctl = row.get("controls") or {}
        if name == "reference" or not ctl.get("controls"):
            continue
        values, cis = row_values(row), row.get("intervals") or {}
        body.append([name, "samples"] + [fmt_ci(values.get(k, math.nan), cis.get(k)) for k in CONTROL_KEYS])
        for control, res in ctl["controls"].items():
            cv, cci = res.get("values") or {}, res.get("intervals") or {}
            body.append(["", control] + [fmt_ci(_num(cv.get(k)), cci.get(k)) for k in CONTROL_KEYS])
        lift = (ctl.get("lift") or {}).get("prior") or {}
        cells = []
        for k in CONTROL_KEYS:
            d = lift.get(k)
            cells.append("–" if d is None else f"{d['lift']:+.3f}" + ("≈" if d.get("within_noise") else ""))
        body.append(["", "lift vs prior"] + cells)
    return _render(headers, body, markdown) if body else ""
