"""Topology autoencoders of the invariant space side by side (issue #28): the SELFIES GRU
(``topology: selfies``) against HierVAE (``topology: hiervae``) at equal training seconds.

A benchmark script, not a test (pytest does not collect it; CI never runs it)::

    OMP_NUM_THREADS=1 flock /tmp/l3dg.lock .venv/bin/python tests/benchmarks/topology_ae.py \\
        --train 20000 --test 1000 --seconds 300 --out /tmp/topology_ae.json

Both models see the same QM9 training molecules (the first ``--train`` of ``qm9:train``,
canonical stereo-free heavy-atom SMILES as the invariant space writes them) and train for the
same wall-clock budget (Lightning's ``max_time``; one thread), each with the invariant
space's defaults for its options (``--option KEY=VALUE`` overrides one for both). Scored on the first ``--test`` molecules of ``qm9:test``:

* **reconstruction**: greedy decode of the encoded test molecule has the input's canonical
  SMILES (exact match; Wilson 95 % interval);
* **prior validity**: ``--prior`` latents drawn from the shuffled training-latent marginals
  (every latent dimension permuted independently across encoded training molecules: the
  study's prior control for a vector space), decoded; valid = RDKit reads a non-empty
  molecule (Wilson interval); also the unique fraction of the valid ones;
* latent width, parameters, training steps and seconds.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch


def _smiles(split, n):
    from spaces._topology import record_smiles

    return [s for s in (record_smiles(split[i]) for i in range(min(n, len(split)))) if s]


def _interval(k, n):
    from metrics.intervals import wilson

    lo, hi = wilson(k, n)
    return {"value": k / n if n else math.nan, "low": lo, "high": hi, "n": n}


def _valid(smiles):
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    out = []
    for s in smiles:
        mol = Chem.MolFromSmiles(s) if s else None
        out.append(Chem.MolToSmiles(mol) if mol is not None and mol.GetNumAtoms() else None)
    return out


def _shuffled_prior(z: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    g = np.random.default_rng(seed)
    rows = np.stack([g.integers(0, len(z), n) for _ in range(z.shape[1])], 1)
    return z[torch.from_numpy(rows), torch.arange(z.shape[1])[None, :]]


def run_selfies(train, test, seconds, seed, width, options):
    from torch.utils.data import DataLoader

    from harness.core.data.base import IndexDataset
    from spaces._autoencoder import train_autoencoder
    from spaces._topology import (
        BOS,
        EOS,
        SPECIAL_TOKENS,
        UNK,
        TokenCollate,
        TopologyAutoencoder,
        encode_selfies,
        smiles_to_tokens,
        table_strings,
        token_table,
        tokens_to_smiles,
    )
    from spaces.invariant import InvariantSpace

    d = InvariantSpace(topo_width=width, **options)      # the space's defaults for the GRU
    t0 = time.perf_counter()
    tokens = [smiles_to_tokens(s) for s in train]
    vocab = list(SPECIAL_TOKENS) + sorted({t for seq in tokens for t in seq})
    table, _ = token_table(tokens, vocab, d.max_selfies_len)
    prep = time.perf_counter() - t0
    torch.manual_seed(seed)
    net = TopologyAutoencoder(len(vocab), width, d.topo_hidden, d.topo_layers)
    loader = DataLoader(IndexDataset(len(table)), batch_size=d.batch_size, shuffle=True,
                        collate_fn=TokenCollate(table), generator=torch.Generator().manual_seed(seed))
    stats = train_autoencoder(net, loader, None, epochs=10 ** 6, lr=d.lr, progress=False, seed=seed,
                              trainer_kwargs={"max_time": {"seconds": seconds}})
    index = {t: k for k, t in enumerate(vocab)}
    max_len = max(len(t) for t in tokens) + 4

    def decode(z):
        ids = net.greedy_decode_chunked(z, max_len + 1, index[BOS], index[EOS],
                                        banned=(0, index[BOS], index[UNK]))
        return [tokens_to_smiles([s]) for s in table_strings(ids.numpy(), vocab)]

    def encode(smiles):
        return encode_selfies(net, smiles, [""] * len(smiles), vocab, d.max_selfies_len)[0]

    return net, encode, decode, stats, prep, {"vocab": len(vocab)}


def run_hiervae(train, test, seconds, seed, width, options):
    from spaces._hiervae import fit_hiervae, hier_args
    from spaces.invariant import InvariantSpace

    d = InvariantSpace(topology="hiervae", topo_width=width, **options)
    model, stats = fit_hiervae(hier_args(d.options), train, [], None, epochs=10 ** 6, lr=d.lr,
                               batch_size=d.batch_size, seed=seed, progress=False,
                               trainer_kwargs={"max_time": {"seconds": seconds}})
    prep = stats["preparation_seconds"]
    return (model, lambda s: model.encode_smiles(s)[0], model.decode_smiles, stats, prep,
            stats["vocabulary"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--prior", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="selfies,hiervae")
    parser.add_argument("--out", default="/tmp/topology_ae.json")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="an invariant-space option for both models, YAML value (repeat): "
                             "--option lr=1e-3 --option 'hier_kl=[10000, 1, 0, 0]'")
    args = parser.parse_args()
    import yaml

    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--option {item!r}: expected KEY=VALUE")
        value = yaml.safe_load(value)
        try:                            # YAML 1.1 reads "1e-3" as a string
            value = float(value) if isinstance(value, str) else value
        except ValueError:
            pass
        options[key.strip()] = value
    torch.set_num_threads(1)
    from harness.core.data import load_dataset
    from harness.core.rdmol import smiles_canonical

    data = load_dataset("qm9")
    train = _smiles(data.split("train"), args.train)
    test = _smiles(data.split("test"), args.test)
    results = {"args": vars(args), "train_molecules": len(train), "test_molecules": len(test)}
    for name in args.models.split(","):
        run = {"selfies": run_selfies, "hiervae": run_hiervae}[name]
        net, encode, decode, stats, prep, vocab = run(train, test, args.seconds, args.seed, args.width, options)
        t0 = time.perf_counter()
        with torch.no_grad():
            decoded = decode(encode(test))
            hits = sum(bool(d) and smiles_canonical(d) == smiles_canonical(s)
                       for d, s in zip(decoded, test))
            z_train = torch.cat([encode(train[s:s + 2000]) for s in range(0, min(len(train), 5000), 2000)])
            prior = _valid(decode(_shuffled_prior(z_train, args.prior, args.seed)))
        valid = [p for p in prior if p]
        if hasattr(net, "arrays"):      # HierVAE: test molecules whose motifs are all known
            known = [x is not None and x.known for x in net.arrays(test)]
            vocab = dict(vocab, test_all_motifs_known=_interval(sum(known), len(known)))
        results[name] = {
            "latent_width": args.width,
            "parameters": sum(p.numel() for p in net.parameters()),
            "train_seconds": stats["seconds"], "preparation_seconds": round(prep, 2),
            "epochs_completed": len(stats["history"]), "final": stats["final"], "vocabulary": vocab,
            "optimizer_steps": int(net.steps) if hasattr(net, "steps") else None,
            "exact_reconstruction": _interval(hits, len(test)),
            "prior_validity": _interval(len(valid), len(prior)),
            "prior_unique_of_valid": len(set(valid)) / len(valid) if valid else math.nan,
            "eval_seconds": round(time.perf_counter() - t0, 2),
            "examples": list(zip(test[:5], decoded[:5])),
        }
        print(name, json.dumps({k: v for k, v in results[name].items() if k != "final"}, default=str))
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
