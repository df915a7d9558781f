"""A hostile or careless user of `l3dg run / report / sample / sweep` (issue: hardening).

Each family below failed silently (rc 0, wrong or missing results) before; now each is a
one-line error naming the key / file, or a redo of what is missing, and never a traceback.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.config import ConfigError, load_config
from harness.study.runner import Study

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    Study.from_source("tiny", [f"output_dir={out}", "study=hard"]).run()
    return out / "hard"


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "hard"
    shutil.copytree(run_dir, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


# -- the whole config is validated before any stage writes a file ------------------------------
@pytest.mark.parametrize("override, key", [
    ("generator.max_steps=-5", "generator.max_steps"), ("generator.max_steps=0", "generator.max_steps"),
    ("sampling.n_samples=0", "sampling.n_samples"), ("generator.timesteps=0", "generator.diffusion.timesteps"),
    ("generator.lr=-1", "generator.lr"), ("generator.batch_size=0", "generator.batch_size"),
    ("sampling.steps=0", "sampling.steps"), ("generator.ema_decay=1.5", "generator.ema_decay"),
    ("generator_overrides.raw.max_steps=0", "generator_overrides.raw.max_steps"),
    ("metrics.latent_molecules=0", "metrics.latent_molecules"),
    ("study=../escape", "study"), ("study=/tmp/abs", "study"), ("study=a/b", "study"),
])
def test_bad_values_fail_before_any_stage(tmp_path, capsys, override, key):
    rc = main(["run", "tiny", f"output_dir={tmp_path}", override])
    err = capsys.readouterr().err
    assert rc == 2 and key in err and "Traceback" not in err
    assert not any(tmp_path.iterdir()), "nothing may be written before the config is valid"


def test_a_gpu_that_is_not_there_is_a_config_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="trainer.accelerator"):
        load_config("tiny", ["trainer.accelerator=gpu"])


# -- resume ----------------------------------------------------------------------------------------
def test_resume_takes_every_positional_as_an_override(run_dir, tmp_path, capsys):
    d = _copy(run_dir, tmp_path)
    rc = main(["run", "--resume", str(d), "generator.max_steps=7"])
    err = capsys.readouterr().err
    assert rc == 2 and "different config" in err          # not silently dropped
    rc = main(["run", "--resume", str(d), "tiny"])
    assert rc == 2 and "key=value" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["delete", "garbage"])
def test_missing_or_damaged_metrics_are_reported_then_redone(run_dir, tmp_path, capsys, damage):
    d = _copy(run_dir, tmp_path)
    metrics = d / "flat" / "metrics.json"
    if damage == "delete":
        metrics.unlink()
    else:
        metrics.write_text("{not json")
    rc = main(["report", str(d)])
    captured = capsys.readouterr()
    assert rc == 1 and str(metrics) in captured.err
    rc = main(["run", "--resume", str(d)])
    assert rc == 0
    values = json.loads(metrics.read_text())["values"]
    assert "edm.validity" in values
    rows = json.loads((d / "results.json").read_text())
    assert "flat" in rows and "error" not in rows["flat"]


def test_garbage_config_and_state_files_name_the_file(run_dir, tmp_path, capsys):
    d = _copy(run_dir, tmp_path)
    (d / "config.yaml").write_text("spaces: [unclosed\n")
    assert main(["report", str(d)]) == 2
    assert "config.yaml" in capsys.readouterr().err
    d2 = _copy(run_dir, tmp_path / "second")
    (d2 / "raw" / "state.json").write_text("\x00garbage")
    assert main(["run", "--resume", str(d2)]) == 2
    err = capsys.readouterr().err
    assert "state.json" in err and "Traceback" not in err


# -- one process per run directory -----------------------------------------------------------------
def test_a_second_run_on_a_locked_directory_refuses(run_dir, tmp_path, capsys):
    from harness.results.guard import RunDirLock

    d = _copy(run_dir, tmp_path)
    with RunDirLock(d):
        rc = main(["run", "--resume", str(d)])
    err = capsys.readouterr().err
    assert rc == 2 and "in use by another l3dg process" in err and str(os.getpid()) in err
    assert main(["run", "--resume", str(d)]) == 0      # free again once the holder is gone


# -- signals ---------------------------------------------------------------------------------------
def test_sigterm_exits_nonzero_and_records_the_interruption(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "tiny", f"output_dir={tmp_path}",
                             "generator.max_steps=400"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    state = tmp_path / "tiny" / "raw" / "state.json"
    while time.time() < deadline and not (state.exists() and "train_generator" in state.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    assert rc == 143, proc.stdout.read().decode()[-2000:]
    record = json.loads((tmp_path / "tiny" / "record.json").read_text())
    assert record["status"].startswith("interrupted")


# -- names are names -------------------------------------------------------------------------------
def test_sample_out_and_sweep_names_cannot_escape(run_dir, tmp_path, capsys):
    d = _copy(run_dir, tmp_path)
    assert main(["sample", str(d), "--out", "../../x", "--n", "2"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["sweep", "sweep-quick", "--study-name", "../../x", "--n-trials", "1"]) == 2
    assert "--study-name" in capsys.readouterr().err
    assert not (tmp_path.parent / "x").exists()


def test_run_dir_plugins_resolve_against_the_run_directory(run_dir, tmp_path, monkeypatch):
    import yaml

    d = _copy(run_dir, tmp_path)
    text = (REPO / "tests" / "fixtures" / "my_space.py").read_text()
    # a name of its own: the fixture's "scaled_raw" may already be registered by another test
    (d / "my_space.py").write_text(text.replace('"scaled_raw"', '"scaled_raw_rundir"'))
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    cfg["plugins"] = ["my_space.py"]
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "my_space.py").write_text("raise SystemExit('the wrong file was imported')\n")
    monkeypatch.chdir(elsewhere)
    study = Study.resume(d)
    assert study.config.plugins == [str((d / "my_space.py").resolve())]


# -- sweeps ----------------------------------------------------------------------------------------
def test_sweep_report_on_missing_storage_or_unknown_sweep(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep-report", "nosuch"]) == 2
    assert "no sweep storage" in capsys.readouterr().err
    import optuna

    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="real", storage=url)
    assert main(["sweep-report", "nosuch", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "no sweep named 'nosuch'" in err and "real" in err
    assert main(["sweep-report", "real", "--storage", url]) == 2
    assert "no completed trial" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["latents.pt", "samples.pt"])
def test_damaged_tensor_files_are_redone_on_resume(run_dir, tmp_path, capsys, name):
    d = _copy(run_dir, tmp_path)
    (d / "flat" / name).write_bytes(b"PK\x03\x04 truncated")
    assert main(["run", "--resume", str(d)]) == 0
    import torch

    assert isinstance(torch.load(d / "flat" / name, weights_only=True), dict)


# -- results on disk are never silently dropped or trusted when edited (issue 27) -----------
def test_a_space_dropped_from_config_yaml_is_named_not_hidden(run_dir, tmp_path):
    import yaml

    from harness.results.state import collect_results

    d = _copy(run_dir, tmp_path)
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    dropped = next(iter(cfg["spaces"]))
    del cfg["spaces"][dropped]
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = collect_results(d)
    assert dropped in rows and "does not list space" in rows[dropped]["error"]


def test_an_edited_reference_row_is_scored_again(run_dir, tmp_path):
    from harness.study.runner import Study

    d = _copy(run_dir, tmp_path)
    path = d / "reference" / "metrics.json"
    data = json.loads(path.read_text())
    key = next(k for k, v in data["values"].items() if isinstance(v, float) and v == v)
    true_value = data["values"][key]
    data["values"][key] = 123.0                     # planted, fingerprint kept
    path.write_text(json.dumps(data))
    Study.resume(d).score_reference()
    assert json.loads(path.read_text())["values"][key] == true_value
