"""The network-level conformance checks of ``conformance_kinds``: denoisers (shapes, masks,
context, symmetry with e3nn's random rotations) and generator families (two training steps
and sampling on toy latents). Small sizes throughout: a check takes seconds on a CPU."""
from __future__ import annotations

import tempfile
from typing import Any

import torch

from harness.checks.spaces import ConformanceReport, _check
from harness.core.types import LatentBatch, LatentSpec

#: small options for the built-in denoisers (a plug-in may declare ``test_options()``)
_SMALL = {"mlp": {"width": 32, "depth": 1}, "egnn": {"hidden": 16, "layers": 2},
          "e3nn": {}}


def _per_atom_input(B: int = 3, N: int = 6, F: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, 4:] = False                                  # a padded molecule
    h = torch.randn(B, N, F, generator=g) * mask[..., None]
    x = torch.randn(B, N, 3, generator=g) * mask[..., None]
    x = x - (x.sum(1, keepdim=True) / mask.sum(1)[:, None, None]) * mask[..., None]
    return h, x, mask, torch.rand(B, generator=g)


def _perturbed(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` with every weight nudged (zero-initialised output or context layers would
    hide whether the context reaches the output)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


@torch.no_grad()
def denoiser_checks(report: ConformanceReport, name: str, options: dict[str, Any]) -> None:
    """Rows ``kinds``, ``vector`` / ``per_atom`` (shapes, padding, context) and, for per-atom
    coordinates, ``permutation``, ``rotation``, ``translation``."""
    from e3nn import o3

    from harness.core.registry import DENOISERS

    cls = DENOISERS.get(name)
    opts = options or dict(getattr(cls, "test_options", lambda: _SMALL.get(name, {}))())
    kinds = tuple(getattr(cls, "kinds", ()))

    def declares():
        bad = set(kinds) - {"vector", "per_atom"}
        ok = bool(kinds) and not bad
        return ok, f"kinds {list(kinds)}" if ok else "declare kinds = ('vector',) and/or ('per_atom',)", None

    _check(report, "kinds", declares)
    torch.manual_seed(0)
    if "vector" in kinds:
        def vector():
            net = _perturbed(cls(LatentSpec("vector", 5), context_dim=3, **opts).eval())
            h, t = torch.randn(4, 5), torch.rand(4)
            c1, c2 = torch.randn(4, 3), torch.randn(4, 3)
            out = net(h, t, c1)
            ok = out.shape == (4, 5) and bool(torch.isfinite(out).all())
            uses = not torch.allclose(out, net(h, t, c2))
            return ok and uses, f"[4, 5] -> {tuple(out.shape)}" + ("" if uses else
                                                                  "; the context is ignored"), None

        _check(report, "vector", vector)
    if "per_atom" not in kinds:
        return
    spec = LatentSpec("per_atom", 4, has_coords=True)
    state: dict[str, Any] = {}

    def per_atom():
        net = _perturbed(cls(spec, context_dim=2, **opts).eval())
        state["net"] = net
        h, x, mask, t = _per_atom_input()
        ctx = torch.randn(3, 2)
        state["inputs"] = (h, x, mask, t, ctx)
        oh, ox = net(h, x, mask, t, ctx)
        state["out"] = (oh, ox)
        ok = oh.shape == h.shape and ox is not None and ox.shape == x.shape
        pad = float((oh[0, 4:].abs().max() + ox[0, 4:].abs().max()).detach())
        uses = not torch.allclose(oh, net(h, x, mask, t, torch.randn(3, 2))[0])
        ok = ok and pad == 0.0 and bool(torch.isfinite(oh).all()) and uses
        return ok, (f"h {tuple(oh.shape)}, x {tuple(ox.shape)}, padded rows {pad:.1e}"
                    + ("" if uses else "; the context is ignored")), pad

    _check(report, "per_atom", per_atom)
    if "net" not in state:
        return
    net, (h, x, mask, t, ctx), (oh, ox) = state["net"], state["inputs"], state["out"]
    equivariant = getattr(cls, "equivariant", True)

    def permutation():
        perm = torch.randperm(6)
        ph, px = net(h[:, perm], x[:, perm], mask[:, perm], t, ctx)
        err = float(max((ph - oh[:, perm]).abs().max(), (px - ox[:, perm]).abs().max()))
        return err < 1e-4, f"max error {err:.1e}", err

    def rotation():
        R = o3.rand_matrix()
        rh, rx = net(h, x @ R.T, mask, t, ctx)
        err = float(max((rh - oh).abs().max(), (rx - ox @ R.T).abs().max()))
        return err < 1e-4, f"max error {err:.1e} (h invariant, x rotates)", err

    def translation():
        shift = torch.randn(1, 1, 3) * mask[..., None]
        th, tx = net(h, x + shift, mask, t, ctx)
        err = float(max((th - oh).abs().max(), (tx - ox).abs().max()))
        return err < 1e-4, f"max error {err:.1e}", err

    _check(report, "permutation", permutation)
    if equivariant:
        _check(report, "rotation", rotation)
        _check(report, "translation", translation)


def _toy_latents(spec: LatentSpec, n: int = 64, seed: int = 0) -> LatentBatch:
    g = torch.Generator().manual_seed(seed)
    if spec.kind == "vector":
        return LatentBatch(torch.randn(n, spec.width, generator=g), spec)
    N = 5
    mask = torch.ones(n, N, dtype=torch.bool)
    mask[: n // 2, 4:] = False
    h = torch.randn(n, N, spec.width, generator=g) * mask[..., None]
    x = torch.randn(n, N, 3, generator=g) * mask[..., None]
    x = x - (x.sum(1, keepdim=True) / mask.sum(1)[:, None, None]) * mask[..., None]
    return LatentBatch(h, spec, x=x, mask=mask)


def family_training_checks(report: ConformanceReport, name: str, options: dict[str, Any]) -> None:
    """Rows ``train_sample.<kind>`` (two steps, finite samples of the right shape, zero CoM),
    ``deterministic`` and ``reload`` for a vector and a per-atom latent with coordinates."""
    from generators import build_generator, generator_class

    config = {"family": name, "batch_size": 16, "max_steps": 2, **options,
              "denoiser_options": {"mlp": {"width": 16, "depth": 1}, "egnn": {"hidden": 8, "layers": 1}}}
    for spec in (LatentSpec("vector", 3), LatentSpec("per_atom", 2, has_coords=True)):
        state: dict[str, Any] = {}

        def train_sample(spec=spec, state=state):
            gen = build_generator(spec, config, seed=0)
            with tempfile.TemporaryDirectory() as tmp:
                info = gen.fit(_toy_latents(spec), out_dir=tmp, progress=False)
            z = gen.sample(6, seed=1, progress=False)
            state["gen"], state["z"] = gen, z
            ok = info["steps"] == 2 and z.h.shape[0] == 6 and bool(torch.isfinite(z.h).all())
            com = 0.0
            if spec.has_coords:
                m = z.mask[..., None].to(z.x)
                com = float(((z.x * m).sum(1) / m.sum(1)).abs().max())
                ok = ok and bool(torch.isfinite(z.x).all()) and com < 1e-4
            return ok, f"{info['steps']} steps, samples {tuple(z.h.shape)}, |CoM| {com:.1e}", com

        _check(report, f"train_sample.{spec.kind}", train_sample)
        if "gen" not in state:
            continue
        gen, z = state["gen"], state["z"]

        def deterministic(gen=gen, z=z):
            again = gen.sample(6, seed=1, progress=False)
            same = torch.equal(again.h, z.h) and (z.x is None or torch.equal(again.x, z.x))
            return same, "same seed, same samples" if same else "same seed gave other samples", None

        def reload(gen=gen, z=z):
            fresh = generator_class(name)(**dict(gen.hparams))
            fresh.load_state_dict(gen.state_dict())
            again = fresh.sample(6, seed=1, progress=False)
            same = torch.equal(again.h, z.h) and (z.x is None or torch.equal(again.x, z.x))
            return same, "rebuilt from hparams + weights: same samples" if same else \
                "a reloaded generator samples differently", None

        _check(report, f"deterministic.{spec.kind}", deterministic)
        _check(report, f"reload.{spec.kind}", reload)
