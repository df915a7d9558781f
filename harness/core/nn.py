"""Shared neural-network building blocks (torch only, no heavy imports).

:class:`DenseEGNN` is a fully connected E(n)-equivariant graph network on dense, padded
batches. It computes the same function class as EDM's EGNN (Hoogeboom et al., 2022; layer
layout in :class:`DenseEGNN`'s docstring) with the same parameter layout, but evaluates it
with less arithmetic:

* The first layer of every edge MLP, ``W [h_i; h_j; e_ij] + b``, is split into per-node
  products ``W_i h_i + b`` and ``W_j h_j`` (computed once per atom, not once per pair) plus a
  rank-``E`` pair term ``W_e e_ij``. Only the second ``H x H`` layer runs per pair.
* ``layout="pairs"`` (default): pair work runs on a flat ``[P, H]`` list of the real pairs
  only (no self or padded pairs; :mod:`harness.core.pairs`): one set of large tensors per
  call, which scale across threads, and neighbour sums as one sparse product.
* ``layout="dense"``: pair work in dense ``[B, N, N, H]`` tensors; aggregation is a batched
  matrix product that folds in the attention gate and the pair mask; molecules of very
  different sizes are regrouped (sorted, split, each group trimmed to its own largest
  molecule) so padded pairs are not computed (``group_size``).

Generators wrap it as a denoiser (``generators/denoisers/egnn.py``); spaces may use it as an
encoder/decoder. Both import it from here (spaces never import generators).
"""
from __future__ import annotations

import ctypes
import math
import sys

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from harness.core.pairs import PairIndex

__all__ = ["DenseEGNN", "PairLinear", "pair_geometry", "remove_mean", "masked_mean",
           "tune_cpu_allocator", "distance_sinusoids"]

_ALLOCATOR_TUNED = False
#: how :class:`DenseEGNN` lays out its pair computations
LAYOUTS = ("pairs", "dense")


def tune_cpu_allocator() -> bool:
    """Make glibc's malloc keep freed memory for reuse (process-wide, idempotent).

    Dense pair tensors are tens of MB; by default glibc serves such blocks with ``mmap`` and
    returns them to the OS on free, so every new tensor pays page faults on first touch (on
    the 2-core benchmark machine this cost up to 3x in training). Raising the mmap threshold
    to its maximum (32 MB) and the trim threshold to 2 GB keeps the pages mapped. Peak memory
    is unchanged; memory is simply not handed back between steps. No-op on other platforms.
    Returns True when the settings were applied.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024) == 1
        ok &= libc.mallopt(m_trim_threshold, 2 ** 31 - 1) == 1
    except (OSError, AttributeError):   # not glibc
        return False
    _ALLOCATOR_TUNED = bool(ok)
    return _ALLOCATOR_TUNED


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real atoms. ``x: [B, N, D]``, ``mask: [B, N]`` -> ``[B, 1, D]``."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)


def remove_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Project ``x: [B, N, 3]`` onto the zero centre-of-mass subspace of the real atoms
    (padded rows are set to zero). Idempotent."""
    m = mask.to(x.dtype)[..., None]
    return (x - masked_mean(x, mask)) * m


def pair_geometry(x: torch.Tensor, norm_constant: float = 1.0):
    """Pair geometry of ``x: [B, N, 3]``.

    Returns:
        sq_dist: [B, N, N] squared distances ``|x_i - x_j|^2``.
        unit_diff: [B, N, N, 3] ``(x_i - x_j) / (|x_i - x_j| + norm_constant)``.
    """
    return _distances(x[:, :, None, :] - x[:, None, :, :], norm_constant)


def _distances(diff: torch.Tensor, norm_constant: float):
    """``diff: [..., 3]`` -> ``(|diff|^2 [...], diff / (|diff| + norm_constant) [..., 3])``."""
    sq_dist = (diff * diff).sum(-1)
    return sq_dist, diff / (torch.sqrt(sq_dist + 1e-8) + norm_constant)[..., None]


