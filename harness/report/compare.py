"""``l3dg compare RUN_A RUN_B [...]``: the spaces common to several finished studies, side
by side, and the config keys in which the runs differ.

Reads only what each study wrote: ``results.json`` (rows ``{space: {"values": {metric:
value}, "seconds": {stage: s}}}``), ``config.yaml`` and ``record.json``. Intervals are used
where the results carry them, in any of these forms (absent: the verdict column says so):

* ``values["<metric>.ci"] = [low, high]`` (or ``{"low": .., "high": ..}``);
* ``values["<metric>.ci_low"]`` and ``values["<metric>.ci_high"]``;
* ``values["<metric>"] = {"value": v, "ci_low": lo, "ci_high": hi}``;
* ``row["intervals"]["<metric>"] = [low, high]``.

Two values are *within noise* when their intervals overlap, *differ* when they do not.
The provenance blocks (``results.json`` → ``provenance``, else ``record.json``) are compared
too: package versions, code commit, dataset and split checksums, hardware that differ.

Writes ``compare.md`` and ``compare.json`` (atomically) into ``--out`` (default: the
current directory) and prints the markdown.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.results.provenance import provenance_differences

INTERVAL_SUFFIXES = (".ci", ".ci_low", ".ci_high")

#: (metric key, label, higher is better) compared by default; ``--metrics all`` for every key
DEFAULT_METRICS: tuple[tuple[str, str, bool | None], ...] = (
    ("edm.validity", "valid", True),
    ("edm.uniqueness", "unique", True),
    ("edm.novelty", "novel", True),
    ("edm.atom_stability", "atom stab", True),
    ("edm.mol_stability", "mol stab", True),
    ("edm.valid_unique", "valid x unique", True),
    ("rdkit.valid_connected", "valid+conn (rdkit)", True),
    ("dist.atom_type_tv", "type TV", False),
    ("dist.bond_length_w1", "bond W1 (Å)", False),
    ("latent.recon_smiles_match", "recon match", True),
    ("latent.recon_rmsd", "recon RMSD (Å)", False),
    ("latent.dof", "dim", None),
    ("time.fit_space", "AE fit (s)", False),
    ("time.train_generator", "gen train (s)", False),
    ("time.sample", "sample (s)", False),
)


# -- reading values and intervals -----------------------------------------------------------
def _num(x: Any) -> float:
    try:
        return float(x) if x is not None and not isinstance(x, bool) else math.nan
    except (TypeError, ValueError):
        return math.nan


def _pair(x: Any) -> tuple[float, float] | None:
    if isinstance(x, Mapping):
        x = (x.get("low", x.get("lo", x.get("ci_low"))), x.get("high", x.get("hi", x.get("ci_high"))))
    if isinstance(x, (list, tuple)) and len(x) == 2:
        lo, hi = _num(x[0]), _num(x[1])
        if math.isfinite(lo) and math.isfinite(hi):
            return (min(lo, hi), max(lo, hi))
    return None


def value_of(values: Mapping[str, Any], key: str) -> float:
    """A metric's point value (NaN when absent or not a number)."""
    v = values.get(key)
    if isinstance(v, Mapping):
        v = v.get("value", v.get("mean", v.get("estimate")))
    return _num(v)


