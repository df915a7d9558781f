"""Optuna sweeps: trials record the paper's factors, workers share one SQLite storage, a
dead worker's trial is retried, and the sweep report tests the claim."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from harness.sweep import run_sweep
from harness.report.sweep import claim_tests, write_sweep_report

REPO = Path(__file__).resolve().parents[1]


def sweep_overrides(tmp_path):
    return [f"output_dir={tmp_path}", "sweep.spaces=[raw, flat]", "sweep.latent_widths=[8, 16]",
            "sweep.ae_epochs_range=[1, 2]", "sweep.max_steps_choices=[2, 3]", "sweep.n_samples=8",
            "sweep.prune=false", "metrics.latent_molecules=8"]


def cli_sweep(tmp_path, storage, name, n, *extra):
    return [sys.executable, "-m", "harness.cli", "sweep", "tiny", *sweep_overrides(tmp_path), *extra,
            "--storage", storage, "--study-name", name, "--n-trials", str(n)]


def test_sweep_runs_trials_and_records_factors(tmp_path):
    study, url = run_sweep("tiny", sweep_overrides(tmp_path), n_trials=2, seed=0)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:
        assert {"recon_error", "symmetry_error", "dimension", "seconds_total", "space"} <= set(t.user_attrs)
        assert 0.0 <= t.value <= 1.0
    assert url.startswith("sqlite:///") and Path(url[len("sqlite:///"):]).exists()
    report = write_sweep_report(study.study_name, url)
    text = report.read_text()
    assert "The paper's claim" in text and "| trial | space |" in text
    assert (report.parent / "objective_vs_factors.png").exists()


def test_two_concurrent_workers_share_sqlite_without_losing_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cli_sweep(tmp_path, url, "shared", 2), cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="shared", storage=url)
    numbers = sorted(t.number for t in study.trials)
    assert numbers == [0, 1, 2, 3]                       # none lost, none duplicated
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len({t.user_attrs["worker_pid"] for t in study.trials}) == 2
    trial_dirs = sorted(p.name for p in (tmp_path / "sweeps" / "shared").glob("trial_*"))
    assert trial_dirs == ["trial_0", "trial_1", "trial_2", "trial_3"]


def test_trial_of_a_killed_worker_is_retried_with_the_same_parameters(tmp_path):
    url = f"sqlite:///{tmp_path / 'retry.db'}"
    beat = ["sweep.heartbeat_interval=1", "sweep.grace_period=3"]
    # the first worker scores many samples, so it is still inside its trial when killed
    worker = subprocess.Popen(cli_sweep(tmp_path, url, "retry", 1, *beat, "sweep.n_samples=3000"),
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 300
    running = None
    while time.time() < deadline and worker.poll() is None:
        try:
            trials = optuna.load_study(study_name="retry", storage=url).trials
            running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        except KeyError:  # study not created yet
            running = None
        if running:
            break
        time.sleep(0.3)
    assert running, "the worker never started a trial"
    time.sleep(1.5)  # let a heartbeat land
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    time.sleep(4)    # past the grace period
    out = subprocess.run(cli_sweep(tmp_path, url, "retry", 1, *beat),
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    trials = optuna.load_study(study_name="retry", storage=url).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL
    retried = [t for t in trials[1:] if t.system_attrs.get("failed_trial") == 0]
    assert retried and retried[0].params == trials[0].params
    assert retried[0].state == optuna.trial.TrialState.COMPLETE


def test_claim_test_reports_rank_correlations_whatever_their_sign():
    rows = [{"objective": q, "recon_error": e, "symmetry_error": 0.0, "dimension": d, "recon_rmsd": e}
            for q, e, d in [(0.9, 0.1, 10), (0.5, 0.4, 20), (0.2, 0.8, 30), (0.1, 0.9, 5)]]
    tests = claim_tests(rows)
    assert tests["recon_error"]["rho"] == pytest.approx(-1.0) and tests["recon_error"]["supports_claim"]
    assert tests["symmetry_error"]["rho"] is None          # constant factor: not computable
    assert tests["dimension"]["n"] == 4 and tests["dimension"]["supports_claim"] is not None


def test_round_off_symmetry_errors_do_not_make_a_correlation():
    rows = [{"objective": q, "symmetry_error": e} for q, e in [(0.5, 6e-9), (0.1, 1e-7), (0.0, 2e-7)]]
    assert claim_tests(rows)["symmetry_error"]["rho"] is None


# -- spaces own their knobs ---------------------------------------------------------------
def _fixed_trial_config(params, overrides=()):
    from harness.config import load_config, validate_components
    from harness.sweep import trial_config

    base = load_config("tiny", list(overrides))
    validate_components(base)
    trial = optuna.trial.FixedTrial(params)
    config, space = trial_config(trial, base, Path("/tmp/unused"))
    return trial, config, space


def test_each_space_maps_the_sweep_factors_onto_its_own_options():
    gen = {"lr": 1e-3, "max_steps": 300}
    trial, config, _ = _fixed_trial_config({"space": "invariant", "ae_epochs": 3, "latent_width": 16,
                                            "invariant.geo_encoder": "e3nn", **gen},
                                           ["sweep.spaces=[invariant, flat, per_atom]",
                                            "sweep.space_options={invariant: {geo_encoder: [egnn, e3nn]}}"])
    assert {k: config.spaces["invariant"][k] for k in ("topo_width", "geo_width", "epochs_topo",
                                                        "epochs_geo", "geo_encoder")} == \
        {"topo_width": 16, "geo_width": 16, "epochs_topo": 15, "epochs_geo": 3, "geo_encoder": "e3nn"}
    assert trial.user_attrs["space_options"] == config.spaces["invariant"]
    _, config, _ = _fixed_trial_config({"space": "flat", "ae_epochs": 2, "latent_width": 16, **gen},
                                       ["sweep.spaces=[flat]"])
    assert config.spaces["flat"]["width"] == 32 and config.spaces["flat"]["epochs"] == 8
    _, config, _ = _fixed_trial_config({"space": "per_atom", "ae_epochs": 2, "per_atom.k": 4, **gen},
                                       ["sweep.spaces=[per_atom]"])
    assert config.spaces["per_atom"]["k"] == 4 and config.spaces["per_atom"]["epochs"] == 2


def test_trial_records_the_generator_it_actually_trained():
    """A per-space generator override beats the sweep's max_steps: the user attribute says so."""
    trial, config, space = _fixed_trial_config(
        {"space": "raw", "lr": 1e-3, "max_steps": 300},
        ["sweep.spaces=[raw]", "generator_overrides={raw: {max_steps: 11}}"])
    assert trial.params["max_steps"] == 300
    assert trial.user_attrs["generator"]["max_steps"] == 11 == config.generator_for(space).max_steps
    assert trial.user_attrs["generator"]["lr"] == 1e-3


