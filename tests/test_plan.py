"""`mmbert plan`: budgets, epochs and repeat flags on prepared data; the check against mmBERT's counts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mmbert import cli
from mmbert.data.mixture import phase_mixture
from mmbert.data.packing import Packer
from mmbert.data.sampler import DataSampler, store_counts
from mmbert.plan import format_plan, plan_recipe, released_data_counts
from mmbert.recipe import Recipe, load_recipe
from tests.helpers.data import FakeStore

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


RECIPE = {
    "name": "p",
    "phases": [
        {
            "name": "pre",
            "tokens": 20_000,
            "languages": ["eng_Latn", "fra_Latn", "code"],
            "tau": 0.7,
            "sources": [{"name": "udhr", "share": 0.9}, {"name": "code", "share": 0.1}],
        },
        {
            "name": "decay",
            "tokens": 5000,
            "languages": "all",
            "tau": 0.3,
            "sources": [{"name": "udhr", "share": 0.9}, {"name": "code", "share": 0.1}],
            "variants": {"eng": {"sources": [{"name": "udhr", "share": 1.0, "fixed_shares": {"eng": 0.5}}]}},
        },
    ],
}
CELLS = {
    ("udhr", "eng_Latn"): [50] * 40,
    ("udhr", "fra_Latn"): [50] * 80,
    ("udhr", "fao_Latn"): [50] * 2,
    ("code", "code"): [100] * 30,
}


def test_plan_budgets_epochs_and_flags() -> None:
    store = FakeStore(CELLS)
    recipe = Recipe.from_dict(RECIPE)
    plan = plan_recipe(recipe, store_counts(store), max_epochs=5)
    pre, decay = plan["phases"]
    cells = {(c["source"], c["language"]): c for c in pre["cells"]}
    w = {"eng_Latn": 2000**0.7, "fra_Latn": 4000**0.7}
    eng = cells[("udhr", "eng_Latn")]
    assert eng["probability"] == pytest.approx(w["eng_Latn"] / sum(w.values()))
    assert eng["tokens"] == pytest.approx(20_000 * 0.9 * eng["probability"])
    assert eng["epochs"] == pytest.approx(eng["tokens"] / 2000)
    assert sum(c["tokens"] for c in pre["cells"]) == pytest.approx(20_000)
    assert pre["english_share"] == pytest.approx(0.9 * eng["probability"])
    assert pre["code_share"] == pytest.approx(0.1) and cells[("code", "code")]["epochs"] == pytest.approx(
        2000 / 3000
    )
    # Cumulative epochs carry over phases; fao (200 tokens) is only in the decay and is flagged.
    dcells = {(c["source"], c["language"]): c for c in decay["cells"]}
    assert dcells[("udhr", "eng_Latn")]["cumulative_epochs"] == pytest.approx(
        eng["epochs"] + dcells[("udhr", "eng_Latn")]["epochs"]
    )
    fao = dcells[("udhr", "fao_Latn")]
    assert fao["epochs"] > 5 and fao["repeated"] and not dcells[("code", "code")]["repeated"]
    text = format_plan(plan)
    assert "REPEATED" in text and "phase 1 decay" in text and "fao_Latn" in text
    variant = plan_recipe(recipe, store_counts(store), variant="eng")
    eng_decay = {(c["source"], c["language"]): c for c in variant["phases"][1]["cells"]}
    assert eng_decay[("udhr", "eng_Latn")]["share"] == pytest.approx(0.5)


def test_sampler_and_packer_on_a_store() -> None:
    store = FakeStore(CELLS)
    recipe = Recipe.from_dict(RECIPE)
    mix = phase_mixture(recipe.phases[0], store_counts(store), 0)
    sampler, packer = DataSampler(store, mix, seed=0), Packer()
    per_source: dict[str, int] = {}
    for _ in range(20):
        batch = packer.next_batch(iter(sampler), 8, 64)
        for k, v in batch.tokens_per_source.items():
            per_source[k] = per_source.get(k, 0) + v
    total = sum(per_source.values())
    assert total == 20 * 8 * 64 and packer.stats.efficiency == 1.0
    # Documents are 52 / 102 tokens with bos/eos: code's share of tokens tracks its 10% target.
    assert abs(per_source["code"] / total - 0.1) < 0.04


def test_cli_on_data_json_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmbert.plan

    monkeypatch.setattr(mmbert.plan, "TokenStore", lambda path: FakeStore(CELLS))
    data = tmp_path / "data"
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(Recipe.from_dict(RECIPE).to_yaml())
    assert cli.main(["plan", str(recipe_path), "--data", str(data), "--max-epochs", "3"]) == 0
    assert "REPEATED" in capsys.readouterr().out
    assert (
        cli.main(
            ["plan", str(recipe_path), "--data", str(data), "--json", "--variant", "eng", "phases.0.tau=0.5"]
        )
        == 0
    )
    plan = json.loads(capsys.readouterr().out)
    assert plan["variant"] == "eng" and plan["phases"][0]["tau"] == 0.5
    assert cli.main(["plan", str(recipe_path), "--data", str(data), "--variant", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli.main(["plan", str(recipe_path), "--data", str(data), "phases.0.sources.0.name=books"]) == 2
    assert "phases[0].sources[0].name" in capsys.readouterr().err


@pytest.fixture(scope="module")
def base_plans() -> dict[str, dict]:
    recipe = load_recipe(RECIPES / "mmbert-base.yaml")
    plans = {}
    for variant in recipe.variant_names():
        counts = released_data_counts(recipe, [variant])
        plans[variant] = plan_recipe(recipe, counts, variant, released=True)
    return plans


def test_released_counts_predictions(base_plans: dict[str, dict]) -> None:
    """What the plan predicts, from inputs other than the column it is compared with."""
    # Pre-training: the paper's source table gives the English and code shares of the released counts.
    pre = base_plans["cont"]["phases"][0]
    assert pre["released"]["basis"]["english_share"] == pre["released"]["basis"]["code_share"] == "predicted"
    assert abs(pre["english_share"] - pre["released"]["released_english_share"]) < 0.002
    assert abs(pre["code_share"] - pre["released"]["released_code_share"]) < 0.002
    # Pre-training shares in, tau 0.5 applied: the mid-training shares of the shared languages follow.
    mid = base_plans["cont"]["phases"][1]["released"]
    assert mid["basis"]["fit"] == "predicted"
    assert mid["fit"]["languages"] == 59
    assert abs(mid["fit"]["slope"] - 1) < 0.05 and mid["fit"]["correlation"] > 0.99
    for variant in ("eng", "cont", "all"):  # the decay's 108 earlier languages at tau 0.3
        decay = base_plans[variant]["phases"][2]
        dfit = decay["released"]["fit"]
        assert dfit["languages"] == 108 and decay["released"]["basis"]["fit"] == "predicted"
        assert abs(dfit["slope"] - 1) < 0.15 and dfit["correlation"] > 0.98, (variant, dfit)
    # Eng and Cont decay on the mid-training set (mmbert-110, the `ext` column): its 110 languages are
    # the released decay-eng / decay-mid columns' too.
    for variant in ("eng", "cont"):
        decay = base_plans[variant]["phases"][2]
        assert decay["released"]["basis"]["languages"] == "predicted"
        assert decay["languages"] == 110 == decay["released"]["released_languages"]


def test_released_counts_paper_budgets_against_released_totals(base_plans: dict[str, dict]) -> None:
    """The recipe's budgets are the paper's; the released totals differ, most in pre-training."""
    pre, mid, _ = base_plans["cont"]["phases"]
    assert pre["released"]["basis"]["tokens"] == mid["released"]["basis"]["tokens"] == "predicted"
    assert 1.1 < pre["tokens"] / pre["released"]["released_tokens"] < 1.2  # 2.3T against 1,989B
    assert abs(mid["tokens"] / mid["released"]["released_tokens"] - 1) < 0.01
    for plan in base_plans.values():
        r = plan["phases"][2]["released"]
        assert 0.85 < plan["phases"][2]["tokens"] / r["released_tokens"] <= 1.0


def test_released_counts_fitted_figures_equal_released_by_construction(base_plans: dict[str, dict]) -> None:
    """Not evidence: the mid-training and decay source weights were set from the released counts, and
    the named language sets are released columns' rows. Checked only so that a recipe edit that breaks
    the fit shows, and so that the plan labels these figures `fitted`."""
    pre, mid, _ = base_plans["cont"]["phases"]
    assert pre["released"]["basis"]["languages"] == mid["released"]["basis"]["languages"] == "fitted"
    assert pre["languages"] == 61 == pre["released"]["released_languages"]
    assert mid["languages"] == 110 == mid["released"]["released_languages"]
    phases = [mid] + [plan["phases"][2] for plan in base_plans.values()]
    for phase in phases:
        r = phase["released"]
        assert r["basis"]["english_share"] == r["basis"]["code_share"] == "fitted", r["column"]
        assert abs(phase["english_share"] - r["released_english_share"]) < 0.003, r["column"]
        assert abs(phase["code_share"] - r["released_code_share"]) < 0.003, r["column"]
    decay_all = base_plans["all"]["phases"][2]
    assert decay_all["released"]["basis"]["languages"] == "fitted"
    assert decay_all["languages"] == 1834 == decay_all["released"]["released_languages"]


def test_cli_released_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """`mmbert plan RECIPE --released-counts`: each compared figure is printed with its basis."""
    recipe = str(RECIPES / "mmbert-base.yaml")
    assert cli.main(["plan", recipe, "--released-counts", "--variant", "all", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "(released counts)" in out and "vs released decay-all (planned / released):" in out
    assert re.search(r"english_share +34\.6% / 34\.5% +predicted", out)
    assert re.search(r"english_share +12\.1% / 12\.1% +fitted", out)
    assert re.search(r"languages +1834 / 1834 +fitted", out)
    assert re.search(r"slope 0\.990, correlation 0\.9997, median \|log ratio\| 0\.003 +predicted", out)
    assert cli.main(["plan", recipe, "--released-counts", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (
        plan["counts"] == "released" and plan["phases"][1]["released"]["basis"]["english_share"] == "fitted"
    )
    assert all(c["epochs"] is None for c in plan["phases"][0]["cells"])  # no absolute scale: no epochs
    with pytest.raises(SystemExit) as exit_info:  # argparse: one of the two sources of counts
        cli.main(["plan", recipe, "--released-counts", "--data", "somewhere"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
