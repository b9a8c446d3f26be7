"""LR, batch-size warmup and phase lookup as functions of tokens."""

from __future__ import annotations

import math

import pytest

from mmbert.recipe import Recipe
from mmbert.schedule import Schedule


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
    s = Schedule(r)
    assert s.phase_at(0) == (0, 0)
    assert s.phase_at(999) == (0, 999)
    assert s.phase_at(1000) == (1, 0)
    assert s.phase_at(1600) == (2, 100)
    assert s.phase_at(10_000) == (2, 8500)
    with pytest.raises(ValueError):
        s.phase_at(-1)


def test_warmup_constant_and_phase_peaks() -> None:
    r = recipe()
    s = Schedule(r)
    assert s.lr(0) == 0.0
    assert s.lr(50) == pytest.approx(5e-4)
    assert s.lr(100) == pytest.approx(1e-3)
    assert s.lr(999) == pytest.approx(1e-3)
    assert s.lr(1200) == pytest.approx(5e-4)  # the mid phase's own peak
    assert s.at(1200).weight_decay == 0.0 and s.at(0).weight_decay == 8e-5


@pytest.mark.parametrize("shape", ["one_minus_sqrt", "linear", "inverse_sqrt"])
def test_decay_shapes(shape: str) -> None:
    r = recipe(shape)
    s = Schedule(r)
    start, peak, a = 1500, 1e-3, 0.02
    assert s.lr(start) == pytest.approx(peak)
    assert s.lr(start + 400) == pytest.approx(a * peak)
    assert s.lr(10**6) == pytest.approx(a * peak)  # held after the end
    values = [s.lr(start + t) for t in range(0, 401, 20)]
    assert all(x > y for x, y in zip(values, values[1:], strict=False))
    done = 0.25
    expected = {
        "one_minus_sqrt": peak * (a + (1 - a) * (1 - math.sqrt(done))),
        "linear": peak * (a + (1 - a) * (1 - done)),
        "inverse_sqrt": peak / math.sqrt(1 + done * (1 / a**2 - 1)),
    }[shape]
    assert s.lr(start + 100) == pytest.approx(expected)


def test_decay_tokens_only_at_the_end() -> None:
    data = recipe().to_dict()
    data["phases"][2]["decay_tokens"] = 100
    r = Recipe.from_dict(data)
    s = Schedule(r)
    assert s.lr(1500 + 299) == pytest.approx(1e-3)
    assert s.lr(1500 + 350) == pytest.approx(1e-3 * (0.02 + 0.98 * (1 - math.sqrt(0.5))))


def test_batch_warmup_in_whole_rows() -> None:
    r = recipe(batch_warmup_start_tokens=128, batch_warmup_tokens=1000)
    s = Schedule(r)
    assert s.batch_tokens(0) == 128
    assert s.batch_tokens(500) == 576 // 64 * 64
    assert s.batch_tokens(1000) == 1024
    assert all(s.batch_tokens(t) % 64 == 0 for t in range(0, 1000, 37))
    sizes = [s.batch_tokens(t) for t in range(0, 1000, 10)]
    assert sizes == sorted(sizes)
    assert Schedule(recipe()).batch_tokens(5) == 1024  # no warmup configured
    assert Schedule(recipe(batch_tokens=10)).batch_tokens(0) == 64  # never less than one row


def test_steps_end_with_their_phase_and_settings_follow_the_phase() -> None:
    s = Schedule(recipe(batch_tokens=384))
    tokens, seen = 0, []
    while tokens < s.total_tokens:
        at = s.at(tokens)
        assert tokens + at.step_tokens <= s.phase_end(at.phase_index)  # never straddles a boundary
        assert (at.mask_rate, at.tau, at.seq_len) == (at.phase.mask_rate, at.phase.tau, at.phase.seq_len)
        assert at.weight_decay == at.phase.weight_decay
        seen.append(at.phase_index)
        tokens += at.step_tokens
    assert tokens == s.total_tokens and sorted(set(seen)) == [0, 1, 2]
    assert [s.steps_in_phase(i) for i in range(3)] == [seen.count(i) for i in range(3)]
    # At a phase's last token the LR of that phase applies, not the next phase's first one.
    assert s.lr(1500, 1) == pytest.approx(5e-4) and s.lr(1500) == pytest.approx(1e-3)
