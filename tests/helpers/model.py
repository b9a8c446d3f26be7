"""The tiny model config (`TINY`: the `tiny` preset) and ragged batches for it."""

from __future__ import annotations

import torch

from mmbert import MmBertConfig

TINY = MmBertConfig.preset("tiny")


def ragged_batch(batch: int = 4, max_len: int = 45, vocab: int = TINY.vocab_size, seed: int = 0):
    """Right-padded ids + mask with lengths from 3 to max_len (longer than the tiny window of 16)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [max_len, 3, max_len // 2 + 1, 17][:batch] + [max_len - i for i in range(max(0, batch - 4))]
    ids = torch.randint(5, vocab, (batch, max_len), generator=g)
    mask = torch.zeros(batch, max_len, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids[mask == 0] = 0
    return ids, mask
