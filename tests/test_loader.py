"""BatchLoader (`mmbert.data.loader`): a saved stream continues identically across a phase change, and
the phases are resolved against the data when the loader is built."""

from __future__ import annotations

import copy

import pytest

from mmbert.data.loader import BatchLoader
from mmbert.recipe import Recipe, RecipeError
from tests.helpers.data import FakeStore

STORE = FakeStore(
    {
        ("web", "fra_Latn"): [20] * 40,
        ("web", "deu_Latn"): [30] * 40,
        ("web", "swh_Latn"): [25] * 40,
    }
)
# Two phases: the second adds a language, doubles the context and masks less.
PHASES = [
    {
        "name": "first",
        "tokens": 10_000,
        "languages": ["fra_Latn", "deu_Latn"],
        "seq_len": 32,
        "mask_rate": 0.3,
    },
    {"name": "second", "tokens": 10_000, "languages": "all", "seq_len": 64, "mask_rate": 0.15},
]
STEP_TOKENS = 256


def _loader(phases: list[dict] = PHASES, first_phase: int = 0) -> BatchLoader:
    recipe = Recipe.from_dict({"phases": phases})
    return BatchLoader(
        STORE,
        recipe.phases,
        seed=3,
        rank=0,
        world_size=1,
        vocab_size=64,
        micro_batch_tokens=128,
        first_phase=first_phase,
    )


def _steps(loader: BatchLoader, phase: int, steps: int) -> list[tuple]:
    """`steps` optimizer steps of `phase`: every micro-batch's ids, labels, boundaries and languages."""
    loader.set_phase(phase, report=False)
    spec = PHASES[phase]
    out = []
    for _ in range(steps):
        for batch in loader.next_step(STEP_TOKENS, spec["seq_len"], spec["mask_rate"]):
            out.append(
                (
                    batch.input_ids.tolist(),
                    batch.labels.tolist(),
                    batch.cu_seqlens.tolist(),
                    sorted(batch.tokens_per_language),
                )
            )
    return out


def test_a_state_saved_before_a_phase_change_continues_the_same_stream_after_it():
    reference = _loader()
    _steps(reference, 0, 3)
    state = copy.deepcopy(reference.state_dict())
    expected = _steps(reference, 0, 1) + _steps(reference, 1, 4)
    assert any("swh_Latn" in langs for *_, langs in expected)  # the second phase's mixture is drawn

    resumed = _loader()
    resumed.load_state_dict(state)
    assert _steps(resumed, 0, 1) + _steps(resumed, 1, 4) == expected


def test_a_state_saved_after_a_phase_change_continues_in_the_new_phase():
    reference = _loader()
    _steps(reference, 0, 2)
    _steps(reference, 1, 2)
    state = copy.deepcopy(reference.state_dict())
    expected = _steps(reference, 1, 3)

    resumed = _loader()  # a fresh run process: its loader starts at the first phase
    resumed.set_phase(1, report=False)
    resumed.load_state_dict(state)
    assert _steps(resumed, 1, 3) == expected


def test_phases_are_resolved_when_the_loader_is_built_except_those_before_the_first():
    unmatched = [{**PHASES[0], "languages": ["tir_Ethi"]}, PHASES[1]]
    with pytest.raises(RecipeError, match="tir_Ethi"):
        _loader(unmatched)
    later = _loader(unmatched, first_phase=1)  # `--from-phase`: the skipped phase is never resolved
    assert _steps(later, 1, 1)
    with pytest.raises(ValueError, match="before the first phase"):
        later.set_phase(0)
