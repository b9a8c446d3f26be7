"""LR, batch-size warmup and phase lookup as functions of tokens."""

from __future__ import annotations

import math

import pytest

from mmbert.recipe import Recipe
from mmbert.schedule import Schedule, batch_tokens_at, lr_at, phase_at


def recipe(decay: str = "one_minus_sqrt", **train: object) -> Recipe:
    return Recipe.from_dict(
        {
            "train": {"lr": 1e-3, "batch_tokens": 1024, **train},
            "phases": [
                {"name": "pre", "tokens": 1000, "warmup_tokens": 100, "seq_len": 64},
                {"name": "mid", "tokens": 500, "lr": 5e-4, "seq_len": 128, "weight_decay": 0.0},
                {"name": "decay", "tokens": 400, "decay": decay, "final_lr_fraction": 0.02, "seq_len": 128},
            ],
        }
    )


def test_phase_at() -> None:
    r = recipe()
    assert phase_at(0, r) == (0, 0)
    assert phase_at(999, r) == (0, 999)
    assert phase_at(1000, r) == (1, 0)
    assert phase_at(1600, r) == (2, 100)
    assert phase_at(10_000, r) == (2, 8500)
    with pytest.raises(ValueError):
        phase_at(-1, r)


def test_warmup_constant_and_phase_peaks() -> None:
    r = recipe()
    assert lr_at(0, r) == 0.0
    assert lr_at(50, r) == pytest.approx(5e-4)
    assert lr_at(100, r) == pytest.approx(1e-3)
    assert lr_at(999, r) == pytest.approx(1e-3)
    assert lr_at(1200, r) == pytest.approx(5e-4)  # the mid phase's own peak
    assert Schedule(r).weight_decay_at(1200) == 0.0 and Schedule(r).weight_decay_at(0) == 8e-5


@pytest.mark.parametrize("shape", ["one_minus_sqrt", "linear", "inverse_sqrt"])
def test_decay_shapes(shape: str) -> None:
    r = recipe(shape)
    start, peak, a = 1500, 1e-3, 0.02
    assert lr_at(start, r) == pytest.approx(peak)
    assert lr_at(start + 400, r) == pytest.approx(a * peak)
    assert lr_at(10**6, r) == pytest.approx(a * peak)  # held after the end
    values = [lr_at(start + t, r) for t in range(0, 401, 20)]
    assert all(x > y for x, y in zip(values, values[1:], strict=False))
    s = 0.25
    expected = {
        "one_minus_sqrt": peak * (a + (1 - a) * (1 - math.sqrt(s))),
        "linear": peak * (a + (1 - a) * (1 - s)),
        "inverse_sqrt": peak / math.sqrt(1 + s * (1 / a**2 - 1)),
    }[shape]
    assert lr_at(start + 100, r) == pytest.approx(expected)


def test_decay_tokens_only_at_the_end() -> None:
    data = recipe().to_dict()
    data["phases"][2]["decay_tokens"] = 100
    r = Recipe.from_dict(data)
    assert lr_at(1500 + 299, r) == pytest.approx(1e-3)
    assert lr_at(1500 + 350, r) == pytest.approx(1e-3 * (0.02 + 0.98 * (1 - math.sqrt(0.5))))


def test_batch_warmup_in_whole_rows() -> None:
    r = recipe(batch_warmup_start_tokens=128, batch_warmup_tokens=1000)
    assert batch_tokens_at(0, r) == 128
    assert batch_tokens_at(500, r) == 576 // 64 * 64
    assert batch_tokens_at(1000, r) == 1024
    assert all(batch_tokens_at(t, r) % 64 == 0 for t in range(0, 1000, 37))
    sizes = [batch_tokens_at(t, r) for t in range(0, 1000, 10)]
    assert sizes == sorted(sizes)
    assert batch_tokens_at(5, recipe()) == 1024  # no warmup configured
    assert batch_tokens_at(0, recipe(batch_tokens=10)) == 64  # never less than one row
