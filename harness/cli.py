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
        from harness.registry import load_plugin

        for spec in args.plugin:
            load_plugin(spec)


# -- list -----------------------------------------------------------------------------------
@command("list")
def cmd_list(args: argparse.Namespace) -> int:
    from harness.registry import REGISTRIES, load_builtins

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
    from harness.data import load_dataset

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


# -- check-space ----------------------------------------------------------------------------
@command("check-space")
def cmd_check_space(args: argparse.Namespace) -> int:
    from harness.conformance import run_conformance
    from harness.registry import SPACES, load_builtins, load_plugin

    load_builtins()
    target = args.space
    before = {n: SPACES.get(n) for n in SPACES.names()}
    if target in before and not target.endswith(".py"):
        names = [target]
    else:
        load_plugin(target)
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


# -- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l3dg",
        description="Benchmark harness for 3D molecular graph generation: in what space "
                    "should 3D graphs be diffused?",
        epilog="Run 'l3dg COMMAND --help' for a command's options. Quick start: make run.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
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

    p = sub.add_parser("check-space", help="run the space conformance checks on a built-in or "
                                           "user space and print a pass/fail table")
    p.add_argument("space", help="registered name, a .py file, or a module that registers spaces")
    p.add_argument("--name", help="check only this space of the file")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="space option (repeatable)")
    p.add_argument("--no-fit", action="store_true", help="skip the short fit of trainable spaces")
    p.add_argument("--progress", action="store_true", help="show training progress bars")

    for extra in _EXTRA_PARSERS:
        extra(sub)
    return parser


#: other modules add sub-commands here (evaluation, studies, sweeps)
_EXTRA_PARSERS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.command:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args) or 0
    except (KeyError, ValueError, FileNotFoundError, TypeError) as err:
        if args.verbose:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"l3dg {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
