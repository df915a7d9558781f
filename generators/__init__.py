"""Shared latent generators: diffusion math, samplers, denoisers, the Lightning modules.

Pure math (no weights):

* ``generators.schedules`` — ``polynomial_2`` (EDM), ``cosine``, ``linear``.
* ``generators.samplers`` — ``ddpm``, ``ddim``, ``dpm_solver++``.
* ``generators.diffusion`` — eps / x0 / v targets and conversions, guidance, clipping.
* ``generators.layout`` — masks, zero-CoM projection and loss normaliser for a LatentSpec.

Networks and training:

* ``generators.denoisers`` — ``mlp``, ``egnn``, ``e3nn`` networks (know no schedule).
* ``generators.config.GeneratorConfig`` — every knob and its one default (the study's
  ``generator:`` section and the checkpoints' hyperparameters).
* ``generators.normalizer`` — the latent normaliser; ``generators.sampling`` — the
  sampling loop and the atom-count prior; ``generators.data`` — the latent DataModule
  (exact resume); ``generators.trainer`` — Trainer, loggers, atomic and safe checkpoint IO.
* ``generators.base.LatentGenerator`` — the shared LightningModule (denoiser, EMA, AdamW,
  training step); ``generators.module.DiffusionGenerator`` — the diffusion family;
  ``generators.flow_module.FlowGenerator`` — the flow-matching family (``family: flow``;
  math in ``generators.flow``, ODE samplers ``euler``/``midpoint``/``heun``/``dopri5`` in
  ``generators.flow_samplers``).
* ``generators.nfe.quality_vs_nfe`` — sample a trained generator at a list of NFE budgets,
  decode, score with a caller's function; rows with NFE and seconds per molecule.

:func:`build_generator` and :func:`load_generator` pick the family from the config. The
Lightning modules are imported lazily so that loading the registries does not import
Lightning.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DiffusionGenerator", "FlowGenerator", "LatentGenerator", "GeneratorConfig",
           "build_generator", "load_generator", "generator_class", "check_sampler"]


def generator_class(family: str = "diffusion"):
    """The LightningModule class of a generator family."""
    if family == "diffusion":
        from .module import DiffusionGenerator

        return DiffusionGenerator
    if family == "flow":
        from .flow_module import FlowGenerator

        return FlowGenerator
    raise ValueError(f"unknown generator family {family!r}; valid families: diffusion, flow")


def build_generator(spec, config=None, *, context_dim: int | None = None, seed: int = 0):
    """A fresh generator of the family ``config`` names, for latents of ``spec``."""
    from .config import GeneratorConfig

    config = GeneratorConfig.from_dict(config)
    return generator_class(getattr(config, "family", "diffusion"))(
        spec, config, context_dim=context_dim, seed=seed)


def check_sampler(family: str, sampler: str) -> None:
    """Raise a KeyError naming ``sampling.sampler`` when ``sampler`` cannot drive a
    generator of ``family`` (flow: ``euler``, ``midpoint``, ``heun``, ``dopri5``, and
    ``ddim`` = ``euler``; diffusion: ``ddpm``, ``ddim``, ``dpm_solver++``)."""
    from harness.core.registry import SAMPLERS

    from .flow_samplers import FLOW_ALIASES

    cls = SAMPLERS.get(FLOW_ALIASES.get(sampler, sampler) if family == "flow" else sampler)
    have = getattr(cls, "family", "diffusion")
    if have != family:
        valid = [n for n in SAMPLERS.names() if getattr(SAMPLERS.get(n), "family", "diffusion")
                 == family] + (["ddim"] if family == "flow" else [])
        raise KeyError(f"config key 'sampling.sampler': {sampler!r} is a {have} sampler but "
                       f"generator.family is {family!r}; valid samplers: {', '.join(valid)}")


def load_generator(path: str | Path, map_location="cpu"):
    """Rebuild a trained generator (either family) from a checkpoint, weights only.

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
    if name == "DiffusionGenerator":
        from .module import DiffusionGenerator

        return DiffusionGenerator
    if name == "FlowGenerator":
        from .flow_module import FlowGenerator

        return FlowGenerator
    if name == "LatentGenerator":
        from .base import LatentGenerator

        return LatentGenerator
    if name == "GeneratorConfig":
        from .config import GeneratorConfig

        return GeneratorConfig
    raise AttributeError(f"module 'generators' has no attribute {name!r}")
