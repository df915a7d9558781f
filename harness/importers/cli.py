"""``l3dg import edm DIR``: a model trained by EDM as a harness run directory
(:func:`harness.importers.edm.import_edm`); then ``l3dg sample RUN --space raw`` and
``l3dg eval`` work on it as on a run the harness trained.

Wiring, in the ``cli`` room (importers sit below it and do not import it, see
``tests/test_architecture.py`` ROOMS): call :func:`add_parser` beside the other sub-parsers
and register the command, ``command("import")(cmd_import)``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_parser", "cmd_import"]

FORMATS = ("edm",)


def add_parser(sub) -> None:
    p = sub.add_parser("import", help="turn a model trained by another codebase (edm) into a "
                                      "harness run directory (sample / eval / report work on it)")
    p.add_argument("format", choices=FORMATS, help="edm: EDM's outputs/<exp>/ folder "
                                                   "(args.pickle + generative_model[_ema].npy)")
    p.add_argument("source", help="the folder to import")
    p.add_argument("--out", help="run directory to write (default: runs/<folder name>)")
    p.add_argument("--commit", help="the source code's git commit, recorded in import.json")
    p.add_argument("--atom-counts", metavar="FILE.json",
                   help="training atom-count histogram {n_atoms: count} (default: EDM's "
                        "configs/datasets_config.py in --edm-repo)")
    p.add_argument("--edm-repo", help="EDM checkout holding configs/datasets_config.py "
                                      "(default: two folders above the source)")


def cmd_import(args: argparse.Namespace) -> int:
    """``l3dg import FORMAT SOURCE``: write the run directory; exit code 0."""
    from harness.importers.edm import import_edm

    source = Path(args.source)
    out = Path(args.out) if args.out else Path("runs") / source.resolve().name
    counts = None
    if args.atom_counts:
        raw = json.loads(Path(args.atom_counts).read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{args.atom_counts}: expected a JSON object {{n_atoms: count}}")
        counts = {int(k): int(v) for k, v in raw.items()}
    run = import_edm(source, out, commit=args.commit, atom_counts=counts,
                     edm_repo=args.edm_repo)
    print(f"imported {source} -> {run}\n  l3dg sample {run} --space raw --n 100\n"
          f"  l3dg eval {run}/raw/samples_edm_100.sdf")
    return 0
