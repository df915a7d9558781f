"""quality_vs_nfe on the tiny QM9 sample: both families, the raw space, a real scorer."""
from pathlib import Path

import numpy as np
import pytest
import torch

from generators import build_generator
from generators.nfe import quality_vs_nfe, steps_for_nfe

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CPU = dict(accelerator="cpu", logger=False)


@pytest.fixture(scope="module")
def raw_setup():
    from harness.core.data import load_dataset
    from harness.core.registry import SPACES

    ds = load_dataset("sdf", path=str(ROOT / "harness/core/data/qm9_sample.sdf"),
                      elements=["H", "C", "N", "O", "F"], report=False)
    train = ds.split("train")
    space = SPACES.get("raw")(elements=ds.elements)
    return space, space.encode_dataset(train)


def _atom_stability(batch) -> dict:
    from metrics.edm import EdmMetric
    from metrics.samples import Samples

    out = EdmMetric().analyse(Samples.from_batch(batch))
    return {"valid": float(np.mean(out["valid"]))}


def test_steps_for_nfe():
    assert [steps_for_nfe("heun", k) for k in (1, 2, 3, 9)] == [1, 1, 2, 5]
    assert steps_for_nfe("midpoint", 7) == 3 and steps_for_nfe("ddim", 7) == 7
    with pytest.raises(ValueError, match="no fixed NFE"):
        steps_for_nfe("dopri5", 10)


@pytest.mark.parametrize("family,sampler", [("diffusion", "ddim"), ("flow", "heun"),
                                            ("flow", "euler")])
def test_rows_per_nfe(raw_setup, tmp_path, family, sampler):
    space, latents = raw_setup
    gen = build_generator(latents.spec, {"family": family, "timesteps": 50,
                                         "denoiser_options": {"egnn": {"hidden": 16, "layers": 1}}})
    gen.fit(latents, None, tmp_path, max_steps=3, batch_size=32, progress=False,
            trainer_kwargs=CPU)
    rows = quality_vs_nfe(gen, space, _atom_stability, [1, 3, 6], sampler=sampler, n=6)
    assert [r["requested_nfe"] for r in rows] == [1, 3, 6]
    want = {"ddim": [1, 3, 6], "heun": [1, 3, 5], "euler": [1, 3, 6]}[sampler]
    assert [r["nfe"] for r in rows] == want and {r["sampler"] for r in rows} == {sampler}
    for r in rows:
        assert r["n"] == 6 and r["seconds_per_molecule"] > 0 and 0 <= r["valid"] <= 1
        assert r["decode_seconds_per_molecule"] >= 0
