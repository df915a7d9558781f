"""HierVAE's root vector under training: does it still tell molecules apart? (issue #28)

A diagnostic script, not a test (pytest does not collect it; CI never runs it)::

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/hiervae_root_spread.py \\
        --train 6000 --updates 1500 --eval-every 500 [--no-layernorm] [--lr 1e-3 --clip 5]

A plain Adam loop (no Lightning, no schedule) over the first ``--train`` molecules of
``qm9:train`` with the HierVAE of ``topology: hiervae`` (CPU widths: hidden 96, depth 3,
root width 64, latent 32). Every 100 updates it prints the teacher-forced loss and accuracies;
every ``--eval-every`` updates (and at the end) it encodes 200 training and the first 200
test molecules and prints

* ``root_std``: the root vectors' standard deviation across molecules, averaged over
  dimensions (~1e-7 means every molecule gets the same latent);
* ``saturated``: the fraction of root-vector entries with |x| > 0.999 (the ``tanh`` is flat);
* exact reconstruction on train / test (greedy decode of ``R_mean(root)``) and the unique
  fraction of the test decodes.

``--no-layernorm`` removes the LayerNorm before the root ``tanh`` (the model before the fix):
the root vector then saturates within ~25 updates and the decoder collapses onto one molecule.
``--kl WARMUP,EVERY,STEP,MAX`` sets the KL schedule (``0,1,0,0``: no KL term).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=6000)
    p.add_argument("--updates", type=int, default=1500)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--clip", type=float, default=0.0, help="gradient-norm clip (0: none)")
    p.add_argument("--kl", default="300,50,0.005,0.1")
    p.add_argument("--no-layernorm", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the history as JSON here")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    from harness.core.data import load_dataset
    from spaces._hiervae import HierVAE, build_vocab, exact_match
    from spaces._hiervae_motifs import decompose
    from spaces._hiervae_vocab import collate, featurize
    from spaces._topology import record_smiles

    data = load_dataset("qm9")

    def smiles(split, n):
        return [s for s in (record_smiles(split[i]) for i in range(min(n, len(split)))) if s]

    train, test = smiles(data.split("train"), a.train), smiles(data.split("test"), 200)
    trees = [decompose(s) for s in train]
    vocab, _ = build_vocab(train, None, trees)
    model = HierVAE(vocab, 64, hidden=96, depth=3, latent=32,
                    kl=[float(x) for x in a.kl.split(",")])
    if a.no_layernorm:
        model.encoder.root_norm = torch.nn.Identity()
    items = [x for x in (featurize(t, vocab) for t in trees if t is not None) if x.known]
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    rng = np.random.default_rng(a.seed)

    def evaluate() -> dict:
        model.eval()
        z_tr, _ = model.encode_smiles(train[:200])
        z_te, _ = model.encode_smiles(test)
        d_te = model.decode_smiles(z_te)
        model.train()
        return {"root_std": float(z_te.std(0).mean()),
                "saturated": float((z_te.abs() > 0.999).float().mean()),
                "exact_train": exact_match(model.decode_smiles(z_tr), train[:200]),
                "exact_test": exact_match(d_te, test), "unique_test": len(set(d_te)) / len(d_te)}

    history, t0 = [], time.perf_counter()
    model.train()
    for step in range(1, a.updates + 1):
        batch = collate([items[k] for k in rng.choice(len(items), a.batch, replace=False)])
        out = model.loss(batch)
        opt.zero_grad()
        out["loss"].backward()
        if a.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        if step % 100 == 0 or step == a.updates:
            row = {k: round(float(out[k]), 3) for k in
                   ("recon", "kl", "beta", "motif_acc", "att_acc", "topo_acc", "assm_acc")}
            row.update(step=step, seconds=round(time.perf_counter() - t0, 1))
            if (a.eval_every and step % a.eval_every == 0) or step == a.updates:
                row.update(evaluate())
            print(json.dumps(row), flush=True)
            history.append(row)
    if a.out:
        from harness.core.io import atomic_write_json

        atomic_write_json(a.out, {"args": vars(a), "history": history})


if __name__ == "__main__":
    main()
