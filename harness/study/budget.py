"""Compute budgets of generator training: steps, counted FLOPs or wall-clock seconds.

A ``budget`` section (:class:`harness.config.BudgetConfig`) gives every space the same
compute for its generator, whatever its denoiser costs per step:

* ``flops`` (the default kind when a value is given) — the FLOPs of one training step are
  counted *before* training (:func:`count_step_flops`: the denoiser's forward + backward at
  the configured batch size, on CPU, with ``torch.utils.flop_counter.FlopCounterMode``) and
  the budget becomes ``steps = floor(value / flops_per_step)`` (at least 1). Same config and
  seed -> the same step count on any machine, so results stay reproducible.
* ``seconds`` — training stops when :class:`TrainingClock` has counted ``value`` seconds of
  the training loop (every optimiser step, its data and checkpoint writes; learning-curve
  evaluation excluded). The steps reached depend on the machine *and its load*: two runs of
  the same config differ. ``include_ae: true`` subtracts the space's autoencoder fitting and
  encoding seconds (``fit_space`` + ``encode`` of ``<space>/state.json``) first.
* ``steps`` — a plain step count for every space (``generator.max_steps`` and its
  per-space overrides are ignored).

No ``budget.value`` (the default): each space trains its own ``max_steps`` exactly as without
this module; FLOPs and the training clock are still recorded.

What FLOPs count: every operation with a FLOP formula in ``torch.utils.flop_counter``
(matrix products, convolutions, attention: 2 FLOPs per multiply-add) in the loss's forward
and backward pass of one step on a batch of shape ``[B, D]`` (vector latents) or ``[B, N, W]``
with ``N`` = the training set's mean atom count rounded, all ``N`` atoms real (per-atom
latents; training batches are trimmed to their own largest molecule, so this slightly
under-counts an EGNN's pair work). Elementwise operations and the optimiser step are not
counted. Dense FLOPs depend only on shapes, so the batch holds seeded noise of those shapes.
An EGNN is counted in its reference (``dense``) layout whatever layout it trains in: the
``pairs`` layout computes the same function with other operations (a sparse sum that the
counter would price as a dense product), and a budget must buy the same steps either way.
A step on ``W`` devices (DDP) costs ``W x`` the per-device count. Autoencoder FLOPs are not
counted (``include_ae`` is refused for ``flops``).

Every train_generator stage records (``<space>/state.json`` info, hence ``results.json``):
``flops_per_step``, ``flops_total``, ``train_seconds`` (the clock), ``ae_seconds``,
``total_seconds`` (= ae + train), ``budget`` (kind, value, steps planned) and, with curves,
``curve_seconds`` and ``curve_overhead`` (curve seconds / train seconds).
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch

from harness.study.context import StudyContext

log = logging.getLogger(__name__)

__all__ = ["BudgetError", "TrainingClock", "TrainingPlan", "count_step_flops", "plan_training",
           "world_size", "budget_fingerprint"]

#: FLOP counts of a step that draws random branches (flow self-conditioning) are averaged
#: over this many seeded draws
_MAX_DRAWS = 8


class BudgetError(ValueError):
    """A budget that cannot be met (e.g. the autoencoder already spent a seconds budget)."""


def budget_fingerprint(config: Any) -> list:
    """What the train_generator stage fingerprint must add for the budget: ``[]`` without a
    budget (fingerprints of runs without one are unchanged), else the budget section."""
    b = getattr(config, "budget", None)
    if b is None or b.value is None:
        return []
    return [{"budget": {"kind": b.kind, "value": float(b.value), "include_ae": bool(b.include_ae)}}]


def world_size(trainer: Any) -> int:
    """Training processes of a ``trainer`` section (devices x nodes; ``auto``/-1 on GPUs =
    the visible GPUs, otherwise 1)."""
    d = trainer.devices
    if isinstance(d, (list, tuple)):
        n = len(d)
    elif isinstance(d, int) and d > 0 or isinstance(d, str) and d.isdigit():
        n = int(d)
    elif str(trainer.accelerator).lower() in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        n = torch.cuda.device_count()
    else:
        n = 1
    return max(1, n) * max(1, int(trainer.num_nodes or 1))


# -- FLOPs ------------------------------------------------------------------------------------
def _batch_shape(gen: Any, latents: Any, batch_size: int) -> tuple[tuple[int, ...], int | None]:
    """``(shape of z0, atoms per molecule or None)`` of the representative batch."""
    lay = gen.layout
    if not lay.per_atom:
        return (batch_size, lay.width), None
    n = max(1, int(round(float(latents.mask.sum(1).float().mean()))))
    return (batch_size, n, lay.width), n


def count_step_flops(gen: Any, latents: Any, batch_size: int) -> dict[str, Any]:
    """FLOPs of one training step of ``gen`` (a ``LatentGenerator``) on one device.

    Runs the generator's own loss (forward + backward) on a copy of its denoiser, on CPU,
    under ``FlopCounterMode``; the generator, its weights, its gradients and every global RNG
    state are untouched.

    Returns:
        ``{"flops_per_step": int, "batch_size": B, "atoms_per_molecule": N or None,
        "shape": [...], "draws": k, "counter": "torch.utils.flop_counter"}``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from harness.core.nn import DenseEGNN

    shape, n_atoms = _batch_shape(gen, latents, batch_size)
    lay = gen.layout
    net = copy.deepcopy(gen.denoiser).cpu().train()
    for module in net.modules():     # a faster layout must not change what a budget buys
        if isinstance(module, DenseEGNN):
            module.layout = DenseEGNN.REFERENCE_LAYOUT
    mask = torch.ones(shape[:2], dtype=torch.bool) if lay.per_atom else None
    ctx = torch.zeros(batch_size, gen.context_dim) if gen.context_dim else None
    counts: list[int] = []
    with torch.random.fork_rng(devices=[]):
        for draw in range(_MAX_DRAWS):
            g = torch.Generator().manual_seed(1000 + draw)
            torch.manual_seed(2000 + draw)                # dropout inside the copy
            z0 = lay.project(torch.randn(shape, generator=g), mask)
            counter = FlopCounterMode(display=False)
            with counter:
                loss = gen.loss(net, z0, mask, ctx, g)
                loss.backward()
            net.zero_grad(set_to_none=True)
            counts.append(int(counter.get_total_flops()))
            if draw == 1 and counts[0] == counts[1]:
                break                                     # no random branch: one count holds
    flops = int(round(sum(counts) / len(counts)))
    if flops <= 0:
        raise BudgetError(f"counted 0 FLOPs for one step of denoiser "
                          f"{type(gen.denoiser).__name__}: it uses no operation with a FLOP "
                          "formula; use a steps or seconds budget")
    return {"flops_per_step": flops, "batch_size": int(batch_size), "atoms_per_molecule": n_atoms,
            "shape": list(shape), "draws": len(counts), "counter": "torch.utils.flop_counter"}


