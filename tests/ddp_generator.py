"""Generator fits under Lightning DDP on the CPU (gloo), for tests/test_ddp.py.

    python tests/ddp_generator.py OUT_DIR

Lightning's ``strategy="ddp"`` re-runs this file once per extra rank (its subprocess
launcher), so every rank executes the same fits in the same order:

* ``equiv``: :class:`PerMoleculeNoise` (below), 2 ranks x 4 molecules, 3 steps;
* ``full``: the product ``DiffusionGenerator``, 2 ranks, 4 steps;
* ``resume``: the same, 2 steps, then a fresh generator resumed from its checkpoint to 4.

Each rank saves its final denoiser/EMA weights of each fit to ``OUT/weights/<fit>.rank<r>.pt``
and records its file writes in ``OUT/audit`` (tests/write_audit.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generators import DiffusionGenerator  # noqa: E402
from generators.data import mix_seed  # noqa: E402
from harness.core.types import LatentBatch, LatentSpec  # noqa: E402

SPEC = LatentSpec("vector", 4)
OPTIONS = dict(denoiser="mlp", denoiser_kwargs=dict(width=16, depth=1), timesteps=50, lr=1e-2,
               ema_decay=0.9, grad_clip=1.0)
PER_RANK_BATCH = 4


def latents(n: int = 64) -> LatentBatch:
    g = torch.Generator().manual_seed(0)
    return LatentBatch(h=torch.randn(n, SPEC.width, generator=g) * 2 + 1, spec=SPEC)


class PerMoleculeNoise(DiffusionGenerator):
    """The diffusion loss with randomness keyed by a molecule's position in the *global*
    batch instead of by rank, so any number of ranks draws the same noise for the same
    molecule. (The product draws one stream per rank: statistically the same, but not
    bit-comparable across world sizes.) Position ``p = i * world + rank`` for local row
    ``i``: ``LatentDataModule`` gives rank ``r`` rows ``r::world`` of the global batch."""

    def loss(self, net, z0, mask, ctx, generator):
        world = self.trainer.world_size if self._trainer is not None else 1
        rank = self.trainer.global_rank if self._trainer is not None else 0
        step = int(self.global_step)
        losses = []
        for i in range(z0.shape[0]):
            g = torch.Generator(device=z0.device).manual_seed(mix_seed(self.seed, 9, step, i * world + rank))
            losses.append(super().loss(net, z0[i:i + 1], None if mask is None else mask[i:i + 1],
                                       None if ctx is None else ctx[i:i + 1], g))
        return torch.stack(losses).mean()


def weights(gen) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in gen.state_dict().items()
            if k.startswith(("denoiser.", "ema."))}


def fit(cls, out: Path, steps: int, *, devices: int, batch: int, resume: bool = False):
    torch.manual_seed(0)
    gen = cls(SPEC, seed=0, **OPTIONS)
    kwargs = dict(accelerator="cpu", devices=devices)
    if devices > 1:
        kwargs["strategy"] = "ddp"
    stats = gen.fit(latents(), None, out, max_steps=steps, batch_size=batch, progress=False,
                    trainer_kwargs=kwargs, resume=resume, checkpoint_every=2)
    return gen, stats


def main(out: Path) -> None:
    import write_audit

    write_audit.install(out / "audit")
    torch.set_num_threads(1)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    runs = {}
    runs["equiv"] = fit(PerMoleculeNoise, out / "equiv", 3, devices=2, batch=PER_RANK_BATCH)[0]
    runs["full"] = fit(DiffusionGenerator, out / "full", 4, devices=2, batch=PER_RANK_BATCH)[0]
    fit(DiffusionGenerator, out / "resume", 2, devices=2, batch=PER_RANK_BATCH)
    gen, stats = fit(DiffusionGenerator, out / "resume", 4, devices=2, batch=PER_RANK_BATCH, resume=True)
    assert stats["resumed_from"], "the second fit did not resume"
    runs["resume"] = gen
    rank = runs["full"].global_rank
    for name, g in runs.items():   # through open(): the write audit sees every rank's file
        with open(out / "weights" / f"{name}.rank{rank}.pt", "wb") as fh:
            torch.save({"weights": weights(g), "steps": int(g.global_step)}, fh)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
