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


# mmBERT-base's released batch: 4608 sequences per step in every phase (1024 then 8192 tokens each),
# warming up over the first 60B tokens from 48 sequences per device on 8 GPUs (384 in all).
ROWS = 4608


def released_shape(mode: str, start_rows: int, pretrain: str = "2.3T") -> Recipe:
    return Recipe.from_dict(
        {
            "train": {
                "batch_tokens": ROWS * 1024,
                "batch_warmup_start_tokens": start_rows * 1024,
                "batch_warmup_tokens": "60B",
                "batch_warmup_mode": mode,
            },
            "phases": [
                {"name": "pretrain", "tokens": pretrain, "seq_len": 1024},
                {"name": "mid", "tokens": "600B", "seq_len": 8192, "batch_tokens": ROWS * 8192},
                {"name": "decay", "tokens": "100B", "seq_len": 8192, "batch_tokens": ROWS * 8192},
            ],
        }
    )


def test_per_phase_batch_sizes() -> None:
    s = Schedule(released_shape("equal_steps", 384))
    assert s.batch_tokens(int(2.3e12)) == 4608 * 8192 == 37_748_736  # mid: 4608 rows of 8192
    assert s.step_tokens(int(2.3e12) + 1) == 37_748_736
    assert s.steps_in_phase(1) == 15_895  # ceil(600e9 / 37,748,736)
    assert s.steps_in_phase(2) == 2_650  # ceil(100e9 / 37,748,736); one batch for all phases: 21,193
    # A phase without its own batch takes the recipe's; an override of it reaches that phase only.
    data = released_shape("linear", 48).to_dict()
    data["phases"][2]["batch_tokens"] = None
    data["train"]["batch_tokens"] = 2048 * 1024
    assert Schedule(Recipe.from_dict(data)).batch_tokens(int(3e12)) == 2048 * 1024 // 8192 * 8192


def test_equal_steps_warmup_matches_modernbert() -> None:
    s = Schedule(released_shape("equal_steps", 384))
    unit = 384 * 1024
    # K = 12 sizes; size k while t < 60e9 * k (k + 1) / 132.
    assert s.batch_tokens(0) == unit
    assert s.batch_tokens(909_090_909) == unit and s.batch_tokens(909_090_910) == 2 * unit
    assert s.batch_tokens(int(30e9)) == 8 * unit  # 7 * 8 = 56 <= 66 < 72 = 8 * 9
    assert s.batch_tokens(int(60e9) - 1) == 11 * unit
    assert s.batch_tokens(int(60e9)) == ROWS * 1024
    # Each of the 11 sizes lasts 60e9 * 2 / (132 * 384 * 1024) = 2311.95 steps: 25,431 in all.
    warmup = Schedule(released_shape("equal_steps", 384, pretrain="60B"))
    assert abs(warmup.steps_in_phase(0) - 25_431) <= 11


def test_linear_warmup_in_tokens() -> None:
    s = Schedule(released_shape("linear", 48))
    assert s.batch_tokens(0) == 48 * 1024
    assert s.batch_tokens(int(30e9)) == (48 + (ROWS - 48) // 2) * 1024  # halfway: 2328 rows
    # Steps over the warmup: T / (B - S) * ln(B / S) = 60e9 / (4560 * 1024) * ln(96) = 58,650, and
    # about 0.2% more with batches rounded down to whole rows (58,785).
    warmup = Schedule(released_shape("linear", 48, pretrain="60B"))
    expected = 60e9 / (4560 * 1024) * math.log(96)
    assert 0 < warmup.steps_in_phase(0) - expected < 0.005 * expected
