"""Geometry half of the ``invariant`` space: 3D coordinates given the graph <-> ``z_geo``.

Encoder: a fully connected EGNN (:class:`harness.core.nn.DenseEGNN`) over atom type / formal
charge one-hots with bond-order and 2-/3-hop pair features and a radial basis of distances
(E(3)-invariant), or :class:`spaces._e3nn_encoder.E3nnInvariantEncoder` (SE(3)-invariant,
chirality-aware). Decoder: a DenseEGNN conditioned on ``z_geo`` refining an RDKit ETKDG start.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.geometry import aligned_squared_error, kabsch_rmsd
from harness.core.nn import DenseEGNN, masked_mean, pair_geometry, remove_mean
from harness.core.types import MolBatch
from spaces._e3nn_encoder import E3nnInvariantEncoder
from spaces._regularizers import drop_nodes, info_nce, uniformity_loss

#: formal charges -1, 0, +1 get one-hot columns (others are clamped into that range).
N_CHARGE_COLUMNS = 3
#: pair features: bond order 1/2/3 one-hot, 2-hop and 3-hop topological neighbours.
N_PAIR_FEATURES = 5
#: Gaussian radial basis of interatomic distances fed to the (invariant) EGNN encoder.
N_DISTANCE_BASIS = 16
DISTANCE_BASIS_MAX = 6.0  # Å


# -- features --------------------------------------------------------------------------------
def node_features(atom_types: torch.Tensor, charges: torch.Tensor | None, mask: torch.Tensor,
                  n_elements: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[B, N, n_elements + 3]``: element one-hot and formal-charge (-1/0/+1) one-hot,
    zero in padded rows."""
    types = F.one_hot(atom_types.clamp(0, n_elements - 1), n_elements)
    if charges is None:
        charges = torch.zeros_like(atom_types)
    charge = F.one_hot(charges.clamp(-1, 1) + 1, N_CHARGE_COLUMNS)
    return torch.cat([types, charge], -1).to(dtype) * mask[..., None].to(dtype)


