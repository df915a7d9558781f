"""``e3nn``: SE(3)-equivariant tensor-product denoiser for per-atom latents (built with e3nn).

A small NequIP-style network on the fully connected dense graph:

* node input: scalars ``[h, t, context]`` (``0e``);
* each layer: messages ``m_ij = TP(f_j, Y(x_i - x_j); R(|x_i - x_j|))`` — a depthwise
  (``uvu``) tensor product of the sender's features with the spherical harmonics of the pair
  direction (``l <= lmax``), weighted per path by a radial MLP on a Gaussian basis of the
  distance; masked sum over ``j`` divided by ``sqrt(n_neighbours)``; linear mixing plus a
  self-connection; gated nonlinearity (SiLU on ``0e``, tanh on ``0o``, sigmoid gates on the
  ``1o``/``1e`` channels); residual where shapes allow;
* heads: ``out_h`` from the ``0e`` channels and ``out_x`` from the ``1o`` channels.

Hidden features carry pseudo-scalars (``0o``) and pseudo-vectors (``1e``). With
``chiral=True`` (default) the heads also read them (``0o`` into ``out_h``, ``1e`` into
``out_x``): the network is then equivariant under rotations, translations and permutations
but *not* reflections — it can tell mirror images apart (SE(3)). ``chiral=False`` gives an
E(3)-equivariant network.

Dense pairs are flattened into e3nn's leading batch dimensions; cost grows with ``B N^2``,
so this backend is slower than ``egnn`` on CPU (small defaults).
"""
from __future__ import annotations

import torch
from torch import nn

from harness.core.registry import DENOISERS
from harness.core.types import LatentSpec

from .base import Denoiser

_PARITY_IRREPS = ("0e", "0o", "1o", "1e")


class _Layer(nn.Module):
    def __init__(self, irreps_in, irreps_sh, mul0: int, mul_vec: int, n_rbf: int,
                 radial_hidden: int):
        super().__init__()
        from e3nn import o3
        from e3nn.nn import FullyConnectedNet, Gate

        keep = [o3.Irrep(s) for s in _PARITY_IRREPS]
        mid, instructions = [], []
        for i1, (mul, ir1) in enumerate(irreps_in):
            for i2, (_, ir2) in enumerate(irreps_sh):
                for ir in ir1 * ir2:
                    if ir in keep:
                        instructions.append((i1, i2, len(mid), "uvu", True))
                        mid.append((mul, ir))
        irreps_mid = o3.Irreps(mid)
        self.tp = o3.TensorProduct(irreps_in, irreps_sh, irreps_mid, instructions,
                                   shared_weights=False, internal_weights=False)
        self.radial = FullyConnectedNet([n_rbf, radial_hidden, self.tp.weight_numel],
                                        torch.nn.functional.silu)
        self.gate = Gate(o3.Irreps(f"{mul0}x0e + {mul_vec}x0o"), [torch.nn.functional.silu, torch.tanh],
                         o3.Irreps(f"{2 * mul_vec}x0e"), [torch.sigmoid],
                         o3.Irreps(f"{mul_vec}x1o + {mul_vec}x1e"))
        self.lin = o3.Linear(irreps_mid, self.gate.irreps_in)
        self.self_connection = o3.Linear(irreps_in, self.gate.irreps_in)
        self.residual = o3.Irreps(irreps_in) == self.gate.irreps_out
        self.irreps_out = self.gate.irreps_out

    def forward(self, f, sh, rbf, pair_w):
        """``f: [B, N, in]``, ``sh: [B, N, N, sh]``, ``rbf: [B, N, N, R]``, ``pair_w: [B, N,
        N]`` (mask / normaliser) -> ``[B, N, out]``."""
        B, N, _ = f.shape
        msg = self.tp(f[:, None, :, :], sh, self.radial(rbf))        # [B, N, N, mid]
        agg = torch.bmm(pair_w.reshape(B * N, 1, N), msg.reshape(B * N, N, -1)).view(B, N, -1)
        out = self.gate(self.lin(agg) + self.self_connection(f))
        return out + f if self.residual else out


