"""The ``l3dg`` command line.

Start-up stays light (no torch or Lightning import) so ``l3dg --help`` answers at once; each
sub-command imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import sys

# the command modules register their commands on import
from harness.cli import check as _check_cmd
from harness.cli import data as _data_cmds  # noqa: F401
from harness.cli import study as _study_cmds  # noqa: F401
from harness.cli.registry import COMMANDS, command


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
    p.add_argument("--suite", default="qm9/v2", help="suite name (l3dg list suites); default qm9/v2 (capped members on seeded random subsets)")
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
    p.add_argument("--leaderboard", metavar="OUT",
                   help="also write the leaderboard row (JSON Lines, schema "
                        "harness/report/leaderboard.schema.json) of the scored file to OUT")

    p = sub.add_parser("predictor", help="train (or list) the cached property predictors of "
                                         "conditional generation (EDM protocol)")
    p.add_argument("action", choices=("train", "list"))
    p.add_argument("properties", nargs="*", help="alpha gap homo lumo mu Cv (default: all six)")
    p.add_argument("--size", default="cpu", help="cpu, edm or tiny (harness/conditional/protocol.py)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="predictor config override, e.g. epochs=100 (repeatable)")
    p.add_argument("--data", help="qm9 (default) or an SDF with QM9 property fields")
    p.add_argument("--cache-dir", help="cache root (default $L3DG_CACHE_DIR or the user cache)")
    p.add_argument("--retrain", action="store_true", help="ignore a cached predictor")
    p.add_argument("--judge", choices=("egnn", "schnet"), default=None,
                   help="predictor family: egnn (EDM's evaluator, default) or schnet (the "
                        "second judge of conditional tables)")
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

    p = sub.add_parser("export", help="export a finished study's results in another format "
                                      "(leaderboard: one versioned JSON row per space)")
    p.add_argument("run_dir")
    p.add_argument("--format", default="leaderboard", choices=("leaderboard",),
                   help="leaderboard: JSON Lines, schema harness/report/leaderboard.schema.json")
    p.add_argument("--out", help="output file (default: RUN_DIR/leaderboard.jsonl)")

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

    _check_cmd.add_parser(sub)
    from harness.importers.cli import add_parser as add_import_parser, cmd_import

    add_import_parser(sub)
    command("import")(cmd_import)
    from harness.report.compare import add_parser as add_compare_parser
    from harness.term.quiet import add_verbosity_flags

    add_compare_parser(sub)
    add_verbosity_flags(parser, sub)  # -q/-v before or after the sub-command
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    for sub_parser in sub.choices.values():  # also after the sub-command
        sub_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS)
    parser.set_defaults(_commands=sub.choices)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting ``key=value`` overrides follow options (``l3dg run tiny --force
    a.b=1``); anything else unrecognised is an error with the sub-command's own usage."""
    args, extra = parser.parse_known_args(argv)
    commands = getattr(args, "_commands", {})
    if extra:
        overrides = getattr(args, "overrides", None)
        if isinstance(overrides, list) and all("=" in e and not e.startswith("-") for e in extra):
            overrides.extend(extra)
        else:
            commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    from harness.term.quiet import configure, level_from_args

    configure(level_from_args(args))  # library noise off, log format, progress-view level
    if not args.command:
        parser.print_help()
        return 0
    from harness.term.interrupts import EXIT_INTERRUPTED, owned_sigint

    ctrl_c = None
    try:
        with owned_sigint() as ctrl_c:   # Ctrl-C is ours, not a native library's (interrupts.py)
            return COMMANDS[args.command](args) or 0
    except KeyboardInterrupt:
        if args.debug:
            raise
        return _interrupted(args.command, EXIT_INTERRUPTED)
    except SystemExit as err:            # a library (Lightning) turned our Ctrl-C into exit(1)
        from harness.results.guard import Terminated

        if ctrl_c is not None and ctrl_c.received and not isinstance(err, Terminated):
            return _interrupted(args.command, EXIT_INTERRUPTED)
        raise
    except (KeyError, ValueError, TypeError, OSError, ImportError) as err:  # ConfigError: ValueError
        if args.verbose or args.debug:
            raise
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        message = " ".join(line.strip() for line in message.splitlines() if line.strip())
        print(f"l3dg {args.command}: error: {message or type(err).__name__}", file=sys.stderr)
        return 2


def _interrupted(command: str, code: int) -> int:
    """One line for a command stopped by Ctrl-C (result files are written atomically, so
    none is half-written)."""
    print(f"l3dg {command}: interrupted (Ctrl-C); no file is left half-written",
          file=sys.stderr)
    return code
