"""``report.html`` beside ``report.md``: one self-contained page a researcher can mail or
open offline — tables, embedded plots, and per space a gallery of samples as rotating 3D
ball-and-stick views.

Self-contained means: the CSS, the viewer (``harness/assets/viewer.js``, plain canvas 2D,
no libraries), the molecules (JSON) and the plots (base64 PNG) are all inside the page;
it references no URL and fetches nothing. The page records script errors on ``<html
data-l3dg-errors>`` and the number of drawn viewers on ``data-l3dg-viewers`` (the browser
test reads both).

Reads only what the study wrote: ``results.json``, ``config.yaml``, ``record.json``,
``plots/*.png``, ``<space>/samples.sdf`` (through ``harness.core.chem.read_sdf``),
``<space>/state.json`` and, in a conditional study, ``<space>/conditional.json`` (the
section ``report.md`` prints, through :mod:`harness.report.markdown_html`).
"""
from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from harness.report.compare import flat_values, fmt, interval_of, metric_keys

ASSETS = Path(__file__).resolve().parents[1] / "assets"
STAGES = ("fit_space", "encode", "train_generator", "sample", "score")

#: fallback main-table columns (the study's own list is used when importable)
def table_columns() -> tuple[tuple[str, str, bool | None], ...]:
    """(key, header, higher is better) of the main table (the terminal table's columns)."""
    from harness.report.tables import TABLE_COLUMNS

    return tuple((k, h, None if k == "latent.dof" else hib) for k, h, hib in TABLE_COLUMNS)


def atom_label(numbers: Sequence[int] | np.ndarray) -> str:
    """``"19 atoms (9 H)"``: every atom counted, hydrogens among them named."""
    numbers = np.asarray(numbers)
    n, h = int(numbers.size), int((numbers == 1).sum())
    return f"{n} atom{'s' if n != 1 else ''} ({h} H)"


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


# -- molecules ------------------------------------------------------------------------------
def gallery_molecules(sdf: Path, limit: int = 24) -> tuple[list[dict[str, Any]], int]:
    """The first ``limit`` records of ``sdf`` for the gallery, and the file's record count.

    Each item: ``{"index", "numbers", "pos" [n, 3] Å, "bonds" [m, 3], "props", "smiles",
    "reason", "warning"}``; an unreadable record keeps its place with ``reason`` and no
    atoms; ``warning`` names a geometry problem (coincident atoms, ...) of a drawn one.
    """
    import inspect

    from harness.core import chem

    # the gallery shows samples as decoded: a cloud with coincident atoms is still drawn
    # (and its problem named) rather than skipped as a scoring input would be
    lenient = {"check_geometry": False} if "check_geometry" in inspect.signature(chem.read_sdf).parameters else {}
    records, skipped = chem.read_sdf(sdf, perceive_missing_bonds=False, **lenient)
    problem = getattr(chem, "geometry_problem", lambda pos: None)
    total = len(records) + len(skipped)
    reasons = {s.index: s.reason for s in skipped}
    items, it = [], iter(records)
    for index in range(min(total, limit)):
        if index in reasons:
            items.append({"index": index, "numbers": np.zeros(0, np.int64), "pos": np.zeros((0, 3)),
                          "bonds": np.zeros((0, 3), np.int64), "props": {}, "smiles": None,
                          "reason": reasons[index]})
            continue
        record, props = next(it)
        smiles = chem.canonical_smiles(chem.record_to_mol(record)) if len(record.bonds) else None
        items.append({"index": index, "numbers": record.numbers, "pos": record.pos,
                      "bonds": record.bonds, "props": props, "smiles": smiles, "reason": None,
                      "warning": problem(record.pos)})
    return items, total


def _mol_json(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"z": [int(z) for z in item["numbers"]],
            "p": [round(float(v), 3) for v in np.asarray(item["pos"], np.float64).reshape(-1)],
            "b": [int(v) for v in np.asarray(item["bonds"], np.int64).reshape(-1)]}


def _flag_pills(props: Mapping[str, str]) -> str:
    pills = []
    for key, label in (("edm_valid", "valid"), ("edm_mol_stable", "stable")):
        if key in props:
            yes = props[key].strip() in ("1", "true", "True")
            pills.append(f'<span class="flag {"yes" if yes else "no"}">{label} {"✓" if yes else "✗"}</span>')
    if "edm_atom_stability" in props:
        pills.append(f'<span class="flag">atom stab {_esc(props["edm_atom_stability"])}</span>')
    return "".join(pills)


