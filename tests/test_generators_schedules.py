"""Noise schedules: published formulas and the properties every sampler relies on."""
import math

import pytest
import torch

from generators.families.diffusion.schedules import (CosineSchedule, LinearSchedule, NoiseSchedule,
                                  PolynomialSchedule, make_schedule)
from harness.core.registry import SCHEDULES

torch.set_num_threads(1)


@pytest.mark.parametrize("name", SCHEDULES.names())
@pytest.mark.parametrize("T", [1, 10, 500, 1000])
def test_schedule_properties(name, T):
    s = make_schedule(name, T)
    ac = s.alphas_cumprod
    assert ac.dtype == torch.float64 and ac.shape == (T + 1,)
    assert (ac > 0).all() and (ac <= 1).all()
    assert (ac[1:] <= ac[:-1]).all(), "alpha^2 must not increase with t"
    assert ac[0] > 0.9999, "t = 0 is (almost) clean data"
    # variance preserving: alpha^2 + sigma^2 = 1 at every t
    t = torch.arange(T + 1)
    a, sg = s.alpha(t, torch.float64), s.sigma(t, torch.float64)
    torch.testing.assert_close(a ** 2 + sg ** 2, torch.ones(T + 1, dtype=torch.float64))
    assert ((s.betas >= 0) & (s.betas < 1)).all()
    lam = s.log_snr(t, torch.float64)
    assert (lam[1:] < lam[:-1]).all() or T == 1


def test_polynomial_2_matches_edm_definition():
    T, s_prec = 1000, 1e-5
    s = make_schedule("polynomial_2", T)
    t = torch.arange(T + 1, dtype=torch.float64)
    raw = (1 - (t / T) ** 2) ** 2
    # before clipping matters (ratios >= 0.001), the table is raw rescaled by the precision
    mid = slice(0, 900)
    torch.testing.assert_close(s.alphas_cumprod[mid], (1 - 2 * s_prec) * raw[mid] + s_prec)
    # per-step ratios of the unprecisioned table are clipped at >= 0.001
    unprec = (s.alphas_cumprod - s_prec) / (1 - 2 * s_prec)
    ratios = unprec[1:] / unprec[:-1]
    assert ratios.min() >= 0.001 - 1e-9
    assert math.isclose(float(s.alphas_cumprod[T]), s_prec + (1 - 2 * s_prec) * float(unprec[T]),
                        rel_tol=1e-9)
    assert float(s.alphas_cumprod[T]) < 2e-5
    assert isinstance(make_schedule("polynomial_3", 100), PolynomialSchedule)


def test_linear_matches_ldm3dg():
    s = make_schedule("linear", 500)
    torch.testing.assert_close(s.betas[0], torch.tensor(1e-4, dtype=torch.float64))
    torch.testing.assert_close(s.betas[-1], torch.tensor(0.02, dtype=torch.float64))
    expected = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 500, dtype=torch.float64), 0)
    torch.testing.assert_close(s.alphas_cumprod[1:], expected)


def test_cosine_matches_improved_ddpm():
    T = 1000
    s = make_schedule("cosine", T)
    t = torch.tensor([0, 250, 500, 750], dtype=torch.float64)
    f = lambda u: torch.cos((u / T + 0.008) / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(s.alphas_cumprod[t.long()], f(t) / f(torch.zeros(1, dtype=torch.float64)))
    assert s.betas.max() <= 0.999 + 1e-12


def test_add_noise_and_lookup_shapes():
    s = make_schedule("polynomial_2", 100)
    x0, eps = torch.randn(4, 5, 3), torch.randn(4, 5, 3)
    t = torch.tensor([0, 1, 50, 100])
    z = s.add_noise(x0, eps, t)
    a, sg = s.alpha(t), s.sigma(t)
    torch.testing.assert_close(z, a[:, None, None] * x0 + sg[:, None, None] * eps)
    assert s.alpha(7).shape == () and s.alpha(torch.tensor([[1, 2]])).shape == (1, 2)
    with pytest.raises(ValueError, match="0..100"):
        s.alpha(101)


def test_schedule_errors():
    with pytest.raises(KeyError, match="valid schedules"):
        make_schedule("quadratic", 10)
    with pytest.raises(ValueError):
        make_schedule("linear", 0)
    with pytest.raises(ValueError):
        LinearSchedule(10, beta_start=0.5, beta_end=0.1)
    assert isinstance(CosineSchedule(10), NoiseSchedule)