# -- wall clock --------------------------------------------------------------------------------
class TrainingClock(pl.Callback):
    """Seconds of the training loop, with an optional limit (a seconds budget).

    Counts the wall time between consecutive optimiser steps (data, step, checkpoint writes)
    minus what :meth:`exclude` is told (learning-curve evaluation). Its total travels in
    checkpoints, so a resumed run continues the count from the checkpoint's step (time spent
    after that checkpoint by the killed run is not counted twice). With ``limit`` it sets
    ``trainer.should_stop`` once the count reaches it (rank 0 decides; broadcast to all).
    """

    def __init__(self, limit: float | None = None):
        self.limit = limit
        self.seconds = 0.0
        self._mark: float | None = None
        self._excluded = 0.0

    @property
    def state_key(self) -> str:
        return "TrainingClock"

    def state_dict(self) -> dict[str, float]:
        return {"seconds": float(self.seconds)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seconds = float(state.get("seconds", 0.0))

    def exclude(self, seconds: float) -> None:
        """Do not count ``seconds`` just spent inside a training hook."""
        self._excluded += seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._mark is None:
            self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.seconds += max(0.0, now - self._mark - self._excluded)
        self._mark, self._excluded = now, 0.0
        if self.limit is not None:
            stop = bool(trainer.strategy.broadcast(self.seconds >= self.limit, 0))
            if stop:
                trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        self._mark = None


# -- the plan of one space's training -----------------------------------------------------------
@dataclass
class TrainingPlan:
    """How one space's generator trains: ``max_steps`` for ``fit`` (None = its config's),
    the callbacks to hand it, and what to record."""

    max_steps: int | None
    clock: TrainingClock
    callbacks: list = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    curve: Any = None

    def summary(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Stage info after ``fit`` returned ``stats``."""
        info = dict(self.info)
        steps = int(stats.get("steps", 0))
        info["flops_total"] = float(info["flops_per_step"]) * steps
        info["train_seconds"] = round(self.clock.seconds, 3)
        info["total_seconds"] = round(info["ae_seconds"] + self.clock.seconds, 3)
        if self.curve is not None:
            info["curve_seconds"] = round(self.curve.eval_seconds, 3)
            info["curve_overhead"] = (round(self.curve.eval_seconds / self.clock.seconds, 4)
                                      if self.clock.seconds > 0 else None)
            info["curve_points"] = len(self.curve.points)
        return info


def _ae_seconds(directory: Path) -> float:
    from harness.results.state import SpaceState

    sec = SpaceState(directory).seconds
    return float(sec.get("fit_space", 0.0)) + float(sec.get("encode", 0.0))


def plan_training(study: StudyContext, name: str, gen: Any, latents: Any, directory: Path,
                  decode_and_score: Callable[[Any], dict] | None = None,
                  context: torch.Tensor | None = None) -> TrainingPlan:
    """The :class:`TrainingPlan` of space ``name`` (see the module docstring).

    Args:
        study: the :class:`~harness.study.runner.Study` (its config's ``budget``, ``curves``,
            ``trainer``, ``sampling``, ``seed``).
        gen: the freshly built generator (not yet fitted).
        latents: the training latents.
        directory: ``runs/<study>/<space>``.
        decode_and_score: ``latents -> {metric: value}`` for the learning curve (None: no
            curve even if enabled).
        context: ``[M, C]`` training context (conditional generators), for curve samples.

    Raises:
        BudgetError: a seconds budget the autoencoder already spent (``include_ae``).
    """
    c = study.config
    gen_cfg = c.generator_for(name)
    b = c.budget
    world = world_size(c.trainer)
    flops = count_step_flops(gen, latents, gen_cfg.batch_size)
    flops_step = flops["flops_per_step"] * world
    ae = _ae_seconds(directory)
    max_steps, limit = None, None
    planned = int(gen_cfg.max_steps)
    if b.value is not None:
        if b.kind == "steps":
            max_steps = planned = int(b.value)
        elif b.kind == "flops":
            max_steps = planned = max(1, int(math.floor(float(b.value) / flops_step)))
        else:
            limit = float(b.value) - (ae if b.include_ae else 0.0)
            if limit <= 0:
                raise BudgetError(
                    f"config key 'budget.value' = {b.value} s is used up by space {name!r}'s "
                    f"autoencoder ({ae:.1f} s of fit_space + encode, budget.include_ae: true); "
                    "raise the budget or set include_ae: false")
            max_steps, planned = 10 ** 12, None           # the clock stops training
    clock = TrainingClock(limit)
    info: dict[str, Any] = {
        "budget": {"kind": "max_steps" if b.value is None else b.kind,
                   "value": gen_cfg.max_steps if b.value is None else b.value,
                   "include_ae": bool(b.include_ae), "steps_planned": planned,
                   "train_seconds_limit": limit},
        "flops_per_step": flops_step, "flops_counted": flops, "world_size": world,
        "ae_seconds": round(ae, 3), "ae_flops": None,
    }
    plan = TrainingPlan(max_steps=max_steps, clock=clock, callbacks=[clock], info=info)
    if c.curves.enabled and decode_and_score is not None:
        from harness.study.curves import LearningCurve, schedule_for

        sampler = c.curves.sampler or c.sampling.sampler
        steps = c.curves.steps if c.curves.steps is not None else c.sampling.steps
        gen._integrator(sampler, steps, c.sampling.eta, None)   # a bad sampler fails now, not mid-training
        schedule = schedule_for(c.curves, steps=planned, seconds=limit)
        plan.curve = LearningCurve(
            directory / "curve.json", schedule, decode_and_score, n_samples=c.curves.n_samples,
            sampler=sampler, steps=steps, eta=c.sampling.eta, seed=c.seed, clock=clock,
            flops_per_step=flops_step, batch_size=c.sampling.batch_size, context=context,
            fingerprint=curve_fingerprint(study, name), space=name)
        plan.callbacks.append(plan.curve)
    return plan


def curve_fingerprint(study: StudyContext, name: str) -> str:
    """Train-stage fingerprint + curves section: curve points of another config never mix."""
    import dataclasses

    from harness.core.data.base import fingerprint_of

    c = study.config
    curves = {k: v for k, v in dataclasses.asdict(c.curves).items() if k != "thresholds"}  # report-only
    return fingerprint_of([study.stage_fingerprints(name)["train_generator"],
                           curves, budget_fingerprint(c),
                           c.sampling.sampler, c.sampling.steps, c.sampling.eta])
