"""EDM's EGNN state dict -> the harness's ``egnn`` / ``egnn_edm`` denoiser parameters.

EDM (``EnVariationalDiffusion``) stores its network under ``dynamics.egnn.`` (optionally
behind ``module.`` from ``DataParallel``) with these names; each maps onto
:class:`harness.core.nn.DenseEGNN` inside the denoiser (``net.``) one to one, same shapes
(the harness's ``PairLinear`` keeps the concatenated ``Linear``'s layout):

=============================================  ==========================================
EDM                                            harness
=============================================  ==========================================
``embedding.{weight,bias}``                    ``net.embedding.*``
``e_block_i.gcl_k.edge_mlp.0.*``               ``net.blocks.i.gcls.k.edge_in.*``
``e_block_i.gcl_k.edge_mlp.2.*``               ``net.blocks.i.gcls.k.edge_out.*``
``e_block_i.gcl_k.att_mlp.0.*``                ``net.blocks.i.gcls.k.att.*``
``e_block_i.gcl_k.node_mlp.{0,2}.*``           ``net.blocks.i.gcls.k.node_mlp.{0,2}.*``
``e_block_i.gcl_equiv.coord_mlp.0.*``          ``net.blocks.i.coord.edge_in.*``
``e_block_i.gcl_equiv.coord_mlp.2.*``          ``net.blocks.i.coord.hidden.*``
``e_block_i.gcl_equiv.coord_mlp.4.weight``     ``net.blocks.i.coord.out.weight``
``embedding_out.{weight,bias}`` (rows: F        ``net.embedding_out.*`` (the first F rows:
features, time, context)                       the time / context outputs are unused)
=============================================  ==========================================

``gamma.gamma`` (EDM's float32 gamma table) and ``buffer`` are not network weights;
:func:`edm_gamma` returns the table so an importer can check it against the schedule.
"""
from __future__ import annotations

import re
from typing import Any

import torch

__all__ = ["edm_to_harness_state_dict", "edm_network_options", "edm_gamma", "EDM_PREFIX"]

EDM_PREFIX = "dynamics.egnn."

_GCL = {"edge_mlp.0": "edge_in", "edge_mlp.2": "edge_out", "att_mlp.0": "att",
        "node_mlp.0": "node_mlp.0", "node_mlp.2": "node_mlp.2"}
_COORD = {"coord_mlp.0": "edge_in", "coord_mlp.2": "hidden", "coord_mlp.4": "out"}


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without a leading ``module.`` (DataParallel)."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _network(state: dict[str, torch.Tensor], source: str = EDM_PREFIX) -> dict[str, torch.Tensor]:
    state = _strip(state)
    net = {k[len(source):]: v for k, v in state.items() if k.startswith(source)}
    if not net:
        raise ValueError(f"not an EDM EGNN state dict: no key starts with {source!r} "
                         f"(first keys: {list(state)[:3]})")
    return net


def edm_gamma(state: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """EDM's predefined gamma table ``[T + 1]`` (None for a learned schedule)."""
    return _strip(state).get("gamma.gamma")


def edm_network_options(state: dict[str, torch.Tensor],
                        source: str = EDM_PREFIX) -> dict[str, Any]:
    """What the weights fix: ``{"in_dim", "hidden", "layers", "sublayers", "attention",
    "edge_features"}`` (``edge_features``: 2 plain distances, 24 with ``sin_embedding``) of
    the EGNN under ``source`` (GeoLDM also keeps ``vae.encoder.egnn.`` and
    ``vae.decoder.egnn.``)."""
    net = _network(state, source)
    hidden, in_dim = net["embedding.weight"].shape
    blocks = {int(m.group(1)) for k in net if (m := re.match(r"e_block_(\d+)\.", k))}
    subs = {int(m.group(1)) for k in net if (m := re.match(r"e_block_0\.gcl_(\d+)\.", k))}
    edge = net["e_block_0.gcl_equiv.coord_mlp.0.weight"].shape[1] - 2 * hidden
    return {"in_dim": int(in_dim), "hidden": int(hidden), "layers": len(blocks),
            "sublayers": len(subs), "attention": "e_block_0.gcl_0.att_mlp.0.weight" in net,
            "edge_features": int(edge)}


def edm_to_harness_state_dict(state: dict[str, torch.Tensor], n_features: int,
                              prefix: str = "net.",
                              source: str = EDM_PREFIX) -> dict[str, torch.Tensor]:
    """Map EDM's state dict (the whole ``EnVariationalDiffusion`` or its ``dynamics``
    prefixed as EDM saves it) onto an ``egnn`` denoiser's state dict.

    Args:
        state: EDM's state dict (tensors).
        n_features: ``F``, the latent's feature width (EDM: types + charge); the first ``F``
            rows of ``embedding_out`` are kept.
        prefix: where the ``DenseEGNN`` sits in the target module (``net.`` in a denoiser).
        source: where EDM's ``EGNN`` sits in ``state`` (``dynamics.egnn.``; GeoLDM's
            autoencoder: ``vae.encoder.egnn.`` / ``vae.decoder.egnn.``).

    Raises:
        ValueError: a key that is not part of EDM's EGNN layout, or an output layer narrower
            than ``F``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in _network(state, source).items():
        m = re.fullmatch(r"e_block_(\d+)\.gcl_(\d+)\.(\w+\.\d+)\.(weight|bias)", key)
        if m and m.group(3) in _GCL:
            i, k, layer, kind = m.groups()
            out[f"{prefix}blocks.{i}.gcls.{k}.{_GCL[layer]}.{kind}"] = value
            continue
        m = re.fullmatch(r"e_block_(\d+)\.gcl_equiv\.(\w+\.\d+)\.(weight|bias)", key)
        if m and m.group(2) in _COORD:
            i, layer, kind = m.groups()
            out[f"{prefix}blocks.{i}.coord.{_COORD[layer]}.{kind}"] = value
            continue
        if key in ("embedding.weight", "embedding.bias"):
            out[prefix + key] = value
            continue
        if key in ("embedding_out.weight", "embedding_out.bias"):
            if value.shape[0] < n_features:
                raise ValueError(f"EDM's embedding_out has {value.shape[0]} outputs, fewer than "
                                 f"the latent's {n_features} features")
            out[prefix + key] = value[:n_features].clone()
            continue
        raise ValueError(f"EDM weight {source}{key} has no place in the harness's EGNN")
    return out
