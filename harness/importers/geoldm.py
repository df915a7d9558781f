"""Import a GeoLDM QM9 model (Xu et al., 2023) as a harness run directory.

GeoLDM ships a trained model as a folder (``outputs/<exp_name>/``) holding ``args.pickle``
(its argparse ``Namespace``) and ``generative_model_ema.npy`` / ``generative_model.npy``
(``torch.save`` of the ``EnLatentDiffusion`` state dict: the latent dynamics and the
first-stage autoencoder). :func:`import_geoldm` reads both without running code
(:mod:`harness.importers.safe_pickle`; ``torch.load(weights_only=True)``), checks that the
harness computes the same model (layouts and sizes of the three EGNNs against the
arguments, the gamma table against ``polynomial_<p>``, ``sum`` aggregation, unconditional,
QM9) and writes, under ``out_dir``:

* ``config.yaml`` -- a study config: space ``per_atom`` with ``autoencoder: geoldm`` and
  GeoLDM's sizes (``latent_noise`` 0.0032, GeoLDM's ``q(z | x)`` sigma), generator
  ``egnn_edm`` on the latent, ``polynomial_<p>`` with its ``T``, sampler ``edm``;
* ``per_atom/space/`` -- the space with GeoLDM's encoder / decoder weights;
  ``per_atom/generator/checkpoints/last.ckpt`` -- the latent generator (the weights as both
  the raw and the EMA weights, the atom-count prior);
* ``per_atom/state.json`` -- ``fit_space`` and ``train_generator`` marked done (with the
  study's fingerprints), so ``l3dg sample RUN --space per_atom`` works on it;
* ``import.json`` -- provenance: source folder, sha256 of both files, GeoLDM commit (given),
  the pickled arguments, the checks' figures.

``p(N)`` is read from GeoLDM's ``configs/datasets_config.py`` (literal values only, the
format EDM's uses) or given as ``{n_atoms: count}``. One difference to GeoLDM's sampler
remains: at the final ``p(z | z_0)`` step the harness keeps ``z_0``'s latent features
(``edm`` sampler) where GeoLDM adds ``sigma_0 / alpha_0`` noise (~0.003) to them too.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .edm import _load_state, _weights, edm_atom_counts
from .edm_weights import edm_gamma
from .geoldm_weights import (geoldm_denoiser_state_dict, geoldm_network_options,
                             geoldm_space_state_dict)
from .run_dir import check_gamma, import_record, load_generator_weights, write_run
from .safe_pickle import load_namespace

__all__ = ["import_geoldm", "read_geoldm_args", "GeoLDMImportError"]

ELEMENTS = ["H", "C", "N", "O", "F"]
SPACE = "per_atom"
SIGMA = 0.0032          # GeoLDM's fixed q(z | x) standard deviation


class GeoLDMImportError(ValueError):
    """The GeoLDM folder cannot be imported (one line saying why)."""


def read_geoldm_args(path: Path) -> dict[str, Any]:
    """GeoLDM's arguments (restricted unpickling), checked for what the harness reproduces."""
    args = load_namespace(path)
    need = ("model", "probabilistic_model", "diffusion_steps", "diffusion_noise_schedule",
            "diffusion_noise_precision", "n_layers", "nf", "latent_nf", "include_charges",
            "dataset", "train_diffusion")
    missing = [k for k in need if k not in args]
    if missing:
        raise GeoLDMImportError(f"{path}: not GeoLDM's arguments (missing {', '.join(missing)})")
    rules = [
        (bool(args["train_diffusion"]), "train_diffusion False (a first-stage autoencoder "
                                        "alone, not a latent diffusion model)"),
        (not args.get("ae_path"), f"ae_path {args.get('ae_path')!r} (a first stage trained "
                                  f"separately; its arguments are in another args.pickle)"),
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
    ]
    bad = [why for ok, why in rules if not ok]
    if bad:
        raise GeoLDMImportError(f"{path}: cannot import this GeoLDM model: {'; '.join(bad)}")
    return args


def _check_network(path: Path, state, args, n_features: int) -> dict[str, Any]:
    try:
        opts = geoldm_network_options(state)
    except (KeyError, ValueError) as err:
        raise GeoLDMImportError(f"{path}: not GeoLDM's latent diffusion weights ({err})") from None
    edge = 24 if args.get("sin_embedding") else 2
    sub, nf, nl = int(args.get("inv_sublayers", 1)), int(args["nf"]), int(args["n_layers"])
    k = int(args["latent_nf"])
    dyn = opts["dynamics"]
    want = {"latent_nf": (opts["k"], k), "autoencoder features": (opts["n_features"], n_features),
            "hidden": (opts["hidden"], nf), "decoder layers": (opts["layers"], nl),
            "encoder layers": (opts["encoder_layers"], 1), "sublayers": (opts["sublayers"], sub),
            "distance features": (opts["edge_features"], edge),
            "dynamics hidden": (dyn["hidden"], nf), "dynamics layers": (dyn["layers"], nl),
            "dynamics sublayers": (dyn["sublayers"], sub), "dynamics in_dim": (dyn["in_dim"], k + 1),
            "dynamics distance features": (dyn["edge_features"], edge),
            "attention": (opts["attention"] and dyn["attention"], bool(args.get("attention", True)))}
    diff = {name: v for name, v in want.items() if v[0] != v[1]}
    if diff:
        raise GeoLDMImportError(f"{path}: weights do not match args.pickle: " + ", ".join(
            f"{name} {a} in the weights vs {b}" for name, (a, b) in diff.items()))
    return opts


