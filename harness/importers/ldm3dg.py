"""``l3dg import ldm3dg DIR``: LDM-3DG's released unconditional QM9 models (You et al., ICLR
2024), read safely and then refused with the exact reason.

LDM-3DG ships its models as Lightning checkpoints in the folders its README unpacks from
Zenodo (records 11005382 and 11005378)::

    DIR/AE_topo_weights_and_data/vocab.txt                                  motif vocabulary
    DIR/AE_topo_weights_and_data/pretrained/last.ckpt                       topology AE (HierVAE)
    DIR/AE_geom_uncond_weights_and_data/job16_decoder_2d_to_3d/last.ckpt    geometry AE
    DIR/AE_geom_uncond_weights_and_data/job17_latent_ddpm_qm9/last.ckpt     latent DDPM

(``checkpoint-best*.ckpt`` is taken where ``last.ckpt`` is absent). :func:`inspect_ldm3dg`
reads every checkpoint with ``torch.load(weights_only=True)`` -- no code from the files runs;
a checkpoint that needs more than tensors and plain values is refused, naming what it asked
for -- and identifies each network from its parameter names and shapes (HierVAE's
``model.R_mean`` / ``model.encoder.*``; the geometry AE's ``encoder_3d.*`` /
``decoder_2dto3d.*``; the DDPM's ``model.backbone.linear_model{1,2}.layers.*`` and its time
embedding).

Why nothing is written: the harness's invariant space reproduces LDM-3DG's *method*, not its
networks. Its ``topology: hiervae`` is the harness's own HierVAE (other layers and parameter
names than the LSTM message passing of the release), its geometry AE is a DenseEGNN refiner
of an ETKDG start (the release decodes with a DMCG-style 2D->3D network), and the latent DDPM
is only meaningful with the two autoencoders whose latents it learned. :func:`import_ldm3dg`
therefore raises :class:`LDM3DGImportError` with one line per part (file, what was read,
why it cannot be mapped) and what the user can do instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["LAYOUT", "LDM3DGImportError", "import_ldm3dg", "inspect_ldm3dg"]

#: part -> path of its checkpoint folder under DIR (as LDM-3DG's README unpacks them)
LAYOUT = {
    "topology AE": "AE_topo_weights_and_data/pretrained",
    "geometry AE": "AE_geom_uncond_weights_and_data/job16_decoder_2d_to_3d",
    "latent DDPM": "AE_geom_uncond_weights_and_data/job17_latent_ddpm_qm9",
}
VOCAB = "AE_topo_weights_and_data/vocab.txt"

WHAT_TO_DO = (
    "What you can do: (1) train the paper's configuration with the harness's parts -- the "
    "invariant space with topology: hiervae and topo_width: 250 (README, \"topology: "
    "hiervae\"), e.g. `l3dg run qm9-paper spaces.invariant.topology=hiervae "
    "spaces.invariant.topo_width=250`; (2) score LDM-3DG's own molecules: generate them with "
    "its code (sample1/2/3_latent_ddpm_qm9_*.py), then `l3dg eval samples.sdf`.")


class LDM3DGImportError(ValueError):
    """LDM-3DG's folder cannot become a harness run (the message says why, part by part)."""


def _checkpoint(folder: Path) -> Path | None:
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    best = sorted(folder.glob("checkpoint-best*.ckpt"))
    return best[0] if best else None


def _load(path: Path) -> dict[str, Any]:
    """The checkpoint's state dict (weights only), or a LDM3DGImportError naming the file."""
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()
        reason = next((line for line in first if "GLOBAL" in line or "Unsupported" in line),
                      first[0] if first else type(err).__name__)
        raise LDM3DGImportError(
            f"{path}: refused by weights-only loading ({reason.strip()[:200]}); it needs code "
            "beyond tensors and plain values -- not loaded, nothing was run") from None
    except Exception as err:   # noqa: BLE001 - a damaged file is one line naming it
        raise LDM3DGImportError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                                f"{str(err)[:160]})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state:
        raise LDM3DGImportError(f"{path}: holds no state dict")
    return {k: v for k, v in state.items() if hasattr(v, "shape")}


def _shape(state: dict[str, Any], key: str) -> tuple[int, ...] | None:
    return tuple(state[key].shape) if key in state else None


