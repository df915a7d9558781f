"""The ``pairs`` layout of :class:`harness.core.nn.DenseEGNN` (flat lists of real pairs,
:mod:`harness.core.pairs`): its index, its fused gather / gated sum, and equality with the
dense layout in values and gradients (float64), across the network's options."""
from __future__ import annotations

import pytest
import torch

from harness.core.nn import DenseEGNN
from harness.core.pairs import PairIndex


def _batch(B=13, N=10, seed=1, empty=True):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(1, N + 1, (B,), generator=g)
    if empty:
        n[3] = 0                                          # a molecule with no atoms at all
    mask = torch.arange(N)[None] < n[:, None]
    mask = mask[:, torch.randperm(N, generator=g)]        # real atoms need not come first
    h = torch.randn(B, N, 5, generator=g, dtype=torch.float64) * mask[..., None]
    x = torch.randn(B, N, 3, generator=g, dtype=torch.float64) * mask[..., None]
    e = torch.randn(B, N, N, 2, generator=g, dtype=torch.float64)
    return h, x, mask, e


def test_the_index_holds_every_real_ordered_pair_once():
    _, _, mask, _ = _batch()
    index = PairIndex.from_mask(mask)
    n = mask.sum(1)
    assert index.n_atoms == int(n.sum()) and len(index.recv) == int((n * (n - 1)).sum())
    assert (index.recv != index.send).all() and (index.recv[1:] >= index.recv[:-1]).all()
    B, N = mask.shape
    mol = index.slots // N                                 # each atom's molecule
    assert torch.equal(mol[index.recv], mol[index.send])
    got = {(int(i), int(j)) for i, j in zip(index.recv, index.send)}
    assert len(got) == len(index.recv)
    t = torch.randn(B, N, 4, dtype=torch.float64)
    back = index.padded(index.atoms(t))
    torch.testing.assert_close(back, t * mask[..., None])


def test_fused_gather_and_gated_sum_have_exact_gradients():
    _, _, mask, _ = _batch(B=4, N=5)
    index = PairIndex.from_mask(mask)
    M, P = index.n_atoms, len(index.recv)
    a = torch.randn(M, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(M, 3, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(index.receiver_plus_sender(a, c),
                               index.receivers(a) + index.senders(c))
    assert torch.autograd.gradcheck(index.receiver_plus_sender, (a, c))
    m = torch.randn(P, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, dtype=torch.float64, requires_grad=True)
    ref = index.sum_at_receivers(m * torch.sigmoid(m @ w.t() + b))
    torch.testing.assert_close(index.gated_sum_at_receivers(m, w, b), ref)
    assert torch.autograd.gradcheck(index.gated_sum_at_receivers, (m, w, b))
    with torch.no_grad():                                  # the no-graph path, same value
        torch.testing.assert_close(index.gated_sum_at_receivers(m, w, b), ref.detach())
    for fn in (index.receivers, index.senders):           # gathers: backward is a sum
        assert torch.autograd.gradcheck(fn, (a,))
    assert torch.autograd.gradcheck(index.sum_at_receivers, (m,))
    recv = torch.zeros(M, 3, dtype=torch.float64).index_add_(0, index.recv, m)
    send = torch.zeros(M, 3, dtype=torch.float64).index_add_(0, index.send, m)
    torch.testing.assert_close(index.sum_at(m.detach(), True), recv.detach())
    torch.testing.assert_close(index.sum_at(m.detach(), False), send.detach())


def test_batches_without_pairs_run():
    """Single atoms and empty molecules: no pairs at all, outputs still shaped and finite."""
    mask = torch.zeros(4, 3, dtype=torch.bool)
    mask[:3, 0] = True
    net = DenseEGNN(3, 2, hidden=8, layers=2)
    h, x = torch.randn(4, 3, 3) * mask[..., None], torch.randn(4, 3, 3) * mask[..., None]
    ho, xo = net(h, x.requires_grad_(), mask)
    (ho.sum() + xo.sum()).backward()
    assert ho.shape == (4, 3, 2) and torch.isfinite(ho).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("options", [
    {}, {"edge_dim": 2}, {"coords": False, "edge_dim": 2}, {"coords": False},
    {"sin_embedding": True}, {"checkpoint": True},
    {"sublayers": 2, "agg_norm": 3.0, "tanh": False, "attention": False},
], ids=["default", "edge_attr", "invariant_edges", "invariant", "sin", "checkpoint", "plain"])
def test_pairs_and_dense_layouts_compute_the_same_function(options):
    torch.manual_seed(0)
    h, x, mask, e = _batch()
    net = DenseEGNN(5, 4, hidden=16, layers=3, group_size=4, **options).double()
    coords = options.get("coords", True)
    out = {}
    for layout in ("dense", "pairs"):
        net.layout = layout
        net.zero_grad()
        xx = x.clone().requires_grad_() if coords else None
        ho, xo = net(h, xx, mask, e if options.get("edge_dim") else None)
        (ho.square().sum() + (xo.sin().sum() if coords else 0)).backward()
        out[layout] = (ho, xo, [p.grad.clone() for p in net.parameters()],
                       xx.grad if coords else None)
    (hd, xd, gd, xgd), (hp, xp, gp, xgp) = out["dense"], out["pairs"]
    torch.testing.assert_close(hp, hd)
    assert torch.equal(hp[~mask], torch.zeros_like(hp[~mask]))     # padded rows stay zero
    if coords:
        torch.testing.assert_close(xp, xd)
        torch.testing.assert_close(xgp, xgd)
    for a, b in zip(gp, gd):
        torch.testing.assert_close(a, b)


def test_a_bad_layout_is_named():
    with pytest.raises(ValueError, match="layout"):
        DenseEGNN(3, 3, hidden=8, layers=1, layout="sparse")
