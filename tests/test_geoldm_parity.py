"""Parity with GeoLDM's own code (Xu et al., 2023): same weights, inputs and noise give the same
encoder means, decoder output, latent network output, training losses and reverse steps, in
float64, to 1e-5.

Reference values come from ``tests/fixtures/geoldm_parity/make_geoldm_fixtures.py`` (GeoLDM
run once, outside the product; README there). Two sizes: ``small`` (2 blocks x 16, 1 GCL,
sum / 1, k = 1) and ``large`` (2 blocks x 24, 2 GCLs, sin_embedding, sum / 100, k = 2).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from generators.families.diffusion.geoldm_objective import (geoldm_latent_l2_loss,
                                                            geoldm_latent_z0)
from generators.families.diffusion.samplers import make_sampler
from generators.families.diffusion.schedules import make_schedule
from harness.core.nn import remove_mean
from harness.core.registry import DENOISERS
from harness.core.types import LatentSpec
from harness.importers.geoldm_weights import (geoldm_denoiser_state_dict,
                                              geoldm_network_options, geoldm_space_state_dict)
from spaces._geoldm import GEOLDM_SIGMA, GeoLDMAutoencoder

FIX = Path(__file__).parent / "fixtures" / "geoldm_parity"
ELEMENTS = ("H", "C", "N", "O", "F")
SIZES = {"small": dict(hidden=16, layers=2, sublayers=1, agg_norm=1.0, sin_embedding=False, k=1),
         "large": dict(hidden=24, layers=2, sublayers=2, agg_norm=100.0, sin_embedding=True, k=2)}
TOL = 1e-5
DIFFS: dict[tuple[str, str], float] = {}


def _fix(name):
    d = np.load(FIX / f"{name}.npz")
    return {k: torch.from_numpy(d[k]) for k in d.files}


def _state(name):
    return torch.load(FIX / f"{name}.weights.pt", weights_only=True)


def _h(z):
    """GeoLDM's ``[x, h]`` -> the harness's ``[h, x]``."""
    return torch.cat([z[..., 3:], z[..., :3]], -1)


def _ae(name):
    s = dict(SIZES[name])
    k = s.pop("k")
    ae = GeoLDMAutoencoder(ELEMENTS, k, latent_noise=GEOLDM_SIGMA, kl_weight=0.01, **s).double()
    ae.load_state_dict(geoldm_space_state_dict(_state(name), k))
    return ae.eval(), k


def _net(name):
    s = SIZES[name]
    spec = LatentSpec("per_atom", width=s["k"], has_coords=True)
    opts = {k: s[k] for k in ("hidden", "layers", "sublayers", "agg_norm", "sin_embedding")}
    net = DENOISERS.get("egnn_edm")(spec, **opts).double()
    net.load_state_dict(geoldm_denoiser_state_dict(_state(name), s["k"]))
    return net.eval()


def _eps_fn(net, k, mask, T, f32_time=False):
    """The latent network as eps(z, t); ``f32_time``: ``t / T`` in float32 as GeoLDM's
    ``compute_loss`` computes it (``torch.randint(...).float() / T``)."""
    def fn(z, t):
        tf = (t.float() / T).to(z.dtype) if f32_time else t.to(z.dtype) / T
        oh, ox = net(z[..., :k], z[..., k:], mask, tf)
        return torch.cat([oh, ox], -1)
    return fn


def _feat(d):
    return torch.cat([d["onehot"], d["charges"][..., None]], -1)


def _check(name, what, got, want):
    diff = float((got - want).abs().max())
    DIFFS[(name, what)] = diff
    assert diff < TOL, f"{name} {what}: max abs diff {diff:.2e}"


@pytest.mark.parametrize("name", list(SIZES))
def test_weight_mapping_is_complete_and_sizes_are_read(name):
    ae, k = _ae(name)
    mapped = geoldm_space_state_dict(_state(name), k)
    assert set(mapped) == set(ae.state_dict())
    assert set(geoldm_denoiser_state_dict(_state(name), k)) == set(_net(name).state_dict())
    o, s = geoldm_network_options(_state(name)), SIZES[name]
    assert (o["k"], o["n_features"], o["hidden"], o["layers"], o["encoder_layers"],
            o["sublayers"]) == (s["k"], 6, s["hidden"], s["layers"], 1, s["sublayers"])
    assert o["edge_features"] == (24 if s["sin_embedding"] else 2)
    assert o["dynamics"]["in_dim"] == s["k"] + 1
    with pytest.raises(ValueError, match="no place"):
        geoldm_space_state_dict({**_state(name), "vae.extra.weight": torch.zeros(1)}, k)


@pytest.mark.parametrize("name", list(SIZES))
def test_encoder_matches_geoldm(name):
    d, (ae, k) = _fix(name), _ae(name)
    mask = d["node_mask"].bool()
    with torch.no_grad():
        h, x = ae.encode_features(_feat(d), d["x"], mask)
        h2, x2 = ae.encode(d["onehot"].argmax(-1), d["x"], mask)     # from type indices
    _check(name, "encoder_h", h, d["enc_h"])
    _check(name, "encoder_x", x, d["enc_x"])
    assert torch.equal(h, h2) and torch.equal(x, x2)
    assert float(d["enc_sigma"]) == GEOLDM_SIGMA


@pytest.mark.parametrize("name", list(SIZES))
def test_decoder_matches_geoldm(name):
    d, (ae, k) = _fix(name), _ae(name)
    mask = d["node_mask"].bool()
    z = _h(d["dec_z"])
    with torch.no_grad():
        out, pos = ae.decode_features(z[..., :k], z[..., k:], mask)
        logits, pos2 = ae.decode(z[..., :k], z[..., k:], mask)
    _check(name, "decoder_x", pos, d["dec_x"])
    _check(name, "decoder_h", out, d["dec_h"])
    onehot = torch.nn.functional.one_hot(logits.argmax(-1), 5) * mask[..., None]
    assert torch.equal(onehot.double(), d["dec_onehot"]) and torch.equal(pos, pos2)
    assert torch.equal(torch.round(out[..., -1]) * mask, d["dec_charges"])


@pytest.mark.parametrize("name", list(SIZES))
def test_latent_network_matches_geoldm(name):
    d, net, k = _fix(name), _net(name), SIZES[name]["k"]
    mask = d["node_mask"].bool()
    z = _h(d["net_z"])
    with torch.no_grad():
        oh, ox = net(z[..., :k], z[..., k:], mask, d["net_t"])
    _check(name, "latent_network", torch.cat([oh, ox], -1), _h(d["net_out"]))


@pytest.mark.parametrize("name", list(SIZES))
def test_training_losses_match_geoldm(name):
    """The latent diffusion's l2 loss with the trainable autoencoder's reconstruction term
    (GeoLDM's released QM9 setting), t = 0 / 17 / T; and the first-stage VAE loss."""
    d, net, (ae, k) = _fix(name), _net(name), _ae(name)
    mask, T = d["node_mask"].bool(), int(d["T"])
    sched = make_schedule("polynomial_2", T)
    feat = _feat(d)
    with torch.no_grad():
        h, x = ae.encode_features(feat, d["x"], mask)
        z0 = geoldm_latent_z0(torch.cat([h, x], -1), mask, _h(d["l2_eps_latent"]), sched)
        ld = geoldm_latent_l2_loss(_eps_fn(net, k, mask, T, f32_time=True), z0, mask,
                                   d["l2_t"], _h(d["l2_eps"]), sched)
        rec = ae.reconstruction_error(*ae.decode_features(z0[..., :k], z0[..., k:], mask),
                                      feat, d["x"], mask)
        vae = ae.vae_loss(feat, d["x"], mask, _h(d["vae_eps"]))
    assert d["l2_t"][0] == 0                       # the t = 0 branch is covered
    _check(name, "training_loss", ld + rec, d["l2_loss"])
    _check(name, "vae_loss", vae, d["vae_loss"])


@pytest.mark.parametrize("name", list(SIZES))
def test_reverse_step_final_step_and_decoding_match_geoldm(name):
    d, net, (ae, k) = _fix(name), _net(name), _ae(name)
    mask, T = d["node_mask"].bool(), int(d["T"])
    sched = make_schedule("polynomial_2", T)
    smp = make_sampler("edm", sched)
    fn = _eps_fn(net, k, mask, T)
    t = int(d["step_t"])
    z = _h(d["step_zt"])
    with torch.no_grad():
        eps = fn(z, torch.full((3,), t))
    a, s = sched.alpha(t, torch.float64), sched.sigma(t, torch.float64)
    zs = smp.step(z, t, t - 1, eps=eps, x0=(z - s * eps) / a, noise=_h(d["step_eps"]))
    zs = torch.cat([zs[..., :k], remove_mean(zs[..., k:], mask)], -1)
    _check(name, "reverse_step", zs, _h(d["step_zs"]))
    # GeoLDM's p(z | z_0) samples every latent column, then decodes
    z0 = _h(d["final_z0"])
    with torch.no_grad():
        eps = fn(z0, torch.zeros(3, dtype=torch.long))
        a, s = sched.alpha(0, torch.float64), sched.sigma(0, torch.float64)
        zf = smp.step(z0, 0, 0, eps=eps, x0=(z0 - s * eps) / a, noise=_h(d["final_eps"]))
        zf = zf * mask[..., None]
        out, pos = ae.decode_features(zf[..., :k], zf[..., k:], mask)
    _check(name, "final_step", zf, _h(d["final_z"]))
    _check(name, "decoded_x", pos, d["final_x"])
    types = torch.nn.functional.one_hot(out[..., :5].argmax(-1), 5) * mask[..., None]
    assert torch.equal(types.double(), d["final_onehot"])
    assert torch.equal(torch.round(out[..., -1]) * mask, d["final_charges"])


def test_zz_report_largest_differences(capsys):
    """Prints the largest difference per quantity and size (``pytest -s``)."""
    with capsys.disabled():
        for (name, what), v in sorted(DIFFS.items()):
            print(f"  geoldm parity {name:5s} {what:15s} {v:.1e}")
