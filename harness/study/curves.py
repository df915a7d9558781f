"""Learning curves: sample quality against training compute, recorded while a generator trains.

:class:`LearningCurve` is a Lightning callback handed to the generator's ``fit``. At the
points of a :class:`CurveSchedule` (log-spaced optimiser steps for step and FLOP budgets,
log-spaced training seconds for a seconds budget; the last point is always the end of
training) it

1. samples ``n_samples`` latents with the EMA weights, a fixed seed (the study's) and the
   curve's sampler/steps — every point uses the same noise, so points differ only by the
   weights;
2. hands them to ``decode_and_score(latents) -> {metric: value}`` (built by the study:
   :func:`decode_and_score_fn` decodes with the space and scores with :data:`CURVE_SUITE`);
3. appends ``{"step", "train_seconds", "flops", "values", "intervals", "eval_seconds"}`` to
   ``<space>/curve.json`` (written atomically after every point); ``intervals`` holds the
   95 % Wilson intervals of the molecule-level proportions (validity, uniqueness, molecule
   stability, ...) when the closure returns them under the key ``"intervals"``.

Training is not disturbed: sampling draws from its own ``torch.Generator``s, and the global
torch (CPU and CUDA), NumPy and ``random`` states are restored after each point, so weights
with and without curves are bitwise equal. A resumed run keeps the points at or before the
step it resumes from (those weights are gone) and recomputes later ones — by exact resume
they are the uninterrupted run's. Only global rank 0 evaluates and writes; evaluation time is
excluded from the :class:`~harness.study.budget.TrainingClock`.

``train_seconds`` is the clock's count (load-dependent); ``flops`` = step x counted FLOPs per
step (:func:`harness.study.budget.count_step_flops`). Points are small (64 molecules by
default): their Wilson intervals are wide (about ±0.12 at 0.5) and say which differences
between curves are noise; bootstrap intervals of the distribution metrics and of quality are
the ``score`` stage's, on its larger sample.
"""
from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytorch_lightning as pl
import torch

from harness.core.io import atomic_write_json
from harness.results.curves import QUALITY_NOTE, curve_series, read_curve  # noqa: F401  (re-exported)
from harness.study.context import StudyContext

log = logging.getLogger(__name__)

__all__ = ["CURVE_SUITE_MEMBERS", "CurveSchedule", "LearningCurve", "decode_and_score_fn",
           "read_curve", "rng_guard", "schedule_for"]

#: members of the curve suite ``curve/v1``: EDM validity / uniqueness / stability and the
#: distribution distances (no FCD: ChemNet per point would cost more than the training)
CURVE_SUITE_MEMBERS = (("edm", 1, {"profile": "qm9"}), ("distributions", 1, {}))
CURVE_SUITE_NAME = "curve/v1"
#: ``quality`` on a curve is quality/v2 without its FCD term (the suite has no FCD)


@dataclass(frozen=True)
class CurveSchedule:
    """Where curve points fall: ``kind`` ``"steps"`` (``at`` = optimiser steps) or
    ``"seconds"`` (``at`` = training seconds of the clock)."""

    kind: str
    at: tuple[float, ...]

    def due(self, step: int, seconds: float, done: list[dict[str, Any]], stopping: bool) -> bool:
        """Whether a point is due after optimiser step ``step``."""
        if done and done[-1]["step"] >= step:
            return False
        if self.kind == "steps":
            return step in self.at
        passed = sum(1 for t in self.at if t <= seconds)     # thresholds crossed so far
        crossed_before = sum(1 for t in self.at if done and t <= done[-1]["train_seconds"])
        return stopping or passed > crossed_before

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "at": list(self.at)}


def schedule_for(curves: Any, steps: int | None = None, seconds: float | None = None
                 ) -> CurveSchedule:
    """Log-spaced points from ``first_fraction`` of the budget to all of it: ``steps``
    (optimiser steps) or, for a seconds budget, ``seconds``."""
    n = int(curves.points)
    if steps is not None:
        first = max(1.0, curves.first_fraction * steps)
        at = sorted({int(round(v)) for v in np.geomspace(first, steps, n)} | {int(steps)})
        return CurveSchedule("steps", tuple(at))
    if seconds is None:
        raise ValueError("a curve schedule needs the steps or the seconds of the budget")
    at = np.geomspace(curves.first_fraction * seconds, seconds, n)
    return CurveSchedule("seconds", tuple(float(round(v, 4)) for v in at[:-1]))  # end: at stop


@contextmanager
def rng_guard(device: torch.device | None = None) -> Iterator[None]:
    """Restore the global torch (CPU, and CUDA when used), NumPy and ``random`` states."""
    py, npy = random.getstate(), np.random.get_state()
    cuda = [device] if device is not None and device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


