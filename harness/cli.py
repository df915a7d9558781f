"""The ``l3dg`` command line.

Start-up stays light (no torch or Lightning import) so ``l3dg --help`` answers at once; each
sub-command imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Callable

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn
    return deco


def _plugins(args: argparse.Namespace) -> None:
    """Import user component files/modules named with --plugin before anything else."""
    if getattr(args, "plugin", None):
        from harness.core.registry import load_plugin

        for spec in args.plugin:
            load_plugin(spec)


# -- list -----------------------------------------------------------------------------------
@command("list")
def cmd_list(args: argparse.Namespace) -> int:
    from harness.core.registry import REGISTRIES, load_builtins

    load_builtins()
    _plugins(args)
    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        if kind not in REGISTRIES:
            print(f"unknown kind {kind!r}; kinds: {', '.join(REGISTRIES)}", file=sys.stderr)
            return 2
        reg = REGISTRIES[kind]
        names = reg.names()
        print(f"{kind} ({len(names)}):")
        for name in names:
            obj = reg.get(name)
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            summary = doc[0] if doc else ""
            print(f"  {name:<22} {summary}")
        if not names:
            print("  (none)")
    return 0


# -- data -----------------------------------------------------------------------------------
def _format_histogram(hist: dict[int, int], width: int = 40) -> str:
    top = max(hist.values()) if hist else 1
    return "\n".join(f"  {k:>4} | {'#' * max(1, round(width * v / top)):<{width}} {v}"
                     for k, v in sorted(hist.items()))


@command("data")
def cmd_data(args: argparse.Namespace) -> int:
    from harness.cli_inputs import require_positive
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
    from harness.cli_inputs import require_positive
    from harness.evaluate import evaluate_source, format_table, table_rows

    require_positive(args, "limit")
    reference = None if str(args.reference).lower() in ("none", "") else args.reference
    result = evaluate_source(args.source, suite=args.suite, reference=reference, out=args.out,
                             limit=args.limit, progress=not args.quiet)
    print(format_table(table_rows(result), result.get("higher_is_better")))
    meta = result.get("metadata", {})
    skipped = meta.get("skipped") or []
    n_skipped = (meta.get("counts") or {}).get("skipped", len(skipped))
    if n_skipped:
        print(f"\nskipped {n_skipped} record(s) (listed in the JSON metadata); first: {skipped[0]}")
    degenerate = (meta.get("source") or {}).get("degenerate_geometry") or []
    if degenerate:
        print(f"\n{len(degenerate)} molecule(s) with impossible geometry scored as invalid; "
              f"first: {degenerate[0]}")
    if args.out:
        print(f"\nwrote {args.out}")
    return 0


def _eval_condition(args: argparse.Namespace) -> int:
    """``l3dg eval FILE --condition PROP``: property MAE of a conditional SDF (harness/conditional.py)."""
    from harness.conditional import conditional_table, evaluate_sdf, get_predictor, load_predictor_data
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
    from harness.conditional import cached_predictors, get_predictor, load_predictor_data, predictor_table
    from metrics.conditional import CONDITIONAL_PROPERTIES

    if args.action == "list":
        print(predictor_table(cached_predictors(args.cache_dir)))
        return 0
    data = load_predictor_data(args.data)
    props = args.properties or list(CONDITIONAL_PROPERTIES)
    metas = [get_predictor(p, data, size=args.size, overrides=_parse_overrides(args.set or []),
                           cache_dir=args.cache_dir, retrain=args.retrain,
                           progress=not args.quiet).meta for p in props]
    print(predictor_table(metas))
    return 0


# -- check-space ----------------------------------------------------------------------------
@command("check-space")
def cmd_check_space(args: argparse.Namespace) -> int:
    from harness.cli_inputs import load_space_plugin
    from harness.conformance import run_conformance
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
    options = _parse_overrides(args.option or [])
    ok = True
    for name in names:
        report = run_conformance(SPACES.get(name), options=options, fit=not args.no_fit,
                                 progress=args.progress)
        print(report.table())
        ok &= report.passed
    return 0 if ok else 1


def _parse_overrides(items: list[str]) -> dict:
    """``key=value`` strings -> dict with YAML-typed values (``3`` -> int, ``true`` -> bool)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