def distance_sinusoids(sq_dist: torch.Tensor, max_res: float = 15.0, min_res: float = 15.0 / 2000.0,
                       div_factor: float = 4.0) -> torch.Tensor:
    """Sinusoidal features of a distance (EDM's optional ``sin_embedding``).

    ``sq_dist: [...]`` squared distances (Angstrom^2 in the diffused units) -> ``[..., 2K]``:
    ``sin(w_k d)`` then ``cos(w_k d)`` with ``d = sqrt(sq_dist + 1e-8)`` and frequencies
    ``w_k = 2 pi div_factor^k / max_res``, ``k = 0 .. K-1``,
    ``K = floor(log_{div_factor}(max_res / min_res)) + 1`` (12 features for the defaults).
    Not differentiated (EDM detaches it).
    """
    k = int(math.log(max_res / min_res, div_factor)) + 1
    freqs = 2 * math.pi * div_factor ** torch.arange(k, device=sq_dist.device,
                                                     dtype=sq_dist.dtype) / max_res
    arg = torch.sqrt(sq_dist.detach() + 1e-8)[..., None] * freqs
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


#: width of :func:`distance_sinusoids` with its default arguments
SIN_FEATURES = 2 * (int(math.log(2000.0, 4.0)) + 1)


class PairLinear(nn.Module):
    """``Linear(2 * in_dim + edge_dim, out_dim)`` applied to every pair ``[h_i; h_j; e_ij]``,
    evaluated without forming the concatenation.

    The parameters are exactly those of the concatenated ``nn.Linear`` (``weight [out,
    2 * in + edge]``, ``bias [out]``), so a state dict of the naive layer loads unchanged;
    ``forward`` splits ``weight`` into its node-i, node-j and edge column blocks.
    """

    def __init__(self, in_dim: int, edge_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.edge_dim, self.out_dim = in_dim, edge_dim, out_dim
        ref = nn.Linear(2 * in_dim + edge_dim, out_dim)  # default init of the naive layer
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone())

    def forward(self, h: torch.Tensor, edge1: torch.Tensor) -> torch.Tensor:
        """``h: [B, N, in]``, ``edge1: [B, N, N, E + 1]`` pair features with a trailing column
        of ones -> ``[B, N, N, out]``, entry ``(i, j) = W [h_i; h_j; e_ij]
        + b``.

        Cost: two node-level products plus one batched product with inner size ``E + 1``
        (``[e_ij, 1] @ [W_e^T; W_i h_i + b]``) and one broadcast add of ``W_j h_j``.
        """
        d, B, N = self.in_dim, h.shape[0], h.shape[1]
        if edge1.shape[-1] != self.edge_dim + 1:
            raise ValueError(f"PairLinear expects {self.edge_dim} edge features plus a ones "
                             f"column, got {edge1.shape[-1]} columns")
        a = F.linear(h, self.weight[:, :d], self.bias)                 # [B, N, H]  receiver i
        c = F.linear(h, self.weight[:, d:2 * d])                       # [B, N, H]  sender j
        w_e = self.weight[:, 2 * d:].t()                               # [E, H]
        rhs = torch.cat([w_e.expand(B, N, *w_e.shape), a[:, :, None, :]], dim=2)  # [B,N,E+1,H]
        out = torch.matmul(edge1, rhs)                                 # [B, N, N, H]
        return out.add_(c[:, None, :, :])

    def pairs(self, h: torch.Tensor, edge: torch.Tensor | None, index: PairIndex) -> torch.Tensor:
        """The ``pairs`` layout: ``h: [M, in]`` atom rows, ``edge: [P, E]`` (None when
        ``E = 0``) -> ``[P, out]``, row ``(i, j) = W [h_i; h_j; e_ij] + b``."""
        d = self.in_dim
        pre = index.receiver_plus_sender(F.linear(h, self.weight[:, :d], self.bias),
                                         F.linear(h, self.weight[:, d:2 * d]))
        return pre if edge is None else pre.addmm_(edge, self.weight[:, 2 * d:].t())

    def extra_repr(self) -> str:
        return f"in={self.in_dim}, edge={self.edge_dim}, out={self.out_dim} (factorised)"


def _silu(t: torch.Tensor) -> torch.Tensor:
    """SiLU, in place when no graph is being recorded (saves a pass over pair tensors)."""
    return F.silu(t, inplace=not torch.is_grad_enabled())


