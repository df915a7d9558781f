"""Parity with EDM's own code (Hoogeboom et al., 2022): same weights, inputs and noise give
the same network output, l2 training loss, VLB and reverse steps, in float64, to 1e-5.

Reference values come from ``tests/fixtures/edm_parity/make_edm_fixtures.py`` (EDM run once,
outside the product; README there). Two sizes: ``small`` (2 blocks x 16, 1 GCL, sum / 1) and
``large`` (3 blocks x 32, 2 GCLs, sin_embedding, sum / 100).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from generators.families.diffusion import edm_objective as E
from generators.families.diffusion.samplers import make_sampler
from generators.families.diffusion.schedules import make_schedule
from harness.core.registry import DENOISERS
from harness.core.types import LatentSpec
from harness.importers.edm_weights import (edm_gamma, edm_network_options,
                                           edm_to_harness_state_dict)

FIX = Path(__file__).parent / "fixtures" / "edm_parity"
SIZES = {"small": dict(layers=2, hidden=16, sublayers=1, agg_norm=1.0, sin_embedding=False),
         "large": dict(layers=3, hidden=32, sublayers=2, agg_norm=100.0, sin_embedding=True)}
TOL = 1e-5
F = 6   # 5 one-hot types + charge


def _fix(name):
    d = np.load(FIX / f"{name}.npz")
    return {k: torch.from_numpy(d[k]) for k in d.files}


def _to_harness(z):
    """EDM's ``[x, h]`` -> the harness's ``[h, x]``."""
    return torch.cat([z[..., 3:], z[..., :3]], -1)


def _net(name):
    spec = LatentSpec("per_atom", width=F, has_coords=True)
    net = DENOISERS.get("egnn_edm")(spec, **SIZES[name]).double()
    state = torch.load(FIX / f"{name}.weights.pt", weights_only=True)
    net.load_state_dict(edm_to_harness_state_dict(state, F))
    return net.eval()


def _eps_fn(net, mask, T, f32_time=False):
    """The network as eps(z, t). ``f32_time``: the time feature is ``t / T`` computed in
    float32, as EDM's ``compute_loss`` does (``torch.randint(...).float() / T``)."""
    def fn(z, t):
        tf = (t.float() / T).to(z.dtype) if f32_time else t.to(z.dtype) / T
        oh, ox = net(z[..., :F], z[..., F:], mask, tf)
        return torch.cat([oh, ox], -1)
    return fn


def _z0(d):
    """The clean latent as EDM's ``normalize`` builds it inside its loss: it casts the
    features to float32 before dividing (``h["integer"].float() / 10``)."""
    h = torch.cat([d["onehot"], d["charges"][..., None]], -1).float() / torch.tensor(
        [4.0] * 5 + [10.0])
    return torch.cat([h.double(), d["x"]], -1)


def _diff(a, b):
    return float((a - b).abs().max())


@pytest.mark.parametrize("name", list(SIZES))
def test_weight_mapping_is_complete_and_options_are_read(name):
    state = torch.load(FIX / f"{name}.weights.pt", weights_only=True)
    mapped = edm_to_harness_state_dict(state, F)
    net = _net(name)
    assert set(mapped) == set(net.state_dict())
    opts = edm_network_options(state)
    size = SIZES[name]
    assert (opts["layers"], opts["hidden"], opts["sublayers"]) == (
        size["layers"], size["hidden"], size["sublayers"])
    assert opts["edge_features"] == (24 if size["sin_embedding"] else 2)
    assert opts["in_dim"] == F + 1 and opts["attention"]
    with pytest.raises(ValueError, match="no place"):
        edm_to_harness_state_dict({**state, "dynamics.egnn.extra.weight": torch.zeros(1)}, F)


@pytest.mark.parametrize("name", list(SIZES))
def test_network_output_matches_edm(name):
    d, net = _fix(name), _net(name)
    mask = d["node_mask"].bool()
    z = _to_harness(d["net_z"])
    with torch.no_grad():
        oh, ox = net(z[..., :F], z[..., F:], mask, d["net_t"])
    want = _to_harness(d["net_out"])
    assert _diff(torch.cat([oh, ox], -1), want) < TOL


