"""Samplers of the preconditioned family (pure math, no weights): Karras et al. (2022),
Alg. 1 (deterministic) and Alg. 2 (stochastic churn), on a decreasing noise grid.

A sampler integrates the probability-flow ODE ``dx/dsigma = (x - D(x; sigma)) / sigma`` from
``sigma_max`` to 0 given a denoiser callable; the generator's loop supplies the model
(guidance, clipping, self-conditioning inside the callable)::

    smp = SAMPLERS.get("precond_heun")(steps=18)
    x, nfe = smp.solve(denoise, unit_noise, project, noise=fresh_unit_noise)
    # denoise(x, sigma: float) -> D [same shape]; the start is sigma_max * unit_noise

``steps = N`` noise levels (``objective.sigma_grid``: ``karras`` rho-spaced, default
``rho = 7``, or VEDA's ``arcsin`` grid) then 0. Every update is a linear combination of
states, denoised estimates and projected noise, and ``project`` (masks, zero centre of mass)
is applied after each, so per-atom coordinates stay zero-CoM at every state.

Stochastic churn (Alg. 2): at levels ``sigma_i`` in ``[s_tmin, s_tmax]`` the state is first
moved up to ``sigma_hat = sigma_i (1 + gamma)``, ``gamma = min(s_churn / N, sqrt 2 - 1)``, by
adding noise of variance ``sigma_hat^2 - sigma_i^2`` (times ``s_noise^2``); ``s_churn = 0``
(default) is the deterministic sampler. Churn changes no NFE.

Built-in (``SAMPLERS``, ``family = "precond"``; names distinct from the flow family's):

* ``precond_euler`` — one evaluation per level; NFE = ``steps``. ``ddim`` maps here for
  precond generators: DDIM (eta = 0) is exactly Euler on this ODE in sigma.
* ``precond_heun`` — Heun's 2nd-order correction on every step but the last (into sigma = 0
  it would divide by zero: Euler there, as Karras); NFE = ``2 steps - 1``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from harness.core.registry import SAMPLERS

from .objective import sigma_grid

__all__ = ["PrecondSampler", "PrecondEulerSampler", "PrecondHeunSampler",
           "make_precond_sampler", "PRECOND_ALIASES", "probe"]

Denoise = Callable[[torch.Tensor, float], torch.Tensor]

#: other families' sampler names that mean a precond sampler exactly
PRECOND_ALIASES = {"ddim": "precond_euler"}


class PrecondSampler:
    """Base class (see module docstring). Grid and churn keywords are those of the
    ``generator.precond`` section (``PrecondConfig``)."""

    name = "precond"
    family = "precond"
    #: NFE = a * steps + b (``generators.nfe.steps_for_nfe``)
    nfe_rule: tuple[int, int] | None = (1, 0)
    default_steps = 50
    heun = False

    def __init__(self, steps: int | None = None, eta: float = 0.0, *, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, grid: str = "karras", rho: float = 7.0,
                 arcsin_mix: float = 2.0, s_churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float | None = None, s_noise: float = 1.0, **_ignored):
        steps = self.default_steps if steps is None else steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"{self.name}: steps must be a positive int, got {steps!r}")
        if eta != 0:
            raise ValueError(f"{self.name}: eta must be 0; stochasticity is the churn of "
                             "generator.precond.s_churn (Karras Alg. 2)")
        self.steps = steps
        self.sigmas = sigma_grid(steps, sigma_min, sigma_max, grid, rho, arcsin_mix)
        self.s_churn, self.s_tmin, self.s_noise = float(s_churn), float(s_tmin), float(s_noise)
        self.s_tmax = math.inf if s_tmax is None else float(s_tmax)

    @property
    def nfe(self) -> int:
        """Denoiser evaluations per trajectory."""
        a, b = self.nfe_rule
        return a * self.steps + b

    @property
    def stochastic(self) -> bool:
        return self.s_churn > 0

    def _gamma(self, sigma: float) -> float:
        if self.s_churn > 0 and self.s_tmin <= sigma <= self.s_tmax:
            return min(self.s_churn / self.steps, math.sqrt(2.0) - 1.0)
        return 0.0

    def solve(self, denoise: Denoise, z: torch.Tensor, project=lambda v: v,
              noise: Callable[[], torch.Tensor] | None = None) -> tuple[torch.Tensor, int]:
        """From unit noise ``z`` (state ``sigma_max z``) to a sample; returns ``(x, NFE
        used)``. ``noise()`` draws fresh unit noise in the subspace (needed with churn)."""
        if self.stochastic and noise is None:
            raise ValueError(f"{self.name} with s_churn > 0 needs a noise source")
        x, nfe = project(self.sigmas[0] * z), 0
        for i, (sig, nxt) in enumerate(zip(self.sigmas[:-1], self.sigmas[1:])):
            gamma = self._gamma(sig)
            hat = sig * (1.0 + gamma)
            if gamma > 0:
                x = project(x + math.sqrt(hat ** 2 - sig ** 2) * self.s_noise * noise())
            d = (x - denoise(x, hat)) / hat
            nfe += 1
            x_next = project(x + (nxt - hat) * d)
            if self.heun and nxt > 0:
                d2 = (x_next - denoise(x_next, nxt)) / nxt
                nfe += 1
                x_next = project(x + (nxt - hat) * 0.5 * (d + d2))
            x = x_next
        return x, nfe

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps}, churn={self.s_churn})"


@SAMPLERS.register("precond_euler")
class PrecondEulerSampler(PrecondSampler):
    """``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (x_i - D(x_i; sigma_i)) / sigma_i``."""

    name = "precond_euler"
    nfe_rule = (1, 0)
    default_steps = 50


@SAMPLERS.register("precond_heun")
class PrecondHeunSampler(PrecondSampler):
    """Heun's trapezoidal correction (Karras Alg. 1/2); Euler on the last step."""

    name = "precond_heun"
    nfe_rule = (2, -1)
    default_steps = 25
    heun = True


