"""Every shipped preset resolves to what its name promises (issue: presets that run what
they say). A change of any pinned value must be deliberate: update the table and the docs."""
from __future__ import annotations

import pytest

from harness.config import ConfigError, list_presets, load_config
from harness.config.view import resolved_view

# preset -> (train molecules, {space: (max_steps, batch_size, timesteps, schedule)}, widths, sampler)
PINNED = {
    "default": (1529, {"raw": ("budget", 64, 500, "polynomial_2"), "invariant": ("budget", 64, 500, "linear"),
                       "per_atom": ("budget", 64, 500, "polynomial_2"), "flat": ("budget", 64, 500, "linear")},
                {"mlp": {"width": 512, "depth": 4}, "egnn": {"hidden": 64, "layers": 4}}, "ddim"),
    "default-steps": (2293, {"raw": (450, 64, 500, "polynomial_2"), "invariant": (600, 64, 500, "linear"),
                             "per_atom": (450, 64, 500, "polynomial_2"), "flat": (600, 64, 500, "linear")},
                      {"mlp": {"width": 512, "depth": 4}, "egnn": {"hidden": 64, "layers": 4}}, "ddim"),
    "qm9-cpu-hours": (19873, {"raw": ("budget", 64, 500, "polynomial_2"),
                              "invariant": ("budget", 64, 500, "linear"),
                              "per_atom": ("budget", 64, 500, "polynomial_2"),
                              "flat": ("budget", 64, 500, "linear")},
                      {"mlp": {"width": 512, "depth": 4}, "egnn": {"hidden": 64, "layers": 4}}, "ddim"),
    "qm9-nfe": (2293, {"raw": (450, 64, 500, "polynomial_2"), "raw@flow": (450, 64, 500, "polynomial_2"),
                       "invariant": (600, 64, 500, "linear"), "invariant@flow": (600, 64, 500, "polynomial_2"),
                       "per_atom": (450, 64, 500, "polynomial_2"),
                       "per_atom@flow": (450, 64, 500, "polynomial_2"),
                       "flat": (600, 64, 500, "linear"), "flat@flow": (600, 64, 500, "polynomial_2")},
                {"mlp": {"width": 512, "depth": 4}, "egnn": {"hidden": 64, "layers": 4}}, "ddim"),
    "qm9-families": (2293, {f"{space}{alias}": ("budget", 64, 500,
                                                 "linear" if space in ("invariant", "flat") and not alias
                                                 else "polynomial_2")
                            for space in ("raw", "invariant", "per_atom", "flat")
                            for alias in ("", "@flow", "@precond")},
                     {"mlp": {"width": 512, "depth": 4}, "egnn": {"hidden": 64, "layers": 4}}, "ddim"),
    "qm9-families-long": (19873, {f"{space}{alias}": ("budget", 64, 500, "polynomial_2")
                                  for space in ("raw", "per_atom") for alias in ("", "@flow", "@precond")},
                          {"mlp": {"width": 512, "depth": 4}, "egnn": {"hidden": 64, "layers": 4}}, "ddim"),
    "qm9-paper": (100000, {"raw": (1_000_000, 64, 1000, "polynomial_2"),
                           "invariant": (1_000_000, 512, 500, "linear"),
                           "per_atom": (1_000_000, 64, 1000, "polynomial_2"),
                           "flat": (1_000_000, 512, 500, "linear")},
                  {"mlp": {"width": 2048, "depth": 32}, "egnn": {"hidden": 256, "layers": 9}}, "ddpm"),
    "sweep-quick": (1529, {"raw": (400, 64, 500, "polynomial_2"), "invariant": (400, 64, 500, "linear"),
                           "per_atom": (400, 64, 500, "polynomial_2"), "flat": (400, 64, 500, "linear")},
                    {"mlp": {"width": 512, "depth": 4}, "egnn": {"hidden": 64, "layers": 4}}, "ddim"),
}


#: presets whose generators train a compute budget (every space the same), not max_steps
BUDGETS = {"qm9-cpu-hours": {"kind": "flops", "value": 1.5e13, "include_ae": False},
           "qm9-families-long": {"kind": "flops", "value": 1.5e13, "include_ae": False},
           "qm9-families": {"kind": "flops", "value": 3.0e12, "include_ae": False},
           "default": {"kind": "flops", "value": 1.5e12, "include_ae": False}}


