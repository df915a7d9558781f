"""GPU readiness in a few minutes (``make gpu-check``): the CUDA path of training, sampling,
resume and learning curves, bf16-mixed precision, one-device DDP, a whole tiny study on the
GPU with a seconds budget and curves, and the EGNN 9x256 throughput benchmark.

    .venv/bin/python tests/benchmarks/gpu_check.py            # on a GPU machine
    .venv/bin/python tests/benchmarks/gpu_check.py --cpu-dry-run   # same checks, CPU, small

* No GPU in the machine (no ``nvidia-smi``, no ``/dev/nvidia0``): says so and exits 0
  without running anything.
* A GPU the installed torch cannot see (the Makefile installs the CPU build of torch):
  says how to install a CUDA build and exits 1 — the check did not run where it should.
* Otherwise every check runs, a table of results is printed, and the exit status is 1 when
  any check failed.

``--cpu-dry-run`` runs the same code on the CPU with small sizes (accelerator ``cpu``, DDP on
gloo, bf16-mixed through CPU autocast): a test of this script, not of a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402


def _gpu_hardware() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists()


def _latents(M: int = 256, F: int = 6, seed: int = 0):
    """QM9-like per-atom latents: one-hot-like features, coordinates in Å, 3..29 atoms."""
    from harness.core.types import LatentBatch, LatentSpec

    g = torch.Generator().manual_seed(seed)
    n = (torch.randn(M, generator=g) * 3 + 18).round().clamp(3, 29).long()
    N = int(n.max())
    mask = torch.arange(N)[None] < n[:, None]
    h = torch.nn.functional.one_hot(torch.randint(0, F, (M, N), generator=g), F).float()
    h = h * mask[..., None]
    x = 1.5 * torch.randn(M, N, 3, generator=g) * mask[..., None]
    spec = LatentSpec("per_atom", F, has_coords=True, bounded=True)
    return LatentBatch(h=h, x=x, mask=mask, spec=spec)


def _generator(size=(4, 64)):
    from generators import DiffusionGenerator

    lat = _latents()
    return DiffusionGenerator(lat.spec, denoiser="egnn",
                              denoiser_kwargs=dict(layers=size[0], hidden=size[1]),
                              timesteps=100, ema_decay=0.99, seed=3), lat


class Checks:
    def __init__(self, accelerator: str, quick: bool, work: Path):
        self.accelerator, self.quick, self.work = accelerator, quick, work
        self.device = torch.device("cuda" if accelerator == "gpu" else "cpu")

    def _tk(self, **extra) -> dict[str, Any]:
        return {"accelerator": self.accelerator, "devices": 1, "logger": False, **extra}

    def _sample(self, gen, n=32):
        gen.to(self.device)
        out = gen.sample(n, sampler="ddim", steps=10, seed=1, progress=False)
        assert out.h.device.type == self.device.type, f"samples on {out.h.device}"
        assert torch.isfinite(out.h).all() and torch.isfinite(out.x).all(), "non-finite samples"
        return out

    # -- checks -------------------------------------------------------------------------------
    def fit_sample_resume_curve(self) -> str:
        """Fit with the training clock and a learning curve, sample on the device, resume."""
        from harness.study.budget import TrainingClock, count_step_flops
        from harness.study.curves import LearningCurve, schedule_for

        steps = 20
        gen, lat = _generator()
        flops = count_step_flops(gen, lat, 32)["flops_per_step"]
        clock = TrainingClock()
        sched = schedule_for(argparse.Namespace(points=3, first_fraction=0.1), steps=steps)
        curve = LearningCurve(self.work / "curve.json", sched,
                              lambda l: {"x_std": float(l.x[l.mask].std())}, n_samples=16,
                              sampler="ddim", steps=5, clock=clock, flops_per_step=flops)
        s = gen.fit(lat, None, self.work / "a", max_steps=steps, batch_size=32, progress=False,
                    checkpoint_every=10, trainer_kwargs=self._tk(callbacks=[clock, curve]))
        assert s["steps"] == steps and len(curve.points) == 3, (s["steps"], curve.points)
        self._sample(gen)
        first, _ = _generator()
        first.fit(lat, None, self.work / "b", max_steps=steps // 2, batch_size=32,
                  progress=False, trainer_kwargs=self._tk())
        resumed, _ = _generator()
        r = resumed.fit(lat, None, self.work / "b", max_steps=steps, batch_size=32,
                        progress=False, resume=True, trainer_kwargs=self._tk())
        assert r["resumed_from"] and r["steps"] == steps
        a, b = gen.state_dict(), resumed.state_dict()
        diff = max(float((a[k].float().cpu() - b[k].float().cpu()).abs().max()) for k in a
                   if a[k].is_floating_point())
        return (f"{steps} steps {clock.seconds:.1f} s, {flops:.2e} FLOPs/step, curve 3 points; "
                f"resume vs straight max |dw| = {diff:.1e} (curve run vs plain resume)")

    def bf16_mixed(self) -> str:
        gen, lat = _generator()
        s = gen.fit(lat, None, self.work / "bf16", max_steps=20, batch_size=32, progress=False,
                    trainer_kwargs=self._tk(precision="bf16-mixed"))
        assert s["final_loss"] == s["final_loss"] and s["final_loss"] < 10, s["final_loss"]
        self._sample(gen)
        return f"final loss {s['final_loss']:.3f}"

    def ddp_one_device(self) -> str:
        gen, lat = _generator()
        s = gen.fit(lat, None, self.work / "ddp", max_steps=10, batch_size=32, progress=False,
                    trainer_kwargs=self._tk(strategy="ddp"))
        assert s["steps"] == 10
        return f"10 steps, final loss {s['final_loss']:.3f}"

    def tiny_study(self) -> str:
        """A whole study in a subprocess: spaces, generators, curves, seconds budget."""
        out = self.work / "runs"
        cmd = [sys.executable, "-m", "harness.cli", "run", "tiny", f"output_dir={out}",
               f"trainer.accelerator={self.accelerator}", "curves.enabled=true",
               "curves.points=3", "curves.n_samples=16", "budget.kind=seconds",
               "budget.value=3"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-1500:]
        rows = json.loads((out / "tiny" / "results.json").read_text())
        steps = {k: r["info"]["train_generator"]["steps"] for k, r in rows.items() if k != "reference"}
        for name in steps:
            assert (out / "tiny" / name / "curve.json").exists(), f"{name}: no curve.json"
        return f"{time.perf_counter() - t0:.0f} s; steps reached in 3 s: {steps}"

    def egnn_throughput(self) -> str:
        """EGNN 9x256, batch 64 QM9-like molecules: train step (loss + backward + AdamW) and
        one reverse step, fp32 and bf16 autocast; molecules/s of the median step."""
        size, rounds = ((2, 32), 2) if self.quick else ((9, 256), 20)
        gen, _ = _generator(size)
        lat = _latents(64, seed=1)
        net = gen.denoiser.to(self.device)
        gen.to(self.device)
        z0, mask = gen.layout.from_batch(lat.to(self.device))
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        g = torch.Generator(device=self.device).manual_seed(0)
        parts = []
        for bf16 in (False, True):
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

            def train():
                with autocast:
                    loss = gen.diffusion_loss(net, z0, mask, None, g)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            @torch.no_grad()
            def reverse():
                t = torch.full((64,), 50, device=self.device)
                with autocast:
                    gen._model(net, z0, t, mask, None)

            for name, fn in (("train", train), ("reverse", reverse)):
                times = []
                for k in range(rounds + 2):
                    if self.device.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    fn()
                    if self.device.type == "cuda":
                        torch.cuda.synchronize()
                    if k >= 2:                                   # two warm-up steps
                        times.append(time.perf_counter() - t0)
                times.sort()
                parts.append(f"{name}{' bf16' if bf16 else ''} "
                             f"{64 / times[len(times) // 2]:.0f} mol/s")
        mem = (f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
               if self.device.type == "cuda" else "")
        return f"EGNN {size[0]}x{size[1]}: " + ", ".join(parts) + mem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run the checks on the CPU with small sizes (tests this script)")
    args = parser.parse_args(argv)
    if not args.cpu_dry_run and not torch.cuda.is_available():
        if _gpu_hardware():
            print(f"gpu-check: this machine has an NVIDIA GPU but torch {torch.__version__} "
                  f"cannot use it (CUDA build: {torch.version.cuda or 'no, a CPU build'}). "
                  "Install a CUDA build of the pinned torch, e.g. `.venv/bin/pip install "
                  "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128`, and rerun.")
            return 1
        print(f"gpu-check: no GPU on this machine (torch {torch.__version__}, CUDA available: "
              "False); nothing to check. Exit 0.")
        return 0
    accelerator = "cpu" if args.cpu_dry_run else "gpu"
    if accelerator == "gpu":
        p = torch.cuda.get_device_properties(0)
        print(f"gpu-check: {torch.cuda.device_count()} x {p.name} "
              f"({p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}")
    os.environ.setdefault("PYTHONPATH", str(REPO))
    with tempfile.TemporaryDirectory(prefix="l3dg-gpu-check-") as tmp:
        checks = Checks(accelerator, quick=args.cpu_dry_run, work=Path(tmp))
        plan: list[tuple[str, Callable[[], str]]] = [
            ("fit + sample + resume + curve", checks.fit_sample_resume_curve),
            ("bf16-mixed", checks.bf16_mixed),
            ("DDP, 1 device", checks.ddp_one_device),
            ("tiny study (seconds budget, curves)", checks.tiny_study),
            ("throughput", checks.egnn_throughput),
        ]
        failed = 0
        for name, fn in plan:
            t0 = time.perf_counter()
            try:
                detail, status = fn(), "ok"
            except Exception as err:   # noqa: BLE001 - every failure is reported, the rest still run
                failed += 1
                detail, status = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", "FAIL"
                traceback.print_exc(limit=3)
            print(f"  [{status:4}] {name:38} {time.perf_counter() - t0:6.1f} s  {detail}", flush=True)
    print(f"gpu-check: {len(plan) - failed}/{len(plan)} checks passed on {accelerator}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
