"""Denoisers: registry conformance, E(3) / SE(3) equivariance (e3nn's test utilities),
permutation equivariance, masking, and the EGNN's equivalence with EDM's layout."""
import pytest
import torch
from e3nn import o3
from e3nn.util.test import assert_equivariant, equivariance_error

from generators.denoisers import Denoiser
from harness.core.nn import DenseEGNN, PairLinear
from harness.core.registry import DENOISERS
from harness.core.types import LatentSpec

torch.set_num_threads(1)

F = 4
PER_ATOM = LatentSpec("per_atom", F, has_coords=True)
SMALL = {"mlp": dict(width=32, depth=2), "egnn": dict(hidden=16, layers=2),
         "e3nn": dict(mul0=8, mul_vec=4, layers=3, radial_hidden=16)}


def _inputs(B=3, N=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(N)[None] < torch.tensor([N, N - 2, 3, 2, N - 1])[:B, None]
    h = torch.randn(B, N, F, generator=g, dtype=dtype) * mask[..., None]
    x = torch.randn(B, N, 3, generator=g, dtype=dtype) * mask[..., None]
    t = torch.rand(B, generator=g, dtype=dtype)
    return h, x, mask, t


def _build(name, spec=PER_ATOM, context_dim=0, **kw):
    torch.manual_seed(0)
    return DENOISERS.get(name)(spec, context_dim=context_dim, **{**SMALL.get(name, {}), **kw})


# -- registry conformance (every registered backend) -------------------------------------
@pytest.mark.parametrize("name", DENOISERS.names())
def test_conformance(name):
    cls = DENOISERS.get(name)
    assert issubclass(cls, Denoiser) and cls.kinds
    kind = cls.kinds[0]
    spec = LatentSpec("vector", 5) if kind == "vector" else PER_ATOM
    net = _build(name, spec, context_dim=2)
    ctx = torch.randn(3, 2)
    if kind == "vector":
        out = net(torch.randn(3, 5), torch.rand(3), ctx)
        assert out.shape == (3, 5)
    else:
        h, x, mask, t = _inputs(dtype=torch.float32)
        oh, ox = net(h, x, mask, t, ctx)
        assert oh.shape == h.shape and ox.shape == x.shape
        assert (oh[~mask] == 0).all() and (ox[~mask] == 0).all()
        # padded slots carry no information
        h2, x2 = h.clone(), x.clone()
        h2[~mask], x2[~mask] = 7.0, -3.0
        oh2, ox2 = net(h2, x2, mask, t, ctx)
        torch.testing.assert_close(oh2, oh)
        torch.testing.assert_close(ox2, ox)
        # context is used
        oh3, _ = net(h, x, mask, t, ctx + 1)
        assert not torch.allclose(oh3, oh)
    other = PER_ATOM if kind == "vector" else LatentSpec("vector", 5)
    with pytest.raises(ValueError, match="latents"):
        cls(other)
    with pytest.raises(ValueError, match="context"):
        (net(torch.randn(3, 5), torch.rand(3)) if kind == "vector"
         else net(*_inputs(dtype=torch.float32)))


# -- equivariance ------------------------------------------------------------------------
def _e3nn_check(net, do_parity):
    h, x, mask, t = _inputs()

    def f(h, x):
        return net(h, x, mask, t)

    return equivariance_error(f, [h, x], irreps_in=[o3.Irreps(f"{F}x0e"), "cartesian_points"],
                              irreps_out=[o3.Irreps(f"{F}x0e"), o3.Irreps("1o")], ntrials=2,
                              do_parity=do_parity, do_translation=True)


def test_egnn_is_e3_equivariant():
    net = _build("egnn").double()
    h, x, mask, t = _inputs()
    assert_equivariant(lambda h, x: net(h, x, mask, t), [h, x],
                       irreps_in=[o3.Irreps(f"{F}x0e"), "cartesian_points"],
                       irreps_out=[o3.Irreps(f"{F}x0e"), o3.Irreps("1o")], tolerance=1e-7)
    errs = _e3nn_check(net, do_parity=True)          # reflections included: E(3)
    assert max(e.max().item() for e in errs.values()) < 1e-7


def test_e3nn_is_se3_but_tells_mirror_images_apart():
    net = _build("e3nn").double()
    errs = _e3nn_check(net, do_parity=True)
    proper = max(errs[(0, tr)].max().item() for tr in (False, True))
    improper = max(errs[(1, tr)].max().item() for tr in (False, True))
    # e3nn builds Wigner matrices from float32 constants: ~1e-7 is its float64 floor
    assert proper < 1e-6, errs
    assert improper > 1e-4, "chiral e3nn must not be reflection-equivariant"
    achiral = _build("e3nn", chiral=False).double()
    errs = _e3nn_check(achiral, do_parity=True)
    assert max(e.max().item() for e in errs.values()) < 1e-6


@pytest.mark.parametrize("name", ["egnn", "e3nn"])
def test_permutation_equivariance(name):
    net = _build(name).double()
    h, x, mask, t = _inputs()
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(5))
    oh, ox = net(h, x, mask, t)
    ph, px = net(h[:, perm], x[:, perm], mask[:, perm], t)
    torch.testing.assert_close(ph, oh[:, perm])
    torch.testing.assert_close(px, ox[:, perm])


def test_rotation_with_rand_matrix_float32():
    """Same check in float32 at realistic size (EDM's 9 x 256 is too slow for a unit test)."""
    net = _build("egnn", hidden=64, layers=4)
    h, x, mask, t = _inputs(B=4, N=12, dtype=torch.float32)
    R = o3.rand_matrix()
    oh, ox = net(h, x, mask, t)
    rh, rx = net(h, x @ R.T + torch.tensor([1.0, -2.0, 0.5]), mask, t)
    torch.testing.assert_close(rh, oh, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rx, ox @ R.T, atol=1e-4, rtol=1e-4)