def interval_of(row: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """``(low, high)`` of a metric in a results row (``{"values": ..., "intervals": ...}``,
    or a bare values dict), or None when the row carries none."""
    values = row.get("values", row) if isinstance(row, Mapping) else {}
    v = values.get(key)
    if isinstance(v, Mapping):
        found = _pair(v.get("ci")) or _pair((v.get("ci_low"), v.get("ci_high")))
        if found:
            return found
    found = _pair(values.get(f"{key}.ci")) or _pair((values.get(f"{key}.ci_low"),
                                                     values.get(f"{key}.ci_high")))
    if found:
        return found
    intervals = row.get("intervals") if isinstance(row, Mapping) else None
    return _pair(intervals.get(key)) if isinstance(intervals, Mapping) else None


def metric_keys(values: Mapping[str, Any]) -> list[str]:
    """Metric keys of a values dict, without the interval companions."""
    return [k for k in values if not k.endswith(INTERVAL_SUFFIXES)]


def flat_values(row: Mapping[str, Any]) -> dict[str, float]:
    """Point values of a results row plus ``time.<stage>`` wall times (s)."""
    values = row.get("values", {}) or {}
    out = {k: value_of(values, k) for k in metric_keys(values)}
    seconds = row.get("seconds")
    for stage, sec in (seconds.items() if isinstance(seconds, Mapping) else ()):
        out[f"time.{stage}"] = _num(sec)
    return out


def noise_verdict(intervals: Sequence[tuple[float, float] | None],
                  values: Sequence[float]) -> str:
    """``"within noise"`` (all intervals overlap pairwise), ``"differ"`` (some pair does
    not), ``"same"`` (equal values), ``"no intervals"`` or ``"–"`` (a value missing)."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values) or len(values) < 2:
        return "–"
    if all(abs(v - finite[0]) <= 1e-12 * max(1.0, abs(finite[0])) for v in finite):
        return "same"
    if any(iv is None for iv in intervals):
        return "no intervals"
    lo = max(iv[0] for iv in intervals)
    hi = min(iv[1] for iv in intervals)
    return "within noise" if lo <= hi else "differ"


# -- reading runs ---------------------------------------------------------------------------
def load_run(run_dir: str | Path) -> dict[str, Any]:
    """``{"path", "rows", "config", "record", "provenance"}`` of a study directory; clear
    errors name the missing file."""
    import yaml

    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory (expected a study run directory, "
                                "e.g. runs/tiny)")
    results = root / "results.json"
    if not results.exists():
        raise FileNotFoundError(f"{results} is missing: the study has not finished (resume it "
                                f"with `l3dg run --resume {root}`)")
    from harness.results.provenance import read_results, run_provenance

    rows, _ = read_results(results)
    cfg_path = root / "config.yaml"
    config = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else {}
    rec_path = root / "record.json"
    record = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    return {"path": root, "rows": rows, "config": config or {}, "record": record,
            "provenance": run_provenance(root, record)}


def run_labels(paths: Sequence[Path]) -> list[str]:
    """Shortest distinct path suffixes: ``a/tiny``, ``b/tiny`` for two runs named tiny."""
    parts = [Path(p).resolve().parts for p in paths]
    for n in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-n:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a.b.c": value}`` (lists kept as values)."""
    if not isinstance(d, Mapping):
        return {prefix: d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def config_differences(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Flattened config keys (plus ``record.git.*``) whose values differ between runs; a key
    missing from a run shows as None."""
    flats = []
    for run in runs:
        flat = flatten(run["config"])
        git = (run.get("record") or {}).get("git") or {}
        for k in ("commit", "dirty"):
            if k in git:
                flat[f"record.git.{k}"] = git[k]
        flats.append(flat)
    keys = sorted(set().union(*flats)) if flats else []
    return {k: [f.get(k) for f in flats] for k in keys
            if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1}


# -- the comparison ---------------------------------------------------------------------------
def compare_runs(run_dirs: Sequence[str | Path], metrics: Sequence[str] | str | None = None
                 ) -> dict[str, Any]:
    """Compare finished studies.

    Args:
        run_dirs: two or more study directories.
        metrics: metric keys to compare (default :data:`DEFAULT_METRICS`); ``"all"`` for
            every key the runs have in common.
    Returns:
        ``{"runs": [{"label", "path", "study"}], "spaces": [...], "only_in": {label: [...]},
        "table": {space: [{"metric", "label", "higher_is_better", "values", "intervals",
        "delta", "verdict"}]}, "config_differences": {key: [v per run]},
        "provenance_differences": {key: [v per run]}}``; ``delta`` is last run minus first.
    """
    if len(run_dirs) < 2:
        raise ValueError("compare needs at least two run directories")
    runs = [load_run(p) for p in run_dirs]
    labels = run_labels([r["path"] for r in runs])
    names = [[n for n in r["rows"] if isinstance(r["rows"][n], Mapping)] for r in runs]
    common = [n for n in names[0] if all(n in other for other in names[1:])]
    only_in = {lab: [n for n in ns if n not in common] for lab, ns in zip(labels, names)}
    flats = [{n: flat_values(r["rows"][n]) for n in common} for r in runs]
    if metrics == "all":
        keys = sorted(set.intersection(*[set(f[n]) for f in flats for n in common])) if common else []
        chosen = [(k, k, None) for k in keys]
    elif metrics:
        known = {k: (k, lab, hib) for k, lab, hib in DEFAULT_METRICS}
        chosen = [known.get(k, (k, k, None)) for k in metrics]
    else:
        chosen = list(DEFAULT_METRICS)
    table: dict[str, list[dict[str, Any]]] = {}
    for name in common:
        entries = []
        for key, label, hib in chosen:
            vals = [f[name].get(key, math.nan) for f in flats]
            if not any(math.isfinite(v) for v in vals):
                continue
            ivs = [interval_of(r["rows"][name], key) for r in runs]
            delta = vals[-1] - vals[0] if math.isfinite(vals[0]) and math.isfinite(vals[-1]) else math.nan
            entries.append({"metric": key, "label": label, "higher_is_better": hib,
                            "values": vals, "intervals": ivs, "delta": delta,
                            "verdict": noise_verdict(ivs, vals) if not key.startswith("time.")
                            else "–"})
        table[name] = entries
    return {"runs": [{"label": lab, "path": str(r["path"]), "study": r["config"].get("study")}
                     for lab, r in zip(labels, runs)],
            "spaces": common, "only_in": only_in, "table": table,
            "config_differences": config_differences(runs),
            "provenance_differences": provenance_differences([r.get("provenance") or {} for r in runs])}


# -- output ---------------------------------------------------------------------------------
def fmt(x: float) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "–"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}"


def _cell(v: float, iv: tuple[float, float] | None) -> str:
    return fmt(v) + (f" [{fmt(iv[0])}, {fmt(iv[1])}]" if iv else "")


def _short(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) else v
    text = text.replace("|", "\\|")
    return text if len(text) <= 60 else "..." + text[-57:]   # paths differ at their ends


def to_markdown(result: Mapping[str, Any]) -> str:
    """The comparison as markdown: one table per common space, then the config keys."""
    labels = [r["label"] for r in result["runs"]]
    lines = ["# Comparison of " + ", ".join(f"`{lab}`" for lab in labels), ""]
    lines += [f"* `{r['label']}`: {r['path']}" for r in result["runs"]] + [""]
    if not result["spaces"]:
        lines += ["No space is common to all runs.", ""]
    any_interval = any(iv for rows in result["table"].values() for e in rows for iv in e["intervals"])
    delta_head = f"Δ ({labels[-1]} − {labels[0]})"
    for name in result["spaces"]:
        lines += [f"## {name}", "", "| metric | " + " | ".join(labels) + f" | {delta_head} | noise |",
                  "|---" * (len(labels) + 3) + "|"]
        for e in result["table"][name]:
            arrow = {True: " ↑", False: " ↓"}.get(e["higher_is_better"], "")
            cells = [_cell(v, iv) for v, iv in zip(e["values"], e["intervals"])]
            delta = fmt(e["delta"]) if math.isfinite(e["delta"]) else "–"
            if math.isfinite(e["delta"]) and e["delta"] > 0:
                delta = "+" + delta
            lines.append(f"| {e['label']}{arrow} | " + " | ".join(cells) + f" | {delta} | {e['verdict']} |")
        lines.append("")
    if not any_interval and result["spaces"]:
        lines += ["The results carry no intervals, so no difference above can be told from "
                  "seed noise; repeat seeds or use a study that records intervals.", ""]
    for lab, extra in result["only_in"].items():
        if extra:
            lines.append(f"Only in `{lab}`: {', '.join(extra)}")
    diffs = result["config_differences"]
    if lines[-1]:
        lines.append("")
    lines += ["## Config differences", ""]
    if diffs:
        lines += ["| key | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        lines += [f"| `{k}` | " + " | ".join(_short(v) for v in vals) + " |" for k, vals in diffs.items()]
    else:
        lines.append("The configs are identical.")
    lines += ["", "## Provenance differences", ""]
    prov = result.get("provenance_differences") or {}
    if prov:
        lines += ["Package versions, code commit, dataset and split checksums and hardware "
                  "that differ (`results.json` → `provenance`):", "",
                  "| key | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        lines += [f"| `{k}` | " + " | ".join(_short(v) for v in vals) + " |" for k, vals in prov.items()]
    else:
        lines.append("Same package versions, code, dataset checksums and hardware "
                     "(as far as the runs recorded them).")
    return "\n".join(lines) + "\n"


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path = ".",
                     metrics: Sequence[str] | str | None = None) -> tuple[Path, Path, str]:
    """Compare and write ``compare.md`` / ``compare.json`` into ``out`` (a directory, or a
    path ending in ``.md`` whose stem names both files); returns (md, json, markdown)."""
    from harness.core.io import atomic_write_json, atomic_write_text

    result = compare_runs(run_dirs, metrics)
    out = Path(out)
    if out.suffix == ".md":
        md_path, json_path = out, out.with_suffix(".json")
    else:
        md_path, json_path = out / "compare.md", out / "compare.json"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    text = to_markdown(result)
    atomic_write_text(md_path, text)
    atomic_write_json(json_path, _json_safe(result))
    return md_path, json_path, text


# -- command line ---------------------------------------------------------------------------
def add_parser(sub) -> None:
    """Register ``l3dg compare`` on the CLI's sub-parsers."""
    p = sub.add_parser("compare", help="compare finished studies side by side (common spaces, "
                                       "noise verdicts where intervals exist, config differences)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="two or more study directories")
    p.add_argument("--out", default=".", help="directory for compare.md + compare.json, or a "
                                              "path ending in .md (default: current directory)")
    p.add_argument("--metrics", help="comma-separated metric keys, or 'all' "
                                     "(default: the main table's metrics)")


def cli_main(args) -> int:
    """``l3dg compare``: print the markdown, write both files."""
    metrics = None
    if args.metrics:
        metrics = "all" if args.metrics == "all" else [m.strip() for m in args.metrics.split(",") if m.strip()]
    md, js, text = write_comparison(args.runs, out=args.out, metrics=metrics)
    print(text)
    print(f"wrote {md} and {js}")
    return 0