@pytest.mark.parametrize("preset", sorted(PINNED))
def test_preset_resolves_to_its_pinned_values(preset):
    train, steps, widths, sampler = PINNED[preset]
    view = resolved_view(load_config(preset))
    assert view["splits"]["train"] == train
    budget = view["config"]["budget"]
    assert (budget if budget["value"] is not None else None) == BUDGETS.get(preset)
    got = {name: ("budget" if budget["value"] is not None else g["max_steps"], g["batch_size"],
                  g["diffusion"]["timesteps"], g["diffusion"]["schedule"])
           for name, g in ((n, e["generator"]) for n, e in view["effective"].items())}
    assert got == steps
    for name, e in view["effective"].items():   # `<space>@<family>` aliases train that family
        assert e["generator"]["family"] == (name.partition("@")[2] or "diffusion")
    for name, e in view["effective"].items():
        assert e["generator"]["denoiser_options"] == widths
    assert view["config"]["sampling"]["sampler"] == sampler


def test_the_cpu_conditional_preset_runs_the_measured_settings():
    """``qm9-cond-cpu`` samples with the settings #24's measurement chose: K = 8 latents per
    target selected on atom count, w = 4, DDIM 50, both cpu-size judges, EDM's targets, and
    the MMFF-relaxed rows beside the raw ones."""
    view = resolved_view(load_config("qm9-cond-cpu"))
    c, s = view["config"]["conditional"], view["config"]["sampling"]
    assert (c["count_candidates"], c["judges"], c["predictor_size"], c["protocol"],
            c["property"], c["n_samples"]) == (8, ["egnn", "schnet"], "cpu", "edm", "alpha", 500)
    assert (s["sampler"], s["steps"], s["guidance_scale"]) == ("ddim", 50, 4.0)
    assert c["atom_count_context"] and c["guidance_scales"] == [0.0, 1.0, 2.0, 4.0]
    assert c["relaxed_rows"] is True
    assert list(view["effective"]) == ["invariant"] and view["splits"]["train"] == 19873


def test_every_shipped_preset_is_pinned_or_a_smoke_preset():
    smoke = {"tiny"}
    conditional = {p for p in list_presets() if "cond" in p or "drug" in p}
    assert set(list_presets()) - smoke - conditional <= set(PINNED), \
        "a new preset needs its resolved values pinned here"


def test_the_full_paper_preset_trains_on_the_full_split():
    view = resolved_view(load_config("qm9-paper"))
    assert view["config"]["data"]["options"] == {}
    assert view["splits"] == {"train": 100000, "val": 17748, "test": 13083}


def test_a_child_that_states_overrides_inherits_none_of_its_parents(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: default\nstudy: child\ngenerator_overrides:\n  invariant: {lr: 3.0e-4}\n")
    config = load_config(str(child))
    assert set(config.generator_overrides) == {"invariant"}
    assert config.generator_for("raw").max_steps == config.generator.max_steps == 600
    assert config.generator_for("invariant").diffusion.schedule == "polynomial_2"   # default's linear not kept
    keep = tmp_path / "keep.yaml"
    keep.write_text("extends: default-steps\nstudy: keep\n")
    assert load_config(str(keep)).generator_for("raw").max_steps == 450   # unstated: inherited


def test_extends_cycle_is_a_clear_error(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("extends: b.yaml\nstudy: a\n")
    b.write_text("extends: a.yaml\nstudy: b\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(a))
    selfish = tmp_path / "self.yaml"
    selfish.write_text("extends: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(selfish))


def test_an_exponent_without_a_dot_or_sign_is_a_float(tmp_path):
    """YAML 1.1 (PyYAML) reads ``1.5e13`` as a string; a float key accepts it as the float."""
    path = tmp_path / "budget.yaml"
    path.write_text("extends: tiny\nstudy: b\nbudget: {kind: flops, value: 1.5e13}\n")
    assert load_config(str(path)).budget.value == 1.5e13
    assert load_config("tiny", ["budget.value=2e9"]).budget.value == 2e9
    with pytest.raises(ConfigError, match="budget.value"):
        load_config("tiny", ["budget.value=lots"])


@pytest.mark.parametrize("preset", list_presets())
def test_every_shipped_preset_passes_the_checks_a_run_makes(preset):
    """``l3dg run PRESET`` validates components (spaces, overrides, metrics, context) before
    any work; a shipped preset must pass them (qm9-cond-cpu once named an override for a
    space it had dropped)."""
    from harness.config import validate_components

    validate_components(load_config(preset))
