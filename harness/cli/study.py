"""``l3dg`` commands about studies and sweeps: run, config, sample, report, sweep,
sweep-report, compare."""
from __future__ import annotations

import argparse
import json
import sys

from harness.cli.registry import command


# -- studies --------------------------------------------------------------------------------
@command("run")
def cmd_run(args: argparse.Namespace) -> int:
    from harness.report.write import results_table
    from harness.study.runner import Study

    if args.resume:
        # with --resume there is no positional config: every positional is an override
        overrides = ([args.config] if args.config else []) + list(args.overrides)
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ValueError(f"with --resume every argument must be key=value; got {bad[0]!r} "
                             "(the config comes from the run directory)")
        study = Study.resume(args.resume, overrides, force=args.force)
        from harness.results.guard import check_saved_spaces

        check_saved_spaces(study.root, list(study.config.spaces), study.config.seeds)
    else:
        source = args.config or "default"
        if "=" in source:  # `l3dg run key=value` with the default preset
            args.overrides.insert(0, source)
            source = "default"
        study = Study.from_source(source, args.overrides, force=args.force)
    print(f"study {study.config.study}: {', '.join(study.config.spaces)} -> {study.root}")
    from harness.results.guard import exit_nonzero_on_sigterm

    with exit_nonzero_on_sigterm():
        rows = study.run()
    print()
    print(results_table(rows, terminal=True))
    from harness.conditional.report import conditional_section

    cond = conditional_section(study.root, list(study.config.spaces))
    if cond:                      # a conditional study: its MAE table with the baselines
        print("\n" + "\n".join(line for line in cond if not line.startswith("![")).rstrip())
    print(f"\nreport: {study.root / 'report.md'}  (and report.html)")
    return _report_row_errors(rows)


@command("config")
def cmd_config(args: argparse.Namespace) -> int:
    from harness.config import load_config
    from harness.config.view import format_view, resolved_view

    view = resolved_view(load_config(args.preset, args.overrides))
    print(json.dumps(view, indent=2) if args.json else format_view(view), end="\n" if args.json else "")
    return 0


@command("sample")
def cmd_sample(args: argparse.Namespace) -> int:
    from harness.cli.inputs import require_positive
    from harness.study.runner import Study

    require_positive(args, "n", "steps")
    study = Study.resume(args.run_dir)
    spaces = list(study.config.spaces)
    if args.space and args.space not in spaces:
        raise ValueError(f"--space {args.space}: no such space in {study.root} (its spaces: "
                         f"{', '.join(spaces)})")
    names = [args.space] if args.space else spaces
    from harness.config.rules import safe_name
    from spaces.base import read_space_weights

    out = safe_name(args.out or f"samples_{args.sampler or study.config.sampling.sampler}_{args.n}",
                    "--out")
    if out == "samples":
        raise ValueError("--out samples would overwrite the study's scored samples; choose another name")
    for name in names:        # every space and generator readable before anything is written
        read_space_weights(study.root / name / "space")
        study.final_checkpoint(study.root / name)
    for name in names:
        info = study.sample_more(name, n=args.n, sampler=args.sampler, steps=args.steps,
                                 out_name=out)
        print(f"{name}: {info['n']} molecules -> {study.root / name / (out + '.sdf')} "
              f"({info['seconds_sampling']:.1f} s sampling, {info['seconds_decoding']:.1f} s decoding)")
    return 0


@command("report")
def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.report.write import results_table, write_report
    from harness.results.state import collect_results, read_run_config

    read_run_config(Path(args.run_dir))    # a clear error for a non-study / damaged directory
    from harness.report.html import write_html_report

    from harness.results.manifest import write_manifest

    path = write_report(args.run_dir)
    html = write_html_report(args.run_dir)
    write_manifest(args.run_dir)        # after the reports: they are artefacts too
    rows = collect_results(path.parent)
    print(results_table(rows, terminal=True))
    print(f"\nreport: {path}  (and {html.name}, offline HTML)")
    return _report_row_errors(rows)


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.report.leaderboard import DEFAULT_NAME, study_rows, write_checked

    out = Path(args.out) if args.out else Path(args.run_dir) / DEFAULT_NAME
    rows = study_rows(args.run_dir)
    write_checked(rows, out)
    for row in rows:
        q = (row["metrics"].get("quality") or {}).get("value")
        print(f"{row['entry']['space']}: quality {q if q is not None else '–'}, "
              f"{row['budget']['flops'] or 0:.3g} FLOPs, NFE {row['nfe']}")
    print(f"wrote {len(rows)} row(s) ({rows[0]['schema_version'] if rows else 'none'}) to {out}")
    return 0


def _report_row_errors(rows) -> int:
    """Print missing/damaged results (they are never silently dropped); 1 if any."""
    from harness.results.state import row_errors

    errors = row_errors(rows)
    for e in errors:
        print(f"l3dg: error: {e} (rerun with `l3dg run --resume RUN_DIR` to redo it)", file=sys.stderr)
    return 1 if errors else 0


# -- sweeps ---------------------------------------------------------------------------------
@command("sweep")
def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.sweep import run_sweep

    if args.study_name:
        from harness.config.rules import safe_name

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

    from harness.report.sweep import write_sweep_report

    storage = args.storage or f"sqlite:///{(Path('runs') / 'sweeps' / (args.study + '.db')).resolve()}"
    path = write_sweep_report(args.study, storage)
    print(path.read_text())
    print(f"report: {path}")
    return 0


@command("compare")
def cmd_compare(args: argparse.Namespace) -> int:
    from harness.report.compare import cli_main

    return cli_main(args)
