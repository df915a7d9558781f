"""The study's conditional stages (active when ``generator.context`` names one property).

EDM's protocol, as LDM-3DG follows it (see :mod:`harness.conditional.protocol`):

* the space and the generator train on the generator half ``Db`` of the training split
  (:func:`harness.conditional.protocol.generator_half`); the evaluator is trained on ``Da``;
* ``sample``: targets from ``Db`` (``edm``: (atom count, value) pairs from its histograms;
  ``ldm``: evenly spaced in-distribution values plus out-of-distribution ones below the min
  and above the max), molecules sampled for them (per-atom latents get the targets' atom
  counts) and saved with the requested values (``targets.npz``, SDF field ``<property>``);
* ``conditional``: the predictor's MAE between the generated molecules and the requested
  values (``conditional.json``), next to the Naive / #Atoms / QM9 baselines and the
  predictor's own MAE on ``Db``, under every judge of ``conditional.judges`` (a row below a
  judge's own ``Db`` error is flagged: :mod:`harness.conditional.judges`); the share of
  samples with their requested atom count; optionally a classifier-free-guidance sweep
  (primary judge).

Beside each space stand its control and its ceiling: the prior control (decoded
generator-prior noise scored against the same targets: a generator that learned nothing
about the property) and the reconstruction ceiling (the predictor on the space's
reconstructions of generator-half molecules, scored against their own values: what a
generator that hits the right latent exactly would reach). A large gap between the
ceiling and the samples puts the loss in the generator; a high ceiling puts it in the
decoder's molecules.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.conditional.protocol import load_targets, save_targets  # noqa: F401  (re-exported)
from harness.core.io import atomic_write_json
from harness.study.context import StudyContext
from metrics.conditional import ATOM_COUNT


def is_conditional(config: Any) -> bool:
    """A study runs EDM's conditional protocol when its generators are conditioned on exactly
    one property (several properties: plain conditioning, targets from the training rows)."""
    return len(config.generator.context) == 1 and config.data.dataset in ("qm9", "sdf")


def conditional_property(config: Any) -> str:
    return config.conditional.property or config.generator.context[0]


def generator_context(config: Any, name: str, spec: Any) -> list[str]:
    """The context names of space ``name``'s generator: its configured ones, plus the
    atom count for a vector latent when ``conditional.atom_count_context`` is set and the
    targets carry atom counts (``edm``). A per-atom latent gets the target's atom count
    through its mask already; a vector latent otherwise has to guess it from the value."""
    context = list(config.generator_for(name).context)
    if (is_conditional(config) and config.conditional.atom_count_context
            and config.conditional.protocol == "edm" and spec.kind == "vector"
            and ATOM_COUNT not in context):
        context.append(ATOM_COUNT)
    return context


def predictor_dataset(study: StudyContext):
    """The whole dataset the halves come from: QM9 itself, or the study's own dataset."""
    from harness.conditional.protocol import load_predictor_data

    return load_predictor_data() if study.config.data.dataset == "qm9" else study.dataset


def targets_for(study: StudyContext, n: int):
    from harness.conditional.protocol import sample_targets

    c = study.config.conditional
    return sample_targets(conditional_property(study.config), study.split("train"), n, c.protocol,
                          study.config.seed, c.n_ood)


