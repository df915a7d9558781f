"""The invariant space's topology half, per ``topology`` option: training, the validation
exact-match rate and greedy decoding to graphs, for the SELFIES GRU (``"selfies"``,
:mod:`spaces._topology`) and for HierVAE (``"hiervae"``, :mod:`spaces._hiervae`).

Functions of the space (``spaces/invariant.py``), kept apart so that file stays one concern.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from spaces._conformers import DecodedGraph, decode_graphs, smiles_graphs
from spaces._topology import TokenCollate, record_smiles


def fit_topology(space, train_records, table: np.ndarray, val_parts, progress: bool,
                 trainer_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Train ``space.topology`` (HierVAE: built afresh with its motif vocabulary) on the kept
    training molecules (``train_records``; ``table``: their SELFIES token ids); returns the
    training stats."""
    from torch.utils.data import DataLoader

    from harness.core.data.base import IndexDataset
    from spaces._autoencoder import train_autoencoder
    from spaces._hiervae import fit_hiervae, hier_args

    if space.topology_kind == "hiervae":
        space.topology, stats = fit_hiervae(
            hier_args(space.options), [record_smiles(r) for r in train_records],
            [record_smiles(r) for r in val_parts[0]] if val_parts else [], space.hier_vocab,
            space.epochs_topo, space.hier_lr, space.batch_size, space.seed, progress, trainer_kwargs)
        return stats

    def token_loader(tab, shuffle):
        return DataLoader(IndexDataset(len(tab)), batch_size=space.batch_size, shuffle=shuffle,
                          collate_fn=TokenCollate(tab),
                          generator=torch.Generator().manual_seed(space.seed))

    space.topology.train()
    stats = train_autoencoder(
        space.topology, token_loader(table, True),
        token_loader(val_parts[1], False) if val_parts else None,
        epochs=space.epochs_topo, lr=space.lr, progress=progress, seed=space.seed,
        trainer_kwargs=trainer_kwargs)
    return stats


@torch.no_grad()
def topology_exact(space, val_kept, table: np.ndarray) -> float:
    """Validation exact-match rate: HierVAE, canonical SMILES of encode -> greedy decode equal
    to the input's; SELFIES, the greedy-decoded string equal to the input's."""
    if space.topology_kind == "hiervae":
        return space.topology.exact_rate([record_smiles(r) for r in val_kept])
    z = torch.cat([space.topology.encode(torch.from_numpy(table[s:s + 256]))
                   for s in range(0, len(table), 256)])
    decoded = space._greedy(z)
    return float(np.mean([a == b for a, b in zip(decoded, space._strings(table))]))


def topology_graphs(space, z_topo: torch.Tensor) -> list[DecodedGraph]:
    """``z_topo`` -> decoded graphs (greedy SELFIES, or HierVAE's greedy motif tree)."""
    if space.topology_kind == "hiervae":
        return smiles_graphs(space.topology.decode_smiles(z_topo), space.elements)
    return decode_graphs(space._greedy(z_topo), space.elements)
