"""Counted FLOPs per training step of the default preset's generators, and the cost of one
learning-curve point against training (the curve overhead). Skipped unless
``--benchmark-enable``::

    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=ACTIVE .venv/bin/python -m pytest \\
        tests/benchmarks/test_bench_budget.py --benchmark-only --benchmark-enable \\
        -p no:cacheprovider -s

Per space of ``harness/configs/default.yaml`` (its data: QM9 subset 3000, 2,293 training
molecules; its generator sizes, batch 64, max_steps): the space is built *unfitted* (an
autoencoder's decode costs the same with trained weights; no study is run), the training set
is encoded, the generator trains ``TRAIN_STEPS`` steps under Lightning with a
:class:`~harness.study.budget.TrainingClock` (seconds per step), and one curve point (sample
``curves.n_samples`` with the curve sampler/steps, decode, score with ``curve/v1``) is
timed, and so is decode + score of encoded training latents (what a converged generator's
samples look like; early points decode near-random latents, which for the invariant
space's SELFIES + ETKDG decoder costs far more). ``extra_info``: ``flops_per_step``, ``step_seconds``, ``point_seconds`` and
``overhead`` = points x point seconds / (max_steps x step seconds) with the fastest step and
the fastest of 3 points (the machine is shared: the least disturbed figures), the fraction of
training time the default curve settings add.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

THREADS = 2
TRAIN_STEPS = 15


class _StepTimes(pl.Callback):
    """Seconds of each optimiser step (batch start to batch end)."""

    def __init__(self):
        self.times, self._t = [], 0.0

    def on_train_batch_start(self, *args):
        self._t = time.perf_counter()

    def on_train_batch_end(self, *args):
        self.times.append(time.perf_counter() - self._t)


@pytest.fixture(scope="module")
def default_study():
    from harness.study.runner import Study

    torch.set_num_threads(THREADS)
    return Study.from_source("default", ["curves.enabled=true"])


@pytest.mark.parametrize("name", ["raw", "invariant", "per_atom", "flat"])
def test_default_flops_per_step_and_curve_overhead(benchmark, default_study, name, tmp_path):
    from generators import build_generator
    from harness.study.budget import TrainingClock, count_step_flops
    from harness.core.registry import SPACES
    from harness.study.curves import LearningCurve, decode_and_score_fn, schedule_for

    study = default_study
    c = study.config
    space = SPACES.get(name)(elements=study.dataset.elements, **c.spaces[name])
    train = study.split("train")
    latents = space.encode_dataset(train, progress=False)
    gen_cfg = c.generator_for(name)
    gen = build_generator(space.spec, gen_cfg, seed=c.seed)
    flops = count_step_flops(gen, latents, gen_cfg.batch_size)
    clock, times = TrainingClock(), _StepTimes()
    gen.fit(latents, None, tmp_path, max_steps=TRAIN_STEPS, progress=False,
            trainer_kwargs={"accelerator": "cpu", "logger": False, "callbacks": [clock, times]})
    step_s = float(np.median(times.times[1:]))     # the machine is shared: the least
    step_min = float(np.min(times.times[1:]))      # disturbed figures are the low ones
    curve = LearningCurve(tmp_path / "curve.json", schedule_for(c.curves, steps=gen_cfg.max_steps),
                          decode_and_score_fn(study, space), n_samples=c.curves.n_samples,
                          sampler=c.curves.sampler or c.sampling.sampler, steps=c.curves.steps,
                          seed=c.seed, clock=clock, flops_per_step=flops["flops_per_step"])
    curve.evaluate(gen)                                    # warm: reference statistics cached
    values = benchmark.pedantic(curve.evaluate, args=(gen,), rounds=3, iterations=1)
    point_s = benchmark.stats.stats.min
    overhead = c.curves.points * point_s / (gen_cfg.max_steps * step_min)
    # a converged generator's latents look like the data's: decode + score of encoded
    # training latents bounds a late point (early points decode near-random latents)
    score = decode_and_score_fn(study, space)
    data_lat = latents[torch.arange(c.curves.n_samples)]
    t0 = time.perf_counter()
    score(data_lat)
    data_point_s = time.perf_counter() - t0
    benchmark.extra_info.update({
        "space": name, "flops_per_step": flops["flops_per_step"],
        "atoms_per_molecule": flops["atoms_per_molecule"], "step_seconds": round(step_s, 4),
        "step_seconds_min": round(step_min, 4),
        "point_seconds": round(point_s, 3), "max_steps": gen_cfg.max_steps,
        "points": c.curves.points, "overhead": round(overhead, 4),
        "decode_score_seconds_data_latents": round(data_point_s, 3),
        "load_avg": round(os.getloadavg()[0], 2)})
    print(f"\n{name}: {flops['flops_per_step']:.3e} FLOPs/step, {step_min:.3f} s/step (min; "
          f"median {step_s:.3f}), curve point "
          f"{point_s:.2f} s, overhead {100 * overhead:.1f} %; decode+score of data latents "
          f"{data_point_s:.2f} s (load {os.getloadavg()[0]:.1f})")
    assert np.isfinite(values["edm.validity"])
