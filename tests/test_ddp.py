"""DDP on the CPU: ``trainer.strategy=ddp trainer.devices=2 trainer.accelerator=cpu`` (gloo,
Lightning's subprocess launcher) trains in two processes.

* two ranks at global batch B reach the parameters of one rank at batch B (randomness keyed
  by the molecule's global batch position, tests/ddp_generator.py: PerMoleculeNoise);
* exact resume holds under DDP (product generator, bit-equal);
* only rank 0 writes checkpoints, logs, samples and metrics (Python audit hooks,
  tests/write_audit.py);
* a study interrupted after a two-process generator fit resumes on one process and
  continues without retraining.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))
import ddp_generator as dg  # noqa: E402
import write_audit  # noqa: E402

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available()
                                     and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")


def run_two_ranks(cmd: list[str]) -> str:
    out = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in text, "no second rank joined: " + text[-2000:]
    return text


@pytest.fixture(scope="module")
def generator_runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp_generator")
    run_two_ranks([sys.executable, str(TESTS / "ddp_generator.py"), str(out)])
    return out


def saved(out: Path, fit: str, rank: int) -> dict:
    return torch.load(out / "weights" / f"{fit}.rank{rank}.pt", weights_only=True)


def test_ranks_hold_the_same_weights(generator_runs):
    for fit in ("equiv", "full", "resume"):
        a, b = saved(generator_runs, fit, 0), saved(generator_runs, fit, 1)
        assert a["weights"].keys() == b["weights"].keys()
        assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"]), fit


def test_two_ranks_match_one_rank_at_the_same_global_batch(generator_runs, tmp_path):
    ddp = saved(generator_runs, "equiv", 0)
    assert ddp["steps"] == 3
    one, _ = dg.fit(dg.PerMoleculeNoise, tmp_path / "one_rank", 3, devices=1,
                    batch=2 * dg.PER_RANK_BATCH)
    single = dg.weights(one)
    init = dg.weights(dg.PerMoleculeNoise(dg.SPEC, seed=0, **dg.OPTIONS))
    moved = max((single[k] - init[k]).abs().max().item() for k in single)
    assert moved > 1e-2                       # the comparison is not between untrained nets
    for k in single:                          # all-reduce order: float32 round-off only
        torch.testing.assert_close(ddp["weights"][k], single[k], rtol=1e-4, atol=1e-5, msg=k)


def test_exact_resume_under_ddp(generator_runs):
    full, resumed = saved(generator_runs, "full", 0), saved(generator_runs, "resume", 0)
    assert full["steps"] == resumed["steps"] == 4
    for k in full["weights"]:
        assert torch.equal(full["weights"][k], resumed["weights"][k]), k


def test_only_rank_zero_writes_generator_files(generator_runs):
    audit = generator_runs / "audit"
    # the audit sees rank 1: it saved its own weights file (outside the run directories)
    assert any(p.endswith("full.rank1.pt") for p in write_audit.writes_under(audit, generator_runs)[1])
    for fit in ("equiv", "full", "resume"):
        writes = write_audit.writes_under(audit, generator_runs / fit)
        assert set(writes) == {0}, {r: sorted(set(p))[:5] for r, p in writes.items()}
        assert any(p.endswith("checkpoints/last.ckpt") for p in writes[0])
        assert any("/logs/" in p for p in writes[0])


def test_study_on_two_processes_resumes_on_one(tmp_path):
    from harness.results.state import SpaceState
    from harness.study.runner import Study

    audit = tmp_path / "audit"
    overrides = [f"output_dir={tmp_path}", "trainer.strategy=ddp", "trainer.devices=2",
                 "trainer.accelerator=cpu"]
    # raw: everything; flat: autoencoder and generator trained on two ranks, then stop
    run_two_ranks([sys.executable, str(TESTS / "ddp_study.py"), str(audit), "flat/train_generator",
                   *overrides])
    root = tmp_path / "tiny"
    writes = write_audit.writes_under(audit, root)
    assert list(audit.glob("rank1.*.jsonl")), "rank 1 did not run under the audit"
    assert set(writes) == {0}, {r: sorted(set(p))[:5] for r, p in writes.items()}
    for rel in ("raw/samples.sdf", "raw/metrics.json", "raw/generator/checkpoints/last.ckpt",
                "flat/space/space.json", "flat/generator/checkpoints/last.ckpt"):
        assert str(root / rel) in writes[0], rel
    flat = SpaceState(root / "flat")
    assert flat.done("train_generator") and not flat.done("sample")
    trained = flat.data["done"]["train_generator"]
    ckpt = root / "flat" / "generator" / "checkpoints" / "last.ckpt"
    mtime = ckpt.stat().st_mtime_ns

    rows = Study.resume(root, ["trainer.devices=1", "trainer.strategy=auto"]).run()
    assert {"raw", "flat"} <= set(rows)
    flat = SpaceState(root / "flat")
    assert all(flat.done(s) for s in ("sample", "score", "controls"))
    assert flat.data["done"]["train_generator"] == trained and ckpt.stat().st_mtime_ns == mtime
    assert (root / "flat" / "metrics.json").exists() and (root / "report.md").exists()
