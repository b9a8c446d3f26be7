"""The mmBERT recipes against the paper and the authors' released Composer configs (JHU-CLSP/mmBERT
`configs/`), value by value: what the README's recipe table says, checked on the files themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmbert.recipe import load_recipe
from mmbert.schedule import Schedule

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("name", ["mmbert-small", "mmbert-base"])
def test_paper_recipes_decay_to_the_released_final_lr(name: str) -> None:
    # Both models end at 1.6e-5: small 0.04 x 4e-4 (linear), base 0.02 x 8e-4 (1 - sqrt).
    schedule = Schedule(load_recipe(RECIPES / f"{name}.yaml"))
    assert schedule.lr(schedule.total_tokens, len(schedule.phases) - 1) == pytest.approx(1.6e-5)
