"""Compute budgets (harness/study/budget.py): counted FLOPs per step, FLOP/step/seconds budgets,
the training clock, config rules, and what a study records."""
from __future__ import annotations

import json

import pytest
import torch

from generators import DiffusionGenerator
from harness.study.budget import (BudgetError, TrainingClock, budget_fingerprint, count_step_flops,
                            plan_training, world_size)
from harness.config import ConfigError, load_config
from harness.core.types import LatentBatch, LatentSpec
from harness.study.runner import Study

torch.set_num_threads(1)

CPU = dict(accelerator="cpu", logger=False)


def _mlp(width=4, context_dim=0):
    spec = LatentSpec("vector", width)
    return DiffusionGenerator(spec, denoiser="mlp", denoiser_kwargs=dict(width=32, depth=2, dropout=0.1),
                              timesteps=50, seed=1, context_dim=context_dim), spec


def _per_atom():
    spec = LatentSpec("per_atom", 3, has_coords=True, bounded=True)
    gen = DiffusionGenerator(spec, denoiser="egnn", denoiser_kwargs=dict(hidden=16, layers=2),
                             timesteps=50, seed=1)
    n = torch.tensor([5, 6, 7, 9])                    # mean 6.75 -> 7 atoms per molecule
    mask = torch.arange(9)[None] < n[:, None]
    lat = LatentBatch(h=torch.zeros(4, 9, 3), x=torch.zeros(4, 9, 3), mask=mask, spec=spec)
    return gen, lat


def test_flop_count_is_deterministic_linear_in_batch_and_touches_nothing():
    gen, spec = _mlp()
    lat = LatentBatch(h=torch.randn(10, 4), spec=spec)
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    rng = torch.get_rng_state()
    a, b = count_step_flops(gen, lat, 32), count_step_flops(gen, lat, 32)
    assert a == b and a["flops_per_step"] > 0 and a["atoms_per_molecule"] is None
    assert count_step_flops(gen, lat, 64)["flops_per_step"] == 2 * a["flops_per_step"]
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in gen.state_dict().items())
    assert all(p.grad is None for p in gen.parameters())


def test_mlp_flops_match_the_matmul_count():
    """One linear layer of the MLP's counted work: forward 2·B·in·out, backward 2x that
    (weight and input gradients) except the first layer (no input gradient)."""
    from torch.utils.flop_counter import FlopCounterMode

    gen, spec = _mlp()
    lat = LatentBatch(h=torch.randn(10, 4), spec=spec)
    linears = [m for m in gen.denoiser.modules() if isinstance(m, torch.nn.Linear)]
    assert linears
    count = count_step_flops(gen, lat, 16)["flops_per_step"]
    with FlopCounterMode(display=False) as fwd:
        gen.loss(gen.denoiser, torch.randn(16, 4), None, None, torch.Generator().manual_seed(0))
    forward = fwd.get_total_flops()
    assert 2 * forward < count <= 3 * forward             # backward ~ 2x forward, minus inputs


def test_per_atom_flops_use_the_mean_atom_count():
    gen, lat = _per_atom()
    info = count_step_flops(gen, lat, 8)
    assert info["atoms_per_molecule"] == 7 and info["shape"] == [8, 7, 6]
    assert info["flops_per_step"] > 0


def test_seconds_clock_stops_training_and_counts_steps(tmp_path):
    gen, spec = _mlp()
    lat = LatentBatch(h=torch.randn(64, 4), spec=spec)
    clock = TrainingClock(limit=0.5)
    stats = gen.fit(lat, None, tmp_path, max_steps=10 ** 9, batch_size=16, progress=False,
                    trainer_kwargs={**CPU, "callbacks": [clock]})
    assert stats["steps"] >= 1 and clock.seconds >= 0.5
    assert torch.load(stats["checkpoint"], weights_only=True)["callbacks"]["TrainingClock"] == \
        {"seconds": clock.seconds}