def _card(space: str, item: Mapping[str, Any], data: dict[str, Any]) -> str:
    k = item["index"]
    if item["reason"] or not len(item["numbers"]):
        why = item["reason"] or "no atoms"
        if "no coordinates" in why or "no atoms" in why:
            why = "empty record (the sample could not be decoded into atoms)"
        return (f'<figure class="mol empty"><div class="void">{_esc(why)}</div>'
                f'<figcaption><span class="title">#{k}</span></figcaption></figure>')
    mol_id = f"{space}/{k}"
    data[mol_id] = _mol_json(item)
    props = item["props"]
    n_bonds = len(item["bonds"])
    origin = props.get("bonds", "")
    bonds = (f"{n_bonds} bond{'s' if n_bonds != 1 else ''}" + (f" ({_esc(origin)})" if origin else "")
             if n_bonds else "no bonds")
    label = atom_label(item["numbers"])
    smiles = props.get("smiles") or item["smiles"]
    lines = [f'<span class="title">#{k}</span> · {label} · {bonds}']
    if smiles:
        lines.append(f'<span class="smiles">{_esc(smiles)}</span>')
    pills = _flag_pills(props)
    if pills:
        lines.append(pills)
    if item.get("warning"):
        lines.append(f'<span class="warn">⚠ {_esc(item["warning"])}</span>')
    aria = f"sample {k} of {space}: {label}, {bonds}; drag to rotate"
    return (f'<figure class="mol"><canvas data-mol="{_esc(mol_id)}" tabindex="0" role="img" '
            f'aria-label="{_esc(aria)}"></canvas><figcaption>{"<br>".join(lines)}</figcaption></figure>')


# -- tables -----------------------------------------------------------------------------------
def _value_cell(v: float, iv: tuple[float, float] | None, best: bool) -> str:
    title = f"{v:.6g}" if math.isfinite(v) else "not computed"
    ci = f'<span class="ci">[{fmt(iv[0])}, {fmt(iv[1])}]</span>' if iv else ""
    if iv:
        title += f" (interval {iv[0]:.6g} – {iv[1]:.6g})"
    return f'<td{" class=best" if best else ""} title="{_esc(title)}">{fmt(v)}{ci}</td>'