class _GCL(nn.Module):
    """Invariant message-passing sublayer (EDM's GCL): edge MLP ``PairLinear-SiLU-Linear-
    SiLU``, attention gate ``Linear(H, 1)-Sigmoid``, sum aggregation / ``agg_norm``, node MLP
    ``Linear(2H, H)-SiLU-Linear(H, H)`` with a residual connection."""

    def __init__(self, hidden: int, edge_dim: int, attention: bool, agg_norm: float):
        super().__init__()
        self.edge_in = PairLinear(hidden, edge_dim, hidden)
        self.edge_out = nn.Linear(hidden, hidden)
        self.att = nn.Linear(hidden, 1) if attention else None
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(),
                                      nn.Linear(hidden, hidden))
        self.agg_norm = agg_norm

    def forward(self, h, edge1, pair_mask, node_mask):
        """``h: [B, N, H]``, ``edge1: [B, N, N, E + 1]``, ``pair_mask: [B, N, N]`` float,
        ``node_mask: [B, N, 1]`` float -> ``[B, N, H]``."""
        B, N, H = h.shape
        m = _silu(self.edge_out(_silu(self.edge_in(h, edge1))))       # [B, N, N, H]
        w = pair_mask
        if self.att is not None:
            w = w * torch.sigmoid(self.att(m)).squeeze(-1)             # [B, N, N]
        # sum_j w_ij m_ij as one batched product: [B*N, 1, N] @ [B*N, N, H]
        agg = torch.bmm(w.reshape(B * N, 1, N), m.reshape(B * N, N, H)).view(B, N, H)
        return (h + self._node_update(h, agg)) * node_mask

    def pairs(self, h, edge, index: PairIndex):
        """The ``pairs`` layout: ``h: [M, H]``, ``edge: [P, E]`` -> ``[M, H]``."""
        m = _silu(self.edge_out(_silu(self.edge_in.pairs(h, edge, index))))    # [P, H]
        agg = (index.sum_at_receivers(m) if self.att is None else
               index.gated_sum_at_receivers(m, self.att.weight, self.att.bias))
        return h + self._node_update(h, agg)

    def _node_update(self, h, agg):
        if self.agg_norm != 1.0:
            agg = agg / self.agg_norm
        return self.node_mlp(torch.cat([h, agg], dim=-1))


class _CoordUpdate(nn.Module):
    """Equivariant coordinate update (EDM's EquivariantUpdate): ``phi_ij = MLP(h_i, h_j,
    e_ij)`` with layers ``PairLinear-SiLU-Linear-SiLU-Linear(H, 1, no bias)``;
    ``x_i += sum_j unit_diff_ij * tanh(phi_ij) * range / agg_norm``."""

    def __init__(self, hidden: int, edge_dim: int, coords_range: float, tanh: bool,
                 agg_norm: float):
        super().__init__()
        self.edge_in = PairLinear(hidden, edge_dim, hidden)
        self.hidden = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(self.out.weight, gain=0.001)
        self.coords_range, self.tanh, self.agg_norm = coords_range, tanh, agg_norm

    def forward(self, h, x, edge1, unit_diff, pair_mask, node_mask):
        """``x: [B, N, 3]``, ``unit_diff: [B, N, N, 3]`` -> updated ``x: [B, N, 3]``."""
        B, N, _ = x.shape
        w = self._phi(self.edge_in(h, edge1)).squeeze(-1) * pair_mask     # [B, N, N]
        delta = torch.bmm(w.reshape(B * N, 1, N), unit_diff.reshape(B * N, N, 3)).view(B, N, 3)
        return (x + delta / self.agg_norm) * node_mask

    def pairs(self, h, x, edge, unit_diff, index: PairIndex):
        """The ``pairs`` layout: ``x: [M, 3]``, ``unit_diff: [P, 3]`` -> ``[M, 3]``."""
        phi = self._phi(self.edge_in.pairs(h, edge, index))                # [P, 1]
        return x + index.sum_at_receivers(unit_diff * phi) / self.agg_norm

    def _phi(self, pre):
        phi = self.out(_silu(self.hidden(_silu(pre))))
        return torch.tanh(phi) * self.coords_range if self.tanh else phi


