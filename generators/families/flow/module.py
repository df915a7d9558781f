"""``FlowGenerator``: flow matching (rectified flow) on any latent — the second family.

It plugs into every space exactly like :class:`~generators.families.diffusion.module.DiffusionGenerator`: it
sees only the :class:`~harness.core.types.LatentSpec` and shares the denoisers, EMA, AdamW,
normaliser, atom-count prior, latent DataModule, exact resume, weights-only checkpoints,
conditioning and classifier-free guidance of :class:`~generators.base.LatentGenerator`.
``generator.family: flow`` selects it; its knobs are ``generator.flow.*``
(:class:`~generators.families.flow.config.FlowConfig`); the ``generator.diffusion`` section
is ignored.

Training (``objective.py``)
    ``t`` uniform or logit-normal, ``z_t = (1 - t) x0 + t x1`` with masked zero-CoM noise
    ``x0``, L2 loss on the velocity ``x1 - x0`` (or on ``x1``) normalised by the diffused
    dimension. Optional minibatch OT coupling (Kabsch-aligned for coordinates, pairs of equal
    atom mask only) and self-conditioning: on half of the steps (a coin drawn from the step's
    generator) the network first predicts ``x1`` without gradient and sees that estimate as
    an extra input. Self-conditioning widens the denoiser's invariant input by the estimate's
    features (vector: ``x1_hat``; per-atom: ``h1_hat`` and, with coordinates, each atom's
    invariant squared distance ``|x1_hat_i - z_i|^2``) and drops the extra outputs, so every
    denoiser works unchanged and equivariance is kept.

Sampling (``samplers.py``)
    ``euler`` (NFE = steps; ``ddim`` is an exact alias), ``midpoint`` (2 steps), ``heun``
    (2 steps - 1), ``dopri5`` (adaptive, reported), from ``t = 0`` to ``1`` on a uniform grid;
    deterministic given the seed (the noise is drawn as for diffusion). Guidance combines the
    conditional and unconditional outputs (``out_u + w (out_c - out_u)``); bounded latents
    clip the ``x1`` estimate to ``[-1, 1]`` and move along ``(x1_clip - z) / (1 - t)``.
"""
from __future__ import annotations


import torch
from torch import nn

from ... import guidance as G
from ...base import LatentGenerator
from ...self_conditioning import sc_features, sc_width, wide_denoiser
from . import objective as F
from .samplers import make_flow_sampler

__all__ = ["FlowGenerator"]


