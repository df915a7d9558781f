"""Every plug-in kind has a conformance suite that runs over the registry and over a user's
file alike; each suite rejects a deliberately broken plug-in of its kind (``l3dg check``)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from harness.checks.kinds import KINDS, check_component
from harness.core.registry import DATASETS, REGISTRIES, load_plugin


def _builtins():
    for kind in KINDS:
        for name in REGISTRIES[kind].names():
            slow = kind == "datasets" and not hasattr(DATASETS.get(name), "test_options")
            marks = [pytest.mark.skip(reason=f"dataset {name!r} needs its data or minutes of "
                                             f"preprocessing: `l3dg check {name}` runs it")] if slow else []
            yield pytest.param(kind, name, id=f"{kind}:{name}", marks=marks)


@pytest.mark.parametrize("kind,name", list(_builtins()))
def test_every_builtin_passes_its_kinds_suite(kind, name):
    report = check_component(kind, name)
    assert report.passed, report.table()


HEAD = "import numpy as np\nimport torch\nfrom harness.core.registry import *\n"

#: kind -> (a broken plug-in registering ``name``, the check that must fail)
BROKEN = {
    "datasets": ('''
        from harness.core.data import QM9_SAMPLE_SDF, load_dataset

        @DATASETS.register("{name}")
        def load(nan: bool = True):
            ds = load_dataset("sdf", path=QM9_SAMPLE_SDF, elements=("H", "C", "N", "O", "F"), report=False)
            ds.packed.pos[0, 0] = float("nan")               # a corrupt coordinate
            return ds
        load.test_options = lambda: {{"nan": True}}
        ''', "molecules"),
    "metrics": ('''
        from metrics.base import Metric

        @METRICS.register("{name}")
        class Broken(Metric):
            name = "{name}"
            outputs = {{"{name}.score": True, "{name}.other": True}}
            def compute(self, samples, reference, space=None):
                return {{"{name}.score": 1}}, {{}}        # an int, and a declared key missing
        ''', "scores"),
    "suites": ('''
        from metrics.suites import define_suite
        define_suite("{name}/v1", [("edm", 7, {{}})])        # edm has no version 7
        ''', "members"),
    "denoisers": ('''
        from generators.denoisers.egnn import EGNNDenoiser

        @DENOISERS.register("{name}")
        class Broken(EGNNDenoiser):
            def forward(self, h, x, mask, t, context=None):
                oh, ox = super().forward(h, x, mask, t, context)
                return oh + x[..., :1] * mask[..., None], ox     # features see raw coordinates
        Broken.test_options = staticmethod(lambda: {{"hidden": 8, "layers": 1}})
        ''', "rotation"),
    "schedules": ('''
        from generators.families.diffusion.schedules import NoiseSchedule

        @SCHEDULES.register("{name}")
        class Broken(NoiseSchedule):
            def _alphas_cumprod(self):
                return torch.linspace(0.5, 1.0, self.T + 1, dtype=torch.float64)   # increasing
        ''', "variance_preserving"),
    "samplers": ('''
        from generators.families.diffusion.samplers import DDIMSampler

        @SAMPLERS.register("{name}")
        class Broken(DDIMSampler):
            def step(self, z, t, s, **kw):
                return 1.5 * super().step(z, t, s, **kw)          # inflates every step
        ''', "exact_model"),
    "families": ('''
        import dataclasses
        from generators.family import Family

        @dataclasses.dataclass                                     # not frozen
        class Cfg:
            knob: int = 1

        FAMILIES.add("{name}", Family(name="{name}", summary="broken", config=Cfg,
                     module="generators.families.diffusion.module:DiffusionGenerator",
                     default_sampler="ddim", default_steps=10, nfe_sampler="ddim"))
        ''', "section"),
}


@pytest.fixture
def restored_registries():
    """Registries as they were before the test (broken plug-ins must not leak into others)."""
    saved = {k: (dict(r._entries), dict(r._origins)) for k, r in REGISTRIES.items()}
    yield
    for k, (entries, origins) in saved.items():
        REGISTRIES[k]._entries, REGISTRIES[k]._origins = entries, origins


@pytest.mark.parametrize("kind", KINDS)
def test_each_suite_rejects_a_broken_plugin(kind, tmp_path, restored_registries):
    name = f"broken_{kind}"
    text, failing = BROKEN[kind]
    path = tmp_path / f"{name}.py"
    path.write_text(HEAD + textwrap.dedent(text.format(name=name)))
    load_plugin(path)
    registered = f"{name}/v1" if kind == "suites" else name
    report = check_component(kind, registered)
    rows = {c.name: c for c in report.checks}
    assert not report.passed and failing in rows and not rows[failing].passed, report.table()


def test_check_command_runs_any_kind_of_file(tmp_path):
    path = tmp_path / "two_kinds.py"
    path.write_text(HEAD + textwrap.dedent(BROKEN["schedules"][0].format(name="cli_schedule")
                                           + BROKEN["samplers"][0].format(name="cli_sampler")))
    out = subprocess.run([sys.executable, "-m", "harness.cli", "check", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert "conformance of schedule 'cli_schedule'" in out.stdout
    assert "conformance of sampler 'cli_sampler'" in out.stdout and "FAIL" in out.stdout
    ok = subprocess.run([sys.executable, "-m", "harness.cli", "check", "linear"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "PASS" in ok.stdout, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "harness.cli", "check", "nosuch"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "neither a registered component" in bad.stderr