# -- studies --------------------------------------------------------------------------------
@command("run")
def cmd_run(args: argparse.Namespace) -> int:
    from harness.report import results_table
    from harness.study import Study

    if args.resume:
        # with --resume there is no positional config: every positional is an override
        overrides = ([args.config] if args.config else []) + list(args.overrides)
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ValueError(f"with --resume every argument must be key=value; got {bad[0]!r} "
                             "(the config comes from the run directory)")
        study = Study.resume(args.resume, overrides, force=args.force)
    else:
        source = args.config or "default"
        if "=" in source:  # `l3dg run key=value` with the default preset
            args.overrides.insert(0, source)
            source = "default"
        study = Study.from_source(source, args.overrides, force=args.force)
    print(f"study {study.config.study}: {', '.join(study.config.spaces)} -> {study.root}")
    from harness.run_guard import exit_nonzero_on_sigterm

    with exit_nonzero_on_sigterm():
        rows = study.run()
    print()
    print(results_table(rows, terminal=True))
    print(f"\nreport: {study.root / 'report.md'}")
    return _report_row_errors(rows)


@command("config")
def cmd_config(args: argparse.Namespace) -> int:
    from harness.config import load_config
    from harness.config_view import format_view, resolved_view

    view = resolved_view(load_config(args.preset, args.overrides))
    print(json.dumps(view, indent=2) if args.json else format_view(view), end="\n" if args.json else "")
    return 0


@command("sample")
def cmd_sample(args: argparse.Namespace) -> int:
    from harness.cli_inputs import require_positive
    from harness.study import Study

    require_positive(args, "n", "steps")
    study = Study.resume(args.run_dir)
    names = [args.space] if args.space else list(study.config.spaces)
    for name in names:
        from harness.config_rules import safe_name

        out = safe_name(args.out or f"samples_{args.sampler or study.config.sampling.sampler}_{args.n}",
                        "--out")
        if out == "samples":
            raise ValueError("--out samples would overwrite the study's scored samples; choose another name")
        info = study.sample_more(name, n=args.n, sampler=args.sampler, steps=args.steps,
                                 out_name=out)
        print(f"{name}: {info['n']} molecules -> {study.root / name / (out + '.sdf')} "
              f"({info['seconds_sampling']:.1f} s sampling, {info['seconds_decoding']:.1f} s decoding)")
    return 0


@command("report")
def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import results_table, write_report
    from harness.results import collect_results, read_run_config

    from pathlib import Path

    read_run_config(Path(args.run_dir))    # a clear error for a non-study / damaged directory
    path = write_report(args.run_dir)
    rows = collect_results(path.parent)
    print(results_table(rows, terminal=True))
    print(f"\nreport: {path}")
    return _report_row_errors(rows)


def _report_row_errors(rows) -> int:
    """Print missing/damaged results (they are never silently dropped); 1 if any."""
    from harness.results import row_errors

    errors = row_errors(rows)
    for e in errors:
        print(f"l3dg: error: {e} (rerun with `l3dg run --resume RUN_DIR` to redo it)", file=sys.stderr)
    return 1 if errors else 0


