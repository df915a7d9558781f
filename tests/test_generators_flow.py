"""Flow matching, the second generator family: ODE samplers against an exact velocity
field, the 2-D Gaussian mixture, zero-CoM along the ODE, OT coupling, exact resume,
weights-only checkpoints, guidance, errors."""
import dataclasses
import pytest
import torch

from generators import FlowGenerator, build_generator, load_generator
from generators.families.flow import objective as F
from generators.families.flow.samplers import make_flow_sampler
from harness.core.registry import SAMPLERS
from harness.core.types import LatentBatch, LatentSpec

torch.set_num_threads(1)

CPU = dict(accelerator="cpu", logger=False)
VEC2 = LatentSpec("vector", 2)
FLOW_SAMPLERS = ["euler", "midpoint", "heun", "dopri5"]

M = torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64)
SD = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)


def oracle_velocity(z, t):
    """Exact marginal velocity of z_t = (1 - t) x0 + t x1, x0 ~ N(0, I), x1 ~ N(M, SD^2)."""
    var = (1 - t) ** 2 + t ** 2 * SD ** 2
    x1 = M + t * SD ** 2 / var * (z - t * M)
    return (x1 - z) / max(1 - t, 1e-3) if t < 1 else torch.zeros_like(z)


@pytest.mark.parametrize("name,steps,tol", [("euler", 200, 0.03), ("midpoint", 20, 0.03),
                                            ("heun", 20, 0.03), ("dopri5", 4, 0.03)])
