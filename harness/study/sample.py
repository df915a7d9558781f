"""The study's ``sample`` stage: draw latents from a space's trained generator, decode them,
and leave what later stages and readers need, each written once:

* ``<out>.pt`` — the decoded MolBatch (tensors only);
* ``<out>.bonds.npz`` — the bonds the metrics use (decoder's, or perceived once here);
* ``<out>.sdf`` — every sample in order, with per-record provenance and EDM flags;
* ``samples.latents.pt`` — the generated latents (unconditional study samples: the space's
  ablation controls decode them again);
* ``targets.npz`` — the requested property values (single-property conditional studies).

Three ways to sample: unconditional; several context properties (targets are whole rows of
the training table); one context property (EDM's protocol: (atom count, value) targets from
the generator's training half, :mod:`harness.study.conditional`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from harness.results.state import (
    decoded_samples,
    save_latents,
    save_molbatch,
    save_resolved_bonds,
    write_samples_sdf,
)
from harness.study.context import StudyContext


def sample_space(study: StudyContext, name: str, space: Any, directory: Path, n: int | None = None,
                 sampler: str | None = None, steps: int | None = None,
                 out_name: str = "samples") -> dict[str, Any]:
    """Run the stage for space ``name``; returns the stage info (counts, times, NFE)."""
    from harness.study.conditional import is_conditional

    s = study.config.sampling
    gen = study.load_generator(name)
    n = n or s.n_samples
    table = study.context_table(list(gen.config.context))
    single = table is not None and is_conditional(study.config)
    if single and out_name == "samples":
        n = study.config.conditional.n_samples
    kwargs = dict(sampler=sampler or s.sampler, steps=steps or s.steps, eta=s.eta,
                  seed=study.config.seed, batch_size=s.batch_size, progress=study.progress)
    extra: dict[str, Any] = {}
    t0 = time.perf_counter()
    count: dict[str, Any] | None = None
    if single:
        decoded, extra, count = _conditional(study, gen, space, table, n, kwargs, directory, out_name)
        t_sample, t_decode = time.perf_counter() - t0, 0.0
    else:
        context = None
        if table is not None:
            # several context properties: targets are whole rows of the training table
            pick = torch.randint(len(table[0]), (n,), generator=torch.Generator().manual_seed(study.config.seed))
            context = table[0][pick]
            latent = gen.sample(n, context=context, guidance_scale=s.guidance_scale, **kwargs)
        else:
            latent = gen.sample(n, **kwargs)
        t_sample = time.perf_counter() - t0
        t0 = time.perf_counter()
        decoded = space.decode(latent)
        t_decode = time.perf_counter() - t0
        if context is not None:
            mean, std = (torch.tensor(table[1][k]) for k in ("mean", "std"))
            decoded.props = context * std + mean          # requested values, dataset units
        elif out_name == "samples":                       # for the space's ablation controls
            save_latents(latent, directory / "samples.latents.pt")
    stats = dict(getattr(gen, "last_sample_stats", {}) or {})
    _write(study, name, decoded, directory, out_name, kwargs["sampler"], stats.get("nfe"), extra)
    info = {"n": len(decoded), "seconds_sampling": round(t_sample, 2),
            "seconds_decoding": round(t_decode, 2), "sampler": kwargs["sampler"],
            "steps": kwargs["steps"], "nfe": stats.get("nfe")}
    if count is not None:   # K latents per target selected on atom count (harness/conditional/count.py)
        info["count"] = count
    return info


def _conditional(study, gen, space, table, n, kwargs, directory: Path, out_name: str):
    """EDM's protocol: decoded molecules for targets drawn from the generator half (up to
    ``conditional.count_candidates`` latents per target, selected on atom count), the
    targets saved beside them; returns ``(decoded, per-record SDF fields, count info)``."""
    from harness.conditional.count import count_record, sample_with_count
    from harness.study.conditional import save_targets, targets_for

    targets = targets_for(study, n)
    k = study.config.conditional.count_candidates
    decoded, info = sample_with_count(gen, space, targets, table[1],
                                      study.config.sampling.guidance_scale, k, **kwargs)
    decoded.props = torch.as_tensor(targets.values, dtype=torch.float32)[:, None]
    save_targets(targets, directory / f"{out_name}.targets.npz" if out_name != "samples"
                 else directory / "targets.npz")
    extra = {targets.prop: targets.values.tolist(), "target_group": targets.groups.tolist()}
    if targets.n_atoms is not None:
        extra["target_n_atoms"] = [int(c) for c in targets.n_atoms]
    info.update(count_record(decoded, targets, gen.spec.kind, k))
    return decoded, extra, info


def _write(study, name: str, decoded, directory: Path, out_name: str, sampler: str, nfe,
           extra: dict[str, Any]) -> None:
    from harness.study.sample_props import molecule_flags, sample_properties

    save_molbatch(decoded, directory / f"{out_name}.pt")
    # bonds are resolved once, here: the SDF and the score stage use the same ones
    samples = decoded_samples(decoded)
    resolved = samples.resolved_bonds()
    save_resolved_bonds(resolved, directory / f"{out_name}.bonds.npz")
    props = sample_properties(len(decoded), space=name, seed=study.config.seed, sampler=sampler,
                              nfe=nfe, bonds="decoder" if decoded.bonds is not None else "perceived",
                              flags=molecule_flags(decoded), extra=extra)
    write_samples_sdf(decoded, samples, resolved, directory / f"{out_name}.sdf", props)
