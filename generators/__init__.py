"""Shared diffusion generators: noise schedules, samplers, denoisers, the Lightning module.

* ``generators.schedules`` — ``polynomial_2`` (EDM), ``cosine``, ``linear`` (pure math).
* ``generators.samplers`` — ``ddpm``, ``ddim``, ``dpm_solver++`` (pure math).
* ``generators.denoisers`` — ``mlp``, ``egnn``, ``e3nn`` networks (know no schedule).
* ``generators.layout`` — masks, zero-CoM projection and loss normaliser for a LatentSpec.
* ``generators.module.DiffusionGenerator`` — training (Lightning) and sampling.

``DiffusionGenerator`` is imported lazily so that loading the registries does not import
Lightning.
"""
from __future__ import annotations

__all__ = ["DiffusionGenerator"]


def __getattr__(name: str):
    if name == "DiffusionGenerator":
        from .module import DiffusionGenerator

        return DiffusionGenerator
    raise AttributeError(f"module 'generators' has no attribute {name!r}")
