"""A quiet terminal: no library banners or advisory warnings in a study's output; -q/-v
flags; the progress view in its line-based (redirected) form around real Lightning fits."""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.term import quiet
from harness.cli import build_parser
from harness.term.progress import StudyProgress, choose_mode

ROOT = Path(__file__).resolve().parents[1]

#: what must never reach a researcher's terminal at the default verbosity
NOISE = ("GPU available", "TPU available", "litlogger", "LitLogger", "LeafSpec",
         "val_dataloader", "rdApp", "!!!", "UserWarning", "FutureWarning",
         "does not have many workers", "logging interval", "rank_zero")


@pytest.fixture(autouse=True)
def _restore_logging():
    """configure() changes process-wide logging; put the default back after each test."""
    yield
    quiet.configure(quiet.NORMAL)


def test_tiny_study_output_carries_no_library_noise(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONWARNINGS": "default"}  # show every warning that is not silenced at source
    script = Path(sys.executable).with_name("l3dg")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "harness.cli"]
    proc = subprocess.run(cmd + ["run", "tiny", f"output_dir={tmp_path}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "reference" in proc.stdout and "report:" in proc.stdout  # the table still prints
    found = [n for n in NOISE if n in out]
    assert not found, f"noise {found} in:\n{out}"


def test_verbosity_flags_before_and_after_the_command():
    parser = build_parser()
    cases = {("-q", "list"): -1, ("list", "-q"): -1, ("-qq", "list"): -2, ("-v", "list"): 1,
             ("list", "-vv"): 2, ("list",): 0, ("-q", "eval", "x.sdf", "--quiet"): -1}
    for argv, level in cases.items():
        args = parser.parse_args(list(argv))
        assert quiet.level_from_args(args) == level, argv
    assert parser.parse_args(["eval", "x.sdf", "--quiet"]).quiet is True  # eval's own flag kept


def test_configure_levels_silence_and_restore_library_loggers():
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    quiet.configure(quiet.NORMAL)
    assert rank_zero.getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("harness.study.runner").getEffectiveLevel() == logging.WARNING
    quiet.configure(quiet.VERBOSE)
    assert rank_zero.getEffectiveLevel() <= logging.INFO
    assert logging.getLogger("harness.study.runner").getEffectiveLevel() == logging.INFO
    quiet.configure(quiet.QUIET)
    assert choose_mode(io.StringIO()) == "off"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_mode_follows_the_stream_and_the_config(monkeypatch):
    monkeypatch.delenv("TERM", raising=False)
    assert choose_mode(io.StringIO(), bars=True, level=0) == "lines"   # redirected
    assert choose_mode(_Tty(), bars=True, level=0) == "tty"
    assert choose_mode(_Tty(), bars=False, level=0) == "lines"         # progress: false
    assert choose_mode(_Tty(), bars=True, level=-1) == "off"           # -q
    monkeypatch.setenv("TERM", "dumb")
    assert choose_mode(_Tty(), bars=True, level=0) == "lines"


def _fit(view, tmp_path, steps=8, **extra):
    from generators import DiffusionGenerator
    from harness.core.types import LatentBatch, LatentSpec

    torch.manual_seed(0)
    spec = LatentSpec("vector", 4)
    gen = DiffusionGenerator(spec, denoiser="mlp", denoiser_kwargs=dict(width=16, depth=1),
                             timesteps=20)
    data = LatentBatch(h=torch.randn(64, 4), spec=spec)
    kwargs = {"accelerator": "cpu", "logger": False, **view.trainer_kwargs()}
    return gen.fit(data, None, tmp_path, max_steps=steps, batch_size=16, progress=False,
                   trainer_kwargs=kwargs, **extra)


def test_line_view_reports_stages_and_training_steps(tmp_path, capfd):
    quiet.configure(quiet.NORMAL)
    stream = io.StringIO()
    view = StudyProgress("t", ["raw", "flat"], stream=stream, mode="lines")
    view.skipped("raw", "fit_space")
    view.skipped("raw", "encode")
    with view.stage("raw", "train_generator") as st:
        st.info = _fit(view, tmp_path)
    view.close()
    text = stream.getvalue()
    lines = text.splitlines()
    assert lines[0] == "[1/2 raw] done already: fit_space, encode"
    assert lines[1] == "[1/2 raw] train_generator ..."
    steps = [ln for ln in lines if "step " in ln]
    assert steps[-1].startswith("[1/2 raw]   step 8/8  loss "), text
    assert any("ETA" in ln for ln in steps), text
    assert lines[-1].startswith("[1/2 raw] train_generator done in ") and "8 steps" in lines[-1]
    assert "\r" not in text and "it/s" not in text  # no bar redraws in a log file
    captured = capfd.readouterr()
    assert "%|" not in captured.err + captured.out  # Lightning's own bar was replaced
    assert not [n for n in NOISE if n in captured.err + captured.out]


def test_resumed_training_continues_the_count(tmp_path):
    quiet.configure(quiet.NORMAL)
    first = StudyProgress("t", ["raw"], stream=io.StringIO(), mode="lines")
    _fit(first, tmp_path, steps=4, checkpoint_every=2)
    stream = io.StringIO()
    view = StudyProgress("t", ["raw"], stream=stream, mode="lines")
    with view.stage("raw", "train_generator"):
        _fit(view, tmp_path, steps=8, resume=True)
    text = stream.getvalue()
    assert "training: resuming at step 4" in text and "step 8/8" in text, text


def test_failed_stage_says_so():
    stream = io.StringIO()
    view = StudyProgress("t", ["raw"], stream=stream, mode="lines")
    with pytest.raises(RuntimeError):
        with view.stage("raw", "sample"):
            raise RuntimeError("boom")
    assert stream.getvalue().startswith("[1/1 raw] sample ...\n[1/1 raw] sample failed after")


def test_off_view_writes_nothing(tmp_path):
    stream = io.StringIO()
    view = StudyProgress("t", ["raw"], stream=stream, mode="off")
    with view.stage("raw", "train_generator"):
        _fit(view, tmp_path, steps=2)
    view.close()
    assert stream.getvalue() == ""


def test_terminal_view_draws_a_live_training_bar(tmp_path):
    quiet.configure(quiet.NORMAL)
    stream = _Tty()
    view = StudyProgress("t", ["raw"], stream=stream, mode="tty")
    with view.stage("raw", "train_generator") as st:
        st.info = _fit(view, tmp_path)
    text = stream.getvalue()
    assert "[1/1 raw] train_generator ...\n" in text
    assert "\r  training:   0%|" in text and "/8 [" in text and "step/s" in text   # a live bar
    assert "\n" not in text.split("train_generator ...\n")[1].split("[1/1 raw]")[0]     # redrawn in place
    assert text.rstrip().splitlines()[-1].endswith("(loss " + f"{st.info['final_loss']:.4g}, 8 steps)")
