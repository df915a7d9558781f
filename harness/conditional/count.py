"""The atom count as a constraint for vector latents (EDM protocol, issue #24).

EDM's targets are (atom count, value) pairs. A per-atom latent is *given* the count (its
mask has that many atoms), so it hits it by construction. A vector latent can only be told
it as soft context (``conditional.atom_count_context``) and measured on ``qm9-cond-cpu`` it
landed on the requested count 17-19 % of the time. A space whose topology decodes on its own
(``Space.topology_atom_counts``: the invariant space's SELFIES half, no conformer or geometry
network) makes the count a constraint instead: draw up to ``K`` latents per target
(``conditional.count_candidates``), read each one's count from its topology, keep the first
whose count equals the requested one, else the one nearest to it (the earliest on a tie),
and decode the geometry of the kept latent only.

Round ``k`` (0-based) draws only for the targets not yet matched, with seed ``seed + k *
ROUND_SEED_STRIDE``, so ``K = 1`` is exactly one ordinary draw (the unconditional path's and
the previous behaviour). Units: atom counts include explicit hydrogens.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["ROUND_SEED_STRIDE", "count_record", "sample_with_count", "select_candidates"]

#: seed offset between candidate rounds (a prime, far from the seeds studies use)
ROUND_SEED_STRIDE = 7919


def select_candidates(counts: np.ndarray, requested: np.ndarray) -> np.ndarray:
    """The candidate kept per target.

    Args:
        counts: ``[K, B]`` atom counts of candidate ``k`` of target ``b`` (negative: not
            drawn, because an earlier candidate already matched).
        requested: ``[B]`` requested atom counts.

    Returns:
        ``[B]`` int64 candidate index: the first exact match, else the nearest count (the
        earliest among equally near ones).
    """
    counts = np.asarray(counts, np.int64)
    requested = np.asarray(requested, np.int64)
    if counts.ndim != 2 or counts.shape[1] != len(requested):
        raise ValueError(f"select_candidates: counts {counts.shape} vs {len(requested)} targets")
    if len(requested) and not (counts[0] >= 0).all():
        raise ValueError("select_candidates: every target needs its first candidate")
    dist = np.where(counts >= 0, np.abs(counts - requested[None, :]), np.iinfo(np.int64).max)
    return dist.argmin(0).astype(np.int64)       # argmin: the first of equal minima


def sample_with_count(generator, space, targets, norm: dict[str, Any], guidance_scale: float = 1.0,
                      candidates: int = 1, **sample_kwargs):
    """Decoded molecules (a ``MolBatch`` in target order) for ``targets``, each drawn from up
    to ``candidates`` latents selected on atom count (see the module doc).

    Falls back to one draw (:func:`~harness.conditional.protocol.sample_conditional`) when
    ``candidates == 1``, the latent is per-atom, the targets carry no atom count (``ldm``) or
    the space cannot read counts from its topology. Other keywords go to
    ``generator.sample`` (``seed`` is the first round's).

    Returns:
        ``(molecules, info)``; ``info``: ``count_candidates`` (K as configured),
        ``constraint`` (whether selection ran), ``drawn`` (latents sampled),
        ``draws_per_target`` (the sampling cost per kept molecule, in trajectories of the
        sampler's NFE each), ``rounds``, ``seconds_topology`` (count reads, s).
    """
    import torch

    from harness.conditional.protocol import sample_conditional
    from harness.core.types import LatentBatch

    k_max = int(candidates)
    info: dict[str, Any] = {"count_candidates": k_max, "constraint": False}
    if not (k_max > 1 and generator.spec.kind == "vector" and targets.n_atoms is not None
            and len(targets)):
        decoded = sample_conditional(generator, space, targets, norm, guidance_scale, **sample_kwargs)
        return decoded, {**info, "drawn": len(targets), "draws_per_target": 1.0, "rounds": 1}
    ctx = targets.context(norm)
    requested = np.asarray(targets.n_atoms, np.int64)
    n = len(targets)
    seed = int(sample_kwargs.pop("seed", 0))
    counts = np.full((k_max, n), -1, np.int64)
    latents: torch.Tensor | None = None
    todo = np.arange(n)
    drawn, t_topo, rounds = 0, 0.0, 0
    for k in range(k_max):
        latent = generator.sample(len(todo), context=ctx[todo], guidance_scale=guidance_scale,
                                  seed=seed + k * ROUND_SEED_STRIDE, **sample_kwargs)
        drawn, rounds = drawn + len(todo), k + 1
        t0 = time.perf_counter()
        got = space.topology_atom_counts(latent)
        t_topo += time.perf_counter() - t0
        if got is None:              # the space cannot read counts: the first draw, as K = 1
            return space.decode(latent), {**info, "drawn": n, "draws_per_target": 1.0, "rounds": 1}
        if latents is None:
            latents = torch.full((k_max, n, latent.h.shape[1]), float("nan"), dtype=latent.h.dtype)
        latents[k, torch.as_tensor(todo)] = latent.h.detach().cpu()
        got = np.asarray(got, np.int64)
        counts[k, todo] = got
        todo = todo[got != requested[todo]]
        if not len(todo):
            break
    pick = select_candidates(counts, requested)
    kept = latents[torch.as_tensor(pick), torch.arange(n)].to(latent.h.device)  # where drawn
    decoded = space.decode(LatentBatch(h=kept, spec=generator.spec))
    info.update(constraint=True, drawn=int(drawn), draws_per_target=round(drawn / n, 3), rounds=rounds,
                seconds_topology=round(t_topo, 2),
                topology_hit_rate=float((counts[pick, np.arange(n)] == requested).mean()))
    return decoded, info


def count_record(batch, targets, kind: str, candidates: int = 1) -> dict[str, Any]:
    """How often the molecules ``batch`` (a ``MolBatch`` in target order) have the atom count
    their target asked for.

    Args:
        kind: the latent's kind (``per_atom``: the count is set by the mask, a hit rate of 1
            by construction; ``vector``: chosen by the generator, constrained when K > 1).
        candidates: K (``conditional.count_candidates``) the samples were drawn with.

    Returns:
        ``{"hit_rate", "mean_abs_error" (atoms), "n", "count_candidates", "by_construction"}``;
        ``hit_rate`` None when the targets carry no atom count (``ldm``).
    """
    got = batch.mask.sum(1).cpu().numpy().astype(np.int64)
    out: dict[str, Any] = {"n": len(got), "count_candidates": int(candidates),
                           "by_construction": kind == "per_atom", "kind": kind}
    if targets.n_atoms is None or not len(got):
        return {**out, "hit_rate": None, "mean_abs_error": None}
    want = np.asarray(targets.n_atoms, np.int64)
    return {**out, "hit_rate": float((got == want).mean()),
            "mean_abs_error": float(np.abs(got - want).mean())}
