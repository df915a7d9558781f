"""``l3dg import edm DIR``: EDM's shipped folder layout -> a harness run directory that
``l3dg sample`` and ``l3dg eval`` use like a trained one; the args pickle is read without
running code.

Fixtures (``tests/fixtures/edm_parity/``, made with EDM's own code): ``edm_run/`` is a small
random-initialised EDM model laid out as ``outputs/edm_qm9/``; ``small.weights.pt`` /
``small.npz`` carry EDM's network output for the parity check through the importer.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.importers.cli import add_parser, cmd_import
from harness.importers.edm import EDMImportError, edm_atom_counts, import_edm
from harness.importers.safe_pickle import UnsafePickleError, load_namespace

FIX = Path(__file__).parent / "fixtures" / "edm_parity"
COUNTS = {3: 2, 4: 5, 5: 1, 6: 7}


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="cmd"))
    return cmd_import(parser.parse_args(["import", *argv]))


def _main(argv: list[str]) -> int:
    from harness.cli import main

    return main(argv)


def _edm_dir(tmp_path: Path, args: dict, weights: dict, name="edm_qm9") -> Path:
    d = tmp_path / "outputs" / name
    d.mkdir(parents=True)
    with open(d / "args.pickle", "wb") as f:
        pickle.dump(argparse.Namespace(**args), f)
    torch.save(weights, d / "generative_model_ema.npy")
    return d


def test_import_shipped_layout_then_sample_and_eval(tmp_path):
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps(COUNTS))
    run = tmp_path / "runs" / "edm_small"
    assert _cli(["edm", str(FIX / "edm_run"), "--out", str(run), "--commit", "fce07d7",
                 "--atom-counts", str(counts)]) == 0
    for rel in ("config.yaml", "import.json", "raw/state.json", "raw/space/space.json",
                "raw/generator/checkpoints/last.ckpt"):
        assert (run / rel).exists(), rel
    meta = json.loads((run / "import.json").read_text())
    for name in ("args.pickle", "generative_model_ema.npy"):
        want = hashlib.sha256((FIX / "edm_run" / name).read_bytes()).hexdigest()
        assert meta["files"][name]["sha256"] == want
    assert meta["commit"] == "fce07d7" and meta["args"]["nf"] == 16
    assert meta["checks"]["gamma_max_abs_diff"] < 1e-5

    assert _main(["sample", str(run), "--space", "raw", "--n", "4"]) == 0
    sdf = run / "raw" / "samples_edm_4.sdf"
    text = sdf.read_text()
    assert text.count("$$$$") == 4 and ">  <nfe>  (1) \n51" in text   # T = 50 steps + p(x|z0)
    out = tmp_path / "metrics.json"
    assert _main(["eval", str(sdf), "--reference", "none", "--suite", "qm9/v1-core",
                  "--quiet", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["metadata"]


def test_imported_generator_reproduces_edms_network(tmp_path):
    from generators import load_generator

    args = load_namespace(FIX / "edm_run" / "args.pickle")
    args.update(diffusion_steps=100, inv_sublayers=1, nf=16, n_layers=2)
    state = torch.load(FIX / "small.weights.pt", weights_only=True)
    src = _edm_dir(tmp_path, args, state)
    run = import_edm(src, tmp_path / "run", atom_counts=COUNTS)
    gen = load_generator(run / "raw" / "generator" / "checkpoints" / "last.ckpt").double()
    d = np.load(FIX / "small.npz")
    mask = torch.from_numpy(d["node_mask"]).bool()
    z_edm = torch.from_numpy(d["net_z"])
    z = torch.cat([z_edm[..., 3:], z_edm[..., :3]], -1)
    t = torch.from_numpy(np.round(d["net_t"] * 100)).long()
    with torch.no_grad():
        out = gen._model(gen.ema, z, t, mask, None)
    want = torch.from_numpy(d["net_out"])
    want = torch.cat([want[..., 3:], want[..., :3]], -1)
    assert float((out - want).abs().max()) < 1e-5
    assert torch.equal(gen.prior.hist[[3, 4, 5, 6]], torch.tensor([2.0, 5, 1, 7],
                                                                  dtype=torch.float64))


class _Evil:
    """Its pickle calls os.system on load (what a hostile args.pickle would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvilPopen:
    def __reduce__(self):
        return subprocess.Popen, (["true"],)


@pytest.mark.parametrize("payload", ["system", "popen", "nested"])
def test_malicious_args_pickle_is_refused_and_nothing_runs(tmp_path, payload):
    marker = tmp_path / "pwned"
    src = tmp_path / "outputs" / "edm_qm9"
    src.mkdir(parents=True)
    obj = {"system": _Evil(marker), "popen": _EvilPopen(),
           "nested": argparse.Namespace(nf=16, hook=_Evil(marker))}[payload]
    (src / "args.pickle").write_bytes(pickle.dumps(obj))
    torch.save({}, src / "generative_model_ema.npy")
    run = tmp_path / "run"
    with pytest.raises(UnsafePickleError, match=r"refers to (posix|os|subprocess)\.\w+.*nothing was run"):
        _cli(["edm", str(src), "--out", str(run)])
    assert not marker.exists() and not run.exists()


def test_unsupported_edm_models_are_refused_with_the_reason(tmp_path):
    args = load_namespace(FIX / "edm_run" / "args.pickle")
    args.update(conditioning=["alpha"], context_node_nf=1)
    src = _edm_dir(tmp_path, args, torch.load(FIX / "edm_run" / "generative_model_ema.npy",
                                               weights_only=True))
    with pytest.raises(EDMImportError, match="conditioning"):
        import_edm(src, tmp_path / "run", atom_counts=COUNTS)
    args = load_namespace(FIX / "edm_run" / "args.pickle")
    src = _edm_dir(tmp_path, {**args, "nf": 32}, torch.load(
        FIX / "edm_run" / "generative_model_ema.npy", weights_only=True), name="other")
    with pytest.raises(EDMImportError, match="hidden 16 in the weights vs 32"):
        import_edm(src, tmp_path / "run2", atom_counts=COUNTS)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()


def test_atom_counts_are_read_from_edms_config_without_running_it(tmp_path):
    cfg = tmp_path / "configs" / "datasets_config.py"
    cfg.parent.mkdir()
    cfg.write_text("import os\nqm9_with_h = {'name': 'qm9', 'n_nodes': {3: 2, 9: 4}}\n"
                   "qm9_without_h = {'name': 'qm9', 'n_nodes': {2: 1}}\nos.system('false')\n")
    assert edm_atom_counts(tmp_path, remove_h=False) == {3: 2, 9: 4}
    assert edm_atom_counts(tmp_path, remove_h=True) == {2: 1}
