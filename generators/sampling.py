"""The sampling loop, written out, and the atom-count prior (shared by every family).

:func:`sample_latents` draws ``n`` latents from a trained generator:

1. atom counts ``n_atoms ~ p(N)`` (per-atom latents; the training histogram held by
   :class:`AtomCountPrior`) from a CPU ``torch.Generator`` seeded by ``(seed, 11)``;
2. molecules sorted by size (largest first) and cut into batches of ``batch_size``, so a
   batch pads to its own largest molecule;
3. per batch, the family's trajectory (``generator._trajectory``: reverse diffusion or an ODE
   solve) from noise drawn with a second generator seeded by ``(seed, 12)`` on the model's
   device;
4. the result mapped back to the space's latent (``denormalize``), bounded features clamped
   to ``[-1, 1]``, coordinates re-projected to zero CoM, and scattered back into the
   original order.

Same seed, inputs and machine -> bitwise the same samples. The number of function
evaluations (NFE: sequential evaluations of the guided model per trajectory) is recorded in
``generator.last_sample_stats``.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from harness.core.nn import tune_cpu_allocator
from harness.core.types import LatentBatch

from .data import mix_seed

__all__ = ["AtomCountPrior", "sample_latents"]


class AtomCountPrior(nn.Module):
    """``p(N)``: counts of training molecules with ``k`` atoms, buffer ``hist [K]`` (float64;
    empty until fitted). Its length depends on the data, so loading resizes it."""

    def __init__(self):
        super().__init__()
        self.register_buffer("hist", torch.zeros(0, dtype=torch.float64))

    @property
    def fitted(self) -> bool:
        return self.hist.numel() > 0

    def fit(self, mask: torch.Tensor) -> None:
        """Histogram of the atom counts of a training set (``mask [M, N]``)."""
        counts = mask.sum(1)
        self.hist = torch.bincount(counts).to(torch.float64).to(self.hist.device)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``[n]`` long atom counts (never 0) drawn with a CPU ``generator``."""
        hist = self.hist.detach().cpu().to(torch.float64)
        if hist.numel() == 0 or hist[1:].sum() <= 0:
            raise ValueError("no atom-count histogram: fit the generator first, or pass n_atoms")
        hist = hist.clone()
        hist[0] = 0
        return torch.multinomial(hist, n, replacement=True, generator=generator)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "hist"
        if key in state_dict and state_dict[key].shape != self.hist.shape:
            self.hist = torch.zeros_like(state_dict[key], dtype=torch.float64,
                                         device=self.hist.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _atom_counts(prior: AtomCountPrior, n: int, n_atoms, g_cpu) -> torch.Tensor:
    if n_atoms is None:
        return prior.draw(n, g_cpu)
    n_atoms = torch.as_tensor(n_atoms, dtype=torch.long).cpu()
    if n_atoms.shape != (n,) or (n_atoms < 1).any():
        raise ValueError(f"n_atoms must be [{n}] positive counts, got {tuple(n_atoms.shape)}")
    return n_atoms


@torch.no_grad()
def sample_latents(gen, n: int, sampler: str, steps: int | None = None, eta: float = 0.0,
                   seed: int = 0, n_atoms: torch.Tensor | None = None,
                   context: torch.Tensor | None = None, guidance_scale: float = 1.0,
                   batch_size: int = 256, clip: bool | None = None, progress: bool = True,
                   use_ema: bool = True, spacing: str | None = None
                   ) -> tuple[LatentBatch, dict[str, Any]]:
    """The loop of ``generator.sample`` (arguments documented there). Returns the latents
    (this generator's spec, original order) and ``{"sampler", "steps", "nfe", "seconds"}``
    (``nfe``: evaluations per trajectory; the mean over batches for adaptive solvers)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if guidance_scale != 1.0 and context is None:
        raise ValueError("guidance_scale != 1 needs a context")
    C = gen.context_dim
    if context is not None and not C:
        raise ValueError("this generator was trained without context (context_dim=0)")
    clip = gen.spec.bounded if clip is None else bool(clip)
    lay, dev = gen.layout, gen.device
    if dev.type == "cpu":
        tune_cpu_allocator()
    net = gen.ema if (use_ema and gen.ema is not None) else gen.denoiser
    integ = gen._integrator(sampler, steps, eta, spacing)

    g_cpu = torch.Generator().manual_seed(mix_seed(seed, 11))
    g = torch.Generator(device=dev).manual_seed(mix_seed(seed, 12))
    if lay.per_atom:
        n_atoms = _atom_counts(gen.prior, n, n_atoms, g_cpu)
        order = torch.argsort(n_atoms, descending=True, stable=True)
    else:
        if n_atoms is not None:
            raise ValueError("vector latents carry no atom counts; pass n_atoms=None")
        order = torch.arange(n)
    if context is not None:
        context = torch.as_tensor(context, dtype=torch.get_default_dtype())
        if context.dim() == 1:
            context = context.expand(n, -1)
        if context.shape != (n, C):
            raise ValueError(f"context must be [{n}, {C}] or [{C}], got {tuple(context.shape)}")
    lo_hi = gen.normalizer.clip_bounds() if clip else None

    n_max = int(n_atoms.max()) if lay.per_atom else 0
    out = torch.zeros((n, n_max, lay.width) if lay.per_atom else (n, lay.width), device=dev)
    out_mask = torch.zeros(n, n_max, dtype=torch.bool, device=dev) if lay.per_atom else None
    bar = None
    n_batches = math.ceil(n / batch_size)
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_batches * (integ.nfe or integ.steps), desc=f"sampling ({sampler})",
                   leave=False)
    nfes: list[int] = []
    start = time.perf_counter()
    was_training = net.training
    net.eval()
    try:
        for lo in range(0, n, batch_size):
            idx = order[lo:lo + batch_size]
            B = len(idx)
            mask = None
            if lay.per_atom:
                counts = n_atoms[idx].to(dev)
                N = int(counts.max())
                mask = torch.arange(N, device=dev)[None] < counts[:, None]
                shape = (B, N, lay.width)
            else:
                shape = (B, lay.width)
            ctx = None if context is None else context[idx].to(dev)
            z, nfe = gen._trajectory(net, integ, shape, mask, ctx, guidance_scale, lo_hi, g, bar)
            nfes.append(nfe)
            z = gen.normalizer.denormalize(z, mask)
            if clip:
                z[..., :lay.feat] = z[..., :lay.feat].clamp(-1, 1)
                z = lay.project(z, mask)
            idx_d = idx.to(dev)
            if lay.per_atom:
                out[idx_d, :z.shape[1]] = z
                out_mask[idx_d, :mask.shape[1]] = mask
            else:
                out[idx_d] = z
    finally:
        net.train(was_training)
        if bar is not None:
            bar.close()
    sizes = [len(order[lo:lo + batch_size]) for lo in range(0, n, batch_size)]
    nfe = nfes[0] if len(set(nfes)) == 1 else sum(a * b for a, b in zip(nfes, sizes)) / n
    stats = {"sampler": integ.name, "steps": integ.steps, "nfe": nfe,
             "seconds": time.perf_counter() - start}
    return lay.to_batch(out, out_mask), stats
