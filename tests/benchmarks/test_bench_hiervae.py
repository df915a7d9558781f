"""HierVAE benchmark (skipped by default): one teacher-forced training update (forward,
backward, AdamW step) at the CPU widths of ``topology: hiervae`` (hidden
96, depth 3, root width 64, latent 32), batch 64, on QM9 training molecules; one thread.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/benchmarks/test_bench_hiervae.py \\
        --benchmark-enable --benchmark-only
"""
import numpy as np
import pytest
import torch

BATCH = 64


@pytest.fixture(scope="module")
def setup():
    from harness.core.data import load_dataset
    from spaces._hiervae import HierVAE, build_vocab
    from spaces._hiervae_motifs import decompose
    from spaces._hiervae_vocab import collate, featurize
    from spaces._topology import record_smiles

    torch.set_num_threads(1)
    torch.manual_seed(0)
    split = load_dataset("qm9", subset=3000, progress=False).split("train")
    smiles = [s for s in (record_smiles(split[i]) for i in range(len(split))) if s]
    trees = [decompose(s) for s in smiles]
    vocab, _ = build_vocab(smiles, None, trees)
    model = HierVAE(vocab, 64, hidden=96, depth=3, latent=32)
    items = [x for x in (featurize(t, vocab) for t in trees if t is not None) if x.known]
    rng = np.random.default_rng(0)
    batches = [collate([items[k] for k in rng.choice(len(items), BATCH, replace=False)])
               for _ in range(8)]
    return model, batches


def test_bench_hiervae_training_update(benchmark, setup):
    model, batches = setup
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    state = {"k": 0}

    def update():
        batch = batches[state["k"] % len(batches)]
        state["k"] += 1
        out = model.loss(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()

    benchmark.pedantic(update, rounds=16, iterations=1, warmup_rounds=2)
    benchmark.extra_info["molecules_per_second"] = BATCH / benchmark.stats.stats.mean

