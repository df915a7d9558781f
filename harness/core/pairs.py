"""Flat pair lists of padded molecule batches (the ``pairs`` layout of :class:`DenseEGNN`).

A padded batch ``[B, N, ...]`` of fully connected molecules holds ``B * N * N`` pair slots,
of which only ``P = sum_b n_b (n_b - 1)`` are real (``i != j``, both atoms real). The
``pairs`` layout computes on those ``P`` rows only: node tensors become ``[M, D]`` (the
``M`` real atoms, in batch order), pair tensors ``[P, D]`` sorted by receiver, and a sum
over neighbours is one ``index_add`` into the receivers. Gathers use ``F.embedding``,
whose backward is a dense accumulation that is 1.5-2x faster on CPU than ``index_select``'s.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["PairIndex"]


@dataclass(frozen=True)
class PairIndex:
    """Where the real atoms and the real ordered pairs of a padded batch sit.

    Attributes:
        slots: ``[M]`` flat index (into ``B * N``) of each real atom, in batch order.
        recv / send: ``[P]`` receiver ``i`` / sender ``j`` of each pair, as atom rows
            (``0 .. M-1``); sorted by receiver.
        pair_slots: ``[P]`` flat index (into ``B * N * N``) of each pair, for gathering
            caller pair features.
        batch, size: ``B`` and ``N`` of the padded batch.
    """

    slots: torch.Tensor
    recv: torch.Tensor
    send: torch.Tensor
    pair_slots: torch.Tensor
    batch: int
    size: int

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> "PairIndex":
        """``mask: [B, N]`` bool (real atoms) -> the index of its real atoms and pairs."""
        B, N = mask.shape
        flat = mask.reshape(-1)
        slots = flat.nonzero().squeeze(1)
        row = torch.full((B * N,), -1, dtype=torch.long, device=mask.device)
        row[slots] = torch.arange(slots.numel(), device=mask.device)
        eye = torch.eye(N, dtype=torch.bool, device=mask.device)
        pair_slots = ((mask[:, :, None] & mask[:, None, :]) & ~eye).reshape(-1).nonzero().squeeze(1)
        b, ij = pair_slots // (N * N), pair_slots % (N * N)
        recv, send = row[b * N + ij // N], row[b * N + ij % N]
        return cls(slots, recv, send, pair_slots, B, N)

    @property
    def n_atoms(self) -> int:
        return int(self.slots.numel())

    def atoms(self, t: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` -> ``[M, D]``, the real atoms' rows."""
        return F.embedding(self.slots, t.reshape(self.batch * self.size, t.shape[-1]))

    def padded(self, t: torch.Tensor) -> torch.Tensor:
        """``[M, D]`` -> ``[B, N, D]`` with zero rows at padding."""
        out = t.new_zeros(self.batch * self.size, t.shape[-1]).index_copy(0, self.slots, t)
        return out.view(self.batch, self.size, t.shape[-1])

    def pairs(self, t: torch.Tensor) -> torch.Tensor:
        """Caller pair features ``[B, N, N, E]`` -> ``[P, E]``."""
        return F.embedding(self.pair_slots, t.reshape(-1, t.shape[-1]))

    def receivers(self, t: torch.Tensor) -> torch.Tensor:
        """Atom rows ``[M, D]`` -> each pair's receiver row ``[P, D]``."""
        return F.embedding(self.recv, t)

    def senders(self, t: torch.Tensor) -> torch.Tensor:
        """Atom rows ``[M, D]`` -> each pair's sender row ``[P, D]``."""
        return F.embedding(self.send, t)

    def receiver_plus_sender(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``a, c: [M, D]`` -> ``[P, D]``, row ``(i, j) = a_i + c_j``: one fused gather
        (``embedding_bag`` over bags of two rows, ~3x faster than two gathers and an add)."""
        return _ReceiverPlusSender.apply(a, c, self)

    def sum_at_receivers(self, msg: torch.Tensor) -> torch.Tensor:
        """``[P, D]`` messages -> ``[M, D]``: each atom's sum over its senders."""
        return msg.new_zeros(self.n_atoms, msg.shape[-1]).index_add_(0, self.recv, msg)

    def gated_sum_at_receivers(self, msg: torch.Tensor, weight: torch.Tensor,
                               bias: torch.Tensor) -> torch.Tensor:
        """EGNN's attention-gated aggregation ``sum_j sigmoid(w . m_ij + b) m_ij``.

        ``msg: [P, D]``, ``weight: [1, D]``, ``bias: [1]`` (an ``nn.Linear(D, 1)``) ->
        ``[M, D]``. Same value as ``sum_at_receivers(msg * torch.sigmoid(F.linear(msg,
        weight, bias)))``; its backward forms the gate's input gradient by broadcasting
        instead of a ``[P, 1] x [1, D]`` matrix product and stores no gated copy of ``msg``.
        """
        if not torch.is_grad_enabled() or not (msg.requires_grad or weight.requires_grad
                                                 or bias.requires_grad):
            gate = torch.sigmoid(torch.addmv(bias, msg, weight[0]))[:, None]
            return self.sum_at_receivers(msg * gate)
        return _GatedSum.apply(msg, weight, bias, self.recv, self.n_atoms)


class _GatedSum(torch.autograd.Function):
    """Autograd of :meth:`PairIndex.gated_sum_at_receivers` (one pass per gradient)."""

    @staticmethod
    def forward(ctx, msg, weight, bias, recv, n_atoms):
        gate = torch.sigmoid(torch.addmv(bias, msg, weight[0]))               # [P]
        ctx.save_for_backward(msg, weight, gate, recv)
        return msg.new_zeros(n_atoms, msg.shape[-1]).index_add_(0, recv, msg * gate[:, None])

    @staticmethod
    def backward(ctx, grad):
        msg, weight, gate, recv = ctx.saved_tensors
        rows = F.embedding(recv, grad)                                        # [P, D]
        g_logit = torch.ops.aten.sigmoid_backward((rows * msg).sum(-1), gate)  # [P]
        g_msg = torch.addcmul(rows.mul_(gate[:, None]), g_logit[:, None], weight)
        return g_msg, (g_logit @ msg)[None], g_logit.sum().reshape(1), None, None


class _ReceiverPlusSender(torch.autograd.Function):
    """Autograd of :meth:`PairIndex.receiver_plus_sender`; the backward is two dense
    scatter-adds (``embedding``'s), faster than ``embedding_bag``'s own."""

    @staticmethod
    def forward(ctx, a, c, index):
        ctx.index = index
        bags = torch.stack([index.recv, index.send + a.shape[0]], 1)         # [P, 2]
        return F.embedding_bag(bags, torch.cat([a, c]), mode="sum")

    @staticmethod
    def backward(ctx, grad):
        index, grad = ctx.index, grad.contiguous()
        m = index.n_atoms
        return (torch.ops.aten.embedding_dense_backward(grad, index.recv, m, -1, False),
                torch.ops.aten.embedding_dense_backward(grad, index.send, m, -1, False), None)
