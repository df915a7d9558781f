"""Shared latent generators: families, denoisers, the shared LightningModule.

* ``generators.families`` — one folder per generator family (``FAMILIES`` registry;
  ``l3dg list families``): ``diffusion`` (schedules ``polynomial_2``/``cosine``/``linear``;
  samplers ``ddpm``/``ddim``/``dpm_solver++``; eps / x0 / v targets) and ``flow`` (rectified
  flow; ``euler``/``midpoint``/``heun``/``dopri5``). Each holds its config section (the one
  source of its defaults and value rules), its math, samplers and LightningModule, and
  declares its default sampler, steps and NFE sampler (:class:`generators.family.Family`).
* ``generators.denoisers`` — ``mlp``, ``egnn``, ``e3nn`` networks (know no schedule).
* ``generators.config.GeneratorConfig`` — the shared knobs and one section per family.
* ``generators.guidance`` — context input, classifier-free guidance, clipping (all families);
  ``generators.layout`` — masks, zero-CoM projection and loss normaliser for a LatentSpec.
* ``generators.normalizer``, ``generators.sampling`` (the sampling loop and the atom-count
  prior), ``generators.data`` (the latent DataModule, exact resume), ``generators.trainer``
  (Trainer, loggers, atomic and safe checkpoint IO).
* ``generators.base.LatentGenerator`` — what every family's LightningModule shares
  (denoiser, EMA, AdamW, training step, sampling entry point).
* ``generators.nfe.quality_vs_nfe`` — sample a trained generator at a list of NFE budgets.

:func:`build_generator` and :func:`load_generator` pick the family from the config. The
Lightning modules are imported lazily so that loading the registries does not import
Lightning.
"""
from __future__ import annotations

from pathlib import Path

from .family import Family, check_sampler, family_names, get_family

__all__ = ["DiffusionGenerator", "FlowGenerator", "LatentGenerator", "GeneratorConfig", "Family",
           "build_generator", "load_generator", "generator_class", "check_sampler",
           "get_family", "family_names"]


def generator_class(family: str = "diffusion"):
    """The LightningModule class of a generator family (a KeyError lists the families)."""
    return get_family(family).generator_class()


def build_generator(spec, config=None, *, context_dim: int | None = None, seed: int = 0):
    """A fresh generator of the family ``config`` names, for latents of ``spec``."""
    from .config import GeneratorConfig

    config = GeneratorConfig.from_dict(config)
    return generator_class(config.family)(spec, config, context_dim=context_dim, seed=seed)


def load_generator(path: str | Path, map_location="cpu"):
    """Rebuild a trained generator (any family) from a checkpoint, weights only.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is damaged or not a generator checkpoint (one line
            naming it).
    """
    from .trainer import CheckpointError, read_checkpoint

    ckpt = read_checkpoint(path, map_location=map_location,
                           require=("state_dict", "hyper_parameters"))
    hp = dict(ckpt["hyper_parameters"])
    try:
        family = (hp.get("config") or {}).get("family", "diffusion")
        gen = generator_class(family)(**hp)
        gen.load_state_dict(ckpt["state_dict"])
    except (TypeError, KeyError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} does not match this version of the "
                              f"generators ({first[:160]}); retrain it") from None
    return gen


def __getattr__(name: str):
    if name in ("DiffusionGenerator", "FlowGenerator"):
        return generator_class("diffusion" if name == "DiffusionGenerator" else "flow")
    if name == "LatentGenerator":
        from .base import LatentGenerator

        return LatentGenerator
    if name == "GeneratorConfig":
        from .config import GeneratorConfig

        return GeneratorConfig
    raise AttributeError(f"module 'generators' has no attribute {name!r}")
