"""The preconditioned family (Karras et al., 2022): preconditioning identities, sigma grids,
samplers against an exact denoiser (NFE counted), the 2-D Gaussian mixture, zero CoM at
every state, exact resume, weights-only checkpoints, config errors naming keys, and studies
(``generator.family=precond`` and an alias space) end to end."""
import math
import re

import pytest
import torch

from generators import build_generator, generator_class, load_generator
from generators.families.precond import objective as P
from generators.families.precond.config import PrecondConfig
from generators.families.precond.samplers import make_precond_sampler
from generators.nfe import steps_for_nfe
from harness.core.registry import FAMILIES, SAMPLERS
from harness.core.types import LatentBatch, LatentSpec

torch.set_num_threads(1)

CPU = dict(accelerator="cpu", logger=False)
VEC2 = LatentSpec("vector", 2)
SAMPLER_NAMES = ["precond_euler", "precond_heun"]

#: data mean small against sigma_max: the sampler starts at sigma_max z (zero mean, as Karras),
#: which misses M by |M| / sigma_max data stds at the end (here < 0.013)
M = torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64)
SD = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)


def PrecondGenerator(*args, **kwargs):
    return generator_class("precond")(*args, **kwargs)


# -- math ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sd", [1.0, 0.5, 2.0])
def test_preconditioning_identities(sd):
    sigma = torch.logspace(-4, 2, 61, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = P.preconditioning(sigma, sd)
    one = torch.ones_like(sigma)
    torch.testing.assert_close(c_skip + c_out ** 2 / sd ** 2, one)
    torch.testing.assert_close(c_in ** 2 * (sigma ** 2 + sd ** 2), one)
    # the regression target (x0 - c_skip x) / c_out has unit variance for data of std sd
    torch.testing.assert_close(((1 - c_skip) ** 2 * sd ** 2 + c_skip ** 2 * sigma ** 2) / c_out ** 2, one)
    torch.testing.assert_close(c_noise, sigma.log() / 4)
    g = torch.Generator().manual_seed(0)
    x0 = sd * torch.randn(200000, 1, generator=g, dtype=torch.float64)
    s = torch.full((200000,), 0.7, dtype=torch.float64)
    x = x0 + 0.7 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    assert abs(float(P.target(x0, x, s, sd).std()) - 1) < 0.01
    assert abs(float((P._bc(P.preconditioning(s, sd)[2], x) * x).std()) - 1) < 0.01
    # D -> x as sigma -> 0, whatever the network outputs
    x, out = torch.randn(5, 3, dtype=torch.float64), 10 * torch.randn(5, 3, dtype=torch.float64)
    tiny = torch.full((5,), 1e-9, dtype=torch.float64)
    assert (P.denoise(x, out, tiny, sd) - x).abs().max() < 1e-7
    # Karras weighting is unit weight on F; uniform is c_out^2 (plain L2 of D - x0)
    torch.testing.assert_close(P.output_weight(sigma, sd, "karras"), one)
    torch.testing.assert_close(P.output_weight(sigma, sd, "uniform"), c_out ** 2)


def test_network_time_and_training_sigmas():
    cfg = PrecondConfig()
    sig = torch.logspace(-4, 3, 50)
    t = P.network_time(sig, cfg.sigma_min, cfg.sigma_max)
    assert (t.diff() >= 0).all() and t.min() == 0 and t.max() == 1
    ends = P.network_time(torch.tensor([cfg.sigma_min, cfg.sigma_max]), cfg.sigma_min, cfg.sigma_max)
    torch.testing.assert_close(ends, torch.tensor([0.0, 1.0]))
    g = torch.Generator().manual_seed(0)
    ln = P.sample_sigma(100000, cfg, g).log()
    assert abs(float(ln.mean()) + 1.2) < 0.02 and abs(float(ln.std()) - 1.2) < 0.02
    arc = PrecondConfig(sigma_sampling="arcsin")
    s = P.sample_sigma(100000, arc, g)
    assert s.min() >= cfg.sigma_min * 0.999 and s.max() <= cfg.sigma_max * 1.001
    # arcsin puts its mass at mid noise: the middle half of ln sigma holds > half the draws
    u = (s.log() - math.log(cfg.sigma_min)) / math.log(cfg.sigma_max / cfg.sigma_min)
    assert ((u > 0.25) & (u < 0.75)).float().mean() > 0.6


@pytest.mark.parametrize("grid", ["karras", "arcsin"])
def test_sigma_grids(grid):
    s = P.sigma_grid(10, 0.002, 80.0, grid, 7.0, 2.0)
    assert len(s) == 11 and s[-1] == 0.0
    assert math.isclose(s[0], 80.0) and math.isclose(s[-2], 0.002)
    assert all(a > b for a, b in zip(s[:-1], s[1:]))
    assert P.sigma_grid(1, 0.002, 80.0, grid) == [80.0, 0.0]
    steps = [math.log(a / b) for a, b in zip(s[:-2], s[1:-1])]
    if grid == "karras":                      # rho = 7: large log-steps at low noise
        assert steps[-1] > steps[0]
    else:                                     # arcsin: sparse at both ends, dense mid-way
        assert steps[0] > steps[4] < steps[-1]


# -- samplers --------------------------------------------------------------------------------
def oracle(x, sigma):
    """Exact E[x0 | x0 + sigma n = x] for x0 ~ N(M, SD^2)."""
    return M + SD ** 2 / (SD ** 2 + sigma ** 2) * (x - M)


@pytest.mark.parametrize("name,steps,churn,tol", [
    ("precond_euler", 1000, 0.0, 0.03), ("precond_heun", 40, 0.0, 0.03),
    ("precond_heun", 40, 10.0, 0.04)])
def test_samplers_reach_the_gaussian_with_the_stated_nfe(name, steps, churn, tol):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    calls = []

    def d(x, s):
        calls.append(s)
        return oracle(x, s)

    smp = make_precond_sampler(name, steps, s_churn=churn, s_tmin=0.05, s_tmax=50.0)
    x, nfe = smp.solve(d, z, noise=lambda: torch.randn(z.shape, generator=g, dtype=z.dtype))
    assert nfe == len(calls) == smp.nfe == SAMPLERS.get(name).nfe_rule[0] * steps + \
        SAMPLERS.get(name).nfe_rule[1]
    assert ((x.mean(0) - M) / SD).abs().max() < tol
    assert ((x.std(0) / SD) - 1).abs().max() < tol
    if not churn:
        again, _ = smp.solve(oracle, z)
        assert torch.equal(x, again)                                 # deterministic


def test_stated_nfe_aliases_and_errors():
    assert make_precond_sampler("precond_euler", 10).nfe == 10
    assert make_precond_sampler("precond_heun", 10).nfe == 19
    assert make_precond_sampler("ddim", 7).name == "precond_euler"
    assert steps_for_nfe("precond_heun", 20) == 10 and steps_for_nfe("precond_euler", 20) == 20
    fam = FAMILIES.get("precond")
    assert fam.resolve_sampler("ddim") == fam.resolve_sampler(None) == "precond_euler"
    assert set(SAMPLER_NAMES) <= set(fam.samplers()) and fam.nfe_sampler == "precond_heun"
    assert {SAMPLERS.get(n).family for n in SAMPLER_NAMES} == {"precond"}
    with pytest.raises(KeyError, match="valid samplers for precond generators"):
        make_precond_sampler("heun", 10)                             # the flow family's
    with pytest.raises(KeyError, match="valid samplers for precond generators"):
        make_precond_sampler("ddpm", 10)
    with pytest.raises(ValueError, match="s_churn"):
        make_precond_sampler("precond_heun", 10, eta=0.5)
    with pytest.raises(ValueError, match="noise source"):
        make_precond_sampler("precond_heun", 3, s_churn=1.0).solve(oracle, torch.zeros(2, 3))


# -- training --------------------------------------------------------------------------------
def _mixture(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    comp = torch.randint(0, 2, (n,), generator=g)
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    return means[comp] + 0.5 * torch.randn(n, 2, generator=g)


@pytest.fixture(scope="module")
def mixture_precond(tmp_path_factory):
    data = _mixture()
    gen = PrecondGenerator(VEC2, denoiser="mlp", denoiser_kwargs=dict(width=128, depth=2), lr=2e-3)
    stats = gen.fit(LatentBatch(h=data, spec=VEC2), None, tmp_path_factory.mktemp("precond"),
                    max_steps=600, batch_size=256, progress=False, trainer_kwargs=CPU)
    return gen, data, stats


# Heun needs ~25 steps here (10: covariance error 0.2 on the karras grid; the arcsin grid,
# whose first step at 10 steps jumps from sigma_max = 80 to 2.6, diverges), arcsin ~50
@pytest.mark.parametrize("sampler,steps,grid", [("precond_euler", 50, "karras"),
                                                ("precond_heun", 25, "karras"),
                                                ("precond_heun", 50, "arcsin")])
def test_mixture_mean_and_covariance(mixture_precond, sampler, steps, grid):
    gen, data, stats = mixture_precond
    assert stats["steps"] == 600
    gen.pc = PrecondConfig(grid=grid)                   # a sampling-time knob
    try:
        s, info = gen.sample(1200, sampler=sampler, steps=steps, seed=1, progress=False,
                             batch_size=1200, return_stats=True)
    finally:
        gen.pc = gen.config.precond
    mean_err = ((s.h.mean(0) - data.mean(0)).abs() / data.std(0)).max().item()
    cov_d = torch.cov(data.T)
    cov_err = ((torch.cov(s.h.T) - cov_d).abs().max() / cov_d.abs().max()).item()
    print(f"{sampler} ({grid}): NFE {info['nfe']}, mean error {mean_err:.3f} std, "
          f"cov error {cov_err:.3f}")
    # the tolerance of the other families' mixture tests
    assert mean_err < 0.1 and cov_err < 0.1, (sampler, grid, mean_err, cov_err)
    assert info["nfe"] == gen.last_sample_stats["nfe"] == make_precond_sampler(sampler, steps).nfe


def test_checkpoint_is_weights_only_and_samples_identically(mixture_precond):
    gen, _, stats = mixture_precond
    ckpt = torch.load(stats["checkpoint"], weights_only=True)
    assert ckpt["hyper_parameters"]["config"]["family"] == "precond"
    loaded = load_generator(stats["checkpoint"])
    assert type(loaded).__name__ == "PrecondGenerator" and loaded.family == "precond"
    a = gen.sample(64, sampler="precond_heun", steps=5, seed=3, progress=False).h
    assert torch.equal(a, loaded.sample(64, sampler="precond_heun", steps=5, seed=3,
                                        progress=False).h)
    assert not torch.equal(a, gen.sample(64, sampler="precond_heun", steps=5, seed=4,
                                         progress=False).h)
    gen.sample(3, progress=False)                       # the family's declared default
    assert gen.last_sample_stats["sampler"] == "precond_euler"
    assert gen.last_sample_stats["nfe"] == 100


def _per_atom(M=48, N=6, F_=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(2, N + 1, (M,), generator=g)
    mask = torch.arange(N)[None] < n[:, None]
    spec = LatentSpec("per_atom", F_, has_coords=True, bounded=True)
    h = torch.tanh(torch.randn(M, N, F_, generator=g)) * mask[..., None]
    x = 1.5 * torch.randn(M, N, 3, generator=g) * mask[..., None]
    return LatentBatch(h=h, x=x, mask=mask, spec=spec)


def _config(**precond):
    return {"family": "precond", "precond": precond, "ema_decay": 0.9,
            "denoiser_options": {"egnn": {"hidden": 16, "layers": 2}}}


@pytest.mark.parametrize("name,churn", [("precond_euler", 0.0), ("precond_heun", 0.0),
                                        ("precond_heun", 20.0)])
def test_zero_com_is_kept_at_every_state(name, churn):
    lat = _per_atom()
    gen = build_generator(lat.spec, _config(self_conditioning=True, s_churn=churn), seed=1)
    gen.prior.fit(lat.mask)
    smp = gen._integrator(name, 4, 0.0, None)
    states, solve = [], smp.solve

    def recording(denoise, z, project, noise=None):
        def d(x, s):
            states.append(x)
            out = denoise(x, s)
            states.append(out)
            return out
        out = solve(d, z, project, noise)
        states.append(out[0])
        return out

    smp.solve = recording
    gen._integrator = lambda *a: smp
    s = gen.sample(10, seed=0, progress=False, return_stats=True)[0]
    assert len(states) == 2 * smp.nfe + 1 and gen.last_sample_stats["nfe"] == smp.nfe
    W = lat.spec.width
    for z in states:
        m = (z[..., W:].abs().sum(-1) > 0)               # real atoms of this batch
        com = z[..., W:].sum(1) / m.sum(1, keepdim=True).clamp_min(1)
        assert com.abs().max() < 1e-4 * max(1.0, float(z.abs().max()))
        assert (z[~m] == 0).all()
    com = (s.x * s.mask[..., None]).sum(1) / s.mask.sum(1, keepdim=True)
    assert com.abs().max() < 1e-5 and (s.h[~s.mask] == 0).all() and s.h.abs().max() <= 1


def test_resume_continues_exactly(tmp_path):
    lat = _per_atom()
    ctx = torch.randn(len(lat), 1, generator=torch.Generator().manual_seed(1))
    cfg = _config(self_conditioning=True, sigma_sampling="arcsin", loss_weighting="uniform")
    fit = dict(batch_size=16, context=ctx, val_context=ctx[:16], progress=False,
               trainer_kwargs=CPU)
    straight = build_generator(lat.spec, cfg, context_dim=1, seed=5)
    s_straight = straight.fit(lat, lat[:16], tmp_path / "a", max_steps=9, **fit)
    first = build_generator(lat.spec, cfg, context_dim=1, seed=5)
    first.fit(lat, lat[:16], tmp_path / "b", max_steps=4, **fit)
    torch.manual_seed(1234)          # the global RNG must not matter
    resumed = build_generator(lat.spec, cfg, context_dim=1, seed=5)
    s_resumed = resumed.fit(lat, lat[:16], tmp_path / "b", max_steps=9, resume=True, **fit)
    assert s_resumed["resumed_from"] and s_resumed["steps"] == 9
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    oa = torch.load(s_straight["checkpoint"], weights_only=True)["optimizer_states"][0]["state"]
    ob = torch.load(s_resumed["checkpoint"], weights_only=True)["optimizer_states"][0]["state"]
    for i in oa:
        assert torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"])
    s = resumed.sample(5, sampler="precond_heun", steps=3, context=torch.tensor([0.5]),
                       guidance_scale=2.0, progress=False)
    assert s.h.shape[0] == 5 and torch.isfinite(s.x).all() and s.h.abs().max() <= 1


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("section,key", [
    ({"sigma_min": -1.0}, "sigma_min"), ({"sigma_max": 0.001}, "sigma_max"),
    ({"sigma_data": 0}, "sigma_data"), ({"sigma_sampling": "uniform"}, "sigma_sampling"),
    ({"p_std": 0.0}, "p_std"), ({"loss_weighting": "snr"}, "loss_weighting"),
    ({"grid": "linear"}, "grid"), ({"rho": -7.0}, "rho"), ({"arcsin_mix": 3.0}, "arcsin_mix"),
    ({"s_churn": -1.0}, "s_churn"), ({"s_tmin": 2.0, "s_tmax": 1.0}, "s_tmax"),
    ({"self_conditioning": "yes"}, "self_conditioning"), ({"bogus": 1}, "bogus")])
def test_config_errors_name_the_key(section, key):
    with pytest.raises(ValueError, match=f"generator.precond.{key}"):
        PrecondGenerator(VEC2, precond=section)


def test_sampling_and_study_errors(tmp_path):
    from harness.config import ConfigError
    from harness.study import Study

    gen = PrecondGenerator(VEC2, denoiser_kwargs=dict(width=8, depth=1))
    with pytest.raises(KeyError, match="flow sampler"):
        gen.sample(2, sampler="heun", progress=False)
    with pytest.raises(ValueError, match="spacing"):
        gen.sample(2, spacing="logsnr", progress=False)
    with pytest.raises(ValueError, match="family"):
        PrecondGenerator(VEC2, family="flow")
    with pytest.raises(ConfigError, match="generator.precond.rho"):
        Study.from_source("tiny", [f"output_dir={tmp_path}", "generator.family=precond",
                                   "generator.precond.rho=0"])
    with pytest.raises(ValueError, match="generator.family is 'precond'"):
        Study.from_source("tiny", [f"output_dir={tmp_path}", "generator.family=precond",
                                   "sampling.sampler=dpm_solver++"])


# -- studies ---------------------------------------------------------------------------------
def _nfe_fields(path):
    return {int(v) for v in re.findall(r"<nfe>[^\n]*\n(\d+)", path.read_text())}


def test_tiny_study_with_the_precond_family(tmp_path):
    from harness.study import Study

    study = Study.from_source("tiny", [f"output_dir={tmp_path}", "generator.family=precond",
                                       "sampling.sampler=precond_heun", "sampling.steps=3"])
    rows = study.run()
    assert set(rows) == {"reference", "raw", "flat"}
    for space in ("raw", "flat"):
        d = study.root / space
        ckpt = torch.load(d / "generator/checkpoints/last.ckpt", weights_only=True)
        assert ckpt["hyper_parameters"]["config"]["family"] == "precond"
        assert _nfe_fields(d / "samples.sdf") == {5}                  # Heun: 2 * 3 - 1
        assert 0 <= rows[space]["values"]["edm.validity"] <= 1


def test_alias_study_compares_families_on_the_same_latents(tmp_path):
    from harness.study import Study

    study = Study.from_source("tiny", [
        f"output_dir={tmp_path}", "spaces={flat: {width: 16, hidden: 32, layers: 1, epochs: 1}, "
        "flat@precond: {width: 16, hidden: 32, layers: 1, epochs: 1}}",
        "generator_overrides={flat@precond: {family: precond}}"])
    rows = study.run()
    assert {"flat", "flat@precond"} <= set(rows)
    fam = {}
    for space in ("flat", "flat@precond"):
        ckpt = torch.load(study.root / space / "generator/checkpoints/last.ckpt", weights_only=True)
        fam[space] = ckpt["hyper_parameters"]["config"]["family"]
        assert _nfe_fields(study.root / space / "samples.sdf") == {5}  # ddim: 5 steps, either
    assert fam == {"flat": "diffusion", "flat@precond": "precond"}
    a = torch.load(study.root / "flat" / "latents.pt", weights_only=False)
    b = torch.load(study.root / "flat@precond" / "latents.pt", weights_only=False)
    ha = a["h"] if isinstance(a, dict) else a.h
    hb = b["h"] if isinstance(b, dict) else b.h
    assert torch.equal(ha, hb)                                        # identical latents
