"""``l3dg import {edm,geoldm} DIR``: a model trained by EDM or GeoLDM as a harness run
directory (:func:`harness.importers.edm.import_edm`,
:func:`harness.importers.geoldm.import_geoldm`); then ``l3dg sample RUN --space raw`` (EDM) /
``--space per_atom`` (GeoLDM) and ``l3dg eval`` work on it as on a run the harness trained.
``l3dg import ldm3dg DIR`` reads LDM-3DG's release safely and refuses it with the reason
(:mod:`harness.importers.ldm3dg`).

Wiring, in the ``cli`` room (importers sit below it and do not import it, see
``tests/test_architecture.py`` ROOMS): call :func:`add_parser` beside the other sub-parsers
and register the command, ``command("import")(cmd_import)``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_parser", "cmd_import", "FORMATS"]

#: format -> the space its run directory uses
FORMATS = {"edm": "raw", "geoldm": "per_atom", "ldm3dg": "invariant"}


def add_parser(sub) -> None:
    p = sub.add_parser("import", help="turn a model trained by another codebase (edm, geoldm) "
                                      "into a harness run directory (sample / eval / report "
                                      "work on it)")
    p.add_argument("format", choices=tuple(FORMATS),
                   help="edm: EDM's outputs/<exp>/ folder; geoldm: GeoLDM's outputs/<exp>/ "
                        "folder (both: args.pickle + generative_model[_ema].npy); ldm3dg: the "
                        "folder holding LDM-3DG's AE_topo_weights_and_data/ and "
                        "AE_geom_uncond_weights_and_data/ (read, then refused with the reason)")
    p.add_argument("source", help="the folder to import")
    p.add_argument("--out", help="run directory to write (default: runs/<folder name>)")
    p.add_argument("--commit", help="the source code's git commit, recorded in import.json")
    p.add_argument("--atom-counts", metavar="FILE.json",
                   help="training atom-count histogram {n_atoms: count} (default: "
                        "configs/datasets_config.py in --repo)")
    p.add_argument("--repo", "--edm-repo", dest="repo",
                   help="EDM / GeoLDM checkout holding configs/datasets_config.py (default: "
                        "two folders above the source)")


def cmd_import(args: argparse.Namespace) -> int:
    """``l3dg import FORMAT SOURCE``: write the run directory; exit code 0."""
    source = Path(args.source)
    out = Path(args.out) if args.out else Path("runs") / source.resolve().name
    counts = None
    if args.atom_counts:
        raw = json.loads(Path(args.atom_counts).read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{args.atom_counts}: expected a JSON object {{n_atoms: count}}")
        counts = {int(k): int(v) for k, v in raw.items()}
    if args.format == "ldm3dg":
        from harness.importers.ldm3dg import import_ldm3dg

        run = import_ldm3dg(source, out)
    elif args.format == "geoldm":
        from harness.importers.geoldm import import_geoldm

        run = import_geoldm(source, out, commit=args.commit, atom_counts=counts,
                            geoldm_repo=args.repo)
    else:
        from harness.importers.edm import import_edm

        run = import_edm(source, out, commit=args.commit, atom_counts=counts,
                         edm_repo=args.repo)
    space = FORMATS[args.format]
    print(f"imported {source} -> {run}\n  l3dg sample {run} --space {space} --n 100\n"
          f"  l3dg eval {run}/{space}/samples_edm_100.sdf")
    return 0
