"""``optuna-dashboard <storage URL>`` opens a sweep's storage: served on 127.0.0.1 on a free
port, its HTTP API lists the study and the trials with the factors ``l3dg sweep`` records."""
from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness.sweep import run_sweep

DASHBOARD = Path(sys.executable).parent / "optuna-dashboard"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


@contextlib.contextmanager
def dashboard(storage: str, wait_s: float = 90.0):
    """Serve ``storage`` with the optuna-dashboard command; yields its base URL and kills
    the server at exit. Waits (bounded) until the API answers."""
    port = free_port()
    proc = subprocess.Popen([str(DASHBOARD), storage, "--host", "127.0.0.1", "--port", str(port),
                             "--server", "wsgiref", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + wait_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"optuna-dashboard exited ({proc.returncode}): "
                                     f"{proc.stdout.read()[-3000:]}")
            try:
                get_json(f"{base}/api/meta", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.time() > deadline:
                    raise AssertionError(f"optuna-dashboard did not answer on {base} in {wait_s:.0f} s")
                time.sleep(0.3)
        yield base
    finally:
        proc.kill()
        proc.wait(timeout=30)


def check_study(base: str, name: str, n_complete: int) -> dict:
    """The study list holds ``name``; its detail page has ``n_complete`` finished trials
    carrying the sweep's factors. Returns the study detail."""
    studies = get_json(f"{base}/api/studies")["study_summaries"]
    match = [s for s in studies if s["study_name"] == name]
    assert match, f"study {name!r} not in {[s['study_name'] for s in studies]}"
    detail = get_json(f"{base}/api/studies/{match[0]['study_id']}")
    done = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(done) == n_complete, [t["state"] for t in detail["trials"]]
    attrs = {a["key"] for t in done for a in t["user_attrs"]}
    assert {"recon_error", "symmetry_error", "dimension", "space"} <= attrs
    return detail


def test_dashboard_lists_a_sweep_from_its_storage(tmp_path):
    overrides = [f"output_dir={tmp_path}", "sweep.spaces=[raw]", "sweep.max_steps_choices=[2]",
                 "sweep.n_samples=8", "sweep.prune=false", "metrics.latent_molecules=8"]
    study, url = run_sweep("tiny", overrides, n_trials=1, study_name="dash", seed=0)
    assert url.startswith("sqlite:///")
    with dashboard(url) as base:
        detail = check_study(base, "dash", n_complete=1)
        assert detail["name"] == "dash"
        with urllib.request.urlopen(f"{base}/dashboard", timeout=10) as r:   # the web page itself
            assert r.status == 200 and b"<html" in r.read().lower()
