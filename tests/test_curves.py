"""Learning curves (harness/study/curves.py): log-spaced schedules, no effect on training, and an
interrupted run that continues the uninterrupted run's curve exactly."""
from __future__ import annotations

import math
import json
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from generators import DiffusionGenerator
from harness.study.budget import TrainingClock
from harness.core.types import LatentBatch, LatentSpec
from harness.study.curves import CurveSchedule, LearningCurve, read_curve, rng_guard, schedule_for

torch.set_num_threads(1)

CPU = dict(accelerator="cpu", logger=False)
SPEC = LatentSpec("vector", 4)


def _curves(points=6, first_fraction=0.03):
    return SimpleNamespace(points=points, first_fraction=first_fraction)


def test_step_schedule_is_log_spaced_and_ends_at_the_budget():
    s = schedule_for(_curves(), steps=40)
    assert s.kind == "steps" and s.at == (1, 2, 5, 10, 20, 40)
    assert schedule_for(_curves(points=3, first_fraction=0.25), steps=400).at == (100, 200, 400)
    assert schedule_for(_curves(), steps=3).at[-1] == 3          # short runs keep their end


def test_seconds_schedule_evaluates_each_crossed_threshold_once_and_at_the_stop():
    s = schedule_for(_curves(points=3, first_fraction=0.25), seconds=4.0)
    assert s.kind == "seconds" and s.at == (1.0, 2.0)          # the end (4 s) is "at stop"
    done = []
    assert not s.due(1, 0.5, done, False)
    assert s.due(2, 1.2, done, False)
    done.append({"step": 2, "train_seconds": 1.2})
    assert not s.due(3, 1.9, done, False)
    assert s.due(4, 2.5, done, False)
    done.append({"step": 4, "train_seconds": 2.5})
    assert not s.due(5, 3.0, done, False) and s.due(6, 4.1, done, True)
    assert not s.due(4, 4.1, done, True)                        # never twice at one step


def test_rng_guard_restores_every_global_state():
    import random

    import numpy as np

    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    with rng_guard(torch.device("cpu")):
        torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(before[0], torch.get_rng_state())
    assert (before[1] == np.random.get_state()[1]).all() and before[2] == random.getstate()


class _Interrupt(pl.Callback):
    """Raises after optimiser step ``at`` (before that step's checkpoint): a killed run."""

    def __init__(self, at):
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError("interrupted")


def _score(latents) -> dict:
    """A decode-and-score of the synthetic latents: moments and a 'validity' (|h| < 2)."""
    h = latents.h
    return {"mean": h.mean().item(), "std": h.std().item(),
            "validity": (h.abs() < 2).all(1).float().mean().item()}


def _fit(tmp, lat, curve_path=None, interrupt=None, resume=False, max_steps=40):
    gen = DiffusionGenerator(SPEC, denoiser="mlp", denoiser_kwargs=dict(width=32, depth=2, dropout=0.1),
                             timesteps=50, ema_decay=0.9, seed=5)
    clock = TrainingClock()
    callbacks = [clock]
    if curve_path is not None:
        sched = schedule_for(_curves(), steps=max_steps)
        callbacks.append(LearningCurve(curve_path, sched, _score, n_samples=32, sampler="ddim",
                                       steps=5, seed=3, clock=clock, flops_per_step=1000.0,
                                       fingerprint="f"))
    if interrupt is not None:
        callbacks.append(_Interrupt(interrupt))
    stats = gen.fit(lat, None, tmp, max_steps=max_steps, batch_size=32, progress=False,
                    resume=resume, checkpoint_every=8,
                    trainer_kwargs={**CPU, "callbacks": callbacks})
    return gen, stats, clock


def _points(path):
    return [(p["step"], p["flops"], p["values"]) for p in json.loads(path.read_text())["points"]]


def test_curves_leave_training_bitwise_unchanged_and_survive_an_interruption(tmp_path):
    g = torch.Generator().manual_seed(0)
    lat = LatentBatch(h=torch.randn(200, 4, generator=g) * 1.5 + 0.3, spec=SPEC)
    plain, _, _ = _fit(tmp_path / "plain", lat)
    straight, s_stats, clock = _fit(tmp_path / "a", lat, tmp_path / "a.json")
    sa, sp = straight.state_dict(), plain.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sp[k]), f"curve evaluation changed {k}"
    curve = read_curve(tmp_path / "a.json")
    assert [p["step"] for p in curve["points"]] == [1, 2, 5, 10, 20, 40]
    assert all(p["flops"] == 1000.0 * p["step"] for p in curve["points"])
    times = [p["train_seconds"] for p in curve["points"]]
    assert times == sorted(times) and times[-1] <= clock.seconds + 1e-3
    # killed after step 22 (point 20 written, last checkpoint at step 16), then resumed
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(tmp_path / "b", lat, tmp_path / "b.json", interrupt=22)
    assert [p[0] for p in _points(tmp_path / "b.json")] == [1, 2, 5, 10, 20]
    torch.manual_seed(1234)                          # the global RNG must not matter
    resumed, r_stats, _ = _fit(tmp_path / "b", lat, tmp_path / "b.json", resume=True)
    assert r_stats["resumed_from"] and r_stats["steps"] == 40
    assert _points(tmp_path / "b.json") == _points(tmp_path / "a.json")
    sb = resumed.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_a_fresh_run_discards_another_configs_curve(tmp_path):
    path = tmp_path / "curve.json"
    path.write_text(json.dumps({"fingerprint": "old", "points": [{"step": 1, "values": {}}]}))
    g = torch.Generator().manual_seed(0)
    lat = LatentBatch(h=torch.randn(64, 4, generator=g), spec=SPEC)
    _fit(tmp_path / "run", lat, path, max_steps=3)
    assert [p[0] for p in _points(path)] == [1, 2, 3]
    assert json.loads(path.read_text())["fingerprint"] == "f"


