"""Preconditioned sigma-parameterised diffusion (Karras et al., 2022; EDM):
``config.py`` (the ``generator.precond`` section), ``objective.py`` (c_skip / c_out / c_in /
c_noise, training sigmas, loss weight, karras and arcsin grids), ``samplers.py``
(``precond_euler``, ``precond_heun``, optional churn), ``module.py``
(:class:`PrecondGenerator`, imported lazily)."""
from harness.core.registry import FAMILIES

from ...family import Family
from .config import PrecondConfig
from .samplers import PRECOND_ALIASES, probe

FAMILIES.add("precond", Family(
    name="precond",
    summary="preconditioned sigma diffusion (Karras EDM; Euler/Heun, karras or arcsin grid)",
    config=PrecondConfig,
    module="generators.families.precond.module:PrecondGenerator",
    default_sampler="precond_euler", default_steps=100, nfe_sampler="precond_heun",
    sampler_aliases=dict(PRECOND_ALIASES), probe_sampler=probe))