class FlowGenerator(LatentGenerator):
    """Flow-matching generator (see module docstring; arguments as
    :class:`~generators.base.LatentGenerator`)."""

    family = "flow"

    def _setup_family(self) -> None:
        self.fc = self.config.flow
        lay = self.layout
        self._sc_extra = sc_width(lay, self.fc.self_conditioning)

    def _make_denoiser(self, cls, kwargs: dict) -> nn.Module:
        if not self._sc_extra:
            return super()._make_denoiser(cls, kwargs)
        return wide_denoiser(self.spec, cls, self._ctx_in, kwargs, self._sc_extra,
                             self.layout.per_atom)

    # -- network ---------------------------------------------------------------------------
    def _sc_features(self, x1: torch.Tensor, z: torch.Tensor, mask) -> torch.Tensor:
        """Invariant self-conditioning input from an ``x1`` estimate at state ``z``."""
        return sc_features(self.layout, x1, z, mask)

    def _model(self, net, z, t, mask, ctx, x1_prev=None) -> torch.Tensor:
        """Network output at flow time ``t [B]`` (denoisers see the noise level ``1 - t``)."""
        extra = {}
        if self._sc_extra:
            extra["sc"] = None if x1_prev is None else self._sc_features(x1_prev, z, mask)
        return self._net(net, z, 1 - t, mask, ctx, **extra)

    def flow_loss(self, net, x1: torch.Tensor, mask: torch.Tensor | None,
                  ctx: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """L2 flow-matching loss of ``net`` on clean (normalised) latents ``x1`` with all
        randomness from ``generator`` (times, noise, context dropout, self-conditioning)."""
        fc, lay = self.fc, self.layout
        B, dev = x1.shape[0], x1.device
        t = F.sample_time(B, fc.time_sampling, generator, dev, fc.logit_mean,
                          fc.logit_std).to(x1.dtype)
        x0 = lay.noise(tuple(x1.shape), mask, generator, dev, x1.dtype)
        if fc.ot_coupling:
            x0 = F.ot_couple(x0, x1, mask, lay.feat, lay.coords)
        zt = F.interpolate(x0, x1, t)
        keep = None
        if self._ctx_in and ctx is not None:
            keep = torch.rand(B, generator=generator, device=dev) >= self.config.context_dropout
        ctx_in = G.context_input(ctx, keep, B, x1, self._ctx_in)
        x1_prev = None
        if self._sc_extra and bool(torch.rand((), generator=generator, device=dev) < 0.5):
            with torch.no_grad():
                x1_prev = F.to_x1(fc.prediction, self._model(net, zt, t, mask, ctx_in), zt, t)
        out = self._model(net, zt, t, mask, ctx_in, x1_prev)
        return lay.mse(out, F.velocity_target(fc.prediction, x0, x1), mask)

    loss = flow_loss

    def _velocity(self, net, z, t: float, mask, ctx_c, ctx_u, w, lo_hi, x1_prev):
        """``(velocity, x1 estimate)`` of the guided model at state ``z``, time ``t``."""
        B, pred = z.shape[0], self.fc.prediction
        tt = torch.full((B,), t, device=z.device, dtype=z.dtype)
        if ctx_c is None:
            out = self._model(net, z, tt, mask, ctx_u, x1_prev)
        elif w == 1.0:
            out = self._model(net, z, tt, mask, ctx_c, x1_prev)
        else:   # conditional and unconditional in one call
            m2 = None if mask is None else torch.cat([mask, mask])
            p2 = None if x1_prev is None else torch.cat([x1_prev, x1_prev])
            both = self._model(net, torch.cat([z, z]), torch.cat([tt, tt]), m2,
                               torch.cat([ctx_c, ctx_u]), p2)
            out = G.guide(both[:B], both[B:], w)
        x1 = F.to_x1(pred, out, z, tt)
        if lo_hi is not None:
            x1 = G.clip_x0(x1, lo_hi, lambda v: self.layout.project(v, mask))
            v = F.to_velocity("x1", x1, z, tt)
        else:
            v = F.to_velocity(pred, out, z, tt)
        return self.layout.project(v, mask), x1

    @torch.no_grad()
    def velocity(self, z: torch.Tensor, t: float, mask: torch.Tensor | None = None,
                 context: torch.Tensor | None = None, guidance_scale: float = 1.0,
                 use_ema: bool = True) -> torch.Tensor:
        """The model's velocity ``dz/dt`` at state ``z`` (normalised space, ``[B, D]`` or
        ``[B, N, W]``) and flow time ``t`` in [0, 1] (0 = noise), for custom solvers."""
        net = self.ema if (use_ema and self.ema is not None) else self.denoiser
        B = z.shape[0]
        ctx_c = None if context is None else G.context_input(context.to(z), None, B, z,
                                                             self._ctx_in)
        ctx_u = G.context_input(None, None, B, z, self._ctx_in)
        return self._velocity(net, z, t, mask, ctx_c, ctx_u, guidance_scale, None, None)[0]

    # -- sampling ---------------------------------------------------------------------------
    def _integrator(self, sampler, steps, eta, spacing):
        if spacing is not None:
            raise ValueError("spacing applies to diffusion samplers; flow samplers step "
                             "uniformly in t")
        return make_flow_sampler(sampler, steps, eta)

    def _trajectory(self, net, solver, shape, mask, ctx, w, lo_hi, g, bar):
        """One ODE solve from noise (t = 0) to a latent (t = 1) for a batch."""
        lay, dev = self.layout, self.device
        B = shape[0]
        z = lay.noise(shape, mask, g, dev)
        ctx_c = G.context_input(ctx, None, B, z, self._ctx_in) if ctx is not None else None
        ctx_u = G.context_input(None, None, B, z, self._ctx_in)
        state = {"x1": None}

        def velocity(zz: torch.Tensor, t: float) -> torch.Tensor:
            v, x1 = self._velocity(net, zz, t, mask, ctx_c, ctx_u, w, lo_hi,
                                   state["x1"] if self._sc_extra else None)
            state["x1"] = x1
            if bar is not None:
                bar.update(1)
            return v

        return solver.solve(velocity, z, lambda v: lay.project(v, mask),
                            dof=int(lay.dims(mask, B).sum()))
