"""``DiffusionGenerator``: schedule + denoiser + AdamW + EMA as one LightningModule.

One generator family diffuses every space: it sees only the latent's
:class:`~harness.core.types.LatentSpec` (vector or per-atom, width, coordinates, bounded), never
which space produced it.

Training (:meth:`DiffusionGenerator.fit`)
    Discrete-time Gaussian diffusion, L2 loss on the chosen parametrisation (``eps``, ``x0``
    or ``v``), normalised per sample by the diffused dimension (``spec.dim(n)``: padded atoms
    excluded, zero-CoM coordinates count ``(n - 1) * 3``). AdamW, gradient-norm clipping,
    an EMA copy of the denoiser (used for sampling and validation; warm-up
    ``min(decay, (1 + k) / (10 + k))`` after ``k`` updates).

    Data order and all training randomness (timesteps, noise, context dropout, dropout
    inside the denoiser) are pure functions of ``(seed, global step, rank)``: batch ``k``
    takes the ``k``-th slice of a per-epoch permutation seeded by ``(seed, epoch)``. So a
    run resumed from a checkpoint (model, EMA, optimiser, loop counters; the global RNG
    state is saved too) continues exactly as the uninterrupted run would, and multi-GPU
    DDP needs nothing beyond Trainer options (each rank takes its share of the global
    batch ``batch_size x world_size``).

Sampling (:meth:`DiffusionGenerator.sample`)
    Any registered sampler (``ddpm``, ``ddim``, ``dpm_solver++``) with any number of steps,
    whatever ``timesteps`` the model was trained with; an explicit ``torch.Generator``
    seeded by ``seed``; atom counts drawn from the training histogram for per-atom latents;
    classifier-free guidance when trained with a context; optional clipping of the predicted
    clean latent to ``[-1, 1]`` for bounded latents.

Checkpoints hold only tensors and plain Python values: they load with
``torch.load(weights_only=True)`` and ``DiffusionGenerator.load_from_checkpoint(path)``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from harness.core.nn import tune_cpu_allocator
from harness.core.data.base import IndexDataset
from harness.core.registry import DENOISERS
from harness.core.types import LatentBatch, LatentSpec

from .layout import LatentLayout
from .samplers import make_sampler
from .schedules import make_schedule

__all__ = ["DiffusionGenerator", "spec_to_dict", "spec_from_dict"]

PREDICTIONS = ("eps", "x0", "v")
NORMALIZATIONS = ("none", "standard")
_MASK64 = (1 << 63) - 1


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


def _mix(*parts: int) -> int:
    """Deterministic 63-bit seed from integers (splitmix64-style)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & _MASK64