@pytest.mark.parametrize("name", list(SIZES))
def test_l2_training_loss_matches_edm(name):
    d, net = _fix(name), _net(name)
    mask, T = d["node_mask"].bool(), int(d["T"])
    sched = make_schedule("polynomial_2", T)
    with torch.no_grad():
        loss = E.edm_l2_loss(_eps_fn(net, mask, T, f32_time=True), _z0(d), mask, d["l2_t"],
                             _to_harness(d["l2_eps"]), sched)
    assert d["l2_t"][0] == 0                      # the t = 0 branch is covered
    assert _diff(loss, d["l2_loss"]) < TOL


@pytest.mark.parametrize("name", list(SIZES))
def test_vlb_with_log_pn_matches_edm(name):
    d, net = _fix(name), _net(name)
    mask, T = d["node_mask"].bool(), int(d["T"])
    sched = make_schedule("polynomial_2", T)
    hist = torch.zeros(int(d["hist_n"].max()) + 1, dtype=torch.float64)
    hist[d["hist_n"]] = d["hist_count"].double()
    log_pn = E.log_p_n(hist, mask.sum(1))
    assert _diff(log_pn, d["log_pn"]) < TOL
    with torch.no_grad():
        out = E.edm_vlb(_eps_fn(net, mask, T, f32_time=True), _z0(d), mask, d["vlb_t"],
                        _to_harness(d["vlb_eps"]), _to_harness(d["vlb_eps0"]), sched,
                        log_pn=log_pn)
    # the NLL of a random network reaches 5e4 nats (T * SNR-weighted error at t = 1)
    assert _diff(out["nll"], d["vlb_nll"]) < TOL
    assert _diff(out["nll"] + out["log_pn"], d["vlb_nll_no_pn"]) < TOL
    terms = out["kl_prior"] + out["diffusion"] + out["neg_log_constants"] + out["loss_0"]
    assert _diff(terms - out["delta_log_px"] - out["log_pn"], out["nll"]) < 1e-9


@pytest.mark.parametrize("name", list(SIZES))
def test_reverse_step_and_final_step_match_edm(name):
    d, net = _fix(name), _net(name)
    mask, T = d["node_mask"].bool(), int(d["T"])
    sched = make_schedule("polynomial_2", T)
    smp = make_sampler("edm", sched)
    fn = _eps_fn(net, mask, T)
    t = int(d["step_t"])
    z = _to_harness(d["step_zt"])
    with torch.no_grad():
        eps = fn(z, torch.full((3,), t))
    a, s = sched.alpha(t, torch.float64), sched.sigma(t, torch.float64)
    zs = smp.step(z, t, t - 1, eps=eps, x0=(z - s * eps) / a, noise=_to_harness(d["step_eps"]))
    from harness.core.nn import remove_mean
    zs = torch.cat([zs[..., :F], remove_mean(zs[..., F:], mask)], -1)
    assert _diff(zs, _to_harness(d["step_zs"])) < TOL
    # final p(x | z_0): coordinates sampled, types and charges read from z_0
    z0 = _to_harness(d["final_z0"])
    with torch.no_grad():
        eps = fn(z0, torch.zeros(3, dtype=torch.long))
    a, s = sched.alpha(0, torch.float64), sched.sigma(0, torch.float64)
    out = smp.step(z0, 0, 0, eps=eps, x0=(z0 - s * eps) / a, noise=_to_harness(d["final_eps"]))
    assert _diff(out[..., F:] * mask[..., None], d["final_x"]) < TOL
    types = torch.nn.functional.one_hot(z0[..., :5].argmax(-1), 5) * mask[..., None]
    assert torch.equal(types.double(), d["final_onehot"])
    charges = torch.round(z0[..., 5] * 10) * mask
    assert torch.equal(charges, d["final_charges"])
    assert smp.pairs()[-1] == (0, 0) and smp.nfe == T + 1


@pytest.mark.parametrize("T", [1000, 500])
def test_polynomial_2_schedule_is_edms_gamma(T):
    d = np.load(FIX / "schedule.npz")
    sched = make_schedule("polynomial_2", T)
    g = E.gamma(sched, torch.arange(T + 1), torch.zeros(1, dtype=torch.float64))
    assert _diff(g, torch.from_numpy(d[f"gamma64_{T}"])) < 1e-9
    # EDM keeps the table in float32: equal to its rounding
    assert torch.equal(g.float(), torch.from_numpy(d[f"gamma32_{T}"]))


def test_edm_gamma_is_read_from_weights():
    state = torch.load(FIX / "small.weights.pt", weights_only=True)
    assert edm_gamma(state).shape == (int(_fix("small")["T"]) + 1,)