def make_precond_sampler(name: str, steps: int | None = None, eta: float = 0.0,
                         **options) -> PrecondSampler:
    """A precond sampler by registry name (``ddim`` -> ``precond_euler``); another family's
    sampler is a KeyError listing the valid ones. ``options``: grid and churn keywords."""
    cls = SAMPLERS.get(PRECOND_ALIASES.get(name, name))
    if getattr(cls, "family", None) != "precond":
        valid = [n for n in SAMPLERS.names() if getattr(SAMPLERS.get(n), "family", "") == "precond"]
        raise KeyError(f"sampler {name!r} is a {getattr(cls, 'family', 'diffusion')} sampler; "
                       f"valid samplers for precond generators: {', '.join(valid)} "
                       "(ddim = precond_euler)")
    return cls(steps=steps, eta=eta, **options)


def probe(cls: type, steps: int = 10, n: int = 4000, seed: int = 0):
    """Drive sampler class ``cls`` with the exact denoiser of ``N(0, I)`` data in 2-D,
    ``D(x; sigma) = E[x0 | x0 + sigma n = x] = x / (1 + sigma^2)`` (whatever the
    preconditioning's ``sigma_data``: it shapes the network's parametrisation, not the ideal
    denoiser), as a conformance probe: returns ``(samples [n, 2], nfe used, steps)``; the
    samples should be ``N(0, I)`` (up to the start at ``sigma_max z`` instead of
    ``sqrt(1 + sigma_max^2) z``: a 1e-4 relative error)."""
    smp = cls(steps=steps)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)

    def fresh():
        return torch.randn(n, 2, generator=g, dtype=torch.float64)

    x, nfe = smp.solve(lambda v, s: v / (1.0 + s ** 2), z, lambda v: v, noise=fresh)
    return x, nfe, smp.steps
