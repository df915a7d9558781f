"""The hierarchical encoder of the HierVAE topology option: atom -> attachment -> motif
message passing, then the root motif's vector through ``tanh`` (the latent).

Three levels, each a message-passing network over index tensors (no Python loop over atoms):

* **atom layer** over the molecular graph: atom-label embeddings, bond-order embeddings on
  the edges;
* **attachment layer** over the motif tree: each node starts from its attachment's
  embedding plus the sum of its atoms' vectors;
* **motif layer** over the motif tree: each node starts from its motif's embedding plus its
  attachment-layer vector.

The root node's motif-layer vector -> Linear -> LayerNorm -> ``tanh`` is the **root vector**
``[B, width]``: the latent LDM-3DG diffuses (its 250-d ``tanh`` root vector; ``width`` = the
space's ``topo_width``). As in the paper, the message-passing weights are shared across
iterations. The LayerNorm is this implementation's: without it the Linear's output grows to
|x| ~ 10 within ~25 Adam updates (lr 5e-3; ~5 at the paper's 1e-3 with clipping at 5), the
``tanh`` saturates (every entry at ±1 after 400 updates), and the root vector is nearly the
same for every molecule (std across molecules 0.016, against 0.36 with the LayerNorm), so the
decoder gets almost no information and collapses onto one molecule (BENCHMARKS.md, "Topology
autoencoders").
"""
from __future__ import annotations

import torch
from torch import nn


class MessagePassing(nn.Module):
    """``depth`` rounds of ``m_i = sum_j ReLU(W [h_j, e_ij])``, ``h_i = GRUCell(m_i, h_i)``
    over directed edges ``src -> dst`` (weights shared across rounds)."""

    def __init__(self, hidden: int, edge_dim: int, depth: int):
        super().__init__()
        self.depth = depth
        self.message = nn.Sequential(nn.Linear(hidden + edge_dim, hidden), nn.ReLU())
        self.update = nn.GRUCell(hidden, hidden)

    def forward(self, h: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
                edge: torch.Tensor) -> torch.Tensor:
        """``h [N, H]``, ``src / dst [E]``, ``edge [E, edge_dim]`` -> ``[N, H]``."""
        for _ in range(self.depth):
            msg = self.message(torch.cat([h[src], edge], -1))
            agg = torch.zeros_like(h).index_add(0, dst, msg)
            h = self.update(agg, h)
        return h


class HierEncoder(nn.Module):
    """Motif trees (a :class:`spaces._hiervae_vocab.TreeBatch`'s tensors) -> root vectors.

    The embeddings (atom labels, motifs, attachments) are passed in so the decoder shares
    them (the paper ties encoder and decoder embeddings)."""

    def __init__(self, embeddings: nn.ModuleDict, hidden: int, depth: int, width: int):
        super().__init__()
        self.emb = embeddings
        self.bond = nn.Embedding(4, hidden)
        self.atom_layer = MessagePassing(hidden, hidden, depth)
        self.att_layer = MessagePassing(hidden, 1, depth)
        self.motif_layer = MessagePassing(hidden, 1, depth)
        self.att_in = nn.Linear(2 * hidden, hidden)
        self.motif_in = nn.Linear(2 * hidden, hidden)
        self.root = nn.Linear(hidden, width)
        self.root_norm = nn.LayerNorm(width)     # keeps the tanh out of saturation (see above)

    def forward(self, t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(root [B, width], node vectors [K_total, H], atom vectors [A_total, H])``."""
        h_atom = self.emb["label"](t["labels"])
        h_atom = self.atom_layer(h_atom, t["bond_src"], t["bond_dst"], self.bond(t["bond_type"]))
        pooled = h_atom.new_zeros(len(t["motif"]), h_atom.shape[1]).index_add(
            0, t["member_node"], h_atom[t["member_atom"]])
        tree_edge = h_atom.new_zeros(len(t["tree_src"]), 1)
        h_att = torch.relu(self.att_in(torch.cat([self.emb["att"](t["att"]), pooled], -1)))
        h_att = self.att_layer(h_att, t["tree_src"], t["tree_dst"], tree_edge)
        h_node = torch.relu(self.motif_in(torch.cat([self.emb["motif"](t["motif"]), h_att], -1)))
        h_node = self.motif_layer(h_node, t["tree_src"], t["tree_dst"], tree_edge)
        return torch.tanh(self.root_norm(self.root(h_node[t["root"]]))), h_node, h_atom
