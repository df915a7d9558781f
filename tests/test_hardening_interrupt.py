"""Ctrl-C always stops a command (issue 27, defect 4).

Before: a SIGINT that landed inside RDKit's substructure search (QED, in the chemistry
stage of ``l3dg eval``) was taken by RDKit's own handler — the search was cut short, the
run finished, exited 0 and overwrote ``--out``; elsewhere Ctrl-C ended in a traceback. Now
the harness owns SIGINT (``harness/term/interrupts.py``): exit code 130, one line, ``--out``
untouched.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import QM9_SAMPLE

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")


def _default_sigint() -> None:
    """Children start with the default SIGINT disposition, as from a terminal: a test run
    launched in the background by a non-interactive shell inherits SIGINT *ignored*, and a
    process that starts with it ignored never sees Ctrl-C at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

# a substructure search that runs ~1 s inside RDKit with RDKit's Ctrl-C handler installed
_RDKIT_SEARCH = """
import os, signal, threading, time
from rdkit import Chem
from harness.term.interrupts import owned_sigint

grid = Chem.RWMol()
for _ in range(64):
    grid.AddAtom(Chem.Atom(6))
for i in range(8):
    for j in range(8):
        if i < 7: grid.AddBond(8 * i + j, 8 * i + j + 8, Chem.BondType.SINGLE)
        if j < 7: grid.AddBond(8 * i + j, 8 * i + j + 1, Chem.BondType.SINGLE)
mol = grid.GetMol()
mol.UpdatePropertyCache(False)
query = Chem.MolFromSmarts("*~*~*~*~*~*~*~*~*~*~*~*")
try:
    with owned_sigint():
        threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        for _ in range(3):
            mol.GetSubstructMatches(query, uniquify=False, maxMatches=10**6)
    print("swallowed")
except KeyboardInterrupt:
    print("stopped")
"""


def test_a_ctrl_c_inside_rdkit_is_not_swallowed():
    out = subprocess.run([sys.executable, "-c", _RDKIT_SEARCH], cwd=REPO, env=ENV,
                         preexec_fn=_default_sigint,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "stopped", out.stdout + out.stderr[-2000:]


def _big_sdf(path: Path, copies: int = 25) -> Path:
    path.write_bytes(QM9_SAMPLE.read_bytes() * copies)     # 5000 molecules
    return path


def _eval_and_interrupt(tmp_path: Path, after: str) -> tuple[int, str, Path]:
    src = _big_sdf(tmp_path / "big.sdf")
    out = tmp_path / "metrics.json"
    out.write_text("previous results\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "eval", str(src), "--out", str(out),
         "--suite", "qm9/v1-core", "--reference", "none"],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint)
    seen = []
    deadline = time.time() + 300
    while time.time() < deadline:           # stderr: one progress line per finished family
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if after in line:
            break
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, "".join(seen) + stderr, out


def test_ctrl_c_in_the_chemistry_stage_of_eval_exits_130_and_keeps_out(tmp_path):
    rc, err, out = _eval_and_interrupt(tmp_path, "distributions in")   # chemistry runs next
    assert rc == 130, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "l3dg eval: interrupted (Ctrl-C); no file is left half-written"
    assert out.read_text() == "previous results\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".metrics.json")]


def test_ctrl_c_while_reading_exits_130_with_one_line(tmp_path):
    rc, err, out = _eval_and_interrupt(tmp_path, "eval ")
    assert rc == 130 and "Traceback" not in err, err[-3000:]
    assert out.read_text() == "previous results\n"