def run_conditional(study: StudyContext, name: str, space: Any, directory: Path) -> dict[str, Any]:
    """The ``conditional`` stage: MAE of the samples (and of the prior control) against the
    requested values, with the baselines, and how often each hit its requested atom count;
    the guidance sweep when scales are configured (sampled with the same count constraint).
    With ``conditional.relaxed_rows`` and a space whose molecules carry bonds, every row is
    scored a second time on its force-field-relaxed molecules (``<row>_relaxed``)."""
    from harness.conditional.count import count_record, sample_with_count
    from harness.conditional.judges import evaluate_judged, get_judges, judge_records
    from harness.conditional.protocol import guidance_sweep
    from harness.conditional.report import plot_guidance_sweep
    from harness.results.state import load_molbatch
    from harness.study.controls import prior_latents

    c = study.config.conditional
    prop = conditional_property(study.config)
    judges = get_judges(prop, c.judges, dataset=predictor_dataset(study), size=c.predictor_size,
                        overrides=c.predictor_options or None, progress=study.progress)
    predictor = judges[c.judges[0]]
    targets = load_targets(directory / "targets.npz")
    samples = load_molbatch(directory / "samples.pt")
    gen = study.load_generator(name)
    kind = gen.spec.kind
    # a space that relaxes in decode (the invariant space's ``relax`` option) has no raw rows
    # to add relaxed ones to: its rows are relaxed already, and say so
    decoder_relaxes = bool(getattr(space, "relax", False))
    out: dict[str, Any] = {"judges": list(judges), "decoder_relaxed": decoder_relaxes}

    def score(row: str, batch, values, k: int | None):
        """``out[row]`` (and ``out[row + "_relaxed"]``): ``batch`` judged against ``values``;
        the atom-count record unless ``k`` is None (the ceiling's targets carry no count)."""
        out[row] = evaluate_judged(batch, values, judges)
        if k is not None:
            out[row]["count"] = count_record(batch, values, kind, k)
        if c.relaxed_rows and batch.bonds is not None and not decoder_relaxes:
            from harness.core.forcefield import relax_batch

            relaxed, info = relax_batch(batch)
            out[f"{row}_relaxed"] = {**evaluate_judged(relaxed, values, judges), "relaxation": info}
            if k is not None:
                out[f"{row}_relaxed"]["count"] = out[row]["count"]

    score("samples", samples, targets, c.count_candidates)
    score("prior", space.decode(prior_latents(gen, len(targets), study.config.seed)), targets, 1)
    score("reconstruction", *reconstruction_batch_values(study, space, prop, len(targets)), None)
    s = study.config.sampling
    table = study.context_table(list(gen.config.context))

    def draw(w: float, k: int):
        return sample_with_count(gen, space, targets, table[1], w, k, sampler=s.sampler,
                                 steps=s.steps, eta=s.eta, seed=study.config.seed,
                                 batch_size=s.batch_size, progress=False)[0]

    if c.count_candidates > 1 and kind == "vector" and targets.n_atoms is not None:
        # the same first draws without the count selection (same seed: a paired comparison),
        # so the table shows what the constraint buys
        score("samples_k1", draw(s.guidance_scale, 1), targets, 1)
    out["fitted_judges"] = {row: rec["fitted_judges"] for row, rec in out.items()
                            if isinstance(rec, dict) and "fitted_judges" in rec}
    if c.guidance_scales:
        hits: list[Any] = []

        def sample(w: float):
            # the sample stage drew this scale already, with the same seed and settings
            batch = samples if w == s.guidance_scale else draw(w, c.count_candidates)
            hits.append(count_record(batch, targets, kind, c.count_candidates)["hit_rate"])
            return batch

        rows = guidance_sweep(sample, targets, predictor, c.guidance_scales)
        out["guidance"] = [{**{k: v for k, v in r.items() if k != "result"}, "count_hit_rate": h}
                           for r, h in zip(rows, hits)]
        plot_guidance_sweep(rows, study.root / "plots" / f"guidance_{name}.png", prop)
    atomic_write_json(directory / "conditional.json", out)
    result = out["samples"]
    summary = {"mae": result["report"].get("mae"), "property": prop,
               "mae_by_judge": {f: r["report"].get("mae") for f, r in judge_records(result).items()},
               "count_hit_rate": result["count"]["hit_rate"],
               "fitted_judges": out["fitted_judges"]}
    if "samples_relaxed" in out:
        summary["mae_relaxed_by_judge"] = {f: r["report"].get("mae") for f, r in
                                           judge_records(out["samples_relaxed"]).items()}
    return summary


def reconstruction_batch_values(study: StudyContext, space: Any, prop: str, n: int):
    """``space``'s reconstructions of ``n`` seeded generator-half molecules (a ``MolBatch``)
    and their own ``[n]`` ``prop`` values (dataset units): the ceiling's molecules."""
    from harness.study.controls import reconstruction_batch

    train = study.split("train")
    pick = np.sort(np.random.default_rng(study.config.seed).choice(len(train), min(n, len(train)),
                                                                  replace=False))
    values = train.packed.props[pick, train.prop_names.index(prop)].astype(np.float64)
    return reconstruction_batch(space, train, n, pick), values