@pytest.mark.parametrize("overrides,message", [
    (["budget.kind=hours"], "budget.kind"),
    (["budget.value=-3"], "budget.value"),
    (["budget.kind=steps", "budget.value=2.5"], "whole number"),
    (["budget.value=1e12", "budget.include_ae=true"], "include_ae"),
])
def test_budget_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides)


def test_curve_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="curves.points"):
        load_config("tiny", ["curves.enabled=true", "curves.points=1"])
    with pytest.raises(ConfigError, match="curves.first_fraction"):
        load_config("tiny", ["curves.enabled=true", "curves.first_fraction=0"])


def test_no_budget_changes_no_fingerprint_and_world_size():
    c = load_config("tiny")
    assert budget_fingerprint(c) == []
    assert budget_fingerprint(load_config("tiny", ["budget.value=1e9"]))[0]["budget"]["kind"] == "flops"
    assert world_size(c.trainer) == 1


def _planned(tmp_path, *overrides, ae_seconds=None):
    study = Study.from_source("tiny", [f"output_dir={tmp_path}", "spaces={raw: {}}", *overrides])
    from harness.core.registry import SPACES

    space = SPACES.get("raw")(elements=study.dataset.elements)
    latents = space.encode(study.split("train").batch(list(range(40))))
    gen, _ = study._build_generator("raw", space)
    directory = tmp_path / "raw"
    directory.mkdir(parents=True, exist_ok=True)
    if ae_seconds is not None:
        (directory / "state.json").write_text(json.dumps(
            {"done": {"fit_space": "t", "encode": "t"}, "seconds": {"fit_space": ae_seconds, "encode": 1.0}}))
    return plan_training(study, "raw", gen, latents, directory), gen, latents


def test_flop_budget_becomes_a_step_count_before_training(tmp_path):
    none, gen, latents = _planned(tmp_path)
    fps = none.info["flops_per_step"]
    assert none.max_steps is None and none.info["budget"]["kind"] == "max_steps"
    assert fps == count_step_flops(gen, latents, 32)["flops_per_step"]
    plan, _, _ = _planned(tmp_path, f"budget.value={fps * 7.5}")
    assert plan.max_steps == 7 and plan.info["budget"]["steps_planned"] == 7
    steps, _, _ = _planned(tmp_path, "budget.kind=steps", "budget.value=9")
    assert steps.max_steps == 9 and steps.clock.limit is None


def test_seconds_budget_with_the_autoencoder_share(tmp_path):
    plan, _, _ = _planned(tmp_path, "budget.kind=seconds", "budget.value=10", "budget.include_ae=true",
                          ae_seconds=4.0)
    assert plan.clock.limit == pytest.approx(5.0) and plan.info["ae_seconds"] == 5.0
    with pytest.raises(BudgetError, match="autoencoder"):
        _planned(tmp_path, "budget.kind=seconds", "budget.value=3", "budget.include_ae=true",
                 ae_seconds=4.0)


def test_an_egnn_is_counted_the_same_in_either_pair_layout():
    """The pairs layout computes the dense layout's function with other operations (a sparse
    sum the counter would price as a dense product): a budget must buy the same steps."""
    from generators import DiffusionGenerator
    from harness.core.types import LatentSpec

    spec = LatentSpec("per_atom", 6, has_coords=True)
    mask = torch.arange(9)[None] < torch.tensor([9, 7, 5, 8])[:, None]
    lat = LatentBatch(h=torch.randn(4, 9, 6) * mask[..., None], spec=spec,
                      x=torch.randn(4, 9, 3) * mask[..., None], mask=mask)
    counts = {}
    for layout in ("pairs", "dense"):
        gen = DiffusionGenerator(spec, denoiser="egnn",
                                 denoiser_kwargs=dict(hidden=16, layers=2, layout=layout))
        counts[layout] = count_step_flops(gen, lat, 24)["flops_per_step"]
        assert gen.denoiser.net.layout == layout           # the generator's own net untouched
    assert counts["pairs"] == counts["dense"] > 0
