"""ODE samplers of flow-matching generators (pure math, no weights, no randomness).

A flow sampler integrates ``dz/dt = v(z, t)`` from ``t = 0`` (noise) to ``t = 1`` (data)
given a velocity callable; the generator's loop supplies the model (guidance, clipping,
self-conditioning inside the callable)::

    solver = SAMPLERS.get("heun")(steps=25)
    z1, nfe = solver.solve(velocity, z0, project)     # velocity(z, t: float) -> [B, ...]

``project`` maps a state back into the diffused subspace (masks, zero centre of mass) after
every update; every update is a linear combination of states and velocities that already
lie there, so the projection only removes round-off. Samplers are deterministic: the same
``z0`` and model give bitwise the same result on one machine.

Built-in (``SAMPLERS`` registry, ``family = "flow"``), ``steps`` = number of ODE steps on a
uniform grid in ``t``:

* ``euler`` — first order; NFE = ``steps`` (default 50). ``ddim`` maps here for flow
  generators: DDIM with ``eta = 0`` on the linear interpolant (``alpha_t = t``,
  ``sigma_t = 1 - t``) is exactly this Euler step.
* ``midpoint`` — explicit midpoint (RK2); NFE = ``2 steps`` (default 25 steps).
* ``heun`` — Heun's trapezoidal predictor-corrector (second order); the last step into
  ``t = 1`` is an Euler step (as in Karras et al., 2022), so NFE = ``2 steps - 1``
  (default 25 steps).
* ``dopri5`` — adaptive Dormand-Prince 5(4) with FSAL (``rtol = atol = 1e-3``, error in
  RMS over the diffused degrees of freedom, first step ``1 / steps``); NFE = 1 + 6 per
  attempted step, data dependent, reported by :meth:`solve` (at most ``max_nfe``).
"""
from __future__ import annotations

from typing import Callable

import torch

from harness.core.registry import SAMPLERS

__all__ = ["FlowSampler", "EulerSampler", "MidpointSampler", "HeunSampler",
           "Dopri5Sampler", "make_flow_sampler", "FLOW_ALIASES"]

Velocity = Callable[[torch.Tensor, float], torch.Tensor]

#: diffusion sampler names that mean a flow sampler exactly
FLOW_ALIASES = {"ddim": "euler"}


