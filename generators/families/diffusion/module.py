"""``DiffusionGenerator``: discrete-time Gaussian diffusion on any latent.

One generator family diffuses every space: it sees only the latent's
:class:`~harness.core.types.LatentSpec` (vector or per-atom, width, coordinates, bounded),
never which space produced it. What it shares with the flow family (denoiser, EMA, AdamW,
normaliser, atom-count prior, data, exact resume, checkpoints) lives in
:class:`~generators.base.LatentGenerator`; this file adds the schedule, the loss and the
reverse-diffusion trajectory.

Training
    ``t ~ U{1..T}``, ``z_t = alpha_t z0 + sigma_t eps`` with masked, zero-CoM noise; L2 loss
    on the configured parametrisation (``generator.diffusion.prediction``: ``eps``, ``x0`` or ``v``; ``targets.py``)
    normalised per sample by the diffused dimension; context dropped with probability
    ``context_dropout``.

Sampling
    Any diffusion sampler (``ddpm``, ``ddim``, ``dpm_solver++``; ``samplers.py``)
    with any number of steps, whatever ``timesteps`` the model was trained with. NFE = the
    sampler's steps (one evaluation of the guided model per visited timestep; with
    ``guidance_scale != 1`` each evaluation runs the conditional and unconditional branch in
    one doubled batch). Optional clipping of the predicted clean latent to ``[-1, 1]`` for
    bounded latents.
"""
from __future__ import annotations

import torch

from ... import guidance as G
from ...base import LatentGenerator, spec_from_dict, spec_to_dict
from . import edm_objective as E
from . import targets as D
from .samplers import make_sampler
from .schedules import make_schedule

__all__ = ["DiffusionGenerator", "spec_to_dict", "spec_from_dict"]


