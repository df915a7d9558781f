"""End-to-end studies on the tiny preset: artefacts, interrupt + resume, CLI, config errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.config import ConfigError, load_config, validate_components
from harness.study.runner import STAGES, Study, StudyInterrupted

REPO = Path(__file__).resolve().parents[1]


def tiny(tmp_path, *overrides):
    return Study.from_source("tiny", [f"output_dir={tmp_path}", *overrides])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    study = tiny(tmp_path_factory.mktemp("runs"))
    rows = study.run()
    return study, rows


def test_tiny_study_produces_every_artefact(finished):
    study, rows = finished
    root = study.root
    assert set(rows) == {"reference", "raw", "flat"}
    for name in ("config.yaml", "record.json", "results.json", "report.md",
                 "reference/metrics.json", "plots/metrics_per_space.png",
                 "plots/quality_vs_recon_and_dim.png"):
        assert (root / name).exists(), name
    for space in ("raw", "flat"):
        d = root / space
        for name in ("space/space.json", "space/weights.pt", "latents.pt",
                     "generator/checkpoints/last.ckpt", "samples.sdf", "samples.pt", "metrics.json"):
            assert (d / name).exists(), f"{space}/{name}"
        state = json.loads((d / "state.json").read_text())
        assert list(state["done"]) == list(STAGES)
        values = json.loads((d / "metrics.json").read_text())["values"]
        assert 0 <= values["edm.validity"] <= 1 and "latent.recon_rmsd" in values
    record = json.loads((root / "record.json").read_text())
    assert record["status"] == "finished" and record["seed"] == 0
    assert record["versions"]["torch"].startswith("2.13") and "commit" in record["git"]
    assert set(record["stages"]["raw"]) == set(STAGES)
    # the raw space is the identity: perfect reconstruction, exact symmetry
    raw = rows["raw"]["values"]
    assert raw["latent.recon_smiles_match"] == 1.0 and raw["latent.recon_rmsd"] < 1e-4
    report = (root / "report.md").read_text()
    assert "| reference |" in report and "| raw |" in report and "samples_raw.png" in report


def test_samples_sdf_holds_every_sample(finished):
    from harness.core.chem import read_sdf

    study, _ = finished
    records, skipped = read_sdf(study.root / "raw" / "samples.sdf", perceive_missing_bonds=False)
    assert len(records) + len(skipped) == study.config.sampling.n_samples


def test_interrupted_study_resumes_skipping_finished_stages(tmp_path):
    study = tiny(tmp_path)
    with pytest.raises(StudyInterrupted):
        study.run(stop_after="flat/train_generator")
    root = study.root
    raw_metrics = root / "raw" / "metrics.json"
    flat_weights = root / "flat" / "space" / "weights.pt"
    before = {p: p.stat().st_mtime_ns for p in (raw_metrics, flat_weights,
                                                root / "flat" / "generator" / "checkpoints" / "last.ckpt")}
    assert not (root / "flat" / "metrics.json").exists()
    rows = Study.resume(root).run()
    assert set(rows) == {"reference", "raw", "flat"}
    for path, mtime in before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was redone"
    assert (root / "flat" / "metrics.json").exists()


def test_killed_process_resumes_from_disk(tmp_path):
    """SIGKILL a real `l3dg run` after its first space finished, then `--resume`."""
    cmd = [sys.executable, "-m", "harness.cli", "run", "tiny", f"output_dir={tmp_path}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    state = tmp_path / "tiny" / "raw" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and "score" in json.loads(state.read_text())["done"]:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the study finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_raw = (tmp_path / "tiny" / "raw" / "metrics.json").stat().st_mtime_ns
    out = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--resume", str(tmp_path / "tiny")],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "raw] done already: fit_space" in out.stdout + out.stderr
    assert (tmp_path / "tiny" / "raw" / "metrics.json").stat().st_mtime_ns == done_raw
    assert (tmp_path / "tiny" / "flat" / "metrics.json").exists()
    assert "reference" in out.stdout and "flat" in out.stdout


def test_sample_and_report_commands(finished, capsys):
    from harness.cli import main

    study, _ = finished
    assert main(["sample", str(study.root), "--n", "4", "--space", "raw", "--sampler", "ddpm",
                 "--steps", "10"]) == 0
    assert (study.root / "raw" / "samples_ddpm_4.sdf").exists()
    assert main(["report", str(study.root)]) == 0
    assert "reference" in capsys.readouterr().out


@pytest.mark.parametrize("override, message", [
    ("bogus=1", "unknown config key 'bogus'"),
    ("generator.lrr=0.1", "unknown config key generator.'lrr'"),
    ("generator.max_steps=ten", "config key 'generator.max_steps' must be an integer"),
    ("spaces={nope: {}}", "config key 'spaces.nope': unknown space 'nope'"),
    ("spaces.flat.widht=3", "unknown config key 'spaces.flat.widht'"),
    ("spaces.flat.width=wide", "config key 'spaces.flat.width' must be an integer"),
    ("spaces.flat.epochs=2.5", "config key 'spaces.flat.epochs' must be an integer"),
    ("spaces={invariant: {lr: 1e-3}}", "YAML reads 1e-3 as a string: write 1.0e-3"),
    ("sampling.sampler=leapfrog", "config key 'sampling.sampler': unknown sampler 'leapfrog'"),
    ("metrics.suite=qm9/v9", "config key 'metrics.suite'"),
])
def test_config_errors_name_the_bad_key(override, message):
    with pytest.raises((ConfigError, KeyError)) as info:
        config = load_config("tiny", [override])
        validate_components(config)
    assert message in str(info.value)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; presets: .*default.*tiny"):
        load_config("nope")


def test_every_preset_validates():
    from harness.config import list_presets

    for preset in list_presets():
        validate_components(load_config(preset))


def test_rerun_with_a_changed_config_refuses_then_force_redoes_only_affected_stages(tmp_path):
    from harness.study.runner import StaleResults

    study = tiny(tmp_path, "spaces={raw: {}}")
    study.run()
    space_json = study.root / "raw" / "space" / "space.json"
    fitted = space_json.stat().st_mtime_ns
    changed = ["spaces={raw: {}}", "sampling.n_samples=4"]
    with pytest.raises(StaleResults, match="stage 'sample' was run with a different config"):
        tiny(tmp_path, *changed).run()
    rows = Study.from_source("tiny", [f"output_dir={tmp_path}", *changed], force=True).run()
    assert space_json.stat().st_mtime_ns == fitted           # fit_space kept
    assert json.loads((study.root / "raw" / "metrics.json").read_text())["values"]
    from harness.study.runner import load_molbatch

    assert len(load_molbatch(study.root / "raw" / "samples.pt")) == 4
    assert "raw" in rows


def test_property_conditioned_study_records_requested_targets(tmp_path):
    from harness.study.runner import load_molbatch

    study = tiny(tmp_path, "spaces={flat: {width: 16, hidden: 32, layers: 1, epochs: 1}}",
                 "data.options.property_fields=[mu, gap]", "generator.context=[mu, gap]",
                 "sampling.guidance_scale=2.0")
    study.run()
    samples = load_molbatch(study.root / "flat" / "samples.pt")
    assert samples.props.shape == (8, 2) and torch_finite(samples.props)
    state = json.loads((study.root / "flat" / "state.json").read_text())
    assert state["info"]["train_generator"]["context"]["names"] == ["mu", "gap"]


def torch_finite(t):
    import torch

    return bool(torch.isfinite(t).all())
