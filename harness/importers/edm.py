"""Import an EDM QM9 model (Hoogeboom et al., 2022) as a harness run directory.

EDM ships a trained model as a folder (``outputs/edm_qm9/``) holding ``args.pickle`` (its
argparse ``Namespace``) and ``generative_model_ema.npy`` / ``generative_model.npy`` (despite
the name: ``torch.save`` of the ``EnVariationalDiffusion`` state dict). :func:`import_edm`
reads both without running code (:mod:`harness.importers.safe_pickle`;
``torch.load(weights_only=True)``), checks that the harness computes the same model (EGNN
layout, gamma table against ``polynomial_<p>``, ``sum`` aggregation, unconditional) and
writes, under ``out_dir``:

* ``config.yaml`` -- a study config: space ``raw`` with EDM's normalisation (``type_scale =
  1/normalize_factors[1]``, ``charge_scale = 1/normalize_factors[2]``, ``include_charge``),
  generator ``egnn_edm`` with the pickle's sizes, ``polynomial_<p>`` with its ``T``, sampler
  ``edm`` with ``T`` steps;
* ``raw/space/`` -- the saved space; ``raw/generator/checkpoints/last.ckpt`` -- the generator
  (EDM's weights as both the raw and the EMA weights, the atom-count prior);
* ``raw/state.json`` -- ``fit_space`` and ``train_generator`` marked done (with the study's
  fingerprints), so ``l3dg sample RUN --space raw`` and ``l3dg run --resume`` start from it;
* ``import.json`` -- provenance: source folder, sha256 of both files, EDM commit (given),
  the pickled arguments, the checks' figures.

The atom-count prior ``p(N)`` is not in EDM's files: it is read from EDM's
``configs/datasets_config.py`` (``ast.literal_eval`` of the ``qm9_with_h`` /
``qm9_without_h`` literal; the checkout holding ``outputs/`` is found by default) or given as
``{n_atoms: count}``.
"""
from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import torch

from .edm_weights import edm_gamma, edm_network_options, edm_to_harness_state_dict
from .run_dir import check_gamma, import_record, load_generator_weights, write_run
from .safe_pickle import load_namespace

__all__ = ["import_edm", "read_edm_args", "edm_atom_counts", "EDMImportError"]

ELEMENTS = ["H", "C", "N", "O", "F"]
SPACE = "raw"


class EDMImportError(ValueError):
    """The EDM folder cannot be imported (one line saying why)."""


def read_edm_args(path: Path) -> dict[str, Any]:
    """EDM's arguments (restricted unpickling), checked for what the harness reproduces."""
    args = load_namespace(path)
    need = ("model", "probabilistic_model", "diffusion_steps", "diffusion_noise_schedule",
            "diffusion_noise_precision", "n_layers", "nf", "normalize_factors",
            "include_charges", "dataset")
    missing = [k for k in need if k not in args]
    if missing:
        raise EDMImportError(f"{path}: not EDM's arguments (missing {', '.join(missing)})")
    rules = [
        (args["model"] == "egnn_dynamics", f"model {args['model']!r} (only egnn_dynamics)"),
        (args["probabilistic_model"] == "diffusion",
         f"probabilistic_model {args['probabilistic_model']!r}"),
        (str(args["dataset"]).startswith("qm9"), f"dataset {args['dataset']!r} (only qm9)"),
        (str(args["diffusion_noise_schedule"]).startswith("polynomial_"),
         f"noise schedule {args['diffusion_noise_schedule']!r} (only polynomial_<p>)"),
        (math.isclose(float(args["diffusion_noise_precision"]), 1e-5),
         f"noise precision {args['diffusion_noise_precision']} (the harness's is 1e-5)"),
        (not args.get("conditioning") and not args.get("context_node_nf"),
         f"conditioning {args.get('conditioning')} (only unconditional models)"),
        (args.get("aggregation_method", "sum") == "sum",
         f"aggregation_method {args.get('aggregation_method')!r} (only sum)"),
        (args.get("condition_time", True), "condition_time False"),
        (len(args["normalize_factors"]) == 3, f"normalize_factors {args['normalize_factors']}"),
    ]
    bad = [why for ok, why in rules if not ok]
    if bad:
        raise EDMImportError(f"{path}: cannot import this EDM model: {'; '.join(bad)}")
    return args


def edm_atom_counts(repo: Path, remove_h: bool) -> dict[int, int]:
    """``{n_atoms: count}`` of EDM's QM9 training set from its ``configs/datasets_config.py``
    (literal values only, read with ``ast.literal_eval``; nothing is imported)."""
    path = Path(repo) / "configs" / "datasets_config.py"
    name = "qm9_without_h" if remove_h else "qm9_with_h"
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name
                                                for t in node.targets):
            info = ast.literal_eval(node.value)
            return {int(k): int(v) for k, v in info["n_nodes"].items()}
    raise EDMImportError(f"{path}: no {name} dataset info with n_nodes")


