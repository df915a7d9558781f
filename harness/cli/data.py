"""``l3dg`` commands about data and metrics: list, data, eval, predictor, check-space."""
from __future__ import annotations

import argparse
import json
import sys
import time

from harness.cli.registry import command, parse_overrides, plugins


# -- list -----------------------------------------------------------------------------------
@command("list")
def cmd_list(args: argparse.Namespace) -> int:
    from harness.core.registry import REGISTRIES, load_builtins

    load_builtins()
    plugins(args)
    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        if kind not in REGISTRIES:
            print(f"unknown kind {kind!r}; kinds: {', '.join(REGISTRIES)}", file=sys.stderr)
            return 2
        reg = REGISTRIES[kind]
        names = reg.names()
        print(f"{kind} ({len(names)}):")
        for name in names:
            print(f"  {name:<22} {_summary(reg.get(name))}")
        if not names:
            print("  (none)")
    return 0


def _summary(obj) -> str:
    """One line per component: a suite's metrics, a family's defaults, else the first line
    of its docstring."""
    members = getattr(obj, "members", None)
    if members is not None:                              # a suite
        parts = [m.metric + "".join(f" {k}={v}" for k, v in m.options if v is not None
                                    and k in ("profile", "max_molecules", "mmff_max_molecules"))
                 for m in members]
        return f"{', '.join(parts)} — {obj.description}"
    if not isinstance(obj, type) and hasattr(obj, "summary") and hasattr(obj, "describe"):
        d = obj.describe()                               # a generator family
        return (f"{d['summary']}; section {d['section']}, default {d['default sampler']}, "
                f"NFE sampler {d['NFE sampler']}; samplers: {d['samplers']}")
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    family = getattr(obj, "family", None) if isinstance(obj, type) else None
    return (f"[{family}] " if isinstance(family, str) and hasattr(obj, "nfe_rule") else "") \
        + (doc[0] if doc else "")


def subset_notes(meta: dict) -> list[str]:
    """One line per metric family that scored a capped subset (its rule, size and seed)."""
    lines = []
    for name, fam in (meta.get("families") or {}).items():
        sub = fam.get("subset") if isinstance(fam, dict) else None
        if not isinstance(sub, dict) or sub.get("rule", sub.get("subset")) in (None, "all"):
            continue
        rule = sub.get("rule", sub.get("subset"))
        size = sub.get("size", sub.get("descriptors_on"))
        of = sub.get("of", sub.get("of_valid", sub.get("valid")))
        how = f"a seeded random subset (seed {sub.get('seed', 0)})" if rule == "random" else "the first ones"
        lines.append(f"note: {name} scored on {size} of {of} molecules, {how}")
    return lines


# -- data -----------------------------------------------------------------------------------
def _format_histogram(hist: dict[int, int], width: int = 40) -> str:
    top = max(hist.values()) if hist else 1
    return "\n".join(f"  {k:>4} | {'#' * max(1, round(width * v / top)):<{width}} {v}"
                     for k, v in sorted(hist.items()))


@command("data")
def cmd_data(args: argparse.Namespace) -> int:
    from harness.cli.inputs import require_positive
    from harness.core.data import load_dataset

    require_positive(args, "subset")
    if args.dataset == "sdf" and not args.path:
        raise ValueError("the sdf dataset needs --path FILE_OR_FOLDER")
    options = {}
    if args.subset is not None:
        options["subset"] = args.subset
    if args.remove_h:
        options["remove_h"] = True
    if args.cache_dir:
        options["cache_dir"] = args.cache_dir
    if args.rebuild:
        options["rebuild"] = True
    if args.path:
        options["path"] = args.path
    t0 = time.perf_counter()
    ds = load_dataset(args.dataset, **options)
    seconds = time.perf_counter() - t0
    stats = ds.stats()
    stats["seconds"] = round(seconds, 2)
    stats["info"] = ds.info
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
        return 0
    print(f"dataset      {stats['name']}  ({'from cache' if ds.info.get('from_cache') else 'built'}"
          f" in {seconds:.2f} s)")
    if ds.info.get("cache"):
        print(f"cache        {ds.info['cache']}")
    print(f"molecules    {stats['molecules']}")
    for name, n in stats["splits"].items():
        print(f"  {name:<10} {n}")
    if ds.info.get("split_checksum"):
        print(f"split sha    {ds.info['split_checksum']}")
    apm = stats["atoms_per_molecule"]
    print(f"atoms/mol    min {apm['min']}  mean {apm['mean']:.2f}  max {apm['max']}")
    print("elements     " + "  ".join(f"{k}:{v}" for k, v in stats["element_counts"].items()))
    print(f"bond-perception failures  {stats['bond_perception_failures']}")
    if "perceived_smiles_disagree_with_dataset" in ds.info:
        print(f"perceived SMILES != dataset SMILES  {ds.info['perceived_smiles_disagree_with_dataset']}"
              " (mostly zwitterions / resonance forms)")
    if ds.info.get("skipped"):
        print(f"skipped records  {len(ds.info['skipped'])}")
    print("atom-count histogram")
    print(_format_histogram(stats["atom_count_histogram"]))
    return 0