# -- sweeps ---------------------------------------------------------------------------------
@command("sweep")
def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.sweep import run_sweep

    if args.study_name:
        from harness.config_rules import safe_name

        safe_name(args.study_name, "--study-name")
    study, url = run_sweep(args.preset, args.overrides, storage=args.storage, n_trials=args.n_trials,
                           study_name=args.study_name, timeout=args.timeout, seed=args.seed)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    if study.trials and not done:
        failed = [t for t in study.trials if t.state.name == "FAIL"]
        reason = failed[-1].user_attrs.get("error", "see the log above") if failed else "none finished"
        print(f"l3dg sweep: error: no trial of {study.study_name} completed ({len(failed)} failed; "
              f"last: {reason})", file=sys.stderr)
        return 1
    print(f"sweep {study.study_name}: {len(study.trials)} trials in storage ({len(done)} complete)")
    print(f"storage: {url}")
    print(f"report:  l3dg sweep-report {study.study_name} --storage {url}")
    return 0


@command("sweep-report")
def cmd_sweep_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.sweep_report import write_sweep_report

    storage = args.storage or f"sqlite:///{(Path('runs') / 'sweeps' / (args.study + '.db')).resolve()}"
    path = write_sweep_report(args.study, storage)
    print(path.read_text())
    print(f"report: {path}")
    return 0


@command("compare")
def cmd_compare(args: argparse.Namespace) -> int:
    from harness.compare import cli_main

    return cli_main(args)


