"""``PrecondGenerator``: preconditioned sigma-parameterised diffusion (Karras et al., 2022)
on any latent — the third family.

It plugs into every space like the diffusion and flow families: it sees only the
:class:`~harness.core.types.LatentSpec` and shares the denoisers, EMA, AdamW, normaliser,
atom-count prior, latent DataModule, exact resume, weights-only checkpoints, conditioning
and classifier-free guidance of :class:`~generators.base.LatentGenerator`.
``generator.family: precond`` selects it; its knobs are ``generator.precond.*``
(:class:`~generators.families.precond.config.PrecondConfig`).

Training (``objective.py``)
    ``sigma`` log-normal (or VEDA-style arcsin), ``x = x0 + sigma n`` with masked zero-CoM
    noise ``n``; the network sees ``c_in x`` at time ``t = position of ln sigma in [ln
    sigma_min, ln sigma_max]`` and regresses ``(x0 - c_skip x) / c_out``, weighted by
    ``lambda(sigma) c_out^2`` (1 for Karras's lambda), normalised per sample by the diffused
    dimension. Optional self-conditioning: on half of the steps (a coin from the step's
    generator) the network first denoises without gradient and sees that estimate as an
    extra invariant input (vector: ``x0_hat``; per-atom: ``h0_hat`` and, with coordinates,
    ``|c_in (x0_hat_i - x_i)|^2`` per atom), so every denoiser works unchanged and
    equivariance is kept.

Sampling (``samplers.py``)
    ``precond_euler`` (NFE = steps; ``ddim`` is an exact alias) and ``precond_heun``
    (2 steps - 1) from ``sigma_max`` to 0 on the configured grid, optional churn;
    deterministic given the seed without churn. Guidance combines the conditional and
    unconditional network outputs (``F_u + w (F_c - F_u)``; ``D`` is affine in ``F``);
    bounded latents clip the denoised estimate ``D`` to ``[-1, 1]`` (features only).
    The NFE is counted call by call.
"""
from __future__ import annotations


import torch
from torch import nn

from ... import guidance as G
from ...base import LatentGenerator
from ...self_conditioning import sc_features, sc_width, wide_denoiser
from . import objective as P
from .samplers import make_precond_sampler

__all__ = ["PrecondGenerator"]