@DENOISERS.register("e3nn")
class E3nnDenoiser(Denoiser):
    """SE(3)-equivariant denoiser (``chiral=False``: E(3)).

    Args:
        mul0 / mul_vec: multiplicities of hidden scalars (``0e``) and of ``0o``, ``1o``,
            ``1e`` channels. layers: message-passing layers. lmax: spherical harmonics.
        n_rbf / r_max: Gaussian distance basis on ``[0, r_max]`` (latent length units).
        radial_hidden: width of the radial MLP.
    """

    kinds = ("per_atom",)

    def __init__(self, spec: LatentSpec, context_dim: int = 0, mul0: int = 32,
                 mul_vec: int = 8, layers: int = 3, lmax: int = 2, n_rbf: int = 16,
                 r_max: float = 10.0, radial_hidden: int = 32, chiral: bool = True):
        super().__init__(spec, context_dim)
        if not spec.has_coords:
            raise ValueError("denoiser 'e3nn' needs per-atom latents with coordinates "
                             "(spec.has_coords); use 'egnn' for coordinate-free latents")
        if min(mul0, mul_vec, layers, n_rbf, radial_hidden) < 1 or lmax < 1 or r_max <= 0:
            raise ValueError("e3nn: sizes must be positive and lmax >= 1")
        from e3nn import o3

        self.chiral, self.n_rbf, self.r_max = chiral, n_rbf, float(r_max)
        F = spec.width
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.embed = nn.Linear(F + 1 + context_dim, mul0)
        irreps = o3.Irreps(f"{mul0}x0e")
        self.layers = nn.ModuleList()
        for _ in range(layers):
            layer = _Layer(irreps, self.irreps_sh, mul0, mul_vec, n_rbf, radial_hidden)
            self.layers.append(layer)
            irreps = layer.irreps_out
        self.head_h = o3.Linear(irreps, o3.Irreps(f"{F}x0e"))
        self.head_x = o3.Linear(irreps, o3.Irreps("1x1o"))
        if chiral:
            self.head_h_pseudo = o3.Linear(irreps, o3.Irreps(f"{F}x0o"))
            self.head_x_pseudo = o3.Linear(irreps, o3.Irreps("1x1e"))

    def forward(self, h: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor,
                context: torch.Tensor | None = None):
        """``h: [B, N, F]``, ``x: [B, N, 3]``, ``mask: [B, N]``, ``t: [B]`` in [0, 1],
        ``context: [B, C]`` -> ``(out_h [B, N, F], out_x [B, N, 3])``."""
        from e3nn import o3
        from e3nn.math import soft_one_hot_linspace

        B, N = mask.shape
        if h.shape != (B, N, self.spec.width) or x is None or x.shape != (B, N, 3):
            raise ValueError(f"e3nn expects h [B, N, {self.spec.width}], x [B, N, 3], mask "
                             f"[B, N]; got {tuple(h.shape)}, "
                             f"{None if x is None else tuple(x.shape)}, {tuple(mask.shape)}")
        self._check_context(context, B)
        mask = mask.bool()
        node_mask = mask.to(h.dtype)[..., None]
        parts = [h, t.to(h.dtype)[:, None, None].expand(B, N, 1)]
        if context is not None:
            parts.append(context.to(h.dtype)[:, None, :].expand(B, N, self.context_dim))
        f = self.embed(torch.cat(parts, -1)) * node_mask

        eye = torch.eye(N, dtype=torch.bool, device=mask.device)
        pair = (mask[:, :, None] & mask[:, None, :]) & ~eye                      # [B, N, N]
        n_nb = pair.sum(-1, keepdim=True).clamp_min(1).to(h.dtype)             # [B, N, 1]
        pair_w = pair.to(h.dtype) / n_nb.sqrt()
        vec = x[:, :, None, :] - x[:, None, :, :]                               # [B, N, N, 3]
        sh = o3.spherical_harmonics(self.irreps_sh, vec, normalize=True,
                                    normalization="component")
        rbf = soft_one_hot_linspace(vec.norm(dim=-1), 0.0, self.r_max, self.n_rbf,
                                    basis="gaussian", cutoff=False) * pair[..., None]
        for layer in self.layers:
            f = layer(f, sh, rbf, pair_w) * node_mask
        out_h, out_x = self.head_h(f), self.head_x(f)
        if self.chiral:
            out_h = out_h + self.head_h_pseudo(f)
            out_x = out_x + self.head_x_pseudo(f)
        return out_h * node_mask, out_x * node_mask
