"""Quality against the number of function evaluations (NFE), for either generator family.

:func:`quality_vs_nfe` samples a trained generator at each requested NFE with a fixed-step
sampler (the sampler's ``steps`` chosen so that its stated NFE is met exactly), decodes with
the space, scores with a caller's function and times both, one row per NFE::

    rows = quality_vs_nfe(gen, space, scorer, [2, 5, 10, 20], sampler="heun", n=200)
    # [{"sampler": "heun", "steps": 1, "nfe": 1, "requested_nfe": 2, "n": 200,
    #   "seconds_per_molecule": ..., "decode_seconds_per_molecule": ..., <scorer keys>}, ...]

NFE per sampler: diffusion ``ddpm`` / ``ddim`` / ``dpm_solver++`` = steps (at most ``T``);
flow ``euler`` = steps, ``midpoint`` = 2 steps, ``heun`` = 2 steps - 1. A requested NFE a
sampler cannot meet exactly is rounded down to the nearest one it can (``nfe`` is what was
used); the adaptive ``dopri5`` has no fixed NFE and is refused. Every row uses the same seed,
so rows differ only in the discretisation. Timings are wall-clock seconds on this machine
(sampling includes the model on its device; decoding is the space's).

The generator only needs ``sample(..., return_stats=True)`` and ``family``; the space only
``decode``; nothing here imports a space or a metric.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

__all__ = ["quality_vs_nfe", "steps_for_nfe"]

def steps_for_nfe(sampler: str, nfe: int, family: str | None = None) -> int:
    """Largest ``steps`` whose NFE is at most ``nfe`` (at least one step), from the
    sampler's declared ``nfe_rule`` (NFE = a * steps + b). ``family`` resolves its own
    aliases (flow's ``ddim`` is its ``euler``); without it the name is a registry name."""
    from harness.core.registry import FAMILIES, SAMPLERS

    name = FAMILIES.get(family).resolve_sampler(sampler) if family else sampler
    rule = getattr(SAMPLERS.get(name), "nfe_rule", None)
    if rule is None:
        fixed = [n for n in SAMPLERS.names() if getattr(SAMPLERS.get(n), "nfe_rule", None)]
        raise ValueError(f"sampler {sampler!r} has no fixed NFE; use one of {', '.join(fixed)}")
    if not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"NFE must be a positive int, got {nfe!r}")
    a, b = rule
    return max(1, (nfe - b) // a)


def quality_vs_nfe(generator, space, scorer: Callable[[Any], dict[str, float] | float],
                   nfes: Iterable[int], *, sampler: str | None = None, n: int = 100,
                   seed: int = 0, batch_size: int = 256, **sample_kwargs) -> list[dict[str, Any]]:
    """Rows ``{"sampler", "steps", "nfe", "requested_nfe", "n", "seconds_per_molecule",
    "decode_seconds_per_molecule", **scores}``, one per entry of ``nfes`` (in order).

    Args:
        generator: a trained ``DiffusionGenerator`` or ``FlowGenerator``.
        space: the space whose latents it generates (``decode`` -> ``MolBatch``).
        scorer: ``decoded MolBatch -> {name: value}`` (or one float, stored as ``score``).
        nfes: NFE budgets to evaluate.
        sampler: fixed-step sampler (default: the family's declared ``nfe_sampler``,
            ``ddim`` for diffusion and ``heun`` for flow; ``l3dg list families``).
        n, seed, batch_size: molecules per row, sampling seed, denoiser batch.
        **sample_kwargs: passed to ``generator.sample`` (``context``, ``guidance_scale``,
            ``eta``, ...).
    """
    if sampler is None:
        from harness.core.registry import FAMILIES

        sampler = FAMILIES.get(generator.family).nfe_sampler
    rows = []
    for want in nfes:
        steps = steps_for_nfe(sampler, want, generator.family)
        t0 = time.perf_counter()
        latent, stats = generator.sample(n, sampler=sampler, steps=steps, seed=seed,
                                         batch_size=batch_size, progress=False,
                                         return_stats=True, **sample_kwargs)
        t_sample = time.perf_counter() - t0
        t0 = time.perf_counter()
        decoded = space.decode(latent)
        t_decode = time.perf_counter() - t0
        scores = scorer(decoded)
        if not isinstance(scores, dict):
            scores = {"score": float(scores)}
        rows.append({"sampler": stats["sampler"], "steps": stats["steps"], "nfe": stats["nfe"],
                     "requested_nfe": want, "n": n, "seconds_per_molecule": t_sample / n,
                     "decode_seconds_per_molecule": t_decode / n, **scores})
    return rows
