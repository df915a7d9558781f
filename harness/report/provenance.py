"""The report's provenance: the ``Code:`` line and a "Provenance" section (markdown and HTML).

The ``Code:`` line names the code that produced the run (``record.json`` / ``results.json``):
``git <commit12> (dirty)`` from a checkout, ``l3dg <version>`` from an installed package.
A run whose record names no commit (an imported model, a run written before records had
one) is labelled with the code that wrote the report, saying so; it is never
``git unknown`` inside a checkout.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping

from harness.results.provenance import run_provenance

#: packages shown in the report's provenance table (all are in the JSON)
SHOWN_PACKAGES = ("l3dg", "rdkit", "torch", "pytorch-lightning", "lightning", "e3nn", "optuna",
                  "tblite", "posebusters")


def describe_code(code: Mapping[str, Any] | None, quote: tuple[str, str] = ("", "")) -> str | None:
    """``git 0123456789ab (dirty)`` / ``git 0123456789ab`` / ``l3dg 0.1.0`` (the commit or
    version wrapped in ``quote``); None when the mapping names neither."""
    code = code or {}
    left, right = quote
    if code.get("commit"):
        dirty = {True: " (dirty)", None: " (dirty state unknown)"}.get(code.get("dirty"), "")
        return f"git {left}{str(code['commit'])[:12]}{right}{dirty}"
    if code.get("l3dg"):
        return f"l3dg {left}{code['l3dg']}{right}"
    return None


def code_line(root: Path, record: Mapping[str, Any] | None = None,
              quote: tuple[str, str] = ("`", "`")) -> str:
    """What produced the run at ``root``, for the report's ``Code:`` line (see the module
    docstring)."""
    from harness.results.records import code_state

    recorded = describe_code(run_provenance(root, record).get("code"), quote)
    if recorded:
        return recorded
    now = describe_code(code_state(), quote)
    return f"{now} (the code writing this report; the run recorded none)" if now else "l3dg (no version)"


def _rows(prov: Mapping[str, Any]) -> list[tuple[str, str]]:
    packages = prov.get("packages") or {}
    hw = prov.get("hardware") or {}
    data = prov.get("dataset") or {}
    rows = [("code", describe_code(prov.get("code")) or "–"),
            ("packages", ", ".join(f"{k} {packages[k]}" for k in SHOWN_PACKAGES
                                   if packages.get(k)) or "–")]
    if hw:
        rows.append(("hardware", f"{hw.get('cpu', '?')}; {hw.get('cores', '?')} cores "
                                 f"({hw.get('cores_usable', '?')} usable); torch threads "
                                 f"{hw.get('threads', '?')}; OMP_NUM_THREADS "
                                 f"{hw.get('omp_num_threads') or 'unset'}"
                                 + ("; CUDA " + ", ".join(hw.get("gpus") or []) if hw.get("cuda") else "")))
    if data:
        splits = "; ".join(f"{k} {v.get('molecules')} mol. `{v.get('checksum')}`"
                           for k, v in (data.get("splits") or {}).items())
        rows.append(("dataset", f"{data.get('name')} from {data.get('source')}; checksum "
                                f"`{data.get('checksum')}`; split indices `{data.get('split_indices')}`"
                                + (f"; {splits}" if splits else "")))
    for space, fams in (prov.get("bonds") or {}).items():
        if isinstance(fams, Mapping) and fams and not all(isinstance(v, Mapping) for v in fams.values()):
            rows.append((f"bonds: {space}", "; ".join(f"{k}: {v}" for k, v in fams.items())))
    for kind, note in (prov.get("intervals") or {}).items():
        rows.append((f"± ({kind})", note))
    return rows


def provenance_section(root: Path, record: Mapping[str, Any] | None = None) -> list[str]:
    """Markdown lines of the report's "Provenance" section (empty when nothing is known)."""
    prov = run_provenance(root, record)
    if not prov:
        return []
    lines = ["## Provenance", "",
             "What produced these numbers (all of it in `results.json` under `provenance`; "
             "every artefact's sha256 in `manifest.json`).", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in _rows(prov)]
    return lines + [""]


def provenance_html(root: Path, record: Mapping[str, Any] | None = None) -> str:
    """The same as a collapsed HTML table (empty string when nothing is known)."""
    prov = run_provenance(root, record)
    if not prov:
        return ""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v.replace('`', ''))}</td></tr>"
                   for k, v in _rows(prov))
    return f"<details><summary>Provenance</summary><table>{body}</table></details>"
