"""Checkpoints are written atomically (never half-written) and read safely (weights_only=True)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from clipft.errors import CheckpointError
from clipft.utils.checkpoint_io import AtomicCheckpointIO


def test_trainer_uses_the_atomic_checkpoint_io(tmp_path):
    from conftest import compose

    from clipft.pipeline.building import build_trainer

    trainer = build_trainer(compose(["trainer.accelerator=cpu"], root=tmp_path), callbacks=[], loggers=[])
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_sigkill_during_write_keeps_the_previous_checkpoint(tmp_path):
    """The process dies after the new bytes are written but before the rename: last.ckpt is the old one."""
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "w": torch.ones(3)}, target)
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from clipft.utils.checkpoint_io import AtomicCheckpointIO
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # die in the middle of the write
        AtomicCheckpointIO().save_checkpoint({{"step": 2, "w": torch.zeros(1000)}}, {str(target)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -9
    loaded = torch.load(target, weights_only=True)
    assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.ones(3))
    leftovers = [p for p in os.listdir(tmp_path) if p != "last.ckpt"]
    assert all(p.startswith(".last.ckpt.") for p in leftovers)  # only the dead writer's temp file


def test_truncated_checkpoint_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"last\.ckpt.*cannot be loaded safely.*truncated"):
        AtomicCheckpointIO().load_checkpoint(path)


class NotAllowed:
    """A type torch.load(weights_only=True) refuses: stands for a pickled payload from a stranger."""


def test_unsafe_checkpoint_is_refused_naming_the_blocked_global(tmp_path):
    path = tmp_path / "strange.ckpt"
    torch.save({"obj": NotAllowed()}, path)
    with pytest.raises(CheckpointError, match=r"strange\.ckpt.*refused.*GLOBAL test_reliability_checkpoint_io\.NotAllowed"):
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)  # asking for unpickling changes nothing
    from clipft.methods.loading import read_checkpoint

    with pytest.raises(CheckpointError, match="can run any code"):
        read_checkpoint(path)


def test_checkpoint_files_get_normal_permissions(tmp_path):
    path = tmp_path / "x.ckpt"
    AtomicCheckpointIO().save_checkpoint({"a": 1}, path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
