"""``LatentGenerator``: the LightningModule every generator family shares.

A family (``DiffusionGenerator`` in ``module.py``, ``FlowGenerator`` in ``flow_module.py``)
adds only its training loss and its trajectory; this base owns what they have in common:

* the denoiser (registry name and options from :class:`~generators.config.GeneratorConfig`;
  initial weights a function of ``seed`` alone), its EMA copy (used for sampling and
  validation; warm-up ``min(decay, (1 + k) / (10 + k))`` after ``k`` updates), AdamW and
  gradient-norm clipping;
* the latent normaliser and the atom-count prior (buffers: they travel with checkpoints);
* the training and validation steps: all randomness (timesteps, noise, context dropout,
  dropout inside the denoiser) is drawn from generators seeded by ``(seed, step, rank)``,
  batches come from :class:`~generators.data.LatentDataModule` (a function of the global
  step), and the global RNG state is saved in checkpoints — so a resumed run continues
  bitwise as the uninterrupted one;
* :meth:`fit` (Trainer from ``generators/trainer.py``, resume from the newest readable
  checkpoint) and :meth:`sample` (the loop in ``generators/sampling.py``).

Checkpoints hold only tensors and plain values (``torch.load(weights_only=True)``); the
hyperparameters are ``{"spec", "config", "context_dim", "seed"}`` with ``config`` the dict
form of the generator config. :func:`generators.load_generator` rebuilds either family.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from harness.core.nn import tune_cpu_allocator
from harness.core.registry import DENOISERS, FAMILIES
from harness.core.types import LatentBatch, LatentSpec

from .config import GeneratorConfig
from .data import LatentDataModule, mix_seed
from .layout import LatentLayout
from .normalizer import LatentNormalizer
from .sampling import AtomCountPrior, sample_latents
from .trainer import build_trainer, find_resume_checkpoint, quiet_fit, read_checkpoint

__all__ = ["LatentGenerator", "spec_to_dict", "spec_from_dict"]


def spec_to_dict(spec: LatentSpec) -> dict:
    """Plain-data form of a spec (what the checkpoint's hyperparameters hold)."""
    d = dataclasses.asdict(spec)
    d["symmetry"] = [list(p) for p in spec.symmetry]
    return d


def spec_from_dict(d: dict | LatentSpec) -> LatentSpec:
    if isinstance(d, LatentSpec):
        return d
    if not isinstance(d, dict):
        raise TypeError(f"spec must be a LatentSpec or its dict form, got {type(d).__name__}")
    d = dict(d)
    d["symmetry"] = tuple(tuple(p) for p in d.get("symmetry", ()))
    return LatentSpec(**d)


class LatentGenerator(pl.LightningModule):
    """Shared base (see module docstring).

    Args:
        spec: the latent's :class:`LatentSpec` (or its dict form, as stored in checkpoints).
        config: a :class:`GeneratorConfig` (or its dict form); default: the defaults.
        context_dim: width C of the conditioning vector (default ``len(config.context)``;
            0 = unconditional). The denoiser sees ``[context * keep, keep]`` with ``keep``
            dropped to 0 with probability ``config.context_dropout`` in training (the null
            context of classifier-free guidance).
        seed: seed of the initial weights and of all training randomness.
        **overrides: generator config knobs replacing those of ``config``
            (``timesteps=50, lr=2e-3, denoiser="mlp", ...``); ``denoiser_kwargs={...}`` is
            shorthand for ``denoiser_options={<the denoiser used>: {...}}``.
    """

    #: registry name of the family (``FAMILIES``), set by each family's subclass
    family = "base"

    def __init__(self, spec: LatentSpec | dict, config: GeneratorConfig | dict | None = None,
                 *, context_dim: int | None = None, seed: int = 0, **overrides):
        super().__init__()
        spec = spec_from_dict(spec)
        if not isinstance(config, GeneratorConfig) and "family" not in (config or {}):
            overrides.setdefault("family", self.family)     # the class names the family
        config = GeneratorConfig.from_dict(config)
        kwargs = overrides.pop("denoiser_kwargs", None)
        if overrides:
            config = config.replace(**overrides)
        if kwargs is not None:   # shorthand: options of the denoiser this spec will use
            name = config.denoiser_for(spec_from_dict(spec).kind)[0]
            config = config.replace(denoiser_options={**config.denoiser_options, name: dict(kwargs)})
        if config.family != self.family:
            raise ValueError(f"config key 'generator.family' is {config.family!r}, but this is "
                             f"the {self.family} class; use generators.build_generator")
        if context_dim is None:
            context_dim = len(config.context)
        if not isinstance(context_dim, int) or context_dim < 0:
            raise ValueError(f"context_dim must be an int >= 0, got {context_dim!r}")
        if config.context and context_dim != len(config.context):
            raise ValueError(f"context_dim={context_dim} but the config names "
                             f"{len(config.context)} context properties {config.context}")
        self.save_hyperparameters({"spec": spec_to_dict(spec), "config": config.to_dict(),
                                   "context_dim": context_dim, "seed": seed})
        self.spec, self.config, self.context_dim, self.seed = spec, config, context_dim, seed
        self.layout = LatentLayout(spec)
        self._ctx_in = context_dim + 1 if context_dim else 0
        self._setup_family()
        name, kwargs = config.denoiser_for(spec.kind)
        with torch.random.fork_rng(devices=[]):   # initial weights depend on `seed` only
            torch.manual_seed(mix_seed(seed, 0))
            self.denoiser = self._make_denoiser(DENOISERS.get(name), kwargs)
        self.ema = None
        if config.ema_decay > 0:
            self.ema = copy.deepcopy(self.denoiser).requires_grad_(False)
        self.normalizer = LatentNormalizer(self.layout, config.normalize)
        self.prior = AtomCountPrior()
        self.register_buffer("ema_updates", torch.tensor(0, dtype=torch.long))
        self._recent: deque = deque(maxlen=50)
        self.last_sample_stats: dict[str, Any] | None = None

    # -- what a family provides --------------------------------------------------------------
    def _setup_family(self) -> None:
        """Build family state (schedules, ...) before the denoiser."""

    def _make_denoiser(self, cls, kwargs: dict) -> torch.nn.Module:
        return cls(self.spec, context_dim=self._ctx_in, **kwargs)

    def loss(self, net, z0: torch.Tensor, mask: torch.Tensor | None, ctx: torch.Tensor | None,
             generator: torch.Generator) -> torch.Tensor:  # pragma: no cover - abstract
        """Training loss of ``net`` on clean normalised latents ``z0`` (randomness from
        ``generator`` only)."""
        raise NotImplementedError

    def _integrator(self, sampler: str, steps, eta, spacing):  # pragma: no cover - abstract
        """A sampler/solver object with ``name``, ``steps`` and ``nfe`` (None: adaptive)."""
        raise NotImplementedError

    def _trajectory(self, net, integ, shape, mask, ctx, w, lo_hi, g, bar
                    ) -> tuple[torch.Tensor, int]:  # pragma: no cover - abstract
        """One batch from noise to a (normalised) latent; returns it and the NFE used."""
        raise NotImplementedError

    # -- shared pieces -----------------------------------------------------------------------
    def normalize(self, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Data latent ``z`` -> generated space (masked, zero-CoM kept)."""
        return self.normalizer.normalize(z, mask)

    def denormalize(self, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.normalizer.denormalize(z, mask)

    def _net(self, net, z: torch.Tensor, tf: torch.Tensor, mask, ctx, **extra) -> torch.Tensor:
        """Run a denoiser on the packed latent at network time ``tf [B]`` in ``[0, 1]``
        (1 = pure noise); output projected into the subspace. ``extra`` keywords go to the
        network (self-conditioning inputs)."""
        if self.layout.per_atom:
            h, x = self.layout.split(z)
            oh, ox = net(h, x, mask, tf, ctx, **extra)
            out = self.layout.pack(oh, ox)
        else:
            out = net(z, tf, ctx, **extra)
        return self.layout.project(out, mask)

    def _generator(self, *key: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(mix_seed(self.seed, *key))

    # -- Lightning hooks ---------------------------------------------------------------------
    def _data(self) -> LatentDataModule:
        dm = self.trainer.datamodule if self._trainer is not None else None
        if not isinstance(dm, LatentDataModule):
            raise RuntimeError(f"train through {type(self).__name__}.fit(...)")
        return dm

    def on_train_start(self) -> None:   # after checkpoint restore and device placement
        self._data().ready(copy.deepcopy(self.normalizer).cpu().normalize)

    def on_validation_start(self) -> None:
        self._data().ready(copy.deepcopy(self.normalizer).cpu().normalize)

    def training_step(self, batch, batch_idx):
        step = int(self.global_step)
        rank = self.trainer.global_rank if self._trainer is not None else 0
        z0 = batch["z"]
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(mix_seed(self.seed, 3, step, rank))   # dropout etc.
            loss = self.loss(self.denoiser, z0, batch["mask"], batch["ctx"],
                             self._generator(2, step, rank))
        self._recent.append(loss.detach())
        self.log("train/loss", loss, prog_bar=True, batch_size=z0.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        z0 = batch["z"]
        net = self.ema if self.ema is not None else self.denoiser
        loss = self.loss(net, z0, batch["mask"], batch["ctx"], self._generator(4, batch_idx))
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=z0.shape[0])
        return loss

    def configure_optimizers(self):
        c = self.config
        return torch.optim.AdamW(self.denoiser.parameters(), lr=c.lr, weight_decay=c.weight_decay)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None):
        val = gradient_clip_val if gradient_clip_val is not None else self.config.grad_clip
        if val:
            self.clip_gradients(optimizer, gradient_clip_val=val,
                                gradient_clip_algorithm=gradient_clip_algorithm or "norm")

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        self._update_ema()

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        k = int(self.ema_updates)
        decay = min(self.config.ema_decay, (1 + k) / (10 + k))
        ema_params = list(self.ema.parameters())
        params = [p.detach() for p in self.denoiser.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for be, b in zip(self.ema.buffers(), self.denoiser.buffers()):
            be.copy_(b)
        self.ema_updates += 1

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["rng_state"] = rng

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("rng_state")
        if rng is None or self._trainer is None:   # plain loading for inference: no side effect
            return
        torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])

    # -- public API --------------------------------------------------------------------------
    def fit(self, train_latents: LatentBatch, val_latents: LatentBatch | None = None,
            out_dir: str | Path = "generator", *, max_steps: int | None = None,
            max_epochs: int | None = None, batch_size: int | None = None,
            context: torch.Tensor | None = None, val_context: torch.Tensor | None = None,
            trainer_kwargs: dict | None = None, progress: bool = True,
            resume: bool | str | Path = False, checkpoint_every: int = 1000,
            val_batch_size: int | None = None) -> dict:
        """Train on ``train_latents`` (Lightning Trainer inside).

        Args:
            train_latents / val_latents: latents of this generator's spec.
            out_dir: checkpoints go to ``out_dir/checkpoints`` (``last.ckpt`` always holds
                the latest state), CSV and TensorBoard logs to ``out_dir/logs``.
            max_steps / max_epochs: training length (an epoch is ``ceil(M / (batch_size x
                world_size))`` steps; both given: the smaller); neither: ``config.max_steps``.
            batch_size: per-device batch size (default ``config.batch_size``).
            context / val_context: ``[M, context_dim]`` conditioning vectors.
            trainer_kwargs: passed to ``pl.Trainer`` (``accelerator``, ``devices``,
                ``strategy``, ``num_nodes``, ``precision``, ``val_check_interval``,
                ``logger``, ``callbacks`` (appended), ...).
            progress: show Lightning's progress bar.
            resume: True resumes from the newest readable checkpoint in
                ``out_dir/checkpoints`` (``last.ckpt``, else the newest ``step*.ckpt``)
                when there is one; a path resumes from that checkpoint.
            checkpoint_every: also save a checkpoint every this many steps.

        Returns:
            ``{"final_loss", "val_loss", "steps", "seconds", "checkpoint", "resumed_from"}``:
            final_loss is the mean training loss over the last (up to) 50 steps of this call.

        Raises:
            CheckpointError: the checkpoint to resume from cannot be read (one line naming it).
        """
        if max_steps is None and max_epochs is None:
            max_steps = self.config.max_steps
        batch_size = self.config.batch_size if batch_size is None else batch_size
        out_dir = Path(out_dir)
        ckpt_dir = out_dir / "checkpoints"
        tune_cpu_allocator()
        dm = LatentDataModule(self.layout, self.context_dim, train_latents, val_latents,
                              context=context, val_context=val_context, batch_size=batch_size,
                              val_batch_size=val_batch_size, seed=self.seed)
        if not bool(self.normalizer.fitted):
            self.normalizer.fit(dm.train_z, dm.train_mask)
        if self.layout.per_atom and not self.prior.fitted:
            self.prior.fit(dm.train_mask)
        self._recent.clear()

        ckpt_path = None
        if resume is True:
            found = find_resume_checkpoint(ckpt_dir)
            ckpt_path = None if found is None else str(found)
        elif resume:
            read_checkpoint(resume)          # FileNotFoundError / CheckpointError naming it
            ckpt_path = str(resume)
        trainer = build_trainer(out_dir, trainer_kwargs, progress=progress,
                                checkpoint_every=checkpoint_every,
                                validate=dm.val_data is not None)
        spe = dm.steps_per_epoch(trainer.world_size)
        total = max_steps if max_steps is not None else max_epochs * spe
        if max_steps is not None and max_epochs is not None:
            total = min(max_steps, max_epochs * spe)
        trainer.fit_loop.epoch_loop.max_steps = int(total)
        start = time.perf_counter()
        with quiet_fit():
            trainer.fit(self, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        seconds = time.perf_counter() - start
        last = ckpt_dir / "last.ckpt"
        trainer.save_checkpoint(last, weights_only=False)
        val_loss = trainer.callback_metrics.get("val/loss")
        final = torch.stack(list(self._recent)).mean().item() if self._recent else math.nan
        dm.train_data = dm.val_data = None   # the trainer keeps the module: free the data
        return {
            "final_loss": final,
            "val_loss": None if val_loss is None else float(val_loss),
            "steps": int(trainer.global_step),
            "seconds": seconds,
            "checkpoint": str(last),
            "resumed_from": ckpt_path,
        }

    @torch.no_grad()
    def sample(self, n: int, sampler: str | None = None, steps: int | None = None,
               eta: float = 0.0, seed: int = 0, n_atoms: torch.Tensor | None = None,
               context: torch.Tensor | None = None, guidance_scale: float = 1.0,
               batch_size: int = 256, clip: bool | None = None, progress: bool = True,
               use_ema: bool = True, spacing: str | None = None, return_stats: bool = False):
        """Draw ``n`` latents.

        Args:
            sampler: a sampler of this family (default: the family's ``default_sampler``
                with ``default_steps`` when ``steps`` is None; ``l3dg list families``).
            steps: sampler steps (diffusion: model evaluations; flow: ODE steps; see the
                family's docstring for the NFE of each sampler).
            eta: DDIM stochasticity (diffusion only).
            seed: seeds the ``torch.Generator`` of all sampling randomness (atom counts,
                initial and per-step noise). Same seed and inputs, same machine -> same
                samples.
            n_atoms: ``[n]`` atom counts (per-atom latents); default: drawn from the
                training histogram. Vector latents take none.
            context: ``[n, C]`` or ``[C]`` conditioning values (None: unconditional).
            guidance_scale: classifier-free guidance weight ``w``: ``out = out_uncond + w
                (out_cond - out_uncond)``; 1 is plain conditional sampling.
            batch_size: molecules per denoiser call (per-atom latents are batched by size).
            clip: clamp the predicted clean latent to ``[-1, 1]`` at every step (default:
                ``spec.bounded``; coordinates are never clipped).
            use_ema: sample with the EMA weights (default) or the raw ones.
            spacing: diffusion timestep spacing, ``uniform`` or ``logsnr`` (default: the
                sampler's).
            return_stats: also return ``{"sampler", "steps", "nfe", "seconds"}`` (always
                kept in ``self.last_sample_stats``).

        Returns:
            A :class:`LatentBatch` of this generator's spec (in the order of ``n_atoms``),
            or ``(latents, stats)`` with ``return_stats``.
        """
        if sampler is None:                    # the family's declared default
            fam = FAMILIES.get(self.family)
            sampler, steps = fam.default_sampler, fam.default_steps if steps is None else steps
        latents, stats = sample_latents(
            self, n, sampler, steps=steps, eta=eta, seed=seed,
            n_atoms=n_atoms, context=context, guidance_scale=guidance_scale,
            batch_size=batch_size, clip=clip, progress=progress, use_ema=use_ema,
            spacing=spacing)
        self.last_sample_stats = stats
        return (latents, stats) if return_stats else latents