def test_sweep_module_names_no_space_and_no_latent_metric_key():
    text = (REPO / "harness" / "sweep.py").read_text()
    for word in ('"invariant"', '"per_atom"', '"flat"', '"raw"', '"latent.'):
        assert word not in text, word


def test_a_users_space_is_swept_without_editing_the_package(tmp_path):
    plugin = REPO / "tests" / "fixtures" / "my_space.py"
    _, config, _ = _fixed_trial_config(
        {"space": "scaled_raw", "scaled_raw.coord_scale": 3.0, "lr": 1e-3, "max_steps": 300},
        [f"plugins=[{plugin}]", "sweep.spaces=[scaled_raw]",
         "sweep.space_options={scaled_raw: {coord_scale: [1.0, 3.0]}}"])
    assert config.spaces == {"scaled_raw": {"coord_scale": 3.0}}
    study, _ = run_sweep("tiny", [*sweep_overrides(tmp_path), f"plugins=[{plugin}]",
                                  "sweep.spaces=[scaled_raw]"], n_trials=1, seed=0)
    (trial,) = study.get_trials(deepcopy=False)
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial
    assert trial.user_attrs["space"] == "scaled_raw" and trial.user_attrs["space_options"] == {}


def test_claim_test_weighs_trials_by_their_intervals():
    from harness.report.sweep import claim_tests

    rows = [{"objective": q, "recon_error": e, "objective_interval": [q - w, q + w],
             "symmetry_error": 0.0, "dimension": 32} for q, e, w in
            [(0.8, 0.1, 0.01), (0.6, 0.3, 0.01), (0.4, 0.5, 0.01), (0.2, 0.7, 0.01)]]
    res = claim_tests(rows)["recon_error"]
    assert res["rho"] == -1.0 and res["claim_beyond_noise"] is True
    noisy = [dict(r, objective_interval=[r["objective"] - 0.5, r["objective"] + 0.5]) for r in rows]
    res = claim_tests(noisy)["recon_error"]
    assert res["rho_noise_range"][1] > 0 and res["claim_beyond_noise"] is False


