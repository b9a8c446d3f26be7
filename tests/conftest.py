"""Shared fixtures: everything is built in the test, nothing is downloaded."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_config():
    from mmbert import MmBertConfig

    return MmBertConfig.preset("tiny")


def ragged_batch(batch: int = 4, max_len: int = 45, vocab: int = 1024, seed: int = 0):
    """Right-padded ids + mask with lengths from 3 to max_len (longer than the tiny window of 16)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [max_len, 3, max_len // 2 + 1, 17][:batch] + [max_len - i for i in range(max(0, batch - 4))]
    ids = torch.randint(5, vocab, (batch, max_len), generator=g)
    mask = torch.zeros(batch, max_len, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids[mask == 0] = 0
    return ids, mask
