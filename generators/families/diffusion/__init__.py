"""Discrete-time Gaussian diffusion (DDPM / EDM-style): ``config.py`` (the
``generator.diffusion`` section), ``schedules.py``, ``targets.py`` (eps / x0 / v),
``samplers.py`` (``ddpm``, ``ddim``, ``dpm_solver++``), ``module.py``
(:class:`DiffusionGenerator`, imported lazily)."""
from harness.core.registry import FAMILIES

from ...family import Family
from . import samplers, schedules  # noqa: F401  (registration)
from .config import DiffusionConfig

FAMILIES.add("diffusion", Family(
    name="diffusion",
    summary="discrete-time Gaussian diffusion (VP; eps/x0/v targets, EDM's polynomial_2)",
    config=DiffusionConfig,
    module="generators.families.diffusion.module:DiffusionGenerator",
    default_sampler="ddim", default_steps=100, nfe_sampler="ddim",
    flat_keys=("schedule", "timesteps", "prediction"),
    probe_sampler=samplers.probe))