def pair_features(bonds: torch.Tensor, mask: torch.Tensor,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Invariant pair features of the graph, vectorised.

    Args:
        bonds: [B, N, N] bond orders (0 none, 1/2/3); mask: [B, N] bool.
    Returns:
        features: [B, N, N, 5] (order-1/2/3 one-hot, 2-hop, 3-hop indicators).
        bonded: [B, N, N] bool 1-2 pairs; angle: [B, N, N] bool 1-3 pairs.
    """
    pair = mask[:, :, None] & mask[:, None, :]
    eye = torch.eye(bonds.shape[1], dtype=torch.bool, device=bonds.device)
    adj = (bonds > 0) & pair & ~eye
    a = adj.float()
    reach1 = adj | eye
    reach2 = (torch.bmm(a, a) > 0) | reach1
    hop2 = reach2 & ~reach1 & pair
    reach3 = (torch.bmm(reach2.float(), a) > 0) | reach2
    hop3 = reach3 & ~reach2 & pair
    order = F.one_hot(bonds.clamp(0, 3), 4)[..., 1:] * adj[..., None]
    feats = torch.cat([order.to(dtype), hop2[..., None].to(dtype), hop3[..., None].to(dtype)], -1)
    return feats, adj, hop2


def distance_basis(dist: torch.Tensor) -> torch.Tensor:
    """``dist [...]`` Å -> ``[..., 16]`` Gaussian radial basis (centres 0..6 Å, width equal
    to the spacing); invariant pair features."""
    centres = torch.linspace(0.0, DISTANCE_BASIS_MAX, N_DISTANCE_BASIS, device=dist.device,
                             dtype=dist.dtype)
    width = DISTANCE_BASIS_MAX / (N_DISTANCE_BASIS - 1)
    return torch.exp(-(((dist[..., None] - centres) / width) ** 2))


# -- batches ---------------------------------------------------------------------------------
@dataclass
class GeometryBatch:
    """Graph + coordinates for the geometry AE (dense, padded; dataset atom order).

    Attributes:
        atom_types: [B, N] long; charges: [B, N] long; bonds: [B, N, N] long; mask: [B, N].
        pos: [B, N, 3] Å target coordinates; init_pos: [B, N, 3] Å decoder start coordinates.
    """

    atom_types: torch.Tensor
    charges: torch.Tensor
    bonds: torch.Tensor
    mask: torch.Tensor
    pos: torch.Tensor
    init_pos: torch.Tensor

    def to(self, device) -> "GeometryBatch":
        return GeometryBatch(*(t.to(device) for t in (self.atom_types, self.charges, self.bonds,
                                                      self.mask, self.pos, self.init_pos)))

    def __len__(self) -> int:
        return int(self.mask.shape[0])


class WithInitialCoordinates:
    """mol_loader transform: MolBatch + cached initial coordinates -> GeometryBatch."""

    def __init__(self, init_flat: np.ndarray, init_ptr: np.ndarray):
        self.init_flat, self.init_ptr = init_flat, init_ptr

    def __call__(self, batch: MolBatch, indices: np.ndarray) -> GeometryBatch:
        indices = np.asarray(indices, np.int64)
        starts = self.init_ptr[indices]
        counts = self.init_ptr[indices + 1] - starts
        init = np.zeros((len(indices), batch.max_atoms, 3), np.float32)
        rows = np.repeat(np.arange(len(indices)), counts)
        slots = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        init[rows, slots] = self.init_flat[np.repeat(starts, counts) + slots]
        return GeometryBatch(atom_types=batch.atom_types, charges=batch.charges,
                             bonds=batch.bonds, mask=batch.mask, pos=batch.pos,
                             init_pos=torch.from_numpy(init))


# =============================================================================================
# Networks
# =============================================================================================
def first_nearest(dist: torch.Tensor, owner: torch.Tensor, n_owners: int) -> torch.Tensor:
    """Per owner, the index of its first candidate with the smallest ``dist`` (``dist``,
    ``owner``: ``[C]``) -> ``[n_owners]`` long (analysis by synthesis in decode)."""
    best = torch.full((n_owners,), float("inf"), dtype=dist.dtype, device=dist.device)
    best = best.scatter_reduce(0, owner, dist, reduce="amin")
    is_best = dist <= best[owner]
    first = torch.full((n_owners,), len(dist), device=dist.device)
    idx = torch.arange(len(dist), device=dist.device)
    return first.scatter_reduce(0, owner[is_best], idx[is_best], reduce="amin")


# -- the network -----------------------------------------------------------------------------
class GeometryAutoencoder(nn.Module):
    """3D coordinates given the graph <-> ``z_geo [B, width]`` in [-1, 1].

    Encoder: DenseEGNN (or :class:`E3nnInvariantEncoder`) node features -> masked mean ->
    MLP -> tanh. Decoder: DenseEGNN over ``[node features, z_geo]`` refining the initial
    coordinates. Loss: see :meth:`loss`.
    """

    def __init__(self, n_elements: int, width: int, hidden: int, layers: int,
                 encoder: str = "egnn", bond_weight: float = 10.0, distance_weight: float = 1.0,
                 uniformity_weight: float = 0.0, coords_range: float = 3.0, agg_norm: float = 4.0,
                 hydrogen_index: int = 0, gssl_weight: float = 0.0, checkpoint: bool = False):
        super().__init__()
        self.gssl_weight = gssl_weight
        self.bond_weight, self.hydrogen_index = bond_weight, hydrogen_index
        if encoder not in ("egnn", "e3nn"):
            raise ValueError(f"geo_encoder must be 'egnn' or 'e3nn', got {encoder!r}")
        self.n_elements, self.width, self.encoder_kind = n_elements, width, encoder
        self.distance_weight, self.uniformity_weight = distance_weight, uniformity_weight
        #: the E(3)-invariant latent cannot tell mirror images apart: align up to reflection.
        self.allow_reflection = encoder == "egnn"
        feat = n_elements + N_CHARGE_COLUMNS
        if encoder == "egnn":
            # invariant message passing over distances (RBF) + graph pair features: the EGNN's
            # invariant stream; no coordinate updates are needed for a pooled invariant code
            self.encoder_net = DenseEGNN(feat, hidden, hidden=hidden, layers=layers, sublayers=1,
                                         edge_dim=N_PAIR_FEATURES + N_DISTANCE_BASIS,
                                         coords=False, agg_norm=agg_norm, checkpoint=checkpoint)
        else:
            self.encoder_net = E3nnInvariantEncoder(feat, N_PAIR_FEATURES, hidden, hidden,
                                                    max(3, layers), checkpoint=checkpoint)
        self.encoder_head = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, width))
        self.decoder_net = DenseEGNN(feat + width, 1, hidden=hidden, layers=layers, sublayers=1,
                                     edge_dim=N_PAIR_FEATURES, coords=True,
                                     coords_range=coords_range, agg_norm=agg_norm,
                                     checkpoint=checkpoint)

    def _inputs(self, atom_types, charges, bonds, mask, dtype):
        feats = node_features(atom_types, charges, mask, self.n_elements, dtype)
        pairs, bonded, angle = pair_features(bonds, mask, dtype)
        return feats, pairs, bonded, angle

    def encode(self, atom_types, charges, bonds, pos, mask) -> torch.Tensor:
        """Graph ``[B, N]`` / ``[B, N, N]`` + ``pos [B, N, 3]`` Å -> ``z_geo [B, width]``."""
        dtype = next(self.parameters()).dtype
        feats, pairs, _, _ = self._inputs(atom_types, charges, bonds, mask, dtype)
        x = remove_mean(pos.to(dtype), mask)
        if self.encoder_kind == "egnn":
            dist = torch.sqrt(pair_geometry(x)[0] + 1e-12)
            h, _ = self.encoder_net(feats, None, mask, torch.cat([pairs, distance_basis(dist)], -1))
        else:
            h = self.encoder_net(feats, x, mask, pairs)
        pooled = masked_mean(h, mask)[:, 0]
        return torch.tanh(self.encoder_head(pooled))

    def decode(self, atom_types, charges, bonds, init_pos, mask, z) -> torch.Tensor:
        """Graph + initial coordinates ``[B, N, 3]`` Å + ``z_geo [B, width]`` -> ``[B, N, 3]`` Å
        (zero centre of mass, padded rows 0)."""
        dtype = next(self.parameters()).dtype
        feats, pairs, _, _ = self._inputs(atom_types, charges, bonds, mask, dtype)
        cond = z.to(dtype)[:, None, :].expand(-1, feats.shape[1], -1) * mask[..., None].to(dtype)
        x0 = remove_mean(init_pos.to(dtype), mask)
        _, x = self.decoder_net(torch.cat([feats, cond], -1), x0, mask, pairs)
        return remove_mean(x, mask)

    def loss(self, batch: GeometryBatch) -> dict[str, torch.Tensor]:
        """Kabsch-aligned heavy-atom MSE + ``bond_weight`` x 1-2 distance MSE +
        ``distance_weight`` x 1-3/1-4 distance MSE (all Å^2; hydrogens enter through the
        distance terms, which are also invariant to their exact rotamer alignment) +
        ``uniformity_weight`` x uniformity of z_geo + ``gssl_weight`` x InfoNCE between z_geo
        and the z_geo of a node-dropped view (training only; :mod:`spaces._regularizers`)."""
        z = self.encode(batch.atom_types, batch.charges, batch.bonds, batch.pos, batch.mask)
        pred = self.decode(batch.atom_types, batch.charges, batch.bonds, batch.init_pos,
                           batch.mask, z)
        heavy = batch.mask & (batch.atom_types != self.hydrogen_index)
        aligned = aligned_squared_error(pred, batch.pos, heavy, self.allow_reflection).mean()
        _, bonded, angle = pair_features(batch.bonds, batch.mask)
        torsion = _hop3(batch.bonds, batch.mask)
        target = batch.pos.to(pred.dtype)
        sq = (_distances(pred) - _distances(target)) ** 2
        zero = pred.new_zeros(())
        bond_mse = sq[bonded].mean() if bonded.any() else zero
        far = angle | torsion
        far_mse = sq[far].mean() if far.any() else zero
        loss = aligned + self.bond_weight * bond_mse + self.distance_weight * far_mse
        out = {"aligned_heavy_mse": aligned.detach(), "bond_rmse": bond_mse.detach().sqrt(),
               "far_pair_rmse": far_mse.detach().sqrt()}
        if self.uniformity_weight:
            uni = uniformity_loss(z)
            out["uniformity"] = uni.detach()
            loss = loss + self.uniformity_weight * uni
        if self.gssl_weight and self.training:
            # augmented view: the same molecules with 20 % of their atoms (and bonds) dropped
            view = drop_nodes(batch.mask)
            nce = info_nce(z, self.encode(batch.atom_types, batch.charges, batch.bonds,
                                          batch.pos, view))
            out["gssl"] = nce.detach()
            loss = loss + self.gssl_weight * nce
        return {"loss": loss, **out}


def _distances(x: torch.Tensor) -> torch.Tensor:
    """``[B, N, 3]`` -> ``[B, N, N]`` distances (Å), with a safe gradient at 0."""
    diff = x[:, :, None, :] - x[:, None, :, :]
    return torch.sqrt((diff * diff).sum(-1) + 1e-9)


def _hop3(bonds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, N, N] bool: atom pairs exactly 3 bonds apart (1-4 pairs)."""
    return pair_features(bonds, mask)[0][..., 4] > 0


@torch.no_grad()
def reconstruction_rmsds(geometry: "GeometryAutoencoder", molecules, transform: WithInitialCoordinates,
                         step: int, hydrogen_index: int) -> dict[str, float]:
    """Median Kabsch RMSDs (Å) of ``decode(encode(x))`` over ``molecules`` (true graph, the
    transform's initial coordinates as the decoder's start), ``step`` molecules per call:
    all atoms, heavy atoms, and the start's own heavy-atom RMSD for scale."""
    refl = geometry.allow_reflection
    out: dict[str, list] = {"geometry_rmsd_median": [], "geometry_heavy_rmsd_median": [],
                            "init_heavy_rmsd_median": []}
    for start in range(0, len(molecules), step):
        idx = np.arange(start, min(start + step, len(molecules)))
        batch = transform(molecules.batch(idx), idx)
        zg = geometry.encode(batch.atom_types, batch.charges, batch.bonds, batch.pos, batch.mask)
        pred = geometry.decode(batch.atom_types, batch.charges, batch.bonds, batch.init_pos, batch.mask, zg)
        heavy = batch.mask & (batch.atom_types != hydrogen_index)
        out["geometry_rmsd_median"].append(kabsch_rmsd(pred, batch.pos, batch.mask, refl))
        out["geometry_heavy_rmsd_median"].append(kabsch_rmsd(pred, batch.pos, heavy, refl))
        out["init_heavy_rmsd_median"].append(kabsch_rmsd(batch.init_pos, batch.pos, heavy, refl))
    return {k: round(float(torch.cat(v).median()), 4) for k, v in out.items()}