def test_a_sweep_whose_every_trial_fails_exits_nonzero(tmp_path, capsys, monkeypatch):
    from harness.cli import main

    plugin = tmp_path / "broken_space.py"
    plugin.write_text(
        "from harness.core.registry import SPACES\n"
        "from spaces.raw import RawSpace\n"
        "@SPACES.register('broken_raw')\n"
        "class Broken(RawSpace):\n"
        "    def encode(self, batch):\n"
        "        raise RuntimeError('this space always fails')\n")
    monkeypatch.chdir(tmp_path)
    rc = main(["sweep", "tiny", f"plugins=[{plugin}]", "spaces={broken_raw: {}}",
               "sweep.spaces=[broken_raw]", "--n-trials", "1", "--storage", f"sqlite:///{tmp_path / 's.db'}"])
    err = capsys.readouterr().err
    assert rc == 1 and "no trial" in err


def test_the_generator_family_is_a_sweep_factor():
    """``sweep.families`` makes the family a trial parameter; a compute budget replaces the
    steps factor, so trials are compared at equal cost."""
    trial, config, space = _fixed_trial_config(
        {"space": "flat", "ae_epochs": 1, "latent_width": 16, "lr": 1e-3, "max_steps": 300, "family": "flow"},
        ["sweep.spaces=[flat]", "sweep.families=[diffusion, flow]"])
    assert config.generator_for(space).family == "flow" == trial.user_attrs["generator"]["family"]
    trial, config, space = _fixed_trial_config(
        {"space": "flat", "ae_epochs": 1, "latent_width": 16, "lr": 1e-3},
        ["sweep.spaces=[flat]", "budget={kind: flops, value: 1.0e9}"])
    assert "max_steps" not in trial.params and config.budget.value == 1e9
    from harness.config import ConfigError, load_config, validate_components

    with pytest.raises(ConfigError, match="sweep.families"):
        validate_components(load_config("tiny", ["sweep.families=[diffusion, fancy]"]))
    with pytest.raises(ConfigError, match="sweep.families"):
        validate_components(load_config("tiny", ["sweep.families=[diffusion, flow]", "sampling.sampler=ddpm"]))


def test_a_sweep_over_both_families_reports_them_side_by_side(tmp_path):
    study, url = run_sweep("tiny", sweep_overrides(tmp_path) + ["sweep.families=[diffusion, flow]",
                                                                "sweep.spaces=[flat]"], n_trials=3, seed=1)
    fams = {t.params["family"] for t in study.get_trials(deepcopy=False)}
    assert fams <= {"diffusion", "flow"} and fams
    text = write_sweep_report(study.study_name, url).read_text()
    assert "## By generator family" in text
