"""Latent layout: masks and zero centre-of-mass invariants used by noise, loss and samplers."""
import torch

from generators.layout import LatentLayout
from harness.core.nn import masked_mean, remove_mean
from harness.core.types import LatentBatch, LatentSpec

torch.set_num_threads(1)

SPEC = LatentSpec("per_atom", 2, has_coords=True)


def _mask():
    return torch.arange(7)[None] < torch.tensor([[7], [4], [1]])


def test_noise_is_masked_and_zero_com():
    lay, mask = LatentLayout(SPEC), _mask()
    eps = lay.noise((3, 7, 5), mask, torch.Generator().manual_seed(0))
    h, x = lay.split(eps)
    assert (eps[~mask] == 0).all()
    torch.testing.assert_close(masked_mean(x, mask), torch.zeros(3, 1, 3), atol=1e-6, rtol=0)
    assert masked_mean(h, mask)[:2].abs().max() > 1e-3       # features are not centred
    assert (x[2] == 0).all()                                  # one atom: no coordinate dof


def test_projection_is_idempotent_and_translation_invariant():
    lay, mask = LatentLayout(SPEC), _mask()
    z = torch.randn(3, 7, 5)
    p = lay.project(z, mask)
    torch.testing.assert_close(lay.project(p, mask), p)
    shifted = z.clone()
    shifted[..., 2:] += torch.randn(3, 1, 3)
    torch.testing.assert_close(lay.project(shifted, mask), p, atol=1e-5, rtol=0)
    torch.testing.assert_close(remove_mean(remove_mean(z[..., 2:], mask), mask),
                               remove_mean(z[..., 2:], mask))


def test_loss_normaliser_counts_the_subspace():
    """E|eps|^2 over the diffused entries equals spec.dim(n): a zero prediction scores 1."""
    lay = LatentLayout(SPEC)
    mask = torch.arange(9)[None] < torch.randint(1, 10, (4000, 1), generator=torch.Generator().manual_seed(1))
    eps = lay.noise((4000, 9, 5), mask, torch.Generator().manual_seed(2))
    dims = lay.dims(mask)
    torch.testing.assert_close(dims, SPEC.dim(mask.sum(1)).float())
    ratio = lay.sq_error(torch.zeros_like(eps), eps, mask) / dims
    assert abs(ratio.mean().item() - 1.0) < 0.02
    assert abs(lay.mse(torch.zeros_like(eps), eps, mask).item() - 1.0) < 0.02


def test_vector_layout_and_round_trip():
    spec = LatentSpec("vector", 6)
    lay = LatentLayout(spec)
    z = torch.randn(5, 6)
    assert lay.project(z, None) is z and lay.dims(None, 5).tolist() == [6.0] * 5
    batch = lay.to_batch(z, None)
    assert batch.spec == spec and torch.equal(lay.from_batch(batch)[0], z)
    mask = _mask()
    pb = LatentBatch(h=torch.randn(3, 7, 2), x=torch.randn(3, 7, 3), mask=mask, spec=SPEC)
    z2, m2 = LatentLayout(SPEC).from_batch(pb)
    torch.testing.assert_close(masked_mean(z2[..., 2:], m2), torch.zeros(3, 1, 3), atol=1e-6, rtol=0)


def test_trim_drops_unused_slots():
    lay = LatentLayout(SPEC)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, :3] = True
    mask[1, :2] = True
    z, m = lay.trim(torch.randn(2, 6, 5), mask)
    assert z.shape == (2, 3, 5) and m.shape == (2, 3)
