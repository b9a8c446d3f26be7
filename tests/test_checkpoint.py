"""Checkpoint files: atomic writes, retention, damaged-file fallback, RNG round trip, safe loading."""

from __future__ import annotations

import logging
import os
import random
import subprocess

import numpy as np
import pytest
import torch

from mmbert import checkpoint as ckpt


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((3, 2), value)}, "tokens": int(value * 100), "phase": "pre"}


def test_save_load_roundtrip_weights_only(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, _state(1.5), step=7)
    assert path.name == "step-000000007.pt"
    state = ckpt.load_checkpoint(path)
    assert state["step"] == 7 and state["tokens"] == 150 and state["phase"] == "pre"
    assert torch.equal(state["model"]["w"], torch.full((3, 2), 1.5))
    # The file must be loadable by the safe loader directly as well.
    torch.load(path, weights_only=True)


def test_retention_keeps_last_k_and_phase_ends(tmp_path):
    for step in range(1, 8):
        ckpt.save_checkpoint(
            tmp_path, _state(step), step=step, keep_last=2, phase_end="pre" if step == 3 else None
        )
    names = [c.path.name for c in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step-000000003-end-pre.pt", "step-000000006.pt", "step-000000007.pt"]
    assert ckpt.latest(tmp_path).name == "step-000000007.pt"
    assert ckpt.phase_end_checkpoint(tmp_path, "pre").name == "step-000000003-end-pre.pt"
    assert ckpt.phase_end_checkpoint(tmp_path, "mid") is None


def test_latest_skips_truncated_and_ignores_tmp(tmp_path, caplog):
    ckpt.save_checkpoint(tmp_path, _state(1.0), step=1)
    good = ckpt.save_checkpoint(tmp_path, _state(2.0), step=2)
    # A killed writer leaves a temporary file (named with its pid, now gone); a disk fault could leave
    # a truncated final file. A live writer's temporary file is not touched.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (good.parent / f".step-000000003.pt.{dead.pid}.abc123.tmp").write_bytes(good.read_bytes()[:100])
    live = good.parent / f".step-000000006.pt.{os.getpid()}.xyz789.tmp"
    live.write_bytes(b"in progress")
    broken = good.parent / ckpt.checkpoint_name(4)
    broken.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with caplog.at_level(logging.WARNING):
        assert ckpt.latest(tmp_path) == good
    assert "step-000000004.pt" in caplog.text
    with pytest.raises(ValueError, match="step-000000004.pt"):
        ckpt.load_checkpoint(broken)
    # The next save removes the stale temporary file.
    ckpt.save_checkpoint(tmp_path, _state(5.0), step=5)
    assert list(good.parent.glob(".*.tmp")) == [live]


def test_latest_on_empty_run(tmp_path):
    assert ckpt.latest(tmp_path) is None
    assert ckpt.list_checkpoints(tmp_path / "missing") == []


def test_bit_flip_detected(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, {"model": {"w": torch.arange(1000.0)}}, step=1)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the tensor record
    path.write_bytes(bytes(data))
    assert not ckpt.is_complete(path)
    assert ckpt.latest(tmp_path) is None


def test_rng_state_roundtrip_through_file(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's legacy state
    state = ckpt.capture_rng_state()
    expected = (random.random(), np.random.standard_normal(3), torch.rand(4))
    ckpt.save_checkpoint(tmp_path, {"rng": state}, step=1)
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    ckpt.restore_rng_state(ckpt.load_checkpoint(ckpt.latest(tmp_path))["rng"])
    got = (random.random(), np.random.standard_normal(3), torch.rand(4))
    assert got[0] == expected[0]
    assert np.array_equal(got[1], expected[1])
    assert torch.equal(got[2], expected[2])


def test_bad_phase_name_rejected():
    with pytest.raises(ValueError, match="phase name"):
        ckpt.checkpoint_name(1, "a/b")