class _Block(nn.Module):
    """``sublayers`` GCLs then one coordinate update. Pair features: squared distance at
    block start (with coordinates), then the network-level features ``edge0``."""

    def __init__(self, hidden, edge_dim, sublayers, attention, coords_range, tanh, agg_norm,
                 norm_constant, coords, sin_embedding=False):
        super().__init__()
        self.sin_embedding = sin_embedding
        self.gcls = nn.ModuleList(_GCL(hidden, edge_dim, attention, agg_norm)
                                  for _ in range(sublayers))
        self.coord = (_CoordUpdate(hidden, edge_dim, coords_range, tanh, agg_norm)
                      if coords else None)
        self.norm_constant = norm_constant

    def forward(self, h, x, edge0, pair_mask, node_mask):
        """``edge0: [B, N, N, E0 + 1]`` network-level pair features with the ones column."""
        if self.coord is not None:
            sq_dist, unit_diff = pair_geometry(x, self.norm_constant)
            d = distance_sinusoids(sq_dist) if self.sin_embedding else sq_dist[..., None]
            edge1 = torch.cat([d, edge0], dim=-1)
        else:
            edge1 = edge0
        for gcl in self.gcls:
            h = gcl(h, edge1, pair_mask, node_mask)
        if self.coord is not None:
            x = self.coord(h, x, edge1, unit_diff, pair_mask, node_mask)
        return h, x

    def pairs(self, h, x, edge0, index: PairIndex):
        """The ``pairs`` layout: ``h: [M, H]``, ``x: [M, 3]`` or None, ``edge0: [P, E0]``
        network-level pair features (None when there are none)."""
        edge = edge0
        if self.coord is not None:
            sq, unit_diff = _distances(index.receivers(x) - index.senders(x),  # [P], [P, 3]
                                       self.norm_constant)
            d = distance_sinusoids(sq) if self.sin_embedding else sq[:, None]
            edge = d if edge0 is None else torch.cat([d, edge0], dim=-1)
        for gcl in self.gcls:
            h = gcl.pairs(h, edge, index)
        if self.coord is not None:
            x = self.coord.pairs(h, x, edge, unit_diff, index)
        return h, x