# -- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l3dg",
        description="Benchmark harness for 3D molecular graph generation: in what space "
                    "should 3D graphs be diffused?",
        epilog="Run 'l3dg COMMAND --help' for a command's options. Quick start: make run.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list registered components by kind")
    p.add_argument("kind", nargs="?", help="datasets, spaces, denoisers, samplers, schedules, "
                                           "metrics or suites (default: all)")
    p.add_argument("--plugin", action="append", metavar="FILE_OR_MODULE",
                   help="import a user component file/module first (repeatable)")

    p = sub.add_parser("data", help="preprocess (or load) a dataset and print statistics")
    p.add_argument("dataset", help="registry name, e.g. qm9 or sdf")
    p.add_argument("--subset", type=int, help="keep N molecules (deterministic, nested)")
    p.add_argument("--remove-h", action="store_true", help="drop hydrogens")
    p.add_argument("--path", help="file or folder, for the sdf dataset")
    p.add_argument("--cache-dir", help="preprocessing cache root (default: user cache dir, "
                                       "or $L3DG_CACHE_DIR)")
    p.add_argument("--rebuild", action="store_true", help="ignore the cache and rebuild")
    p.add_argument("--json", action="store_true", help="print statistics as JSON")

    p = sub.add_parser("eval", help="score an SDF/XYZ file or a dataset split with a metric suite")
    p.add_argument("source", help="molecules: file.sdf, file.xyz, a folder, or a split like qm9:test")
    p.add_argument("--suite", default="qm9/v1", help="suite name (l3dg list suites); default qm9/v1")
    p.add_argument("--reference", default="qm9:train",
                   help="reference split for novelty / distributions / FCD (none to skip)")
    p.add_argument("--out", help="write metrics JSON here (atomically)")
    p.add_argument("--limit", type=int, help="score only the first N molecules")
    p.add_argument("--quiet", action="store_true", help="no timing lines on stderr")
    p.add_argument("--condition", metavar="PROPERTY",
                   help="score a conditional SDF instead: MAE between the property predictor on "
                        "each molecule and its requested value (SD field PROPERTY)")
    p.add_argument("--field", help="with --condition: SD field holding the requested value")
    p.add_argument("--field-unit", default="dataset", choices=("dataset", "report"),
                   help="with --condition: the field's unit: dataset (QM9: Ha) or report (meV)")
    p.add_argument("--predictor-size", default="cpu", help="with --condition: cpu, edm or tiny")
    p.add_argument("--predictor-data", help="with --condition: predictor data (default qm9)")
    p.add_argument("--cache-dir", help="with --condition: cache root of the predictors")

    p = sub.add_parser("predictor", help="train (or list) the cached property predictors of "
                                         "conditional generation (EDM protocol)")
    p.add_argument("action", choices=("train", "list"))
    p.add_argument("properties", nargs="*", help="alpha gap homo lumo mu Cv (default: all six)")
    p.add_argument("--size", default="cpu", help="cpu, edm or tiny (harness/conditional.py)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="predictor config override, e.g. epochs=100 (repeatable)")
    p.add_argument("--data", help="qm9 (default) or an SDF with QM9 property fields")
    p.add_argument("--cache-dir", help="cache root (default $L3DG_CACHE_DIR or the user cache)")
    p.add_argument("--retrain", action="store_true", help="ignore a cached predictor")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("check-space", help="run the space conformance checks on a built-in or "
                                           "user space and print a pass/fail table")
    p.add_argument("space", help="registered name, a .py file, or a module that registers spaces")
    p.add_argument("--name", help="check only this space of the file")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="space option (repeatable)")
    p.add_argument("--no-fit", action="store_true", help="skip the short fit of trainable spaces")
    p.add_argument("--progress", action="store_true", help="show training progress bars")

    p = sub.add_parser("run", help="run (or resume) a comparative study: fit spaces, train "
                                   "generators, sample, score, report")
    p.add_argument("config", nargs="?", help="preset name (default, tiny, qm9-cpu-hours, "
                                             "qm9-paper) or a YAML file; default: default")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted config overrides, e.g. generator.max_steps=2000 spaces.flat.width=64")
    p.add_argument("--resume", metavar="RUN_DIR", help="resume a killed study, skipping finished stages")
    p.add_argument("--force", action="store_true",
                   help="when the config changed since results were written, redo the affected "
                        "stages (default: refuse, so results are never silently mixed)")

    p = sub.add_parser("config", help="print a preset's fully resolved config and each space's "
                                      "effective generator config")
    p.add_argument("preset", help="preset name or YAML file")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.add_argument("--json", action="store_true", help="JSON instead of YAML")

    p = sub.add_parser("sample", help="sample more molecules from a finished study's generators")
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=100, help="molecules per space")
    p.add_argument("--space", help="only this space")
    p.add_argument("--sampler", help="ddpm, ddim, dpm_solver++ (default: the study's)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the study's)")
    p.add_argument("--out", help="output name (default samples_<sampler>_<n>)")

    p = sub.add_parser("report", help="(re)write report.md and plots of a study directory")
    p.add_argument("run_dir")

    p = sub.add_parser("sweep", help="run Optuna trials over the latent-space factors "
                                     "(start several workers on one --storage to scale out)")
    p.add_argument("preset", help="preset name or YAML file (its 'sweep' section is the search space)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///runs/sweeps/<name>.db); "
                                     "postgresql://... for workers on many machines")
    p.add_argument("--n-trials", type=int, default=10, help="trials run by this worker")
    p.add_argument("--study-name", help="default: <study>-sweep")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--seed", type=int, help="sampler seed (default: random, so workers differ)")

    p = sub.add_parser("sweep-report", help="objective vs factors, importances, Pareto front, "
                                            "rank-correlation test of the paper's claim")
    p.add_argument("study", help="sweep (Optuna study) name")
    p.add_argument("--storage", help="storage URL (default: sqlite:///runs/sweeps/<study>.db)")

    from harness.compare import add_parser as add_compare_parser
    from harness.quiet import add_verbosity_flags

    add_compare_parser(sub)
    add_verbosity_flags(parser, sub)  # -q/-v before or after the sub-command
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    for sub_parser in sub.choices.values():  # also after the sub-command
        sub_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from harness.quiet import configure, level_from_args

    configure(level_from_args(args))  # library noise off, log format, progress-view level
    if not args.command:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args) or 0
    except (KeyError, ValueError, TypeError, OSError, ImportError) as err:  # ConfigError: ValueError
        if args.verbose or args.debug:
            raise
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        message = " ".join(line.strip() for line in message.splitlines() if line.strip())
        print(f"l3dg {args.command}: error: {message or type(err).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
