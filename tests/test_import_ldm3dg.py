"""``l3dg import ldm3dg DIR`` on a folder laid out as LDM-3DG ships its unconditional QM9
models, built here from small random state dicts with the original's parameter names (no
network, no original code): read with weights-only loading, identified, then refused with
one line per part and what to do instead; malicious and foreign checkpoints refused."""
import os
from pathlib import Path

import pytest
import torch

from harness.importers.ldm3dg import (
    LAYOUT,
    LDM3DGImportError,
    import_ldm3dg,
    inspect_ldm3dg,
)


def _ckpt(path: Path, state: dict) -> None:
    """A Lightning-style checkpoint (epoch, global_step, state_dict, version)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 3, "global_step": 120, "pytorch-lightning_version": "1.9.0",
                "state_dict": state, "callbacks": {"ModelCheckpoint": {"best_model_path": "x"}}},
               path)


def _topology(hidden=12, latent=4, vocab=7):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)
    return {"model.encoder.E_c.0.weight": r(vocab, hidden),
            "model.encoder.tree_encoder.rnn.W_i.0.weight": r(hidden, 2 * hidden),
            "model.encoder.W_root.0.weight": r(hidden, hidden),
            "model.decoder.W_o.weight": r(vocab, hidden),
            "model.R_mean.weight": r(latent, hidden), "model.R_mean.bias": r(latent),
            "model.R_var.weight": r(latent, hidden), "model.R_var.bias": r(latent)}


def _geometry(width=10):
    return {"encoder_3d.emb_in.weight": torch.randn(16, 118),
            "encoder_3d.pred.2.weight": torch.randn(width, 16),
            "decoder_2dto3d.encoder.layers.0.weight": torch.randn(16, 16)}


def _ddpm(dim_in=20, hidden=16, layers=2, T=50):
    state = {"model.backbone.embedding_layer.weight": torch.randn(T, hidden)}
    for half, (d_in, d_out) in (("linear_model1", (dim_in, hidden)), ("linear_model2", (hidden, dim_in))):
        sizes = [(hidden, d_in)] + [(hidden, hidden)] * layers + [(d_out, hidden)]
        for i, (o, n) in enumerate(sizes):
            state[f"model.backbone.{half}.layers.{i}.weight"] = torch.randn(o, n)
            state[f"model.backbone.{half}.layers.{i}.bias"] = torch.randn(o)
    return state


@pytest.fixture
def released(tmp_path):
    root = tmp_path / "ldm3dg"
    _ckpt(root / LAYOUT["topology AE"] / "last.ckpt", _topology())
    _ckpt(root / LAYOUT["geometry AE"] / "last.ckpt", _geometry())
    _ckpt(root / LAYOUT["latent DDPM"] / "checkpoint-best.ckpt", _ddpm())
    (root / "AE_topo_weights_and_data" / "vocab.txt").write_text("C1=CC=CC=C1 C1=CC=C[CH:1]C=C1\nCC C[CH3:1]\n")
    return root


def test_release_is_read_and_identified(released):
    report = inspect_ldm3dg(released)
    assert report["vocab"] == 2
    assert "root vector 12-d -> R_mean 4-d" in report["topology AE"]["found"]
    assert "LSTM" in report["topology AE"]["found"]
    assert "2D->3D conformer decoder" in report["geometry AE"]["found"]
    assert report["latent DDPM"]["found"] == ("20-d latent, residual MLP width 16 x 2 layers "
                                              "per half, T = 50")
    assert report["latent DDPM"]["file"].endswith("checkpoint-best.ckpt")


def test_import_refuses_with_the_reason_and_writes_nothing(released, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(LDM3DGImportError) as err:
        import_ldm3dg(released, out)
    text = str(err.value)
    for part in ("topology AE", "geometry AE", "latent DDPM", "vocabulary 2 motifs",
                 "no counterpart", "What you can do", "topology: hiervae", "l3dg eval"):
        assert part in text, part
    assert not out.exists()


def test_missing_parts_are_named(released):
    os.remove(released / LAYOUT["geometry AE"] / "last.ckpt")
    with pytest.raises(LDM3DGImportError, match="missing AE_geom_uncond_weights_and_data/"
                                                "job16_decoder_2d_to_3d/last.ckpt"):
        inspect_ldm3dg(released)
    with pytest.raises(LDM3DGImportError, match="not a folder"):
        inspect_ldm3dg(released / "nope")


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/ldm3dg_pwned",))


def test_checkpoint_that_runs_code_is_refused_unrun(released):
    path = released / LAYOUT["topology AE"] / "last.ckpt"
    torch.save({"state_dict": _topology(), "hyper_parameters": _Boom()}, path)
    if os.path.exists("/tmp/ldm3dg_pwned"):
        os.remove("/tmp/ldm3dg_pwned")
    with pytest.raises(LDM3DGImportError, match="refused by weights-only loading.*nothing was run"):
        inspect_ldm3dg(released)
    assert not os.path.exists("/tmp/ldm3dg_pwned")


def test_foreign_checkpoint_is_named(released):
    _ckpt(released / LAYOUT["latent DDPM"] / "last.ckpt", {"net.weight": torch.zeros(2, 2)})
    with pytest.raises(LDM3DGImportError, match="not LDM-3DG's latent DDPM"):
        inspect_ldm3dg(released)


def test_cli_prints_the_refusal(released, capsys):
    from harness.cli import main

    assert main(["import", "ldm3dg", str(released)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("l3dg import: error:") and "no counterpart" in err and "What you can do" in err