class DenseEGNN(nn.Module):
    """Fully connected E(n)-equivariant GNN on dense padded batches (EDM's layout).

    Layout: ``embedding Linear(in, H)`` -> ``layers`` x [``sublayers`` x GCL (edge MLP
    ``Linear(2H + E, H)-SiLU-Linear(H, H)-SiLU``, attention ``Linear(H, 1)-Sigmoid``, node MLP
    ``Linear(2H, H)-SiLU-Linear(H, H)`` residual, sum aggregation / ``agg_norm``) then a
    coordinate update (``Linear(2H + E, H)-SiLU-Linear(H, H)-SiLU-Linear(H, 1, no bias)``,
    ``tanh * coords_range / layers``, direction ``(x_i - x_j) / (|x_i - x_j| + norm_constant)``)]
    -> ``Linear(H, out)``. Pair features ``E``: the squared distance at block start and at the
    network input (``input_distances``), plus ``edge_dim`` caller features. Self-pairs and
    padded atoms are masked out of every sum. Padded rows of the outputs are zero.

    With ``coords=False`` it is a plain fully connected invariant GNN on ``h`` (no distances,
    no coordinate updates; pass ``x=None``).

    Args:
        in_dim / out_dim: node feature widths.
        hidden: H. layers: equivariant blocks. sublayers: GCLs per block.
        edge_dim: extra invariant pair features passed as ``edge_attr``.
        coords: carry and update coordinates (E(n)-equivariant) or not (invariant GNN).
        agg_norm: sums over neighbours are divided by this (EDM's normalization_factor).
        layout: how pairs are laid out. ``pairs`` (default): a flat list of the real pairs
            only (:class:`harness.core.pairs.PairIndex`; no padded or self pairs, one set of
            large tensors per call). ``dense``: ``[B, N, N, H]`` tensors, molecules in size
            groups (``group_size``). Both compute the same function to float rounding.
        group_size: ``dense`` layout only: when the batch holds more than ``2 * group_size``
            molecules, sort them by atom count and evaluate groups of about ``group_size``
            molecules, each trimmed to its own largest molecule (exact: molecules never
            interact; fewer padded pairs). 0 disables.
        checkpoint: recompute each block's activations in the backward pass instead of
            storing them (``torch.utils.checkpoint``): training memory drops by about the
            number of blocks for ~1/3 more compute. For large molecules.
        coords_range_split: each block's coordinate update is bounded by
            ``coords_range / layers`` (True, the default) or by ``coords_range`` itself
            (False: what EDM's released code does -- its ``EGNN`` computes the split range but
            hands every block the full one).
        sin_embedding: replace every squared-distance pair feature (block start and network
            input) by :func:`distance_sinusoids` of the distance (EDM's ``sin_embedding``).
    """

    #: the layout compute budgets count FLOPs on (harness/study/budget.py)
    REFERENCE_LAYOUT = "dense"

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 256, layers: int = 9,
                 sublayers: int = 2, edge_dim: int = 0, coords: bool = True,
                 attention: bool = True, tanh: bool = True, coords_range: float = 15.0,
                 norm_constant: float = 1.0, agg_norm: float = 1.0,
                 input_distances: bool = True, group_size: int = 8,
                 checkpoint: bool = False, coords_range_split: bool = True,
                 sin_embedding: bool = False, layout: str = "pairs"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"DenseEGNN: layout must be one of {LAYOUTS}, got {layout!r}")
        if min(in_dim, out_dim, hidden, layers) < 1 or sublayers < 0 or edge_dim < 0:
            raise ValueError(f"DenseEGNN: bad sizes in_dim={in_dim} out_dim={out_dim} "
                             f"hidden={hidden} layers={layers} sublayers={sublayers} "
                             f"edge_dim={edge_dim}")
        if agg_norm <= 0:
            raise ValueError(f"DenseEGNN: agg_norm must be > 0, got {agg_norm}")
        self.in_dim, self.out_dim, self.hidden, self.edge_dim = in_dim, out_dim, hidden, edge_dim
        self.coords = coords
        self.input_distances = bool(input_distances and coords)
        self.group_size = int(group_size)
        self.layout = layout
        self.checkpoint = bool(checkpoint)
        self.embedding = nn.Linear(in_dim, hidden)
        self.sin_embedding = bool(sin_embedding and coords)
        per_distance = SIN_FEATURES if self.sin_embedding else 1
        pair_dim = (int(coords) + int(self.input_distances)) * per_distance + edge_dim
        block_range = coords_range / layers if coords_range_split else coords_range
        self.blocks = nn.ModuleList(
            _Block(hidden, pair_dim, sublayers, attention, block_range, tanh,
                   agg_norm, norm_constant, coords, self.sin_embedding) for _ in range(layers))
        self.embedding_out = nn.Linear(hidden, out_dim)

    def forward(self, h: torch.Tensor, x: torch.Tensor | None, mask: torch.Tensor,
                edge_attr: torch.Tensor | None = None):
        """``h: [B, N, in]``, ``x: [B, N, 3]`` (None when ``coords=False``), ``mask: [B, N]``
        bool, ``edge_attr: [B, N, N, edge_dim]`` invariant pair features -> ``(h_out [B, N,
        out], x_out [B, N, 3] or None)``."""
        if h.dim() != 3 or h.shape[-1] != self.in_dim or mask.shape != h.shape[:2]:
            raise ValueError(f"DenseEGNN expects h [B, N, {self.in_dim}] and mask [B, N], got "
                             f"{tuple(h.shape)} and {tuple(mask.shape)}")
        if self.coords and (x is None or x.shape != (*mask.shape, 3)):
            raise ValueError(f"DenseEGNN(coords=True) needs x [B, N, 3] matching mask "
                             f"{tuple(mask.shape)}, got {None if x is None else tuple(x.shape)}")
        if not self.coords and x is not None:
            raise ValueError("DenseEGNN(coords=False) takes no coordinates; pass x=None")
        if (edge_attr is None) != (self.edge_dim == 0) or (
                edge_attr is not None and edge_attr.shape != (*mask.shape, mask.shape[1],
                                                              self.edge_dim)):
            raise ValueError(f"DenseEGNN was built with edge_dim={self.edge_dim}; pass "
                             f"edge_attr [B, N, N, {self.edge_dim}] accordingly")
        mask = mask.bool()
        if self.layout == "pairs":
            return self._pairs(h, x, mask, edge_attr)
        if self.group_size and h.shape[0] > 2 * self.group_size:
            return self._grouped(h, x, mask, edge_attr)
        return self._dense(h, x, mask, edge_attr)

    def _pairs(self, h, x, mask, edge_attr):
        """The ``pairs`` layout: real atoms ``[M, D]`` and real pairs ``[P, D]`` only."""
        index = PairIndex.from_mask(mask)
        parts = []
        xf = None if x is None else index.atoms(x)
        if self.input_distances:
            sq = _distances(index.receivers(xf) - index.senders(xf), 1.0)[0]   # [P]
            parts.append(distance_sinusoids(sq) if self.sin_embedding else sq[:, None])
        if edge_attr is not None:
            parts.append(index.pairs(edge_attr.to(h.dtype)))
        edge0 = torch.cat(parts, -1) if parts else None                          # [P, E0]
        hf, xf = self._through_blocks(self.embedding(index.atoms(h)), xf, edge0, index,
                                      pairs=True)
        return index.padded(self.embedding_out(hf)), None if xf is None else index.padded(xf)

    def _through_blocks(self, h, x, *rest, pairs: bool):
        """Every block in turn (``_Block.pairs`` or ``_Block.forward``), each recomputed in
        the backward pass when ``checkpoint`` is set."""
        for block in self.blocks:
            step = block.pairs if pairs else block
            if self.checkpoint and torch.is_grad_enabled():
                h, x = torch.utils.checkpoint.checkpoint(step, h, x, *rest, use_reentrant=False)
            else:
                h, x = step(h, x, *rest)
        return h, x

    def _grouped(self, h, x, mask, edge_attr):
        """Evaluate molecules in size-sorted groups, each trimmed to its used atom slots."""
        B, N = mask.shape
        order = torch.argsort(mask.sum(1), descending=True, stable=True)
        n_groups = max(1, round(B / self.group_size))
        bounds = [round(k * B / n_groups) for k in range(n_groups + 1)]
        h_out = h.new_zeros(B, N, self.out_dim)
        x_out = None if x is None else torch.zeros_like(x)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            idx = order[lo:hi]
            cols = mask[idx].any(0).nonzero().flatten()   # atom slots used by this group
            if cols.numel() == 0:
                continue
            rows, cc = idx[:, None], cols[None, :]
            e = None if edge_attr is None else edge_attr[rows, cc][:, :, cols]
            hg, xg = self._dense(h[rows, cc], None if x is None else x[rows, cc],
                                 mask[rows, cc], e)
            h_out = h_out.index_put((rows, cc), hg)
            if x_out is not None:
                x_out = x_out.index_put((rows, cc), xg)
        return h_out, x_out

    def _dense(self, h, x, mask, edge_attr):
        B, N = mask.shape
        node_mask = mask.to(h.dtype)[..., None]                                  # [B, N, 1]
        eye = torch.eye(N, dtype=torch.bool, device=mask.device)
        pair_mask = ((mask[:, :, None] & mask[:, None, :]) & ~eye).to(h.dtype)   # [B, N, N]
        parts = []
        if self.input_distances:
            sq = pair_geometry(x)[0]
            parts.append(distance_sinusoids(sq) if self.sin_embedding else sq[..., None])
        if edge_attr is not None:
            parts.append(edge_attr.to(h.dtype))
        parts.append(h.new_ones(B, N, N, 1))
        edge0 = torch.cat(parts, -1)                                             # [B,N,N,E0+1]
        h, x = self._through_blocks(self.embedding(h) * node_mask, x, edge0, pair_mask,
                                    node_mask, pairs=False)
        return self.embedding_out(h) * node_mask, x