def test_schedule_needs_a_length():
    with pytest.raises(ValueError, match="steps or the seconds"):
        schedule_for(_curves())
    assert CurveSchedule("steps", (1, 2)).to_dict() == {"kind": "steps", "at": [1, 2]}


def test_study_with_a_flop_budget_records_a_scored_curve_and_its_report_pieces(tmp_path):
    import math

    from harness.report.plots_curves import curves_section, prior_floor, time_to_threshold
    from harness.results.curves import curve_band, curve_series
    from harness.study.runner import Study

    study = Study.from_source("tiny", [f"output_dir={tmp_path}", "spaces={raw: {}}",
                                       "metrics.reference_row=false", "curves.enabled=true",
                                       "curves.points=3", "curves.n_samples=16", "curves.steps=5",
                                       "budget.value=1.0e9"])
    study.run()
    root = study.root
    info = json.loads((root / "raw" / "state.json").read_text())["info"]["train_generator"]
    fps = info["flops_per_step"]
    assert info["steps"] == math.floor(1.0e9 / fps) == info["budget"]["steps_planned"] >= 2
    assert info["flops_total"] == fps * info["steps"] and info["budget"]["kind"] == "flops"
    assert info["total_seconds"] == pytest.approx(info["ae_seconds"] + info["train_seconds"], abs=1e-2)
    assert info["curve_points"] == 3 and info["curve_overhead"] > 0
    curve = read_curve(root / "raw" / "curve.json")
    assert curve["points"][-1]["step"] == info["steps"]
    for p in curve["points"]:
        assert {"edm.validity", "edm.mol_stability", "dist.atom_type_tv", "quality"} <= set(p["values"])
        for key in ("edm.validity", "edm.mol_stability"):       # 16 molecules: Wilson intervals
            lo, hi = p["intervals"][key]
            assert 0.0 <= lo <= p["values"][key] <= hi <= 1.0 and hi - lo > 0.1
    assert curve_band(curve, "edm.validity")[0] == curve_series(curve, "edm.validity")[0]
    assert curve_band({"points": [{"train_seconds": 1, "values": {}}]}, "edm.validity") == ([], [], [])
    assert "edm.validity" in prior_floor(root, "raw")
    result = time_to_threshold(root, ["raw"], {"edm.mol_stability": 1.01})
    assert result["spaces"]["raw"]["edm.mol_stability"] is None          # never reached
    lines = curves_section(root, ["raw"])
    assert (root / "plots" / "learning_curves.png").exists()
    assert any("not reached" in line for line in lines) or any("| `raw` |" in line for line in lines)


def _curve(flops, quality):
    return {"points": [{"flops": f, "train_seconds": 1.0, "values": {"quality": q}}
                       for f, q in zip(flops, quality)]}


def test_factors_compare_spaces_at_equal_compute(tmp_path):
    from harness.report.plots_factors import equal_compute_levels, plot_factors_at_equal_compute, quality_at

    a, b = _curve([1e9, 1e10, 1e11], [0.0, 0.5, 1.0]), _curve([1e10, 1e12], [0.2, 0.4])
    assert quality_at(a, 1e10) == pytest.approx(0.5)
    assert quality_at(a, 10 ** 10.5) == pytest.approx(0.75)        # linear in log FLOPs
    assert math.isnan(quality_at(a, 1e12))                          # no extrapolation
    levels = equal_compute_levels({"a": [a], "b": [b]}, 3)
    assert levels[0] == pytest.approx(1e10) and levels[-1] == pytest.approx(1e11)
    assert equal_compute_levels({"a": [a], "c": [_curve([1e12, 1e13], [0, 1])]}) == []
    for name, curve in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "curve.json").write_text(json.dumps({**curve, "fingerprint": "x"}))
        (tmp_path / name / "state.json").write_text(json.dumps(
            {"done": {}, "info": {"fit_space": {"symmetry": {"rotation": "invariant"}}}}))
    flat = {"a": {"latent.recon_rmsd": 0.1, "latent.dof": 100}, "b": {"latent.recon_rmsd": 1.0, "latent.dof": 40}}
    assert plot_factors_at_equal_compute(tmp_path, ["a", "b"], flat, tmp_path / "f.png").exists()
    assert plot_factors_at_equal_compute(tmp_path, ["zz"], flat, tmp_path / "g.png") is None


def test_curve_thresholds_are_a_checked_config_key():
    from harness.config import ConfigError, load_config, validate_components

    config = load_config("tiny", ["curves.thresholds={edm.atom_stability: 0.9}"])
    validate_components(config)
    assert config.curves.thresholds == {"edm.atom_stability": 0.9}
    with pytest.raises(ConfigError, match="curves.thresholds.fcd"):
        validate_components(load_config("tiny", ["curves.thresholds={fcd: 3}"]))
