"""MLM masking: the selection rate and the 80/10/10 split, checked statistically; specials untouched."""

from __future__ import annotations

import math

import torch

from mmbert.data.masking import mask_tokens
from mmbert.tokens import IGNORE_INDEX, MASK_ID, SPECIAL_IDS

V = 50


def sigma_ok(count: int, n: int, p: float, k: float = 5.0) -> bool:
    return abs(count - n * p) <= k * math.sqrt(n * p * (1 - p))


def test_rates_80_10_10() -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (100_000,), generator=torch.Generator().manual_seed(1))
    ids[::10] = 0  # pad
    ids[1::10] = 2  # bos
    ids[2::10] = 1  # eos
    for rate in (0.3, 0.15, 0.05):
        masked, labels = mask_tokens(ids, rate, g, V)
        special = torch.isin(ids, torch.tensor(list(SPECIAL_IDS.values())))
        selected = labels != IGNORE_INDEX
        n_normal = int((~special).sum())
        assert not selected[special].any() and torch.equal(masked[special], ids[special])
        assert sigma_ok(int(selected.sum()), n_normal, rate)
        assert torch.equal(labels[selected], ids[selected])
        n_sel = int(selected.sum())
        is_mask = masked[selected] == MASK_ID
        unchanged = masked[selected] == ids[selected]
        replaced = ~is_mask & ~unchanged
        assert sigma_ok(int(is_mask.sum()), n_sel, 0.8)
        # A random replacement equal to the original counts as unchanged: p = 0.1 + 0.1 / (V - 5).
        p_same = 0.1 + 0.1 / (V - len(SPECIAL_IDS))
        assert sigma_ok(int(unchanged.sum()), n_sel, p_same)
        assert sigma_ok(int(replaced.sum()), n_sel, 0.1 - 0.1 / (V - len(SPECIAL_IDS)))
        assert torch.equal(masked[~selected], ids[~selected])


def test_random_tokens_are_uniform_over_non_special_vocab() -> None:
    ids = torch.full((400_000,), 7)
    masked, labels = mask_tokens(ids, 1.0, torch.Generator().manual_seed(3), V)
    rnd = masked[(masked != MASK_ID) & (masked != 7)]
    assert not torch.isin(rnd, torch.tensor(list(SPECIAL_IDS.values()))).any()
    counts = torch.bincount(rnd, minlength=V)[5:]
    counts = torch.cat([counts[:2], counts[3:]])  # id 7 is excluded from "replaced"
    n, p = int(counts.sum()), 1 / counts.numel()
    assert all(sigma_ok(int(c), n, p) for c in counts)


def test_custom_specials_and_determinism() -> None:
    ids = torch.arange(10).repeat(1000).view(100, 100)
    a = mask_tokens(ids, 0.5, torch.Generator().manual_seed(5), 10, special_ids=[0, 1, 2, 3, 4, 9])
    b = mask_tokens(ids, 0.5, torch.Generator().manual_seed(5), 10, special_ids=[0, 1, 2, 3, 4, 9])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == ids.shape
    assert (a[1][ids == 9] == IGNORE_INDEX).all()
    assert not (a[0][a[0] != ids] == 9).any()  # 9 is never a replacement
