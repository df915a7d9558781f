"""Space benchmarks (skipped by default): encode / decode throughput on QM9 batches and
autoencoder training time per epoch on the quick subset; training-step memory at drug scale.

    .venv/bin/python -m pytest tests/benchmarks/test_bench_spaces.py --benchmark-enable --benchmark-only
"""
import numpy as np
import pytest
import torch

from harness.core.data import load_dataset
from harness.core.registry import SPACES

BUILTIN = ["raw", "per_atom", "flat", "invariant"]
QUICK = {"per_atom": {"epochs": 1}, "flat": {"epochs": 1}, "invariant": {"epochs_topo": 1, "epochs_geo": 1}}


@pytest.fixture(scope="module")
def quick():
    torch.set_num_threads(2)
    return load_dataset("qm9", subset=3000, progress=False)


@pytest.fixture(scope="module")
def fitted(quick):
    """Each space fitted for one epoch on the quick training split (timing not measured here)."""
    out = {}
    for name in BUILTIN:
        space = SPACES.get(name)(elements=quick.elements, **QUICK.get(name, {}))
        if space.trainable:
            space.fit(quick.split("train"), None, progress=False)
        out[name] = space
    return out


@pytest.mark.parametrize("name", BUILTIN)
def test_bench_encode(benchmark, quick, fitted, name):
    batch = quick.split("test").batch(np.arange(256))
    benchmark.pedantic(lambda: fitted[name].encode(batch), rounds=3, iterations=1)
    benchmark.extra_info["molecules_per_second"] = 256 / benchmark.stats.stats.mean


@pytest.mark.parametrize("name", BUILTIN)
def test_bench_decode(benchmark, quick, fitted, name):
    latent = fitted[name].encode(quick.split("test").batch(np.arange(256)))
    benchmark.pedantic(lambda: fitted[name].decode(latent), rounds=3, iterations=1)
    benchmark.extra_info["molecules_per_second"] = 256 / benchmark.stats.stats.mean


@pytest.mark.parametrize("name", ["per_atom", "flat", "invariant"])
def test_bench_autoencoder_epoch(benchmark, quick, name):
    """One training epoch of the space's autoencoder(s) on the quick subset's train split
    (2,293 molecules), with the default preset's options."""
    import yaml

    from harness.config import PRESET_DIR

    options = yaml.safe_load((PRESET_DIR / "default.yaml").read_text())["spaces"][name]
    options = {**options, **QUICK[name]}

    def fit():
        space = SPACES.get(name)(elements=quick.elements, **options)
        space.fit(quick.split("train"), None, progress=False)

    benchmark.pedantic(fit, rounds=1, iterations=1)


# -- drug scale: training-step memory on ~100-atom molecules ----------------------------------
_STEP_MEMORY = r'''
import resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from rdkit import Chem
from rdkit.Chem import AllChem
from harness.core.chem import bonds_of
from harness.core.types import MolBatch, MolRecord
kind, checkpoint, B = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
records = []
for k in range(B):                                   # tritriacontane C33H68: 101 atoms
    mol = Chem.AddHs(Chem.MolFromSmiles("C" * 33))
    AllChem.EmbedMolecule(mol, randomSeed=k)
    records.append(MolRecord(numbers=np.array([a.GetAtomicNum() for a in mol.GetAtoms()]),
                             pos=mol.GetConformer().GetPositions().astype(np.float32),
                             bonds=bonds_of(mol), charges=np.zeros(mol.GetNumAtoms(), np.int64)))
batch = MolBatch.from_records(records, ("H", "C", "N", "O", "F"))
torch.manual_seed(0)
if kind == "per_atom":
    from spaces.per_atom import PerAtomAutoencoder
    net = PerAtomAutoencoder(5, 2, 64, 3, 0.05, 0.01, checkpoint=checkpoint).train()
    loss = lambda: net.loss(batch)["loss"]
else:
    from spaces._geometry import GeometryAutoencoder, GeometryBatch
    net = GeometryAutoencoder(5, 64, 64, 3, encoder=kind, checkpoint=checkpoint).train()
    gb = GeometryBatch(batch.atom_types, batch.charges, batch.bonds, batch.mask, batch.pos, batch.pos)
    loss = lambda: net.loss(gb)["loss"]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
loss().backward()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, time.perf_counter() - t0)
'''


@pytest.mark.parametrize("kind,checkpoint,batch", [
    ("per_atom", 0, 64), ("per_atom", 1, 64), ("per_atom", 0, 6),
    ("egnn", 0, 64), ("egnn", 1, 64), ("egnn", 0, 6), ("e3nn", 0, 6), ("e3nn", 1, 6)])
def test_bench_drug_scale_step_memory(benchmark, kind, checkpoint, batch):
    """Peak extra RSS (MB) of one training step of the per_atom AE / the invariant geometry AE
    (``egnn`` / ``e3nn`` encoder) at default widths (hidden 64, 3 blocks) on ``batch``
    101-atom molecules, with and without gradient checkpointing. ``batch=6`` is what
    ``max_batch_pairs=65536`` (64 QM9-sized molecules' worth of pairs) gives at 101 atoms.
    Each configuration runs in a fresh process (ru_maxrss is per process)."""
    import subprocess
    import sys
    from pathlib import Path

    def run():
        out = subprocess.run([sys.executable, "-c", _STEP_MEMORY, kind, str(checkpoint), str(batch)],
                             capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[2])
        return [float(v) for v in out.stdout.split()[-2:]]

    peak_mb, seconds = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(peak_extra_rss_mb=round(peak_mb), step_seconds=round(seconds, 2))