# -- eval -----------------------------------------------------------------------------------
@command("eval")
def cmd_eval(args: argparse.Namespace) -> int:
    if args.condition:
        return _eval_condition(args)
    from harness.cli.inputs import require_positive
    from harness.evaluate import evaluate_source, format_table, table_rows

    require_positive(args, "limit")
    reference = None if str(args.reference).lower() in ("none", "") else args.reference
    result = evaluate_source(args.source, suite=args.suite, reference=reference, out=args.out,
                             limit=args.limit, progress=not args.quiet)
    print(format_table(table_rows(result), result.get("higher_is_better")))
    meta = result.get("metadata", {})
    for line in subset_notes(meta):
        print(line)
    skipped = meta.get("skipped") or []
    n_skipped = (meta.get("counts") or {}).get("skipped", len(skipped))
    if n_skipped:
        print(f"\nskipped {n_skipped} record(s) (listed in the JSON metadata); first: {skipped[0]}")
    ignored = (meta.get("source") or {}).get("ignored_files") or []
    if ignored:
        print(f"\nnot read: {len(ignored)} entr{'y' if len(ignored) == 1 else 'ies'} of the folder")
        for entry in ignored:
            print(f"  {entry['path']}: {entry['reason']}")
    degenerate = (meta.get("source") or {}).get("degenerate_geometry") or []
    if degenerate:
        print(f"\n{len(degenerate)} molecule(s) with impossible geometry excluded from every "
              f"metric (counted in input.scored_fraction); first: {degenerate[0]}")
    if args.out:
        print(f"\nwrote {args.out}")
    if args.leaderboard:
        from harness.report.leaderboard import eval_row, write_checked

        reference_ds = None
        if reference:
            from harness.core.data import load_source

            reference_ds = load_source(reference)
        write_checked([eval_row(result, reference_ds)], args.leaderboard)
        print(f"wrote the leaderboard row to {args.leaderboard}")
    return 0


def _eval_condition(args: argparse.Namespace) -> int:
    """``l3dg eval FILE --condition PROP``: property MAE of a conditional SDF (harness/conditional/protocol.py)."""
    from harness.conditional.protocol import (
        evaluate_sdf,
        get_predictor,
        load_predictor_data,
    )
    from harness.conditional.report import conditional_table
    from harness.core.io import atomic_write_json

    predictor = get_predictor(args.condition, load_predictor_data(args.predictor_data),
                              size=args.predictor_size, cache_dir=args.cache_dir,
                              progress=not args.quiet)
    result = evaluate_sdf(args.source, args.condition, predictor, args.field, args.field_unit)
    s = result["report"]
    print(conditional_table({str(args.source): {args.condition: result}}))
    print(f"\n{s['n']} molecules, {s['n_unscorable']} unscorable, validity {s['validity']:.3f}, "
          f"MAE over valid only {s['mae_valid']:.4g} {result['report_unit']}; predictor "
          f"{predictor.path}")
    if args.out:
        atomic_write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0


# -- conditional-generation predictors --------------------------------------------------------
@command("predictor")
def cmd_predictor(args: argparse.Namespace) -> int:
    from harness.conditional.protocol import (
        cached_predictors,
        get_predictor,
        load_predictor_data,
    )
    from harness.conditional.report import predictor_table
    from metrics.conditional import CONDITIONAL_PROPERTIES

    if args.action == "list":
        print(predictor_table(cached_predictors(args.cache_dir)))
        return 0
    data = load_predictor_data(args.data)
    props = args.properties or list(CONDITIONAL_PROPERTIES)
    metas = [get_predictor(p, data, size=args.size, overrides=parse_overrides(args.set or []),
                           cache_dir=args.cache_dir, retrain=args.retrain,
                           progress=not args.quiet, family=args.judge).meta for p in props]
    print(predictor_table(metas))
    return 0


# -- check-space ----------------------------------------------------------------------------
@command("check-space")
def cmd_check_space(args: argparse.Namespace) -> int:
    from harness.checks.spaces import run_conformance
    from harness.cli.inputs import load_space_plugin
    from harness.core.registry import SPACES, load_builtins

    load_builtins()
    target = args.space
    before = {n: SPACES.get(n) for n in SPACES.names()}
    if target in before and not target.endswith(".py"):
        names = [target]
    else:
        load_space_plugin(target, sorted(before))
        names = [n for n in SPACES.names() if before.get(n) is not SPACES.get(n)]
        if args.name:
            names = [args.name]
        if not names:
            print(f"l3dg check-space: {target} registered no space (decorate a Space subclass "
                  "with @SPACES.register('name'))", file=sys.stderr)
            return 2
    options = parse_overrides(args.option or [])
    ok = True
    for name in names:
        report = run_conformance(SPACES.get(name), options=options, fit=not args.no_fit,
                                 progress=args.progress)
        print(report.table())
        ok &= report.passed
    return 0 if ok else 1