def _describe_topology(state: dict[str, Any]) -> str:
    mean = _shape(state, "model.R_mean.weight")
    if mean is None or not any(k.startswith("model.encoder.") for k in state):
        raise LDM3DGImportError("topology AE: no model.R_mean / model.encoder.* parameters "
                                "(not LDM-3DG's HierVAE checkpoint)")
    lstm = any(".rnn." in k and ("W_i" in k or "weight_ih" in k or "W_o" in k) for k in state)
    return (f"HierVAE, root vector {mean[1]}-d -> R_mean {mean[0]}-d, "
            f"{'LSTM' if lstm else 'GRU'} message passing, {len(state)} tensors")


def _describe_geometry(state: dict[str, Any]) -> str:
    enc = [k for k in state if k.startswith("encoder_3d.")]
    dec = [k for k in state if k.startswith("decoder_2dto3d.")]
    if not enc or not dec:
        raise LDM3DGImportError("geometry AE: no encoder_3d.* / decoder_2dto3d.* parameters "
                                "(not LDM-3DG's 2D->3D autoencoder checkpoint)")
    return f"EGNN encoder ({len(enc)} tensors) + 2D->3D conformer decoder ({len(dec)} tensors)"


def _describe_ddpm(state: dict[str, Any]) -> str:
    first = _shape(state, "model.backbone.linear_model1.layers.0.weight")
    time = _shape(state, "model.backbone.embedding_layer.weight")
    if first is None or time is None:
        raise LDM3DGImportError("latent DDPM: no model.backbone.linear_model1 / embedding_layer "
                                "parameters (not LDM-3DG's latent DDPM checkpoint)")
    layers = sum(1 for k in state if k.startswith("model.backbone.linear_model1.layers.")
                 and k.endswith(".weight")) - 2
    return (f"{first[1]}-d latent, residual MLP width {first[0]} x {layers} layers per half, "
            f"T = {time[0]}")


_DESCRIBE = {"topology AE": _describe_topology, "geometry AE": _describe_geometry,
             "latent DDPM": _describe_ddpm}

WHY = {
    "topology AE": "the harness's topology: hiervae is its own HierVAE (other layers and "
                   "parameter names); these weights have no counterpart in it",
    "geometry AE": "the invariant space's geometry AE is a different network (a DenseEGNN "
                   "refiner of an ETKDG start); these weights have no counterpart in it",
    "latent DDPM": "readable, but its latents decode only through the two autoencoders above",
}


def inspect_ldm3dg(source: str | Path) -> dict[str, Any]:
    """Read the released folder (weights only) -> ``{part: {"file", "found"}}`` plus
    ``"vocab"`` (motif lines). Missing files and unreadable checkpoints raise
    :class:`LDM3DGImportError` naming them."""
    source = Path(source)
    if not source.is_dir():
        raise LDM3DGImportError(f"{source}: not a folder (expected LDM-3DG's unpacked "
                                f"AE_topo_weights_and_data/ and AE_geom_uncond_weights_and_data/)")
    files = {part: _checkpoint(source / sub) for part, sub in LAYOUT.items()}
    missing = [f"{LAYOUT[p]}/last.ckpt" for p, f in files.items() if f is None]
    if missing:
        raise LDM3DGImportError(f"{source}: missing {', '.join(missing)} (LDM-3DG's layout: "
                                + "; ".join(f"{p}: {s}/last.ckpt" for p, s in LAYOUT.items())
                                + f"; vocabulary {VOCAB})")
    report: dict[str, Any] = {}
    for part, path in files.items():
        report[part] = {"file": str(path), "found": _DESCRIBE[part](_load(path))}
    vocab = source / VOCAB
    report["vocab"] = (sum(1 for line in vocab.read_text().splitlines() if line.strip())
                       if vocab.is_file() else None)
    return report


def import_ldm3dg(source: str | Path, out_dir: str | Path | None = None, **_: Any) -> Path:
    """Always raises :class:`LDM3DGImportError`: after reading the folder safely, one line
    per part with what was found and why it cannot become a harness run, then what to do
    instead. Nothing is written to ``out_dir``."""
    report = inspect_ldm3dg(source)
    vocab = report.pop("vocab")
    lines = [(f"{source}: read (weights only), not imported -- LDM-3DG's released networks "
              "have no counterpart among the harness's:")]
    for part, info in report.items():
        extra = f", vocabulary {vocab} motifs" if part == "topology AE" and vocab else ""
        lines.append(f"  {part}: {info['file']} ({info['found']}{extra}): {WHY[part]}")
    lines.append(WHAT_TO_DO)
    raise LDM3DGImportError("\n".join(lines))
