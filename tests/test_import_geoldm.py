"""``l3dg import geoldm DIR``: GeoLDM's shipped folder layout -> a harness run directory for the
``per_atom`` space that ``l3dg sample`` and ``l3dg eval`` use like a trained one; the args
pickle is read without running code.

Fixtures (``tests/fixtures/geoldm_parity/``, made with GeoLDM's own code): ``geoldm_run/`` is a
small GeoLDM model (briefly trained with GeoLDM's loss on random molecules) laid out as
``outputs/<exp_name>/``; ``small.weights.pt`` / ``small.npz`` carry GeoLDM's encoder and latent
network outputs for the parity check through the importer.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.importers.cli import add_parser, cmd_import
from harness.importers.geoldm import GeoLDMImportError, import_geoldm
from harness.importers.safe_pickle import UnsafePickleError, load_namespace

FIX = Path(__file__).parent / "fixtures" / "geoldm_parity"
COUNTS = {3: 2, 4: 5, 5: 1, 6: 7}


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="cmd"))
    return cmd_import(parser.parse_args(["import", *argv]))


def _main(argv: list[str]) -> int:
    from harness.cli import main

    return main(argv)


def _geoldm_dir(tmp_path: Path, args: dict, weights: dict, name="geoldm_qm9") -> Path:
    d = tmp_path / "outputs" / name
    d.mkdir(parents=True)
    with open(d / "args.pickle", "wb") as f:
        pickle.dump(argparse.Namespace(**args), f)
    torch.save(weights, d / "generative_model_ema.npy")
    return d


def test_import_shipped_layout_then_sample_and_eval(tmp_path):
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps(COUNTS))
    run = tmp_path / "runs" / "geoldm_small"
    assert _cli(["geoldm", str(FIX / "geoldm_run"), "--out", str(run), "--commit", "03ae203",
                 "--atom-counts", str(counts)]) == 0
    for rel in ("config.yaml", "import.json", "per_atom/state.json", "per_atom/space/space.json",
                "per_atom/generator/checkpoints/last.ckpt"):
        assert (run / rel).exists(), rel
    meta = json.loads((run / "import.json").read_text())
    for name in ("args.pickle", "generative_model_ema.npy"):
        want = hashlib.sha256((FIX / "geoldm_run" / name).read_bytes()).hexdigest()
        assert meta["files"][name]["sha256"] == want
    assert meta["format"] == "geoldm" and meta["commit"] == "03ae203"
    assert meta["args"]["nf"] == 16 and meta["args"]["latent_nf"] == 1
    assert meta["checks"]["gamma_max_abs_diff"] < 1e-5

    assert _main(["sample", str(run), "--space", "per_atom", "--n", "4"]) == 0
    sdf = run / "per_atom" / "samples_edm_4.sdf"
    text = sdf.read_text()
    assert text.count("$$$$") == 4 and ">  <nfe>  (1) \n51" in text   # T = 50 steps + p(z|z0)
    out = tmp_path / "metrics.json"
    assert _main(["eval", str(sdf), "--reference", "none", "--suite", "qm9/v1-core",
                  "--quiet", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["metadata"]


def test_imported_run_reproduces_geoldms_encoder_and_latent_network(tmp_path):
    from generators import load_generator
    from harness.core.registry import SPACES

    args = load_namespace(FIX / "geoldm_run" / "args.pickle")
    args.update(diffusion_steps=100)
    src = _geoldm_dir(tmp_path, args, torch.load(FIX / "small.weights.pt", weights_only=True))
    run = import_geoldm(src, tmp_path / "run", atom_counts=COUNTS)
    space = SPACES.get("per_atom").load(run / "per_atom" / "space")
    assert space.options["autoencoder"] == "geoldm"
    gen = load_generator(run / "per_atom" / "generator" / "checkpoints" / "last.ckpt").double()
    d = {k: torch.from_numpy(v) for k, v in np.load(FIX / "small.npz").items()}
    mask = d["node_mask"].bool()
    ae = space.net.double()
    with torch.no_grad():
        h, x = ae.encode(d["onehot"].argmax(-1), d["x"], mask)
        z = torch.cat([d["net_z"][..., 3:], d["net_z"][..., :3]], -1)
        t = torch.from_numpy(np.round(d["net_t"].numpy() * 100)).long()
        out = gen._model(gen.ema, z, t, mask, None)
    assert float((h - d["enc_h"]).abs().max()) < 1e-5
    assert float((x - d["enc_x"]).abs().max()) < 1e-5
    want = torch.cat([d["net_out"][..., 3:], d["net_out"][..., :3]], -1)
    assert float((out - want).abs().max()) < 1e-5
    assert torch.equal(gen.prior.hist[[3, 4, 5, 6]], torch.tensor([2.0, 5, 1, 7],
                                                                  dtype=torch.float64))


class _Evil:
    """Its pickle calls os.system on load (what a hostile args.pickle would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload", ["system", "nested"])
def test_malicious_args_pickle_is_refused_and_nothing_runs(tmp_path, payload):
    marker = tmp_path / "pwned"
    src = tmp_path / "outputs" / "geoldm_qm9"
    src.mkdir(parents=True)
    obj = {"system": _Evil(marker),
           "nested": argparse.Namespace(nf=16, hook=_Evil(marker))}[payload]
    (src / "args.pickle").write_bytes(pickle.dumps(obj))
    torch.save({}, src / "generative_model_ema.npy")
    run = tmp_path / "run"
    with pytest.raises(UnsafePickleError, match=r"refers to (posix|os)\.\w+.*nothing was run"):
        _cli(["geoldm", str(src), "--out", str(run)])
    assert not marker.exists() and not run.exists()


def test_unsupported_geoldm_models_are_refused_with_the_reason(tmp_path):
    args = load_namespace(FIX / "geoldm_run" / "args.pickle")
    weights = torch.load(FIX / "geoldm_run" / "generative_model_ema.npy", weights_only=True)
    cases = [({"conditioning": ["alpha"], "context_node_nf": 1}, "conditioning"),
             ({"ae_path": "outputs/vae"}, "ae_path"),
             ({"latent_nf": 2}, "latent_nf 1 in the weights vs 2"),
             ({"nf": 32}, "hidden 16 in the weights vs 32")]
    for i, (change, why) in enumerate(cases):
        src = _geoldm_dir(tmp_path, {**args, **change}, weights, name=f"m{i}")
        with pytest.raises(GeoLDMImportError, match=why):
            import_geoldm(src, tmp_path / f"run{i}", atom_counts=COUNTS)
        assert not (tmp_path / f"run{i}").exists()