def test_ode_samplers_transport_noise_to_the_gaussian(name, steps, tol):
    z0 = torch.randn(20000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    calls = []

    def v(z, t):
        calls.append(t)
        return oracle_velocity(z, t)

    solver = make_flow_sampler(name, steps)
    z1, nfe = solver.solve(v, z0)
    assert nfe == len(calls) and (solver.nfe is None or solver.nfe == nfe)
    assert (z1.mean(0) - M).abs().max() < tol
    assert ((z1.std(0) / SD) - 1).abs().max() < tol
    again, _ = solver.solve(oracle_velocity, z0)
    assert torch.equal(z1, again)                                   # deterministic


def test_stated_nfe_and_aliases():
    assert make_flow_sampler("euler", 10).nfe == 10
    assert make_flow_sampler("midpoint", 10).nfe == 20
    assert make_flow_sampler("heun", 10).nfe == 19
    assert make_flow_sampler("dopri5", 10).nfe is None
    assert make_flow_sampler("ddim", 7).name == "euler"            # exact: DDIM(eta=0) = Euler
    assert {SAMPLERS.get(n).family for n in FLOW_SAMPLERS} == {"flow"}
    with pytest.raises(KeyError, match="valid samplers for flow generators"):
        make_flow_sampler("dpm_solver++", 10)
    with pytest.raises(ValueError, match="eta"):
        make_flow_sampler("euler", 10, eta=0.5)


def _mixture(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    comp = torch.randint(0, 2, (n,), generator=g)
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    return means[comp] + 0.5 * torch.randn(n, 2, generator=g)


@pytest.fixture(scope="module")
def mixture_flow(tmp_path_factory):
    data = _mixture()
    gen = FlowGenerator(VEC2, denoiser="mlp", denoiser_kwargs=dict(width=128, depth=2), lr=2e-3)
    stats = gen.fit(LatentBatch(h=data, spec=VEC2), None, tmp_path_factory.mktemp("flow"),
                    max_steps=600, batch_size=256, progress=False, trainer_kwargs=CPU)
    return gen, data, stats


@pytest.mark.parametrize("sampler,steps", [("euler", 50), ("heun", 10), ("dopri5", None)])
def test_mixture_mean_and_covariance(mixture_flow, sampler, steps):
    gen, data, stats = mixture_flow
    assert stats["steps"] == 600
    s, info = gen.sample(1200, sampler=sampler, steps=steps, seed=1, progress=False,
                         batch_size=1200, return_stats=True)
    mean_err = ((s.h.mean(0) - data.mean(0)).abs() / data.std(0)).max().item()
    cov_d = torch.cov(data.T)
    cov_err = ((torch.cov(s.h.T) - cov_d).abs().max() / cov_d.abs().max()).item()
    print(f"{sampler}: NFE {info['nfe']}, mean error {mean_err:.3f} std, cov error {cov_err:.3f}")
    # the tolerance of the diffusion family's test (test_generators_training)
    assert mean_err < 0.1 and cov_err < 0.1, (sampler, mean_err, cov_err)
    assert info["nfe"] == gen.last_sample_stats["nfe"] > 0


def test_checkpoint_is_weights_only_and_samples_identically(mixture_flow):
    gen, _, stats = mixture_flow
    ckpt = torch.load(stats["checkpoint"], weights_only=True)
    assert ckpt["hyper_parameters"]["config"]["family"] == "flow"
    loaded = load_generator(stats["checkpoint"])
    assert isinstance(loaded, FlowGenerator)
    a = gen.sample(64, sampler="heun", steps=5, seed=3, progress=False).h
    assert torch.equal(a, loaded.sample(64, sampler="heun", steps=5, seed=3, progress=False).h)
    assert not torch.equal(a, gen.sample(64, sampler="heun", steps=5, seed=4, progress=False).h)


def _per_atom(M=48, N=6, F_=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(2, N + 1, (M,), generator=g)
    mask = torch.arange(N)[None] < n[:, None]
    spec = LatentSpec("per_atom", F_, has_coords=True, bounded=True)
    h = torch.tanh(torch.randn(M, N, F_, generator=g)) * mask[..., None]
    x = 1.5 * torch.randn(M, N, 3, generator=g) * mask[..., None]
    return LatentBatch(h=h, x=x, mask=mask, spec=spec)


def _flow_config(**flow):
    return {"family": "flow", "flow": flow, "ema_decay": 0.9,
            "denoiser_options": {"egnn": {"hidden": 16, "layers": 2}}}


@pytest.mark.parametrize("name", FLOW_SAMPLERS)
def test_zero_com_is_kept_along_the_ode(name):
    lat = _per_atom()
    gen = build_generator(lat.spec, _flow_config(self_conditioning=True), seed=1)
    gen.prior.fit(lat.mask)
    states = []
    solve = make_flow_sampler(name, 4).solve

    def recording(velocity, z, project, dof=None):
        def v(zz, t):
            states.append(zz)
            return velocity(zz, t)
        out = solve(v, z, project, dof)
        states.append(out[0])
        return out

    gen._integrator = lambda *a: type("S", (), {"name": name, "steps": 4, "nfe": None,
                                                "solve": staticmethod(recording)})()
    s = gen.sample(10, seed=0, progress=False)
    assert len(states) > 4
    W = lat.spec.width
    for z in states:
        m = (z[..., W:].abs().sum(-1) > 0)               # real atoms of this batch
        com = z[..., W:].sum(1) / m.sum(1, keepdim=True).clamp_min(1)
        assert com.abs().max() < 1e-6
        assert (z[~m] == 0).all()
    com = (s.x * s.mask[..., None]).sum(1) / s.mask.sum(1, keepdim=True)
    assert com.abs().max() < 1e-5 and (s.h[~s.mask] == 0).all() and s.h.abs().max() <= 1


def test_ot_coupling_pairs_same_size_molecules_after_kabsch():
    g = torch.Generator().manual_seed(0)
    lat = _per_atom(M=12, N=5)
    from generators.layout import LatentLayout

    lay = LatentLayout(lat.spec)
    x1, mask = lay.from_batch(lat)
    # noise = the data itself, rotated and reordered within each size: OT must undo both
    R = torch.linalg.qr(torch.randn(3, 3, generator=g))[0]
    R = R * torch.sign(torch.linalg.det(R))
    perm = torch.arange(len(x1))
    for n in mask.sum(1).unique():
        idx = torch.nonzero(mask.sum(1) == n).flatten()
        perm[idx] = idx[torch.randperm(len(idx), generator=g)]
    x0 = x1[perm].clone()
    x0[..., 2:] = x0[..., 2:] @ R.T
    out = F.ot_couple(x0, x1, mask, feat=2, coords=True)
    torch.testing.assert_close(out, x1, atol=1e-5, rtol=0)
    # random noise: zero CoM and masks kept, cost not above the identity pairing's
    noise = lay.noise(tuple(x1.shape), mask, g)
    out = F.ot_couple(noise, x1, mask, feat=2, coords=True)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))
    assert out[..., 2:].sum(1).abs().max() < 1e-5
    assert ((out - x1) ** 2).sum() <= ((noise - x1) ** 2).sum() + 1e-4
    v1, v0 = torch.randn(16, 3, generator=g), torch.randn(16, 3, generator=g)
    assert ((F.ot_couple(v0, v1, None, 3, False) - v1) ** 2).sum() <= ((v0 - v1) ** 2).sum()


def test_resume_continues_exactly(tmp_path):
    lat = _per_atom()
    ctx = torch.randn(len(lat), 1, generator=torch.Generator().manual_seed(1))
    cfg = _flow_config(ot_coupling=True, self_conditioning=True, time_sampling="logit_normal")
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
    s = resumed.sample(5, sampler="midpoint", steps=3, context=torch.tensor([0.5]),
                       guidance_scale=2.0, progress=False)
    assert s.h.shape[0] == 5 and torch.isfinite(s.x).all()


def test_errors():
    gen = FlowGenerator(VEC2, denoiser_kwargs=dict(width=8, depth=1))
    with pytest.raises(KeyError, match="diffusion sampler"):
        gen.sample(2, sampler="ddpm", progress=False)
    with pytest.raises(ValueError, match="spacing"):
        gen.sample(2, spacing="logsnr", progress=False)
    with pytest.raises(ValueError, match="generator.flow.prediction"):
        FlowGenerator(VEC2, flow={"prediction": "eps"})
    with pytest.raises(ValueError, match="generator.flow.bogus"):
        FlowGenerator(VEC2, flow={"bogus": 1})
    with pytest.raises(ValueError, match="family"):
        FlowGenerator(VEC2, family="diffusion")
    from generators import DiffusionGenerator

    with pytest.raises(KeyError, match="ODE sampler"):
        DiffusionGenerator(VEC2, denoiser_kwargs=dict(width=8, depth=1)).sample(
            2, sampler="heun", progress=False)


def test_x1_prediction_and_clipping_on_vectors(tmp_path):
    spec = LatentSpec("vector", 3, bounded=True)
    data = torch.tanh(torch.randn(128, 3, generator=torch.Generator().manual_seed(0)))
    gen = build_generator(spec, {"family": "flow", "flow": {"prediction": "x1"},
                                 "denoiser_options": {"mlp": {"width": 16, "depth": 1}}})
    gen.fit(LatentBatch(h=data, spec=spec), None, tmp_path, max_steps=3, batch_size=32,
            progress=False, trainer_kwargs=CPU)
    for name in FLOW_SAMPLERS:
        s = gen.sample(16, sampler=name, steps=3, progress=False).h
        assert torch.isfinite(s).all() and s.abs().max() <= 1.0, name


def test_study_builds_the_configured_family(tmp_path):
    from generators import check_sampler
    from harness.study.runner import Study

    class _Space:
        spec = LatentSpec("per_atom", 2, has_coords=True)

    study = Study.from_source("tiny", [f"output_dir={tmp_path}", "generator.family=flow",
                                       "generator.flow.ot_coupling=true"])
    gen, cfg = study._build_generator("raw", _Space())
    assert isinstance(gen, FlowGenerator) and gen.fc.ot_coupling and cfg.family == "flow"
    check_sampler("flow", "ddim")                                   # = euler
    check_sampler("diffusion", "dpm_solver++")
    with pytest.raises((KeyError, ValueError), match="'sampling.sampler': 'dpm_solver\\+\\+' is a diffusion"):
        check_sampler("flow", "dpm_solver++")
    # a sampler of the other family fails at config time, before anything trains
    with pytest.raises(ValueError, match="generator.family is 'flow'"):
        Study.from_source("tiny", [f"output_dir={tmp_path}", "generator.family=flow",
                                   "sampling.sampler=ddpm"])
    bad = Study.from_source("tiny", [f"output_dir={tmp_path}"])
    bad.config.generator = dataclasses.replace(bad.config.generator, family="flow")
    bad.config.sampling.sampler = "ddpm"
    with pytest.raises(KeyError, match="generator.family is 'flow'"):
        bad._build_generator("raw", _Space())                       # before any training