class DiffusionGenerator(pl.LightningModule):
    """Gaussian diffusion generator for any latent (see module docstring).

    Args:
        spec: the latent's :class:`LatentSpec` (or its dict form, as stored in checkpoints).
        denoiser: registry name (``mlp`` for vector latents, ``egnn`` / ``e3nn`` per-atom).
        denoiser_kwargs: hyperparameters of the denoiser (e.g. ``hidden``, ``layers``).
        schedule: ``polynomial_2`` (any ``polynomial_<p>``), ``cosine`` or ``linear``.
        schedule_kwargs: extra schedule options (e.g. ``beta_start``).
        timesteps: T of the training discretisation.
        prediction: what the network predicts: ``eps``, ``x0`` or ``v``.
        lr, weight_decay, betas, amsgrad: AdamW.
        ema_decay: EMA decay (0 disables EMA; sampling then uses the raw weights).
        grad_clip: max gradient norm (0/None disables); a Trainer ``gradient_clip_val``
            overrides it.
        context_dim: width C of a conditioning vector (0: unconditional). The denoiser sees
            ``[context * keep, keep]`` with ``keep`` dropped to 0 with probability
            ``context_dropout`` in training (the null context for classifier-free guidance).
        n_atoms_hist: ``[K]`` counts of molecules with ``k`` atoms (per-atom latents); when
            None, :meth:`fit` takes it from the training latents.
        normalize: ``none`` (diffuse the latent as the space gives it) or ``standard``
            (per-feature mean/std of ``h`` over real atoms; one RMS scale for coordinates).
        seed: seed of the initial weights and of all training randomness.
    """

    def __init__(self, spec: LatentSpec | dict, denoiser: str = "mlp",
                 denoiser_kwargs: dict | None = None, schedule: str = "polynomial_2",
                 schedule_kwargs: dict | None = None, timesteps: int = 1000,
                 prediction: str = "eps", lr: float = 1e-4, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), amsgrad: bool = False,
                 ema_decay: float = 0.999, grad_clip: float | None = 1.0,
                 context_dim: int = 0, context_dropout: float = 0.1,
                 n_atoms_hist: torch.Tensor | None = None, normalize: str = "none",
                 seed: int = 0):
        super().__init__()
        spec = spec_from_dict(spec)
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if not 0 <= context_dropout < 1:
            raise ValueError(f"context_dropout must be in [0, 1), got {context_dropout}")
        if not isinstance(context_dim, int) or context_dim < 0:
            raise ValueError(f"context_dim must be an int >= 0, got {context_dim!r}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        denoiser_kwargs = dict(denoiser_kwargs or {})
        schedule_kwargs = dict(schedule_kwargs or {})
        self.save_hyperparameters({
            "spec": spec_to_dict(spec), "denoiser": denoiser,
            "denoiser_kwargs": denoiser_kwargs, "schedule": schedule,
            "schedule_kwargs": schedule_kwargs, "timesteps": timesteps,
            "prediction": prediction, "lr": lr, "weight_decay": weight_decay,
            "betas": tuple(betas), "amsgrad": amsgrad, "ema_decay": ema_decay,
            "grad_clip": grad_clip, "context_dim": context_dim,
            "context_dropout": context_dropout, "normalize": normalize, "seed": seed,
        })
        self.spec = spec
        self.layout = LatentLayout(spec)
        self.schedule = make_schedule(schedule, timesteps, **schedule_kwargs)
        self._ctx_in = context_dim + 1 if context_dim else 0
        with torch.random.fork_rng(devices=[]):   # initial weights depend on `seed` only
            torch.manual_seed(_mix(seed, 0))
            self.denoiser = DENOISERS.get(denoiser)(spec, context_dim=self._ctx_in,
                                                    **denoiser_kwargs)
        self.ema = None
        if ema_decay > 0:
            self.ema = copy.deepcopy(self.denoiser).requires_grad_(False)
        W = self.layout.width
        self.register_buffer("z_shift", torch.zeros(W))
        self.register_buffer("z_scale", torch.ones(W))
        self.register_buffer("norm_fitted", torch.tensor(False))
        self.register_buffer("ema_updates", torch.tensor(0, dtype=torch.long))
        hist = torch.zeros(0) if n_atoms_hist is None else torch.as_tensor(n_atoms_hist)
        if hist.dim() != 1 or (hist < 0).any():
            raise ValueError("n_atoms_hist must be a 1-D tensor of non-negative counts")
        self.register_buffer("n_atoms_hist", hist.to(torch.float64))
        # training data (plain attributes, never checkpointed)
        self._train: dict[str, Any] | None = None
        self._val: dict[str, Any] | None = None
        self._perm_cache: dict[int, torch.Tensor] = {}
        self._recent: deque = deque(maxlen=50)

    # ------------------------------------------------------------------------------------
    # state loading: the atom-count histogram has a data-dependent length
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "n_atoms_hist"
        if key in state_dict and state_dict[key].shape != self.n_atoms_hist.shape:
            self.n_atoms_hist = torch.zeros_like(state_dict[key], dtype=torch.float64,
                                                 device=self.n_atoms_hist.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------------------------
    # normalisation (identity unless normalize="standard")
    def _fit_normalizer(self, z: torch.Tensor, mask: torch.Tensor | None) -> None:
        lay = self.layout
        shift = torch.zeros(lay.width, dtype=torch.float64)
        scale = torch.ones(lay.width, dtype=torch.float64)
        if self.hparams.normalize == "standard":
            z64 = z.to(torch.float64)
            if lay.per_atom:
                rows = z64[mask.bool()]                                  # [atoms, W]
            else:
                rows = z64
            h = rows[:, :lay.feat]
            shift[:lay.feat] = h.mean(0)
            scale[:lay.feat] = h.std(0, unbiased=False).clamp_min(1e-6)
            if lay.coords:   # zero-CoM already; one isotropic scale keeps equivariance
                scale[lay.feat:] = rows[:, lay.feat:].pow(2).mean().sqrt().clamp_min(1e-6)
        self.z_shift.copy_(shift.to(self.z_shift.dtype))
        self.z_scale.copy_(scale.to(self.z_scale.dtype))
        self.norm_fitted.fill_(True)

    def normalize(self, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Data latent ``z`` -> diffused space (masked, zero-CoM kept)."""
        return self.layout.project((z - self.z_shift) / self.z_scale, mask)

    def denormalize(self, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        out = z * self.z_scale + self.z_shift
        return self.layout.project(out, mask) if self.layout.per_atom else out

    def _clip_bounds(self):
        """Bounds of ``[-1, 1]`` data values in the diffused space (features only)."""
        lo = (-1 - self.z_shift) / self.z_scale
        hi = (1 - self.z_shift) / self.z_scale
        if self.layout.coords:
            lo[self.layout.feat:] = -math.inf
            hi[self.layout.feat:] = math.inf
        return lo, hi

    # ------------------------------------------------------------------------------------
    # network calls
    def _net(self, net, z: torch.Tensor, t: torch.Tensor, mask, ctx) -> torch.Tensor:
        """Run a denoiser on the packed latent; output projected into the subspace."""
        tf = t.to(z.dtype) / self.schedule.T
        if self.layout.per_atom:
            h, x = self.layout.split(z)
            oh, ox = net(h, x, mask, tf, ctx)
            out = self.layout.pack(oh, ox)
        else:
            out = net(z, tf, ctx)
        return self.layout.project(out, mask)

    def _coefs(self, t: torch.Tensor, z: torch.Tensor):
        shape = (-1,) + (1,) * (z.dim() - 1)
        a = self.schedule.alpha(t, z.dtype, z.device).view(shape)
        s = self.schedule.sigma(t, z.dtype, z.device).view(shape)
        return a, s

    def _eps_x0(self, out, z, t):
        """Model output (in the configured parametrisation) -> ``(eps, x0)``."""
        a, s = self._coefs(t, z)
        p = self.hparams.prediction
        if p == "eps":
            return out, (z - s * out) / a
        if p == "x0":
            return (z - a * out) / s, out
        return s * z + a * out, a * z - s * out                         # v

    def _context_in(self, ctx: torch.Tensor | None, keep: torch.Tensor | None, B: int,
                    like: torch.Tensor) -> torch.Tensor | None:
        if not self._ctx_in:
            return None
        if ctx is None:
            return like.new_zeros(B, self._ctx_in)
        keep = like.new_ones(B) if keep is None else keep.to(like.dtype)
        return torch.cat([ctx.to(like.dtype) * keep[:, None], keep[:, None]], dim=1)

    def diffusion_loss(self, net, z0: torch.Tensor, mask: torch.Tensor | None,
                       ctx: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """L2 loss of ``net`` on clean (normalised) latents ``z0`` with randomness from
        ``generator``: ``t ~ U{1..T}``, masked/zero-CoM noise, context dropout."""
        B, dev = z0.shape[0], z0.device
        t = torch.randint(1, self.schedule.T + 1, (B,), generator=generator, device=dev)
        eps = self.layout.noise(tuple(z0.shape), mask, generator, dev, z0.dtype)
        zt = self.schedule.add_noise(z0, eps, t)
        keep = None
        if self._ctx_in and ctx is not None:
            u = torch.rand(B, generator=generator, device=dev)
            keep = u >= self.hparams.context_dropout
        out = self._net(net, zt, t, mask, self._context_in(ctx, keep, B, z0))
        p = self.hparams.prediction
        if p == "eps":
            target = eps
        elif p == "x0":
            target = z0
        else:
            a, s = self._coefs(t, z0)
            target = a * eps - s * z0
        return self.layout.mse(out, target, mask)

    # ------------------------------------------------------------------------------------
    # data
    def _prepare(self, latents: LatentBatch, context: torch.Tensor | None, what: str) -> dict:
        if not isinstance(latents, LatentBatch):
            raise TypeError(f"{what} must be a LatentBatch, got {type(latents).__name__}")
        if latents.spec != self.spec:
            raise ValueError(f"{what} has spec {latents.spec}, but this generator was built "
                             f"for {self.spec}")
        if len(latents) == 0:
            raise ValueError(f"{what} is empty")
        z, mask = self.layout.from_batch(latents.to("cpu"))
        z = z.to(torch.get_default_dtype())
        if context is not None:
            context = torch.as_tensor(context, dtype=z.dtype).cpu()
            if context.shape != (len(latents), self.hparams.context_dim):
                raise ValueError(f"{what} context must be [{len(latents)}, "
                                 f"{self.hparams.context_dim}], got {tuple(context.shape)}")
        elif self.hparams.context_dim:
            raise ValueError(f"this generator has context_dim={self.hparams.context_dim}: "
                             f"pass a context for the {what}")
        return {"z": z, "mask": mask, "ctx": context}

    def _ready(self, data: dict | None) -> None:
        """Move prepared data to the module's device and normalise it (once)."""
        if data is None or data.get("ready"):
            return
        for k in ("z", "mask", "ctx"):
            if data.get(k) is not None:
                data[k] = data[k].to(self.device)
        data["z"] = self.normalize(data["z"], data["mask"])
        data["ready"] = True

    def _batch_indices(self, step: int) -> torch.Tensor:
        M = self._train["z"].shape[0]
        bs = self._train["batch_size"]
        world = self.trainer.world_size if self._trainer is not None else 1
        rank = self.trainer.global_rank if self._trainer is not None else 0
        gbs = bs * world
        spe = max(1, math.ceil(M / gbs))
        epoch, pos = divmod(step, spe)
        perm = self._perm_cache.get(epoch)
        if perm is None:
            g = torch.Generator().manual_seed(_mix(self.hparams.seed, 1, epoch))
            perm = torch.randperm(M, generator=g)
            self._perm_cache = {epoch: perm}
        glob = perm[(pos * gbs + torch.arange(gbs)) % M]
        return glob[rank::world].to(self.device)

    def _generator(self, *key: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(_mix(self.hparams.seed, *key))

    # ------------------------------------------------------------------------------------
    # Lightning hooks
    def on_train_start(self) -> None:   # after checkpoint restore and device placement
        if self._train is None:
            raise RuntimeError("train through DiffusionGenerator.fit(...)")
        self._ready(self._train)

    def on_validation_start(self) -> None:
        self._ready(self._val)

    def training_step(self, batch, batch_idx):
        step = int(self.global_step)
        rank = self.trainer.global_rank if self._trainer is not None else 0
        idx = self._batch_indices(step)
        d = self._train
        z0 = d["z"][idx]
        mask = None if d["mask"] is None else d["mask"][idx]
        ctx = None if d["ctx"] is None else d["ctx"][idx]
        z0, mask = self.layout.trim(z0, mask)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(_mix(self.hparams.seed, 3, step, rank))   # dropout etc.
            loss = self.diffusion_loss(self.denoiser, z0, mask, ctx,
                                       self._generator(2, step, rank))
        self._recent.append(loss.detach())
        self.log("train/loss", loss, prog_bar=True, batch_size=z0.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        d = self._val
        bs = d["batch_size"]
        sl = slice(batch_idx * bs, (batch_idx + 1) * bs)
        z0 = d["z"][sl]
        mask = None if d["mask"] is None else d["mask"][sl]
        ctx = None if d["ctx"] is None else d["ctx"][sl]
        z0, mask = self.layout.trim(z0, mask)
        net = self.ema if self.ema is not None else self.denoiser
        loss = self.diffusion_loss(net, z0, mask, ctx, self._generator(4, batch_idx))
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=z0.shape[0])
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        return torch.optim.AdamW(self.denoiser.parameters(), lr=hp.lr,
                                 weight_decay=hp.weight_decay, betas=tuple(hp.betas),
                                 amsgrad=hp.amsgrad)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None):
        val = gradient_clip_val if gradient_clip_val is not None else self.hparams.grad_clip
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
        decay = min(self.hparams.ema_decay, (1 + k) / (10 + k))
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

    # ------------------------------------------------------------------------------------
    # public API
    def fit(self, train_latents: LatentBatch, val_latents: LatentBatch | None = None,
            out_dir: str | Path = "generator", *, max_steps: int | None = None,
            max_epochs: int | None = None, batch_size: int = 64,
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
                world_size))`` steps); at least one is required.
            batch_size: per-device batch size.
            context / val_context: ``[M, context_dim]`` conditioning vectors.
            trainer_kwargs: passed to ``pl.Trainer`` unchanged (``accelerator``, ``devices``,
                ``strategy``, ``num_nodes``, ``precision``, ``val_check_interval``, ``logger``,
                ``callbacks`` (appended), ...).
            progress: show Lightning's progress bar.
            resume: True resumes from ``out_dir/checkpoints/last.ckpt`` when it exists; a
                path resumes from that checkpoint.
            checkpoint_every: also save a checkpoint every this many steps.

        Returns:
            ``{"final_loss", "val_loss", "steps", "seconds", "checkpoint", "resumed_from"}``:
            final_loss is the mean training loss over the last (up to) 50 steps of this call.
        """
        from pytorch_lightning.callbacks import ModelCheckpoint

        if max_steps is None and max_epochs is None:
            raise ValueError("fit needs max_steps or max_epochs")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        tk = dict(trainer_kwargs or {})
        for key in ("max_steps", "max_epochs"):
            if key in tk:
                raise ValueError(f"pass {key} to fit(), not in trainer_kwargs")
        if tk.get("accumulate_grad_batches", 1) != 1:
            raise ValueError("accumulate_grad_batches is not supported: raise batch_size or "
                             "the number of devices instead")
        out_dir = Path(out_dir)
        ckpt_dir = out_dir / "checkpoints"
        tune_cpu_allocator()

        self._train = self._prepare(train_latents, context, "train_latents")
        self._train["batch_size"] = batch_size
        self._val = None
        if val_latents is not None:
            self._val = self._prepare(val_latents, val_context, "val_latents")
            self._val["batch_size"] = val_batch_size or max(batch_size, 256)
        if not bool(self.norm_fitted):
            self._fit_normalizer(self._train["z"], self._train["mask"])
        if self.layout.per_atom and self.n_atoms_hist.numel() == 0:
            counts = self._train["mask"].sum(1)
            self.n_atoms_hist = torch.bincount(counts).to(torch.float64).to(self.device)
        self._perm_cache = {}
        self._recent.clear()

        ckpt_path = None
        if resume is True:
            last = ckpt_dir / "last.ckpt"
            ckpt_path = str(last) if last.exists() else None
        elif resume:
            ckpt_path = str(resume)
            if not Path(ckpt_path).exists():
                raise FileNotFoundError(f"resume checkpoint {ckpt_path} does not exist")

        callbacks = list(tk.pop("callbacks", []) or [])
        if tk.get("enable_checkpointing", True):
            callbacks.append(ModelCheckpoint(
                dirpath=ckpt_dir, filename="step{step:08d}",
                auto_insert_metric_name=False, save_last=True, save_top_k=1,
                every_n_train_steps=max(1, checkpoint_every)))
        if "logger" not in tk:
            tk["logger"] = _default_loggers(out_dir)
        plugins = tk.pop("plugins", None)
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else (
            [plugins] if plugins is not None else [])
        if not any(_is_checkpoint_io(p) for p in plugins):
            plugins.append(_atomic_checkpoint_io())
        settings = dict(
            max_steps=-1, max_epochs=-1, enable_progress_bar=progress,
            enable_model_summary=False, use_distributed_sampler=False,
            num_sanity_val_steps=0, log_every_n_steps=50,
            default_root_dir=str(out_dir), callbacks=callbacks, plugins=plugins,
        )
        if self._val is None:
            settings["limit_val_batches"] = 0
        settings.update(tk)
        trainer = pl.Trainer(**settings)
        # an epoch is one pass over the data with the global batch (all devices)
        M = self._train["z"].shape[0]
        spe = max(1, math.ceil(M / (batch_size * trainer.world_size)))
        total = max_steps if max_steps is not None else max_epochs * spe
        if max_steps is not None and max_epochs is not None:
            total = min(max_steps, max_epochs * spe)
        trainer.fit_loop.epoch_loop.max_steps = int(total)
        # item k is just k: the batch content is derived from the global step inside the
        # module, so it never depends on loader state
        train_dl = DataLoader(IndexDataset(spe), batch_size=None, shuffle=False)
        val_dl = None
        if self._val is not None:
            n_val = math.ceil(self._val["z"].shape[0] / self._val["batch_size"])
            val_dl = DataLoader(IndexDataset(n_val), batch_size=None, shuffle=False)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*resuming from a checkpoint that ended.*")
            warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
            warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
            trainer.fit(self, train_dataloaders=train_dl, val_dataloaders=val_dl,
                        ckpt_path=ckpt_path, weights_only=True)
        seconds = time.perf_counter() - start
        last = ckpt_dir / "last.ckpt"
        trainer.save_checkpoint(last, weights_only=False)
        val_loss = trainer.callback_metrics.get("val/loss")
        final = torch.stack(list(self._recent)).mean().item() if self._recent else float("nan")
        self._train = None   # free the copy of the data
        return {
            "final_loss": final,
            "val_loss": None if val_loss is None else float(val_loss),
            "steps": int(trainer.global_step),
            "seconds": seconds,
            "checkpoint": str(last),
            "resumed_from": ckpt_path,
        }

    @torch.no_grad()
    def sample(self, n: int, sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0,
               seed: int = 0, n_atoms: torch.Tensor | None = None,
               context: torch.Tensor | None = None, guidance_scale: float = 1.0,
               batch_size: int = 256, clip: bool | None = None, progress: bool = True,
               use_ema: bool = True, spacing: str | None = None) -> LatentBatch:
        """Draw ``n`` latents.

        Args:
            sampler: ``ddpm`` | ``ddim`` | ``dpm_solver++`` (any registered sampler).
            steps: model evaluations (default: the sampler's; ``ddpm``: T).
            eta: DDIM stochasticity.
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
            spacing: timestep spacing, ``uniform`` or ``logsnr`` (default: the sampler's).

        Returns:
            A :class:`LatentBatch` of this generator's spec, in the order of ``n_atoms``.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if guidance_scale != 1.0 and context is None:
            raise ValueError("guidance_scale != 1 needs a context")
        if context is not None and not self.hparams.context_dim:
            raise ValueError("this generator was trained without context (context_dim=0)")
        clip = self.spec.bounded if clip is None else bool(clip)
        lay, dev = self.layout, self.device
        if dev.type == "cpu":
            tune_cpu_allocator()
        net = self.ema if (use_ema and self.ema is not None) else self.denoiser
        smp = make_sampler(sampler, self.schedule, steps, eta, spacing)

        g_cpu = torch.Generator().manual_seed(_mix(seed, 11))
        g = torch.Generator(device=dev).manual_seed(_mix(seed, 12))
        if lay.per_atom:
            n_atoms = self._atom_counts(n, n_atoms, g_cpu)
            order = torch.argsort(n_atoms, descending=True, stable=True)
        else:
            if n_atoms is not None:
                raise ValueError("vector latents carry no atom counts; pass n_atoms=None")
            order = torch.arange(n)
        if context is not None:
            context = torch.as_tensor(context, dtype=torch.get_default_dtype())
            if context.dim() == 1:
                context = context.expand(n, -1)
            if context.shape != (n, self.hparams.context_dim):
                raise ValueError(f"context must be [{n}, {self.hparams.context_dim}] or "
                                 f"[{self.hparams.context_dim}], got {tuple(context.shape)}")
        lo_hi = self._clip_bounds() if clip else None

        n_max = int(n_atoms.max()) if lay.per_atom else 0
        out = torch.zeros((n, n_max, lay.width) if lay.per_atom else (n, lay.width), device=dev)
        out_mask = torch.zeros(n, n_max, dtype=torch.bool, device=dev) if lay.per_atom else None
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=math.ceil(n / batch_size) * smp.steps, desc=f"sampling ({sampler})",
                       leave=False)
        was_training = net.training
        net.eval()
        try:
            for lo in range(0, n, batch_size):
                idx = order[lo:lo + batch_size]
                B = len(idx)
                mask = None
                if lay.per_atom:
                    counts = n_atoms[idx].to(dev)
                    N = int(counts.max())
                    mask = torch.arange(N, device=dev)[None] < counts[:, None]
                    shape = (B, N, lay.width)
                else:
                    shape = (B, lay.width)
                ctx = None if context is None else context[idx].to(dev)
                z = self._trajectory(net, smp, shape, mask, ctx, guidance_scale, lo_hi, g, bar)
                z = self.denormalize(z, mask)
                if clip:
                    z[..., :lay.feat] = z[..., :lay.feat].clamp(-1, 1)
                    z = lay.project(z, mask)
                idx_d = idx.to(dev)
                if lay.per_atom:
                    out[idx_d, :z.shape[1]] = z
                    out_mask[idx_d, :mask.shape[1]] = mask
                else:
                    out[idx_d] = z
        finally:
            net.train(was_training)
            if bar is not None:
                bar.close()
        return lay.to_batch(out, out_mask)

    def _atom_counts(self, n: int, n_atoms, g_cpu) -> torch.Tensor:
        if n_atoms is not None:
            n_atoms = torch.as_tensor(n_atoms, dtype=torch.long).cpu()
            if n_atoms.shape != (n,) or (n_atoms < 1).any():
                raise ValueError(f"n_atoms must be [{n}] positive counts, got "
                                 f"{tuple(n_atoms.shape)}")
            return n_atoms
        hist = self.n_atoms_hist.detach().cpu().to(torch.float64)
        if hist.numel() == 0 or hist[1:].sum() <= 0:
            raise ValueError("no atom-count histogram: fit the generator first, pass "
                             "n_atoms_hist at construction, or pass n_atoms")
        hist = hist.clone()
        hist[0] = 0
        return torch.multinomial(hist, n, replacement=True, generator=g_cpu)

    @torch.no_grad()
    def predict(self, z: torch.Tensor, t: torch.Tensor | int, mask: torch.Tensor | None = None,
                context: torch.Tensor | None = None, guidance_scale: float = 1.0,
                use_ema: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Model predictions ``(eps, x0)`` for a noisy latent in the diffused (normalised)
        space: ``z [B, D]`` or ``[B, N, W]`` (``W = F (+ 3)``, features then coordinates),
        integer timesteps ``t`` (``[B]`` or one int), ``mask [B, N]``. For custom samplers;
        :meth:`sample` is the usual entry point."""
        net = self.ema if (use_ema and self.ema is not None) else self.denoiser
        B = z.shape[0]
        t = torch.as_tensor(t, device=z.device, dtype=torch.long).expand(B)
        ctx_c = None if context is None else self._context_in(context.to(z), None, B, z)
        return self._predict(net, z, t, mask, ctx_c, self._context_in(None, None, B, z),
                             guidance_scale, None)

    def _predict(self, net, z, tt, mask, ctx_c, ctx_u, w, lo_hi):
        """``(eps, x0)`` with guidance and optional clipping of ``x0``."""
        B = z.shape[0]
        if ctx_c is None:
            out = self._net(net, z, tt, mask, ctx_u)
        elif w == 1.0:
            out = self._net(net, z, tt, mask, ctx_c)
        else:   # conditional and unconditional in one call
            m2 = None if mask is None else torch.cat([mask, mask])
            both = self._net(net, torch.cat([z, z]), torch.cat([tt, tt]), m2,
                             torch.cat([ctx_c, ctx_u]))
            out_c, out_u = both[:B], both[B:]
            out = out_u + w * (out_c - out_u)
        eps, x0 = self._eps_x0(out, z, tt)
        if lo_hi is not None:
            x0 = self.layout.project(torch.maximum(torch.minimum(x0, lo_hi[1]), lo_hi[0]), mask)
            a, sg = self._coefs(tt, z)
            eps = (z - a * x0) / sg
        return eps, x0

    def _trajectory(self, net, smp, shape, mask, ctx, w, lo_hi, g, bar) -> torch.Tensor:
        """One reverse-diffusion trajectory for a batch (the sampling loop, written out)."""
        lay, dev = self.layout, self.device
        B = shape[0]
        z = lay.noise(shape, mask, g, dev)
        smp.reset()
        ctx_c = self._context_in(ctx, None, B, z) if ctx is not None else None
        ctx_u = self._context_in(None, None, B, z)
        for t, s in smp.pairs():
            tt = torch.full((B,), t, device=dev, dtype=torch.long)
            eps, x0 = self._predict(net, z, tt, mask, ctx_c, ctx_u, w, lo_hi)
            noise = lay.noise(shape, mask, g, dev) if smp.needs_noise(s) else None
            z = lay.project(smp.step(z, t, s, eps=eps, x0=x0, noise=noise), mask)
            if bar is not None:
                bar.update(1)
        return z


def _default_loggers(out_dir: Path) -> list:
    from pytorch_lightning.loggers import CSVLogger

    loggers = [CSVLogger(str(out_dir), name="logs")]
    try:
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(out_dir), name="logs", default_hp_metric=False))
    except (ImportError, ModuleNotFoundError):   # tensorboard not installed
        pass
    return loggers


def _is_checkpoint_io(p) -> bool:
    from lightning_fabric.plugins import CheckpointIO

    return isinstance(p, CheckpointIO)


def _atomic_checkpoint_io():
    """Checkpoint writer that writes to a temporary file and renames it into place."""
    from lightning_fabric.plugins import TorchCheckpointIO

    from harness.core.io import atomic_path

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            with atomic_path(path, suffix=".ckpt") as tmp:
                super().save_checkpoint(checkpoint, tmp, storage_options)

    return AtomicCheckpointIO()
