"""GeoLDM's state dict -> the harness's ``per_atom`` space (``autoencoder="geoldm"``) and
``egnn_edm`` latent denoiser parameters.

GeoLDM's ``EnLatentDiffusion.state_dict()`` (optionally behind ``module.``) holds three EDM
EGNNs and one MLP; each maps one to one (same shapes) through EDM's EGNN layout
(:mod:`.edm_weights`):

=======================================  =================================================
GeoLDM                                   harness
=======================================  =================================================
``dynamics.egnn.*``                      denoiser ``net.*`` (``embedding_out``: first ``k``
                                         rows; the time row is unused)
``vae.encoder.egnn.*``                   space ``encoder.*``
``vae.encoder.final_mlp.0.*``            space ``encoder_head.0.*``
``vae.encoder.final_mlp.2.*`` (2k + 1)   space ``encoder_head.2.*``: rows ``1 .. k`` (the
                                         means; row 0 and the last ``k`` give GeoLDM's
                                         discarded standard deviations)
``vae.decoder.egnn.*``                   space ``decoder.*``
``gamma.gamma``, ``buffer``,             not weights (:func:`geoldm_gamma` returns the
``vae.buffer``                           table for the schedule check)
=======================================  =================================================
"""
from __future__ import annotations

from typing import Any

import torch

from .edm_weights import _strip, edm_network_options, edm_to_harness_state_dict

__all__ = ["geoldm_space_state_dict", "geoldm_denoiser_state_dict", "geoldm_network_options",
           "ENCODER", "DECODER", "DYNAMICS"]

DYNAMICS, ENCODER, DECODER = "dynamics.egnn.", "vae.encoder.egnn.", "vae.decoder.egnn."
HEAD = "vae.encoder.final_mlp."
_NOT_WEIGHTS = {"gamma.gamma", "buffer", "vae.buffer"}


def _check_known(state: dict[str, torch.Tensor]) -> None:
    for key in state:
        if key in _NOT_WEIGHTS or key.startswith((DYNAMICS, ENCODER, DECODER)):
            continue
        if key in {f"{HEAD}{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}:
            continue
        raise ValueError(f"GeoLDM weight {key} has no place in the harness's per_atom space "
                         f"or egnn_edm denoiser")


def geoldm_network_options(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What the weights fix: ``{"k", "n_features" (T + c), "hidden", "layers" (decoder),
    "encoder_layers", "sublayers", "attention", "edge_features", "dynamics": {...}}``
    (``dynamics``: :func:`.edm_weights.edm_network_options` of the latent network)."""
    state = _strip(state)
    _check_known(state)
    enc, dec = edm_network_options(state, ENCODER), edm_network_options(state, DECODER)
    head = state[f"{HEAD}2.weight"]
    k = (head.shape[0] - 1) // 2
    if head.shape[0] != 2 * k + 1 or dec["in_dim"] != k:
        raise ValueError(f"GeoLDM's encoder head has {head.shape[0]} outputs and its decoder "
                         f"{dec['in_dim']} inputs; expected 2k + 1 and k")
    if (enc["hidden"], enc["sublayers"], enc["edge_features"], enc["attention"]) != (
            dec["hidden"], dec["sublayers"], dec["edge_features"], dec["attention"]):
        raise ValueError(f"GeoLDM's encoder ({enc}) and decoder ({dec}) differ in width, "
                         f"sublayers, distance features or attention")
    return {"k": int(k), "n_features": int(enc["in_dim"]), "hidden": dec["hidden"],
            "layers": dec["layers"], "encoder_layers": enc["layers"],
            "sublayers": dec["sublayers"], "attention": dec["attention"],
            "edge_features": dec["edge_features"],
            "dynamics": edm_network_options(state, DYNAMICS)}


def geoldm_space_state_dict(state: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """GeoLDM's first stage -> ``GeoLDMAutoencoder.state_dict()`` (``k`` latent features)."""
    state = _strip(state)
    _check_known(state)
    out = edm_to_harness_state_dict(state, state[f"{ENCODER}embedding_out.weight"].shape[0],
                                    prefix="encoder.", source=ENCODER)
    out.update(edm_to_harness_state_dict(state, state[f"{DECODER}embedding_out.weight"].shape[0],
                                         prefix="decoder.", source=DECODER))
    out["encoder_head.0.weight"] = state[f"{HEAD}0.weight"].clone()
    out["encoder_head.0.bias"] = state[f"{HEAD}0.bias"].clone()
    out["encoder_head.2.weight"] = state[f"{HEAD}2.weight"][1:1 + k].clone()
    out["encoder_head.2.bias"] = state[f"{HEAD}2.bias"][1:1 + k].clone()
    return out


def geoldm_denoiser_state_dict(state: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """GeoLDM's latent dynamics -> an ``egnn_edm`` denoiser on a width-``k`` latent."""
    state = _strip(state)
    _check_known(state)
    return edm_to_harness_state_dict(state, k, source=DYNAMICS)
