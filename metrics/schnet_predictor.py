"""A second judge for conditional generation: a SchNet-style property predictor.

Schütt et al.'s continuous-filter convolutions (SchNet, 2017), dense over each padded
molecule: atom-type embeddings are updated by ``layers`` interaction blocks whose
convolution filters are generated from the interatomic distances (``n_rbf`` Gaussians
``exp(-gamma (d - mu_k)^2)``, centres ``mu_k`` evenly spaced over [0, ``cutoff``] Å, ``gamma
= 10 Å^-2``), smoothly cut off at ``cutoff`` Å by a cosine envelope; an atom-wise MLP,
summed over the molecule, gives one number. A different family from the EGNN evaluator
(:mod:`metrics.property_predictor`): no edge MLP over node pairs, no attention gate, the
distance (not its square) through a fixed radial basis, shifted-softplus activations — so a
generator that learns the EGNN's blind spots is not rewarded by this judge for the same ones.

Interface as :class:`~metrics.property_predictor.PropertyPredictor` (``normalised``,
``forward``, buffers ``mean`` / ``mad``), so both train, predict, save and cache through the
same code (``PredictorConfig.family = "schnet"``). Invariant to rotation, translation,
reflection and atom order (distances only). Units: coordinates in Å; predictions in the
dataset's units of the property.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.types import MolBatch

__all__ = ["SchNetPredictor"]


def shifted_softplus(x: torch.Tensor) -> torch.Tensor:
    """``softplus(x) - log 2`` (SchNet's activation; 0 at 0)."""
    return F.softplus(x) - math.log(2.0)


class _SSP(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shifted_softplus(x)


class _Interaction(nn.Module):
    """One SchNet interaction: ``h_i += f2out(sum_j W(d_ij) * in2f(h_j))``."""

    def __init__(self, hidden: int, n_rbf: int):
        super().__init__()
        self.filter = nn.Sequential(nn.Linear(n_rbf, hidden), _SSP(), nn.Linear(hidden, hidden))
        self.in2f = nn.Linear(hidden, hidden, bias=False)
        self.f2out = nn.Sequential(nn.Linear(hidden, hidden), _SSP(), nn.Linear(hidden, hidden))

    def forward(self, h: torch.Tensor, rbf: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
        """``h [B, N, H]``, ``rbf [B, N, N, R]``, ``envelope [B, N, N]`` (cutoff x pair mask)."""
        w = self.filter(rbf) * envelope[..., None]                       # [B, N, N, H]
        message = (w * self.in2f(h)[:, None, :, :]).sum(2)              # sum over j
        return h + self.f2out(message)


class SchNetPredictor(nn.Module):
    """Continuous-filter convolution regressor: ``MolBatch -> [B]`` property values.

    Args:
        n_types: element vocabulary size (embedding rows).
        hidden: feature width; layers: interaction blocks.
        mean / mad: target normalisation, dataset units (buffers).
        n_rbf / cutoff: Gaussians of the radial basis and the cutoff radius (Å).
    """

    family = "schnet"

    def __init__(self, n_types: int, hidden: int = 64, layers: int = 3, mean: float = 0.0,
                 mad: float = 1.0, n_rbf: int = 50, cutoff: float = 10.0):
        super().__init__()
        self.n_types, self.hidden, self.layers = n_types, hidden, layers
        self.n_rbf, self.cutoff = n_rbf, float(cutoff)
        self.embed = nn.Embedding(n_types, hidden)
        self.blocks = nn.ModuleList(_Interaction(hidden, n_rbf) for _ in range(layers))
        self.readout = nn.Sequential(nn.Linear(hidden, max(hidden // 2, 1)), _SSP(),
                                     nn.Linear(max(hidden // 2, 1), 1))
        self.register_buffer("centres", torch.linspace(0.0, self.cutoff, n_rbf))
        self.gamma = 10.0                                                # Å^-2
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("mad", torch.tensor(float(mad)))

    def network_args(self) -> dict[str, Any]:
        """Constructor arguments saved beside the weights (``predictor.json``)."""
        return {"family": self.family, "n_types": self.n_types, "hidden": self.hidden,
                "layers": self.layers, "n_rbf": self.n_rbf, "cutoff": self.cutoff}

    def normalised(self, atom_types: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor
                   ) -> torch.Tensor:
        """``atom_types: [B, N]`` long, ``pos: [B, N, 3]`` Å, ``mask: [B, N]`` bool ->
        ``[B]`` standardised predictions ``(y - mean) / mad``."""
        m = mask.to(pos.dtype)
        n = pos.shape[1]
        diff = pos[:, :, None, :] - pos[:, None, :, :]
        dist = torch.sqrt((diff * diff).sum(-1) + 1e-12)                 # [B, N, N] Å
        rbf = torch.exp(-self.gamma * (dist[..., None] - self.centres.to(pos.dtype)) ** 2)
        pair = m[:, :, None] * m[:, None, :] * (1 - torch.eye(n, dtype=pos.dtype, device=pos.device))
        envelope = 0.5 * (torch.cos(dist * math.pi / self.cutoff) + 1.0) \
            * (dist < self.cutoff).to(pos.dtype) * pair
        h = self.embed(atom_types.clamp(0, self.n_types - 1)).to(pos.dtype) * m[..., None]
        for block in self.blocks:
            h = block(h, rbf, envelope) * m[..., None]
        return (self.readout(h).squeeze(-1) * m).sum(1)

    def forward(self, batch: MolBatch) -> torch.Tensor:
        """``[B]`` predictions in the dataset's units."""
        dev = self.mean.device
        z = self.normalised(batch.atom_types.to(dev), batch.pos.to(dev, torch.float32),
                            batch.mask.to(dev))
        return z * self.mad + self.mean