class PrecondGenerator(LatentGenerator):
    """Preconditioned (EDM-style) generator (see module docstring; arguments as
    :class:`~generators.base.LatentGenerator`)."""

    family = "precond"

    def _setup_family(self) -> None:
        self.pc = self.config.precond
        lay = self.layout
        self._sc_extra = sc_width(lay, self.pc.self_conditioning)

    def _make_denoiser(self, cls, kwargs: dict) -> nn.Module:
        if not self._sc_extra:
            return super()._make_denoiser(cls, kwargs)
        return wide_denoiser(self.spec, cls, self._ctx_in, kwargs, self._sc_extra,
                             self.layout.per_atom)

    # -- network ---------------------------------------------------------------------------
    def _sc_features(self, x0: torch.Tensor, x: torch.Tensor, c_in: torch.Tensor,
                     mask) -> torch.Tensor:
        """Invariant self-conditioning input from a denoised estimate ``x0`` at state ``x``
        (the coordinate gap in the network's input scale ``c_in``)."""
        return sc_features(self.layout, x0, x, mask, scale=c_in)

    def _model(self, net, x, sigma, mask, ctx, x0_prev=None) -> torch.Tensor:
        """Network output ``F(c_in x; t(sigma))`` for ``sigma [B]``."""
        pc = self.pc
        _, _, c_in, _ = P.preconditioning(sigma, pc.sigma_data)
        extra = {}
        if self._sc_extra:
            extra["sc"] = None if x0_prev is None else self._sc_features(x0_prev, x, c_in, mask)
        tf = P.network_time(sigma, pc.sigma_min, pc.sigma_max).to(x.dtype)
        return self._net(net, P._bc(c_in, x) * x, tf, mask, ctx, **extra)

    def precond_loss(self, net, x0: torch.Tensor, mask: torch.Tensor | None,
                     ctx: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """Weighted L2 loss of ``net`` on clean (normalised) latents ``x0`` with all
        randomness from ``generator`` (sigmas, noise, context dropout, self-conditioning)."""
        pc, lay = self.pc, self.layout
        B, dev = x0.shape[0], x0.device
        sigma = P.sample_sigma(B, pc, generator, dev, x0.dtype)
        n = lay.noise(tuple(x0.shape), mask, generator, dev, x0.dtype)
        x = x0 + P._bc(sigma, x0) * n
        keep = None
        if self._ctx_in and ctx is not None:
            keep = torch.rand(B, generator=generator, device=dev) >= self.config.context_dropout
        ctx_in = G.context_input(ctx, keep, B, x0, self._ctx_in)
        x0_prev = None
        if self._sc_extra and bool(torch.rand((), generator=generator, device=dev) < 0.5):
            with torch.no_grad():
                x0_prev = P.denoise(x, self._model(net, x, sigma, mask, ctx_in), sigma,
                                    pc.sigma_data)
        out = self._model(net, x, sigma, mask, ctx_in, x0_prev)
        err = lay.sq_error(out, P.target(x0, x, sigma, pc.sigma_data), mask)
        dims = lay.dims(mask, B).to(dev, x0.dtype).clamp_min(1.0)
        return (P.output_weight(sigma, pc.sigma_data, pc.loss_weighting) * err / dims).mean()

    loss = precond_loss

    def _denoise(self, net, x, sigma: float, mask, ctx_c, ctx_u, w, lo_hi, x0_prev):
        """The guided (and clipped) denoised estimate ``D(x; sigma)``."""
        B = x.shape[0]
        ss = torch.full((B,), sigma, device=x.device, dtype=x.dtype)
        if ctx_c is None:
            out = self._model(net, x, ss, mask, ctx_u, x0_prev)
        elif w == 1.0:
            out = self._model(net, x, ss, mask, ctx_c, x0_prev)
        else:   # conditional and unconditional in one call
            m2 = None if mask is None else torch.cat([mask, mask])
            p2 = None if x0_prev is None else torch.cat([x0_prev, x0_prev])
            both = self._model(net, torch.cat([x, x]), torch.cat([ss, ss]), m2,
                               torch.cat([ctx_c, ctx_u]), p2)
            out = G.guide(both[:B], both[B:], w)
        d = P.denoise(x, out, ss, self.pc.sigma_data)
        if lo_hi is not None:
            d = G.clip_x0(d, lo_hi, lambda v: self.layout.project(v, mask))
        return self.layout.project(d, mask)

    @torch.no_grad()
    def denoise(self, x: torch.Tensor, sigma: float, mask: torch.Tensor | None = None,
                context: torch.Tensor | None = None, guidance_scale: float = 1.0,
                use_ema: bool = True) -> torch.Tensor:
        """``D(x; sigma)`` of the model for a noisy latent in the diffused (normalised) space
        (``[B, D]`` or ``[B, N, W]``), for custom samplers; :meth:`sample` is the usual entry."""
        net = self.ema if (use_ema and self.ema is not None) else self.denoiser
        B = x.shape[0]
        ctx_c = None if context is None else G.context_input(context.to(x), None, B, x,
                                                             self._ctx_in)
        ctx_u = G.context_input(None, None, B, x, self._ctx_in)
        return self._denoise(net, x, sigma, mask, ctx_c, ctx_u, guidance_scale, None, None)

    # -- sampling ---------------------------------------------------------------------------
    def _integrator(self, sampler, steps, eta, spacing):
        if spacing is not None:
            raise ValueError("spacing applies to diffusion samplers; precond samplers use "
                             "generator.precond.grid (karras or arcsin)")
        pc = self.pc
        return make_precond_sampler(sampler, steps, eta, sigma_min=pc.sigma_min,
                                    sigma_max=pc.sigma_max, grid=pc.grid, rho=pc.rho,
                                    arcsin_mix=pc.arcsin_mix, s_churn=pc.s_churn,
                                    s_tmin=pc.s_tmin, s_tmax=pc.s_tmax, s_noise=pc.s_noise)

    def _trajectory(self, net, smp, shape, mask, ctx, w, lo_hi, g, bar):
        """One solve from ``sigma_max`` noise to a (normalised) latent for a batch; the NFE
        returned is the number of denoiser calls made."""
        lay, dev = self.layout, self.device
        B = shape[0]
        z = lay.noise(shape, mask, g, dev)
        ctx_c = G.context_input(ctx, None, B, z, self._ctx_in) if ctx is not None else None
        ctx_u = G.context_input(None, None, B, z, self._ctx_in)
        state = {"x0": None, "calls": 0}

        def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
            d = self._denoise(net, x, sigma, mask, ctx_c, ctx_u, w, lo_hi,
                              state["x0"] if self._sc_extra else None)
            state["x0"] = d
            state["calls"] += 1
            if bar is not None:
                bar.update(1)
            return d

        x, nfe = smp.solve(denoise, z, lambda v: lay.project(v, mask),
                           noise=lambda: lay.noise(shape, mask, g, dev))
        if nfe != state["calls"]:    # pragma: no cover - a sampler miscounting its NFE
            raise RuntimeError(f"{smp.name} reported NFE {nfe} but made {state['calls']} calls")
        return x, nfe