class DiffusionGenerator(LatentGenerator):
    """Gaussian diffusion generator for any latent (see module docstring; arguments as
    :class:`~generators.base.LatentGenerator`: ``spec``, ``config``, ``context_dim``,
    ``seed``, config overrides)."""

    family = "diffusion"

    def _setup_family(self) -> None:
        self.schedule = make_schedule(self.config.diffusion.schedule, self.config.diffusion.timesteps)

    # -- network and conversions -------------------------------------------------------------
    def _model(self, net, z, t, mask, ctx) -> torch.Tensor:
        return self._net(net, z, t.to(z.dtype) / self.schedule.T, mask, ctx)

    def diffusion_loss(self, net, z0: torch.Tensor, mask: torch.Tensor | None,
                       ctx: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """L2 loss of ``net`` on clean (normalised) latents ``z0`` with randomness from
        ``generator``: ``t ~ U{1..T}``, masked/zero-CoM noise, context dropout."""
        B, dev = z0.shape[0], z0.device
        t = torch.randint(1, self.schedule.T + 1, (B,), generator=generator, device=dev)
        eps = self.layout.noise(tuple(z0.shape), mask, generator, dev, z0.dtype)
        zt = self.schedule.add_noise(z0, eps, t)
        keep = None
        if self._ctx_in and ctx is not None:
            u = torch.rand(B, generator=generator, device=dev)
            keep = u >= self.config.context_dropout
        out = self._model(net, zt, t, mask, G.context_input(ctx, keep, B, z0, self._ctx_in))
        target = D.training_target(self.config.diffusion.prediction, z0, eps, t, self.schedule)
        return self.layout.mse(out, target, mask)

    loss = diffusion_loss

    # -- EDM's objectives (edm_objective.py), for calibration against EDM -------------------
    def _eps_fn(self, net, mask, ctx=None):
        return lambda z, t: self._model(net, z, t, mask, ctx)

    def edm_l2_loss(self, net, z0: torch.Tensor, mask: torch.Tensor, t: torch.Tensor,
                    eps: torch.Tensor, include_charges: bool = True,
                    norm_values=E.EDM_NORM_VALUES) -> torch.Tensor:
        """``[B]`` EDM's ``l2`` training loss of ``net`` (eps-prediction) on clean
        normalised per-atom latents ``z0 [B, N, F + 3]`` at timesteps ``t [B]`` in ``0..T``
        with noise ``eps`` (:func:`edm_objective.edm_l2_loss`)."""
        if self.config.diffusion.prediction != "eps":
            raise ValueError("EDM's objectives are defined for eps prediction")
        return E.edm_l2_loss(self._eps_fn(net, mask), z0, mask, t, eps, self.schedule,
                             include_charges, norm_values)

    @torch.no_grad()
    def edm_nll(self, z0: torch.Tensor, mask: torch.Tensor, seed: int = 0,
                include_charges: bool = True, norm_values=E.EDM_NORM_VALUES,
                use_ema: bool = True) -> dict[str, torch.Tensor]:
        """EDM's NLL estimate (nats per molecule, incl. ``- log p(N)`` from the atom-count
        prior) of clean normalised latents ``z0 [B, N, F + 3]``, ``mask [B, N]``: one
        ``t ~ U{1..T}`` and two noise draws per molecule from ``seed``
        (:func:`edm_objective.edm_vlb`; its dict of terms)."""
        if self.config.diffusion.prediction != "eps":
            raise ValueError("EDM's objectives are defined for eps prediction")
        net = self.ema if (use_ema and self.ema is not None) else self.denoiser
        g = torch.Generator(device=z0.device).manual_seed(seed)
        B = z0.shape[0]
        t = torch.randint(1, self.schedule.T + 1, (B,), generator=g, device=z0.device)
        eps = self.layout.noise(tuple(z0.shape), mask, g, z0.device, z0.dtype)
        eps_0 = self.layout.noise(tuple(z0.shape), mask, g, z0.device, z0.dtype)
        log_pn = E.log_p_n(self.prior.hist, mask.sum(1)) if self.prior.fitted else None
        return E.edm_vlb(self._eps_fn(net, mask), z0, mask, t, eps, eps_0, self.schedule,
                         include_charges, norm_values, log_pn)

    def _predict(self, net, z, tt, mask, ctx_c, ctx_u, w, lo_hi):
        """``(eps, x0)`` with guidance and optional clipping of ``x0``."""
        B = z.shape[0]
        if ctx_c is None:
            out = self._model(net, z, tt, mask, ctx_u)
        elif w == 1.0:
            out = self._model(net, z, tt, mask, ctx_c)
        else:   # conditional and unconditional in one call
            m2 = None if mask is None else torch.cat([mask, mask])
            both = self._model(net, torch.cat([z, z]), torch.cat([tt, tt]), m2,
                               torch.cat([ctx_c, ctx_u]))
            out = G.guide(both[:B], both[B:], w)
        a, s = D.coefficients(self.schedule, tt, z)
        eps, x0 = D.to_eps_x0(self.config.diffusion.prediction, out, z, a, s)
        if lo_hi is not None:
            x0 = G.clip_x0(x0, lo_hi, lambda v: self.layout.project(v, mask))
            eps = D.eps_from_x0(z, x0, a, s)
        return eps, x0

    @torch.no_grad()
    def predict(self, z: torch.Tensor, t: torch.Tensor | int, mask: torch.Tensor | None = None,
                context: torch.Tensor | None = None, guidance_scale: float = 1.0,
                use_ema: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Model predictions ``(eps, x0)`` for a noisy latent in the diffused (normalised)
        space: ``z [B, D]`` or ``[B, N, W]`` (``W = F (+ 3)``, features then coordinates),
        integer timesteps ``t`` (``[B]`` or one int), ``mask [B, N]``. For custom samplers;
        :meth:`sample` is the usual entry point."""
        net = self.ema if (use_ema and self.ema is not None) else self.denoiser
        B = z.shape[0]
        t = torch.as_tensor(t, device=z.device, dtype=torch.long).expand(B)
        ctx_c = None if context is None else G.context_input(context.to(z), None, B, z,
                                                             self._ctx_in)
        return self._predict(net, z, t, mask, ctx_c, G.context_input(None, None, B, z,
                                                                     self._ctx_in),
                             guidance_scale, None)

    # -- sampling ----------------------------------------------------------------------------
    def _integrator(self, sampler, steps, eta, spacing):
        return make_sampler(sampler, self.schedule, steps, eta, spacing)

    def _trajectory(self, net, smp, shape, mask, ctx, w, lo_hi, g, bar):
        """One reverse-diffusion trajectory for a batch (the sampling loop, written out)."""
        lay, dev = self.layout, self.device
        B = shape[0]
        z = lay.noise(shape, mask, g, dev)
        smp.reset()
        ctx_c = G.context_input(ctx, None, B, z, self._ctx_in) if ctx is not None else None
        ctx_u = G.context_input(None, None, B, z, self._ctx_in)
        nfe = 0
        for t, s in smp.pairs():
            tt = torch.full((B,), t, device=dev, dtype=torch.long)
            eps, x0 = self._predict(net, z, tt, mask, ctx_c, ctx_u, w, lo_hi)
            nfe += 1
            noise = lay.noise(shape, mask, g, dev) if smp.needs_noise(s) else None
            z_new = lay.project(smp.step(z, t, s, eps=eps, x0=x0, noise=noise), mask)
            if t == s == 0 and getattr(smp, "final_keeps_features", False) and lay.coords:
                z_new = lay.pack(lay.split(z)[0], lay.split(z_new)[1])  # EDM's p(x | z_0)
            z = z_new
            if bar is not None:
                bar.update(1)
        return z, nfe
