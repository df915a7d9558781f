"""The ``invariant`` space's chirality-aware geometry encoder (``geo_encoder="e3nn"``)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn


class E3nnInvariantEncoder(nn.Module):
    """Chirality-aware SE(3)-invariant node features from an e3nn network (fully connected).

    Node features carry ``0e + 0o + 1o + 1e`` irreps; each layer is an equivariant
    convolution over all pairs within ``cutoff`` Å -- messages ``TP(h_j, Y(r_ij))`` (uvu
    tensor product, weights from an MLP of a radial basis and the pair features, smoothly cut
    off) summed over j -- followed by a gate nonlinearity and a residual linear. The outputs
    are the scalars ``0e`` and pseudoscalars ``0o`` (which flip sign under reflection: mirror
    images get different latents). Needs >= 3 layers for pseudoscalars to form
    (0e -> 1o -> 1e -> 0o).
    """

    def __init__(self, in_dim: int, edge_dim: int, hidden: int, out_dim: int, layers: int,
                 cutoff: float = 5.0, n_basis: int = 12, checkpoint: bool = False):
        super().__init__()
        #: recompute each layer's activations in the backward pass (large molecules)
        self.checkpoint = checkpoint
        from e3nn import o3
        from e3nn.nn import Gate

        self.cutoff, self.n_basis = cutoff, n_basis
        mul_s, mul_v = max(8, hidden // 2), max(4, hidden // 8)
        self.sh = o3.SphericalHarmonics(o3.Irreps.spherical_harmonics(2), normalize=True,
                                        normalization="component")
        irreps_sh = self.sh.irreps_out
        hidden_irreps = o3.Irreps(f"{mul_s}x0e + {mul_v}x0o + {mul_v}x1o + {mul_v}x1e")
        self.input = o3.Linear(o3.Irreps(f"{in_dim}x0e"), hidden_irreps)
        self.convs, self.gates, self.self_links, self.radials = (nn.ModuleList() for _ in range(4))
        for _ in range(layers):
            gate = Gate(o3.Irreps(f"{mul_s}x0e + {mul_v}x0o"), [F.silu, torch.tanh],
                        o3.Irreps(f"{2 * mul_v}x0e"), [torch.sigmoid],
                        o3.Irreps(f"{mul_v}x1o + {mul_v}x1e"))
            mid, instructions = [], []
            for i, (mul, ir_in) in enumerate(hidden_irreps):
                for j, (_, ir_sh) in enumerate(irreps_sh):
                    for ir_out in ir_in * ir_sh:
                        if ir_out in gate.irreps_in:
                            instructions.append((i, j, len(mid), "uvu", True))
                            mid.append((mul, ir_out))
            mid_irreps = o3.Irreps(mid)
            tp = o3.TensorProduct(hidden_irreps, irreps_sh, mid_irreps, instructions,
                                  shared_weights=False, internal_weights=False)
            self.convs.append(nn.ModuleList([tp, o3.Linear(mid_irreps, gate.irreps_in)]))
            self.radials.append(nn.Sequential(nn.Linear(n_basis + edge_dim, 64), nn.SiLU(),
                                              nn.Linear(64, tp.weight_numel)))
            self.gates.append(gate)
            self.self_links.append(o3.Linear(hidden_irreps, hidden_irreps))
        self.hidden_irreps = hidden_irreps
        self.out = nn.Linear(mul_s + mul_v, out_dim)
        self.mul_s, self.mul_v = mul_s, mul_v

    def forward(self, h: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                edge_attr: torch.Tensor) -> torch.Tensor:
        """``h: [B, N, in]``, ``x: [B, N, 3]`` Å, ``mask: [B, N]``, ``edge_attr: [B, N, N, E]``
        -> invariant (under proper rotations) node features ``[B, N, out]``."""
        from e3nn.math import soft_one_hot_linspace

        B, N, _ = h.shape
        eye = torch.eye(N, dtype=torch.bool, device=h.device)
        pair = (mask[:, :, None] & mask[:, None, :] & ~eye)
        rel = x[:, None, :, :] - x[:, :, None, :]                     # r_j - r_i  [B, N, N, 3]
        dist = rel.norm(dim=-1)
        smooth = 0.5 * (torch.cos(math.pi * (dist / self.cutoff).clamp(max=1.0)) + 1.0)
        weight = (pair.to(h.dtype) * smooth * (dist < self.cutoff).to(h.dtype))[..., None]
        basis = soft_one_hot_linspace(dist, 0.0, self.cutoff, self.n_basis, basis="smooth_finite",
                                      cutoff=True) * math.sqrt(self.n_basis)
        radial_in = torch.cat([basis, edge_attr.to(h.dtype)], -1)     # [B, N, N, nb + E]
        sh = self.sh(rel)                                             # [B, N, N, 9]
        node = self.input(h) * mask[..., None].to(h.dtype)
        for k in range(len(self.convs)):
            if self.checkpoint and torch.is_grad_enabled():
                node = torch.utils.checkpoint.checkpoint(self._layer, k, node, sh, radial_in, weight,
                                                         mask, use_reentrant=False)
            else:
                node = self._layer(k, node, sh, radial_in, weight, mask)
        scalars = torch.cat([node[..., :self.mul_s], node[..., self.mul_s:self.mul_s + self.mul_v]], -1)
        return self.out(scalars) * mask[..., None].to(h.dtype)

    def _layer(self, k: int, node, sh, radial_in, weight, mask) -> torch.Tensor:
        """Convolution ``k``: ``node [B, N, hidden irreps]`` -> the same shape."""
        (tp, lin), radial, gate, link = self.convs[k], self.radials[k], self.gates[k], self.self_links[k]
        B, N = mask.shape
        hj = node[:, None, :, :].expand(B, N, N, node.shape[-1])
        msg = tp(hj, sh, radial(radial_in)) * weight                  # [B, N, N, mid]
        agg = msg.sum(2) / 4.0
        return (link(node) + gate(lin(agg))) * mask[..., None].to(node.dtype)