class LearningCurve(pl.Callback):
    """The curve callback (see the module docstring).

    Args:
        path: ``<space>/curve.json``.
        schedule: a :class:`CurveSchedule`.
        decode_and_score: ``LatentBatch (CPU) -> {metric: float}``.
        n_samples, sampler, steps, eta, seed, batch_size: how the curve samples are drawn.
        clock: the run's :class:`~harness.study.budget.TrainingClock` (time axis; told what to
            exclude).
        flops_per_step: counted FLOPs of one (global) step.
        context: ``[M, C]`` training context to draw sample targets from (conditional).
        fingerprint: identity of the config; points of another fingerprint are discarded.
    """

    def __init__(self, path: Path, schedule: CurveSchedule,
                 decode_and_score: Callable[[Any], dict], *, n_samples: int, sampler: str,
                 steps: int | None, eta: float = 0.0, seed: int = 0, clock: Any,
                 flops_per_step: float, batch_size: int = 256,
                 context: torch.Tensor | None = None, fingerprint: str = "", space: str = ""):
        self.path = Path(path)
        self.schedule, self.decode_and_score = schedule, decode_and_score
        self.n_samples, self.sampler, self.steps, self.eta = n_samples, sampler, steps, eta
        self.seed, self.clock, self.flops_per_step = seed, clock, float(flops_per_step)
        self.batch_size, self.fingerprint, self.space = batch_size, fingerprint, space
        self.context = None
        if context is not None:   # targets drawn from the training distribution, fixed
            g = torch.Generator().manual_seed(int(seed) * 7919 + 303)
            self.context = context[torch.randint(len(context), (n_samples,), generator=g)]
        self.points: list[dict[str, Any]] = []
        self.eval_seconds = 0.0

    # -- persistence -----------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        return {"space": self.space, "fingerprint": self.fingerprint, "suite": CURVE_SUITE_NAME,
                "suite_members": [m for m, _, _ in CURVE_SUITE_MEMBERS],
                "quality": QUALITY_NOTE, "n_samples": self.n_samples, "sampler": self.sampler,
                "steps": self.steps, "seed": self.seed, "schedule": self.schedule.to_dict(),
                "flops_per_step": self.flops_per_step, "points": self.points,
                "eval_seconds": round(self.eval_seconds, 3)}

    def on_train_start(self, trainer, pl_module) -> None:
        step = int(trainer.global_step)
        old = read_curve(self.path) if step > 0 else None
        if old is not None and old.get("fingerprint") == self.fingerprint:
            self.points = [p for p in old["points"] if p["step"] <= step]
            self.eval_seconds = float(old.get("eval_seconds", 0.0))
        else:
            if old is not None:
                log.warning("%s was recorded with another config; restarting the curve at step %d",
                            self.path, step)
            self.points, self.eval_seconds = [], 0.0
        if trainer.is_global_zero:
            atomic_write_json(self.path, self._payload())

    # -- evaluation ------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        if not trainer.is_global_zero:
            return
        if not self.schedule.due(step, self.clock.seconds, self.points, bool(trainer.should_stop)):
            return
        t0 = time.perf_counter()
        values = self.evaluate(pl_module)
        intervals = values.pop("intervals", {})
        dt = time.perf_counter() - t0
        self.clock.exclude(dt)
        self.eval_seconds += dt
        self.points.append({"step": step, "train_seconds": round(self.clock.seconds, 4),
                            "flops": self.flops_per_step * step, "values": values,
                            "intervals": intervals, "eval_seconds": round(dt, 3)})
        atomic_write_json(self.path, self._payload())

    def evaluate(self, pl_module) -> dict[str, Any]:
        """Sample, decode and score at the module's current (EMA) weights; every global RNG
        state is restored afterwards. Returns ``{metric: value}`` plus, when the closure gives
        them, ``"intervals": {metric: [low, high]}``."""
        with rng_guard(pl_module.device):
            latents = pl_module.sample(self.n_samples, sampler=self.sampler, steps=self.steps,
                                       eta=self.eta, seed=self.seed, batch_size=self.batch_size,
                                       context=self.context, progress=False)
            values = self.decode_and_score(latents.to("cpu"))
        out: dict[str, Any] = {k: float(v) for k, v in values.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)}
        intervals = values.get("intervals")
        if isinstance(intervals, dict):
            out["intervals"] = {k: [float(lo), float(hi)] for k, (lo, hi) in intervals.items()}
        return out


def decode_and_score_fn(study: StudyContext, space: Any) -> Callable[[Any], dict[str, float]]:
    """The study's closure: decode with ``space``, score with ``curve/v1`` against the
    training split (novelty, distribution references), add ``quality`` and the Wilson
    intervals of the proportions (under ``"intervals"``)."""
    from harness.results.state import decoded_samples
    from metrics.intervals import proportion_intervals, quality
    from metrics.suites import Member, Suite, score_molecules

    suite = Suite(CURVE_SUITE_NAME, tuple(Member(m, v, tuple(sorted(o.items())))
                                          for m, v, o in CURVE_SUITE_MEMBERS),
                  "learning-curve points: edm + distributions")

    def decode_and_score(latents) -> dict[str, float]:
        decoded = space.decode(latents)          # as the sample stage calls it
        results = score_molecules(decoded_samples(decoded), suite, study.split("train"))
        values: dict[str, Any] = dict(results)
        values["quality"] = quality(values)
        values["intervals"] = proportion_intervals(values, results.metadata)
        return values

    return decode_and_score
