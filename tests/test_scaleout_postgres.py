"""Sweeps on PostgreSQL, the storage for workers on many machines: two ``l3dg sweep`` worker
processes started together on a fresh private server, one SIGKILLed mid-trial and restarted;
no trial is lost or duplicated, the killed trial is retried with its parameters, and
``l3dg sweep-report`` and ``optuna-dashboard`` read the result. Skips (with the reason) where no PostgreSQL server
can be started; ``.ci/run`` installs the Debian package."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pg_server import PostgresServer, PostgresUnavailable  # noqa: E402
from test_dashboard import check_study, dashboard  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TrialState = optuna.trial.TrialState
#: short heartbeats so a dead worker's trial is declared stale within seconds
BEAT = ["sweep.heartbeat_interval=1", "sweep.grace_period=4"]


@pytest.fixture(scope="module")
def postgres():
    """One private server for the module; each test takes a fresh database on it."""
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as err:
        pytest.skip(f"no PostgreSQL server here: {err}")
    yield server
    server.stop()


#: a worker that does all its imports, reports ready, waits for "go", then joins the sweep
#: (zero trials): the schema creation of all workers then happens at the same instant
JOIN_AT_ONCE = """import sys
from harness.config import load_config, validate_components
from harness.sweep import run_sweep
overrides = ["output_dir=" + sys.argv[2]]
validate_components(load_config("tiny", overrides))
print("ready", flush=True)
sys.stdin.readline()
run_sweep("tiny", overrides, storage=sys.argv[1], n_trials=0, study_name="race")
"""


def test_workers_starting_together_on_an_empty_database_do_not_collide(tmp_path, postgres):
    url = postgres.create_database("race")
    procs = [subprocess.Popen([sys.executable, "-c", JOIN_AT_ONCE, url, str(tmp_path)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.communicate()[1][-3000:]
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-3000:]          # no UniqueViolation on CREATE TYPE
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["race"]


def sweep_cmd(tmp_path, url, n, *extra):
    """A seconds-long sweep worker: tiny preset, raw/flat spaces, 2-3 generator steps."""
    return [sys.executable, "-m", "harness.cli", "sweep", "tiny", f"output_dir={tmp_path}",
            "sweep.spaces=[raw, flat]", "sweep.latent_widths=[8, 16]", "sweep.ae_epochs_range=[1, 2]",
            "sweep.max_steps_choices=[2, 3]", "sweep.n_samples=8", "sweep.prune=false",
            "metrics.latent_molecules=8", *BEAT, *extra,
            "--storage", url, "--study-name", "pg", "--n-trials", str(n)]


def start(cmd):
    # own process group: SIGKILL reaches the worker and anything it started
    return subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def running_trials(url):
    try:
        return [t for t in optuna.load_study(study_name="pg", storage=url).trials
                if t.state == TrialState.RUNNING]
    except KeyError:  # the study is not created yet
        return []


def test_two_workers_on_postgres_survive_a_sigkill(tmp_path, postgres):
    url = postgres.create_database("sigkill")
    # both start together on an empty database (schema creation must not collide); b scores
    # many samples, so once it holds a trial it stays inside it until killed
    a = start(sweep_cmd(tmp_path, url, 2))
    b = start(sweep_cmd(tmp_path, url, 2, "sweep.n_samples=3000"))
    procs = [a, b]
    try:
        deadline = time.time() + 180
        while time.time() < deadline and b.poll() is None:
            n_running = len(running_trials(url))
            if n_running == 2 or (n_running == 1 and a.poll() is not None):
                break
            time.sleep(0.2)
        assert b.poll() is None, f"worker b ended before it was killed: {b.communicate()[1][-3000:]}"
        assert running_trials(url), "worker b never started a trial"
        time.sleep(1.5)                       # a heartbeat of b's trial has landed
        os.killpg(b.pid, signal.SIGKILL)
        b.wait()
        time.sleep(5)                         # past the grace period: b's trial is stale
        b2 = start(sweep_cmd(tmp_path, url, 2))
        procs.append(b2)
        for p in (a, b2):
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    trials = optuna.load_study(study_name="pg", storage=url).trials
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(5)), numbers          # 2 + 1 killed + 2: none lost
    failed = [t for t in trials if t.state == TrialState.FAIL]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(failed) == 1 and len(done) == 4, [(t.number, t.state.name) for t in trials]
    killed = failed[0]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1, "the killed trial must be retried exactly once"       # not duplicated
    assert retries[0].state == TrialState.COMPLETE and retries[0].params == killed.params
    pids = [t.user_attrs["worker_pid"] for t in done]
    assert pids.count(a.pid) == 2 and pids.count(b2.pid) == 2   # two trials from each worker
    assert b.pid not in pids
    assert sorted(p.name for p in (tmp_path / "sweeps" / "pg").glob("trial_*")) == \
        [f"trial_{n}" for n in range(5)]

    out = subprocess.run([sys.executable, "-m", "harness.cli", "sweep-report", "pg", "--storage", url],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = (tmp_path / "sweeps" / "pg" / "sweep_report.md").read_text()
    assert "| trial | space |" in report and "The paper's claim" in report
    for t in done:
        assert f"| {t.number} |" in report
    with dashboard(url) as base:                  # optuna-dashboard opens the same storage
        check_study(base, "pg", n_complete=4)
