"""``l3dg check TARGET``: the conformance suite of any plug-in kind, on a built-in or a
user's file alike (spaces: ``harness/checks/spaces.py``; every other kind:
``harness/checks/kinds.py``).

TARGET is a registered name (``l3dg check egnn``; ``--kind`` when a name is registered by
several kinds) or a ``.py`` file / module: the file is imported and every component it
registers, of any kind, is checked. Exit code 0 when every check passes, 1 otherwise.
"""
from __future__ import annotations

import argparse
import sys

from harness.cli.registry import command, parse_overrides


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="run the conformance checks of any plug-in (space, "
                                     "dataset, metric, suite, denoiser, schedule, sampler, "
                                     "family): a registered name or a user's .py file")
    p.add_argument("target", help="registered name, a .py file, or a module that registers components")
    p.add_argument("--kind", help="registry kind when a name is ambiguous (l3dg list)")
    p.add_argument("--name", help="check only this component of the file")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="component option (repeatable), e.g. path=my.sdf for a dataset")
    p.add_argument("--no-fit", action="store_true", help="spaces: skip the short fit")


def _targets(target: str, kind: str | None) -> list[tuple[str, str]]:
    """``(kind, name)`` pairs to check: a registered name, or what a file/module registers."""
    from pathlib import Path

    from harness.core.registry import REGISTRIES, load_builtins, load_plugin

    load_builtins()
    kinds = [kind] if kind else list(REGISTRIES)
    if kind and kind not in REGISTRIES:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(REGISTRIES)}")
    is_file = target.endswith(".py") or Path(target).exists()
    named = [(k, target) for k in kinds if target in REGISTRIES[k]._entries]
    if named and not is_file:
        if len(named) > 1:
            raise ValueError(f"{target!r} is registered as {', '.join(k for k, _ in named)}; "
                             "say which with --kind")
        return named
    if not is_file and "." not in target:
        raise ValueError(f"{target!r} is neither a registered component nor a .py file / module "
                         "(l3dg list shows the registered ones)")
    before = {k: dict(REGISTRIES[k]._entries) for k in kinds}
    load_plugin(target)
    return [(k, n) for k in kinds for n, obj in REGISTRIES[k]._entries.items()
            if before[k].get(n) is not obj]


@command("check")
def cmd_check(args: argparse.Namespace) -> int:
    from harness.checks.kinds import KINDS, check_component
    from harness.checks.spaces import run_conformance
    from harness.core.registry import SPACES

    targets = _targets(args.target, args.kind)
    if args.name:
        targets = [(k, n) for k, n in targets if n == args.name]
    checkable = [(k, n) for k, n in targets if k in KINDS or k == "spaces"]
    if not checkable:
        print(f"l3dg check: {args.target} registered no component that has a conformance suite "
              "(register one with e.g. @SPACES.register('name') / @METRICS.register(...))",
              file=sys.stderr)
        return 2
    options = parse_overrides(args.option or [])
    ok = True
    for kind, name in checkable:
        if kind == "spaces":
            report = run_conformance(SPACES.get(name), options=options, fit=not args.no_fit)
        else:
            report = check_component(kind, name, options)
        print(report.table())
        ok &= report.passed
    return 0 if ok else 1