def _weights(source: Path, args: dict[str, Any]) -> Path:
    names = ["generative_model_ema.npy", "generative_model.npy"]
    if not float(args.get("ema_decay") or 0) > 0:
        names.reverse()
    for name in names:
        if (source / name).exists():
            return source / name
    raise FileNotFoundError(f"{source}: neither {names[0]} nor {names[1]}")


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # noqa: BLE001
        raise EDMImportError(f"{path}: not a tensor state dict readable with weights_only "
                             f"({type(err).__name__}: {str(err)[:120]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EDMImportError(f"{path}: not a state dict of tensors")
    return state


def _check_network(path: Path, state, args, n_features: int) -> dict[str, Any]:
    opts = edm_network_options(state)
    want = {"in_dim": n_features + 1, "hidden": int(args["nf"]), "layers": int(args["n_layers"]),
            "sublayers": int(args.get("inv_sublayers", 2)), "attention": bool(args.get("attention", True)),
            "edge_features": 24 if args.get("sin_embedding") else 2}
    diff = {k: (opts[k], v) for k, v in want.items() if opts[k] != v}
    if diff:
        raise EDMImportError(f"{path}: weights do not match args.pickle: " + ", ".join(
            f"{k} {a} in the weights vs {b}" for k, (a, b) in diff.items()))
    return opts


def _config(args: dict[str, Any], study: str, output_dir: str, data: dict | None):
    from harness.config import load_config

    nf = [float(v) for v in args["normalize_factors"]]
    remove_h = bool(args.get("remove_h", False))
    T = int(args["diffusion_steps"])
    net = {"hidden": int(args["nf"]), "layers": int(args["n_layers"]),
           "sublayers": int(args.get("inv_sublayers", 2)),
           "attention": bool(args.get("attention", True)), "tanh": bool(args.get("tanh", True)),
           "coords_range": 15.0, "norm_constant": float(args.get("norm_constant", 1)),
           "agg_norm": float(args.get("normalization_factor", 1)),
           "sin_embedding": bool(args.get("sin_embedding", False))}
    raw = {"type_scale": 1 / nf[1], "coord_scale": nf[0],
           "include_charge": bool(args["include_charges"]), "charge_scale": 1 / nf[2]}
    return load_config({
        "study": study, "output_dir": output_dir,
        "data": data or {"dataset": "qm9", "options": {"remove_h": remove_h}},
        "spaces": {SPACE: raw},
        "generator": {"family": "diffusion", "denoiser": "egnn_edm",
                      "denoiser_options": {"egnn_edm": net}, "normalize": "none",
                      "lr": float(args.get("lr", 1e-4)),
                      "ema_decay": float(args.get("ema_decay") or 0.0),
                      "batch_size": int(args.get("batch_size", 64)),
                      "diffusion": {"schedule": args["diffusion_noise_schedule"],
                                    "timesteps": T, "prediction": "eps"}},
        "sampling": {"sampler": "edm", "steps": T},
    })


def import_edm(source: str | Path, out_dir: str | Path, *, commit: str | None = None,
               atom_counts: dict[int, int] | None = None, edm_repo: str | Path | None = None,
               data: dict[str, Any] | None = None) -> Path:
    """Write a harness run directory for the EDM model in ``source`` (see module docstring).

    Args:
        source: folder with ``args.pickle`` and ``generative_model[_ema].npy``.
        out_dir: the run directory to create (must not exist or be empty).
        commit: EDM's git commit, recorded in ``import.json``.
        atom_counts: ``{n_atoms: count}`` of the training set (``p(N)``); default: read
            from ``edm_repo`` (default: the checkout two levels above ``source``).
        data: the ``data`` section of the written config (default: qm9, EDM's ``remove_h``).

    Returns:
        ``out_dir``. Nothing is written when a check fails.
    """
    source, out_dir = Path(source).resolve(), Path(out_dir)
    args_path = source / "args.pickle"
    if not args_path.exists():
        raise FileNotFoundError(f"{source}: no args.pickle (an EDM outputs/<exp>/ folder)")
    args = read_edm_args(args_path)
    weights_path = _weights(source, args)
    state = _load_state(weights_path)
    remove_h = bool(args.get("remove_h", False))
    elements = ELEMENTS[1:] if remove_h else ELEMENTS
    n_features = len(elements) + int(bool(args["include_charges"]))
    _check_network(weights_path, state, args, n_features)
    if atom_counts is None:
        repo = Path(edm_repo) if edm_repo else source.parent.parent
        if not (repo / "configs" / "datasets_config.py").exists():
            raise EDMImportError(f"no atom-count histogram: pass atom_counts (--atom-counts) or "
                                 f"EDM's checkout (--edm-repo); {repo} has no configs/datasets_config.py")
        atom_counts = edm_atom_counts(repo, remove_h)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise EDMImportError(f"{out_dir} exists and is not empty; choose another --out")

    from generators import build_generator
    from harness.core.registry import SPACES

    config = _config(args, out_dir.name, str(out_dir.parent), data)
    space = SPACES.get(SPACE)(elements, **config.spaces[SPACE])
    gen = build_generator(space.spec, config.generator_for(SPACE), seed=config.seed)
    gamma_diff = check_gamma(gen, edm_gamma(state), weights_path, "EDM", EDMImportError)
    mapped = edm_to_harness_state_dict(state, n_features)
    load_generator_weights(gen, mapped, atom_counts)
    write_run(out_dir, SPACE, space, gen, config,
              {"train_generator": {"imported_from": "edm", "source": str(source)}},
              import_record("edm", source, commit, (args_path, weights_path), args,
                            {"gamma_max_abs_diff": gamma_diff, "weights_mapped": len(mapped)},
                            atom_counts),
              global_step=int(args.get("current_epoch") or 0))
    return out_dir
