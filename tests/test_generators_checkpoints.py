"""Damaged generator checkpoints (issue 12): one-line errors naming the file, and resume
falling back to the newest readable checkpoint (still bitwise exact)."""
import os

import pytest
import torch

from generators import DiffusionGenerator, load_generator
from generators.trainer import CheckpointError, find_resume_checkpoint, read_checkpoint
from harness.core.types import LatentBatch, LatentSpec

torch.set_num_threads(1)

CPU = dict(accelerator="cpu", logger=False)
SPEC = LatentSpec("vector", 3)


def _gen():
    return DiffusionGenerator(SPEC, denoiser_kwargs=dict(width=16, depth=1), timesteps=20,
                              ema_decay=0.9, seed=2)


def _data():
    return LatentBatch(h=torch.randn(96, 3, generator=torch.Generator().manual_seed(0)), spec=SPEC)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    for noise in ("PytorchStreamReader", "UnpicklingError", "EOFError", "Traceback"):
        assert noise not in text, text
    return text


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "foreign"])
def test_damaged_file_gives_one_line_error_naming_it(tmp_path, damage):
    path = tmp_path / "last.ckpt"
    if damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign":
        torch.save([1, 2, 3], path)                      # readable, but not a checkpoint
    else:
        torch.save({"state_dict": {"w": torch.randn(1000)}}, path)
        _truncate(path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert str(path) in _one_line(err)
    with pytest.raises(ValueError) as err:               # the CLI prints ValueErrors as one line
        load_generator(path)
    assert str(path) in _one_line(err)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_generator(tmp_path / "nope.ckpt")


def test_resume_falls_back_to_newest_readable_checkpoint(tmp_path):
    fit = dict(batch_size=32, progress=False, trainer_kwargs=CPU, checkpoint_every=5)
    straight = _gen()
    straight.fit(_data(), None, tmp_path / "a", max_steps=20, **fit)
    first = _gen()
    first.fit(_data(), None, tmp_path / "b", max_steps=13, **fit)
    ckpts = tmp_path / "b" / "checkpoints"
    assert (ckpts / "step00000010.ckpt").exists()
    _truncate(ckpts / "last.ckpt")
    assert find_resume_checkpoint(ckpts) == ckpts / "step00000010.ckpt"
    resumed = _gen()
    stats = resumed.fit(_data(), None, tmp_path / "b", max_steps=20, resume=True, **fit)
    assert stats["resumed_from"].endswith("step00000010.ckpt") and stats["steps"] == 20
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert load_generator(ckpts / "last.ckpt").prior.hist.numel() == 0   # rewritten, readable


def test_resume_with_no_readable_checkpoint_is_one_line_error(tmp_path):
    gen = _gen()
    gen.fit(_data(), None, tmp_path, max_steps=3, batch_size=32, progress=False,
            trainer_kwargs=CPU, checkpoint_every=100)
    ckpts = tmp_path / "checkpoints"
    for p in ckpts.glob("*.ckpt"):
        _truncate(p)
    with pytest.raises(CheckpointError) as err:
        _gen().fit(_data(), None, tmp_path, max_steps=6, batch_size=32, progress=False,
                   trainer_kwargs=CPU, resume=True)
    assert str(ckpts) in _one_line(err)
    with pytest.raises(CheckpointError) as err:          # an explicit path is checked too
        _gen().fit(_data(), None, tmp_path, max_steps=6, progress=False, trainer_kwargs=CPU,
                   resume=ckpts / "last.ckpt")
    assert "last.ckpt" in _one_line(err)


def test_empty_folder_means_fresh_start(tmp_path):
    assert find_resume_checkpoint(tmp_path / "none") is None
    (tmp_path / "c").mkdir()
    assert find_resume_checkpoint(tmp_path / "c") is None