def _config(args: dict[str, Any], study: str, output_dir: str, data: dict | None):
    from harness.config import load_config

    T = int(args["diffusion_steps"])
    egnn = {"attention": bool(args.get("attention", True)), "tanh": bool(args.get("tanh", True)),
            "norm_constant": float(args.get("norm_constant", 1)),
            "agg_norm": float(args.get("normalization_factor", 1)),
            "sin_embedding": bool(args.get("sin_embedding", False)),
            "sublayers": int(args.get("inv_sublayers", 1))}
    space = {"k": int(args["latent_nf"]), "hidden": int(args["nf"]),
             "layers": int(args["n_layers"]), "latent_noise": SIGMA,
             "kl_weight": float(args.get("kl_weight", 0.01)), "autoencoder": "geoldm",
             "geoldm": {**egnn, "include_charges": bool(args["include_charges"]),
                        "encoder_layers": 1}}
    net = {"hidden": int(args["nf"]), "layers": int(args["n_layers"]), "coords_range": 15.0,
           **egnn}
    return load_config({
        "study": study, "output_dir": output_dir,
        "data": data or {"dataset": "qm9",
                         "options": {"remove_h": bool(args.get("remove_h", False))}},
        "spaces": {SPACE: space},
        "generator": {"family": "diffusion", "denoiser": "egnn_edm",
                      "denoiser_options": {"egnn_edm": net}, "normalize": "none",
                      "lr": float(args.get("lr", 1e-4)),
                      "ema_decay": float(args.get("ema_decay") or 0.0),
                      "batch_size": int(args.get("batch_size", 64)),
                      "diffusion": {"schedule": args["diffusion_noise_schedule"],
                                    "timesteps": T, "prediction": "eps"}},
        "sampling": {"sampler": "edm", "steps": T},
    })


def import_geoldm(source: str | Path, out_dir: str | Path, *, commit: str | None = None,
                  atom_counts: dict[int, int] | None = None,
                  geoldm_repo: str | Path | None = None,
                  data: dict[str, Any] | None = None) -> Path:
    """Write a harness run directory for the GeoLDM model in ``source`` (module docstring).

    Args:
        source: folder with ``args.pickle`` and ``generative_model[_ema].npy``.
        out_dir: the run directory to create (must not exist or be empty).
        commit: GeoLDM's git commit, recorded in ``import.json``.
        atom_counts: ``{n_atoms: count}`` of the training set (``p(N)``); default: read
            from ``geoldm_repo`` (default: the checkout two levels above ``source``).
        data: the ``data`` section of the written config (default: qm9, GeoLDM's ``remove_h``).

    Returns:
        ``out_dir``. Nothing is written when a check fails.
    """
    source, out_dir = Path(source).resolve(), Path(out_dir)
    args_path = source / "args.pickle"
    if not args_path.exists():
        raise FileNotFoundError(f"{source}: no args.pickle (a GeoLDM outputs/<exp>/ folder)")
    args = read_geoldm_args(args_path)
    weights_path = _weights(source, args)
    state = _load_state(weights_path)
    remove_h = bool(args.get("remove_h", False))
    elements = ELEMENTS[1:] if remove_h else ELEMENTS
    k = int(args["latent_nf"])
    _check_network(weights_path, state, args, len(elements) + int(bool(args["include_charges"])))
    if atom_counts is None:
        repo = Path(geoldm_repo) if geoldm_repo else source.parent.parent
        if not (repo / "configs" / "datasets_config.py").exists():
            raise GeoLDMImportError(
                f"no atom-count histogram: pass atom_counts (--atom-counts) or GeoLDM's checkout "
                f"(--repo); {repo} has no configs/datasets_config.py")
        atom_counts = edm_atom_counts(repo, remove_h)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise GeoLDMImportError(f"{out_dir} exists and is not empty; choose another --out")

    from generators import build_generator
    from harness.core.registry import SPACES

    config = _config(args, out_dir.name, str(out_dir.parent), data)
    space = SPACES.get(SPACE)(elements, **config.spaces[SPACE])
    space.load_state_dict({n: v.to(torch.float32)
                           for n, v in geoldm_space_state_dict(state, k).items()})
    gen = build_generator(space.spec, config.generator_for(SPACE), seed=config.seed)
    gamma_diff = check_gamma(gen, edm_gamma(state), weights_path, "GeoLDM", GeoLDMImportError)
    mapped = geoldm_denoiser_state_dict(state, k)
    load_generator_weights(gen, mapped, atom_counts)
    source_info = {"imported_from": "geoldm", "source": str(source)}
    write_run(out_dir, SPACE, space, gen, config,
              {"train_generator": source_info, "fit_space": dict(source_info)},
              import_record("geoldm", source, commit, (args_path, weights_path), args,
                            {"gamma_max_abs_diff": gamma_diff,
                             "weights_mapped": len(mapped) + len(space.state_dict())},
                            atom_counts))
    return out_dir