class FlowSampler:
    """Base class: ``steps`` ODE steps on the uniform grid ``t_k = k / steps``."""

    name = "flow"
    family = "flow"
    #: NFE = a * steps + b (``generators.nfe.steps_for_nfe``); None: no fixed NFE (adaptive)
    nfe_rule: tuple[int, int] | None = (1, 0)
    default_steps = 50

    def __init__(self, steps: int | None = None, eta: float = 0.0, **_ignored):
        steps = self.default_steps if steps is None else steps
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{self.name}: steps must be a positive int, got {steps!r}")
        if eta != 0:
            raise ValueError(f"{self.name} is a deterministic ODE solver; eta must be 0")
        self.steps = steps

    @property
    def nfe(self) -> int | None:
        """Velocity evaluations per trajectory (None: adaptive)."""
        return self.steps

    def grid(self) -> list[float]:
        return [k / self.steps for k in range(self.steps + 1)]

    def solve(self, velocity: Velocity, z: torch.Tensor, project=lambda z: z,
              dof: int | None = None) -> tuple[torch.Tensor, int]:  # pragma: no cover
        """Integrate from ``t = 0`` to ``1``; returns ``(z_1, NFE used)``. ``dof``: the
        number of diffused degrees of freedom in ``z`` (adaptive error norms)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps})"


@SAMPLERS.register("euler")
class EulerSampler(FlowSampler):
    """``z_{k+1} = z_k + h v(z_k, t_k)``."""

    name = "euler"

    def solve(self, velocity, z, project=lambda z: z, dof=None):
        ts = self.grid()
        for t, s in zip(ts[:-1], ts[1:]):
            z = project(z + (s - t) * velocity(z, t))
        return z, self.steps


@SAMPLERS.register("midpoint")
class MidpointSampler(FlowSampler):
    """``z_{k+1} = z_k + h v(z_k + h/2 v(z_k, t_k), t_k + h/2)``."""

    nfe_rule = (2, 0)

    name = "midpoint"
    default_steps = 25

    @property
    def nfe(self) -> int:
        return 2 * self.steps

    def solve(self, velocity, z, project=lambda z: z, dof=None):
        ts = self.grid()
        for t, s in zip(ts[:-1], ts[1:]):
            h = s - t
            zm = project(z + 0.5 * h * velocity(z, t))
            z = project(z + h * velocity(zm, t + 0.5 * h))
        return z, self.nfe


@SAMPLERS.register("heun")
class HeunSampler(FlowSampler):
    """Trapezoidal predictor-corrector; Euler on the last step (see module docstring)."""

    nfe_rule = (2, -1)

    name = "heun"
    default_steps = 25

    @property
    def nfe(self) -> int:
        return 2 * self.steps - 1

    def solve(self, velocity, z, project=lambda z: z, dof=None):
        ts = self.grid()
        for k, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
            h = s - t
            v1 = velocity(z, t)
            ze = project(z + h * v1)
            if k == self.steps - 1:
                z = ze
            else:
                z = project(z + 0.5 * h * (v1 + velocity(ze, s)))
        return z, self.nfe


# Dormand-Prince 5(4) tableau
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
      (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
      (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
      (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


@SAMPLERS.register("dopri5")
class Dopri5Sampler(FlowSampler):
    """Adaptive Dormand-Prince 5(4) (see module docstring)."""

    nfe_rule = None

    name = "dopri5"
    default_steps = 10

    def __init__(self, steps: int | None = None, eta: float = 0.0, rtol: float = 1e-3,
                 atol: float = 1e-3, max_nfe: int = 2000, **_ignored):
        super().__init__(steps, eta)
        if not (rtol > 0 and atol > 0 and max_nfe > 7):
            raise ValueError("dopri5 needs rtol > 0, atol > 0, max_nfe > 7")
        self.rtol, self.atol, self.max_nfe = rtol, atol, max_nfe

    @property
    def nfe(self) -> None:
        return None

    def solve(self, velocity, z, project=lambda z: z, dof=None):
        dof = float(dof or z.numel())
        t, h = 0.0, 1.0 / self.steps
        k1 = velocity(z, t)
        nfe = 1
        while t < 1.0:
            h = min(h, 1.0 - t)
            ks = [k1]
            for i in range(1, 7):
                zi = z + h * sum(a * k for a, k in zip(_A[i], ks) if a)
                ks.append(velocity(project(zi), t + _C[i] * h))
            nfe += 6
            z5 = project(z + h * sum(b * k for b, k in zip(_B5, ks) if b))
            err = h * sum((b5 - b4) * k for b5, b4, k in zip(_B5, _B4, ks) if b5 != b4)
            scale = self.atol + self.rtol * torch.maximum(z.abs(), z5.abs())
            e = float(((err / scale) ** 2).sum() / dof) ** 0.5
            if e <= 1.0:
                t, z, k1 = (1.0 if h >= 1.0 - t else t + h), z5, ks[6]   # FSAL
            h *= min(5.0, max(0.2, 0.9 * (e if e > 0 else 1e-10) ** -0.2))
            if t < 1.0 and nfe + 6 > self.max_nfe:
                raise RuntimeError(f"dopri5 needed more than max_nfe={self.max_nfe} "
                                   "evaluations; raise it or use a fixed-step sampler")
        return z, nfe


def make_flow_sampler(name: str, steps: int | None = None, eta: float = 0.0) -> FlowSampler:
    """A flow sampler by registry name (``ddim`` -> ``euler``, see module docstring); a
    diffusion sampler name is a KeyError listing the valid ones."""
    cls = SAMPLERS.get(FLOW_ALIASES.get(name, name))
    if getattr(cls, "family", "diffusion") != "flow":
        valid = [n for n in SAMPLERS.names() if getattr(SAMPLERS.get(n), "family", "") == "flow"]
        raise KeyError(f"sampler {name!r} is a diffusion sampler; valid samplers for flow "
                       f"generators: {', '.join(valid)} (ddim = euler)")
    return cls(steps=steps, eta=eta)


def probe(cls: type, steps: int = 10, n: int = 4000, seed: int = 0):
    """Drive sampler class ``cls`` with the exact velocity between ``N(0, I)`` noise and
    ``N(0, I)`` data in 2-D (``E[x1 - x0 | z_t] = (2t - 1) z_t / ((1 - t)^2 + t^2)``), as a
    conformance probe: returns ``(samples [n, 2], nfe used, steps)``; the samples should be
    ``N(0, I)``."""
    smp = cls(steps=steps)
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, 2, generator=g, dtype=torch.float64)

    def velocity(z, t):
        return (2 * t - 1) / ((1 - t) ** 2 + t ** 2) * z

    z1, nfe = smp.solve(velocity, z0, lambda v: v)
    return z1, nfe, smp.steps