def results_table(rows: Mapping[str, Any], columns: Sequence[tuple[str, str, bool | None]],
                  highlight: bool = True) -> str:
    """The main table: one row per space (reference row first, in grey); the best space
    value of each column (by its direction) in bold green; intervals where present."""
    flats = {name: flat_values(row) for name, row in rows.items()}
    columns = [c for c in columns if any(math.isfinite(f.get(c[0], math.nan)) for f in flats.values())]
    best: dict[str, float] = {}
    for key, _, hib in columns:
        vals = [f.get(key, math.nan) for n, f in flats.items() if n != "reference"]
        vals = [v for v in vals if math.isfinite(v)]
        if highlight and hib is not None and len(vals) > 1 and max(vals) != min(vals):
            best[key] = max(vals) if hib else min(vals)
    head = "".join(f'<th title="{_esc(k)}">{_esc(h)}'
                   + (f' <span class="dir">{"↑" if hib else "↓"}</span>' if hib is not None else "")
                   + "</th>" for k, h, hib in columns)
    body = []
    for name, f in flats.items():
        cells = "".join(_value_cell(f.get(k, math.nan), interval_of(rows[name], k),
                                    k in best and f.get(k) == best[k] and name != "reference")
                        for k, _, _ in columns)
        body.append(f'<tr{" class=reference" if name == "reference" else ""}><td>{_esc(name)}</td>{cells}</tr>')
    return (f'<div class="table-wrap"><table><thead><tr><th>space</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


CONTROL_COLUMNS = (("edm.validity", "valid", True), ("edm.uniqueness", "unique", True),
                   ("edm.atom_stability", "atom stab", True), ("edm.mol_stability", "mol stab", True),
                   ("edm.valid_unique", "valid x unique", True))


def controls_table(rows: Mapping[str, Any]) -> str:
    """Per space: its samples beside the controls the study scored the same way (the
    generator's prior, shuffled training-latent marginals, the reconstruction ceiling),
    with the samples' lift over the prior on validity where recorded. Empty when no row
    has controls."""
    table: dict[str, Any] = {}
    lifts = []
    for name, row in rows.items():
        block = row.get("controls") if isinstance(row, Mapping) else None
        if not isinstance(block, Mapping) or not isinstance(block.get("controls"), Mapping):
            continue
        table[f"{name}: samples"] = row
        for control, crow in block["controls"].items():
            if isinstance(crow, Mapping):
                table[f"{name}: {control}"] = crow
        lift = ((block.get("lift") or {}).get("prior") or {}).get("edm.validity")
        if isinstance(lift, Mapping) and "lift" in lift:
            noise = "within noise" if lift.get("within_noise") else "beyond noise"
            lifts.append(f"<li><b>{_esc(name)}</b>: validity lift over the prior "
                         f"{fmt(float(lift['lift']))} ({noise})</li>")
    if not table:
        return ""
    return (results_table(table, CONTROL_COLUMNS, highlight=False)
            + (f'<ul class="note">{"".join(lifts)}</ul>' if lifts else ""))


def all_metrics_table(rows: Mapping[str, Any]) -> str:
    names = list(rows)
    keys = sorted({k for row in rows.values() for k in metric_keys(row.get("values", {}) or {})})
    flats = {n: flat_values(rows[n]) for n in names}
    body = "".join(f"<tr><td><code>{_esc(k)}</code></td>"
                   + "".join(_value_cell(flats[n].get(k, math.nan), interval_of(rows[n], k), False)
                             for n in names) + "</tr>" for k in keys)
    head = "".join(f"<th>{_esc(n)}</th>" for n in names)
    return (f'<div class="table-wrap"><table><thead><tr><th>metric</th>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def time_table(rows: Mapping[str, Any], spaces: Sequence[str]) -> str:
    head = "".join(f"<th>{s}</th>" for s in STAGES) + "<th>total</th>"
    body = []
    for name in spaces:
        sec = rows[name].get("seconds", {}) or {}
        vals = [float(sec[s]) if isinstance(sec.get(s), (int, float)) else math.nan for s in STAGES]
        total = sum(v for v in vals if math.isfinite(v))
        body.append(f"<tr><td>{_esc(name)}</td>" + "".join(f"<td>{fmt(v)}</td>" for v in vals)
                    + f"<td>{fmt(total)}</td></tr>")
    return (f'<div class="table-wrap"><table><thead><tr><th>space</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _row_errors(rows: Mapping[str, Any]) -> str:
    """Rows the study could not fill (a missing or damaged metrics file), named."""
    errors = [f"<li><b>{_esc(n)}</b>: {_esc(r['error'])}</li>" for n, r in rows.items()
              if isinstance(r, Mapping) and r.get("error")]
    return f'<ul class="note">{"".join(errors)}</ul>' if errors else ""


# -- page -------------------------------------------------------------------------------------
def _plots(root: Path) -> str:
    parts = []
    for png in sorted((root / "plots").glob("*.png")):
        if png.name.startswith("samples_"):
            continue  # 2D depictions of the samples: the 3D gallery below replaces them
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        title = png.stem.replace("_", " ").capitalize()
        parts.append(f'<figure class="plot"><img alt="{_esc(title)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{_esc(title)} (<code>plots/{_esc(png.name)}</code>)</figcaption></figure>")
    return "".join(parts) or '<p class="note">No plots in <code>plots/</code>.</p>'


def _space_heading(name: str, total: int, shown: int, info: Mapping[str, Any], config: Mapping) -> str:
    sample = (info.get("sample") or {}) if isinstance(info, Mapping) else {}
    sampling = config.get("sampling", {}) or {}
    sampler = sample.get("sampler") or sampling.get("sampler")
    steps = sample.get("steps") or sampling.get("steps")
    nfe = sample.get("nfe")
    bits = [f"{total} samples" + (f", first {shown} shown" if shown < total else "")]
    if sampler:
        bits.append(f"{sampler}" + (f", {steps} steps" if steps else "") + (f", NFE {nfe}" if nfe else ""))
    return f'<h3 id="samples-{_esc(name)}">{_esc(name)} <small>{_esc("; ".join(bits))}</small></h3>'


def render(root: Path, limit: int = 24) -> str:
    """The page's HTML for the study at ``root`` (see :func:`write_html_report`)."""
    import yaml

    results = root / "results.json"
    if not results.exists():
        raise FileNotFoundError(f"{results} is missing: finish the study first "
                                f"(`l3dg run --resume {root}`)")
    from harness.results.provenance import read_results

    rows = read_results(results)[0]
    cfg_path = root / "config.yaml"
    config = (yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else {}) or {}
    record = _read_json(root / "record.json")
    spaces = [s for s in (config.get("spaces") or rows) if s in rows and s != "reference"]
    study = config.get("study", root.name)
    data = config.get("data", {}) or {}
    sampling = config.get("sampling", {}) or {}
    from harness.report.provenance import code_line, provenance_html

    meta = [f"Dataset <code>{_esc(data.get('dataset'))}</code>; suite "
            f"<code>{_esc((config.get('metrics') or {}).get('suite'))}</code>; "
            f"{_esc(sampling.get('n_samples'))} samples per space with <code>{_esc(sampling.get('sampler'))}</code> "
            f"({_esc(sampling.get('steps'))} steps); seed {_esc(config.get('seed'))}.",
            "Code: " + _esc(code_line(root, record, quote=("\x00", "\x01"))).replace(
                "\x00", "<code>").replace("\x01", "</code>") + "; "
            f"torch {_esc((record.get('versions') or {}).get('torch'))}; device "
            f"{'CUDA' if (record.get('device') or {}).get('cuda') else 'CPU'}; "
            f"written {time.strftime('%Y-%m-%d %H:%M')}."]
    molecules: dict[str, Any] = {}
    galleries = []
    for name in spaces:
        sdf = root / name / "samples.sdf"
        if not sdf.exists():
            galleries.append(f'<h3>{_esc(name)}</h3><p class="note">No <code>{_esc(name)}/samples.sdf</code>.</p>')
            continue
        items, total = gallery_molecules(sdf, limit)
        info = (rows[name].get("info") or {}) if isinstance(rows[name], Mapping) else {}
        if not info:
            info = _read_json(root / name / "state.json").get("info", {})
        cards = "".join(_card(name, item, molecules) for item in items)
        galleries.append(_space_heading(name, total, len(items), info, config)
                         + f'<div class="gallery">{cards}</div>')
    from harness.conditional.report import conditional_section
    from harness.report.markdown_html import markdown_html

    # the same section report.md prints (raw and MMFF-relaxed rows, both judges)
    conditional = markdown_html(conditional_section(root, spaces))
    payload = json.dumps(molecules, separators=(",", ":")).replace("</", "<\\/")
    css = (ASSETS / "report.css").read_text()
    js = (ASSETS / "viewer.js").read_text().replace("</script", "<\\/script")
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in
                  (("results", "Results"), ("conditional", "Conditional") if conditional else (None, None),
                   ("samples", "Samples"), ("plots", "Plots"), ("time", "Wall time")) if a)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>l3dg study {_esc(study)}</title>
<script>(function () {{
  function note(msg) {{
    var el = document.documentElement, old = el.getAttribute("data-l3dg-errors");
    el.setAttribute("data-l3dg-errors", (old ? old + " | " : "") + msg);
  }}
  window.addEventListener("error", function (e) {{ note(String(e.message || e)); }});
  window.addEventListener("unhandledrejection", function (e) {{ note("unhandled rejection: " + e.reason); }});
  var error = console.error;
  console.error = function () {{ note(Array.prototype.join.call(arguments, " ")); error.apply(console, arguments); }};
}})();</script>
<style>{css}</style></head>
<body>
<header><h1>Study <code>{_esc(study)}</code></h1>
{"".join(f'<p class="meta">{m}</p>' for m in meta)}
<nav>{nav}</nav></header>
<section id="results"><h2>Results</h2>
<p class="note">Scores of the decoders' raw output (no force-field relaxation). The
<em>reference</em> row scores the dataset's own test molecules (bonds perceived from
coordinates) with the same suite. Best space per column in bold; ↑/↓ higher/lower is better;
intervals in brackets where the study recorded them. Hover a cell for full precision.</p>
{results_table(rows, table_columns())}
{_row_errors(rows)}
<details><summary>All metrics</summary>{all_metrics_table(rows)}</details>
{"<h3>Controls</h3>" + controls if (controls := controls_table(rows)) else ""}
</section>
{f'<section id="conditional">{conditional}</section>' if conditional else ""}
<section id="samples"><h2>Samples</h2>
<p class="note">Decoded molecules as written to <code>&lt;space&gt;/samples.sdf</code>: bonds from the
decoder or perceived from coordinates; a sample without bonds is drawn as its atoms.
Drag (or focus and use the arrow keys) to rotate, double-click to reset.</p>
<div class="controls"><label><input type="checkbox" id="l3dg-spin" checked> auto-rotate</label>
<label><input type="checkbox" id="l3dg-hydrogens" checked> hydrogens</label></div>
{"".join(galleries) or '<p class="note">No samples.</p>'}
</section>
<section id="plots"><h2>Plots</h2><div class="plots">{_plots(root)}</div></section>
<section id="time"><h2>Wall time per stage (s)</h2>{time_table(rows, spaces)}
{provenance_html(root, record)}</section>
<footer>Written by <code>l3dg</code> from <code>{_esc(root)}</code>; self-contained, works offline.</footer>
<script type="application/json" id="l3dg-molecules">{payload}</script>
<script>{js}</script>
</body></html>
"""


def write_html_report(run_dir: str | Path, limit: int = 24) -> Path:
    """Write ``<run_dir>/report.html`` (atomically) from the study's files; returns its path.

    ``limit``: molecules per space in the gallery (the first ones of ``samples.sdf``).
    """
    from harness.core.io import atomic_write_text

    root = Path(run_dir)
    out = root / "report.html"
    atomic_write_text(out, render(root, limit))
    return out