def test_egnn_without_coordinates_is_permutation_equivariant():
    spec = LatentSpec("per_atom", F)
    net = _build("egnn", spec).double()
    h, _, mask, t = _inputs()
    oh, ox = net(h, None, mask, t)
    assert ox is None
    perm = torch.tensor([2, 0, 1, 5, 4, 3])
    ph, _ = net(h[:, perm], None, mask[:, perm], t)
    torch.testing.assert_close(ph, oh[:, perm])
    with pytest.raises(ValueError, match="coordinates"):
        DENOISERS.get("e3nn")(spec)


# -- EGNN internals ----------------------------------------------------------------------
def test_pair_linear_equals_linear_on_concatenation():
    torch.manual_seed(0)
    lin = PairLinear(5, 2, 7).double()
    h = torch.randn(2, 4, 5, dtype=torch.float64)
    e = torch.randn(2, 4, 4, 2, dtype=torch.float64)
    naive = torch.cat([h[:, :, None].expand(2, 4, 4, 5), h[:, None].expand(2, 4, 4, 5), e], -1)
    ref = torch.nn.functional.linear(naive, lin.weight, lin.bias)
    torch.testing.assert_close(lin(h, torch.cat([e, torch.ones_like(e[..., :1])], -1)), ref)


def test_grouped_evaluation_is_exact():
    """The dense layout's size groups change nothing (the pairs layout: tests/test_pairs.py)."""
    torch.manual_seed(0)
    net = DenseEGNN(3, 3, hidden=16, layers=2, group_size=4, layout="dense").double()
    g = torch.Generator().manual_seed(1)
    n = torch.randint(1, 11, (13,), generator=g)
    mask = torch.arange(10)[None] < n[:, None]
    mask = mask[:, torch.randperm(10, generator=g)]    # real atoms need not come first
    h = torch.randn(13, 10, 3, generator=g, dtype=torch.float64) * mask[..., None]
    x = torch.randn(13, 10, 3, generator=g, dtype=torch.float64) * mask[..., None]
    grouped = net(h, x, mask)
    net.group_size = 0
    dense = net(h, x, mask)
    torch.testing.assert_close(grouped[0], dense[0])
    torch.testing.assert_close(grouped[1], dense[1])


def edm_egnn_param_count(in_nf: int, hidden: int, layers: int, sublayers: int = 2,
                         edge_feat: int = 2, out_nf: int | None = None) -> int:
    """Parameters of EDM's EGNN (egnn_new.EGNN) from its published layer layout."""
    lin = lambda i, o, bias=True: i * o + (o if bias else 0)
    gcl = (lin(2 * hidden + edge_feat, hidden) + lin(hidden, hidden) + lin(hidden, 1)
           + lin(2 * hidden, hidden) + lin(hidden, hidden))
    update = lin(2 * hidden + edge_feat, hidden) + lin(hidden, hidden) + lin(hidden, 1, False)
    return (lin(in_nf, hidden) + layers * (sublayers * gcl + update)
            + lin(hidden, in_nf if out_nf is None else out_nf))


@pytest.mark.parametrize("layers,hidden", [(9, 256), (6, 128), (4, 64)])
def test_egnn_parameter_count_matches_edm(layers, hidden):
    """QM9 raw space: 5 one-hot + 1 charge features; EDM appends time (in = out = 7)."""
    spec = LatentSpec("per_atom", 6, has_coords=True)
    net = DENOISERS.get("egnn")(spec, hidden=hidden, layers=layers)
    ours = sum(p.numel() for p in net.parameters())
    edm = edm_egnn_param_count(7, hidden, layers)
    assert abs(ours - edm) / edm < 0.05
    assert edm - ours == hidden + 1            # only EDM's unused time output differs


def test_dense_egnn_argument_errors():
    net = DenseEGNN(3, 3, hidden=8, layers=1)
    with pytest.raises(ValueError, match="h \\[B, N, 3\\]"):
        net(torch.zeros(2, 4, 5), torch.zeros(2, 4, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="needs x"):
        net(torch.zeros(2, 4, 3), None, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError):
        DenseEGNN(3, 3, hidden=0)


def test_block_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    net = DenseEGNN(3, 3, hidden=8, layers=2).double()
    h, x, mask, _ = _inputs()
    h = h[..., :3]
    grads = []
    for ckpt in (False, True):
        net.checkpoint = ckpt
        net.zero_grad()
        oh, ox = net(h, x, mask)
        (oh.square().sum() + ox.square().sum()).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_mlp_context_input_concatenates_a_projection_of_the_context():
    spec = LatentSpec(kind="vector", width=6)
    net = DENOISERS.get("mlp")(spec, context_dim=2, width=16, depth=1, context_input=4)
    assert net.inp.in_features == 6 + 4 and net.context_in.out_features == 4
    torch.nn.init.normal_(net.out.weight)          # zero-initialised output would hide the input
    h, t = torch.randn(3, 6), torch.rand(3)
    a = net(h, t, torch.zeros(3, 2))
    b = net(h, t, torch.ones(3, 2))
    assert a.shape == (3, 6) and not torch.allclose(a, b)
    assert DENOISERS.get("mlp")(spec, context_dim=0, context_input=4).context_in is None
    with pytest.raises(ValueError, match="context_input"):
        DENOISERS.get("mlp")(spec, context_dim=2, context_input=-1)
