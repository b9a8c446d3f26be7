"""Recipe schema: loading, dotted overrides, validation messages that name the key, round trip."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from mmbert.data.mixture import source_shares
from mmbert.recipe import Recipe, RecipeError, apply_override, load_recipe, parse_tokens

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

BASE = textwrap.dedent(
    """
    name: t
    seed: 3
    model: {preset: tiny, hidden_size: 32}
    data: some/dir
    train: {lr: 1e-3, batch_tokens: 512, batch_warmup_start_tokens: 128, batch_warmup_tokens: 2K}
    phases:
      - name: pre
        tokens: 10K
        languages: [eng_Latn, fra_Latn]
        tau: 0.7
        mask_rate: 0.3
        seq_len: 64
        warmup_tokens: 1K
        sources:
          - {name: web, share: 0.75}
          - {name: code, share: 0.25, languages: [code]}
      - name: decay
        tokens: 2K
        decay: one_minus_sqrt
        mask_rate: 0.05
        sources:
          - {name: web, weight: 3}
          - {name: code, weight: 1, languages: [code]}
        variants:
          eng: {sources: [{name: web, share: 1.0, multipliers: {eng: 4.0}}]}
          all: {languages: all, tau: 0.3}
    """
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_load_types_and_defaults(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, BASE))
    assert r.train.lr == 1e-3  # YAML reads `1e-3` as a string; the schema makes it a float
    assert r.data == ["some/dir"]
    assert r.phases[0].tokens == 10_000 and r.phases[0].warmup_tokens == 1000
    assert r.model.preset == "tiny" and r.model.overrides == {"hidden_size": 32}
    assert r.train.optimizer == "stable_adamw" and r.train.betas == (0.9, 0.95)
    assert source_shares(r.phases[1]) == {"web": 0.75, "code": 0.25}
    assert r.total_tokens == 12_000 and r.phase_starts() == [0, 10_000]


def test_round_trip_to_dict_and_yaml(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, BASE))
    again = Recipe.from_dict(yaml.safe_load(r.to_yaml()))
    assert again == r
    r.save(tmp_path / "out" / "resolved.yaml")
    assert load_recipe(tmp_path / "out" / "resolved.yaml") == r


def test_overrides(tmp_path: Path) -> None:
    r = load_recipe(
        write(tmp_path, BASE),
        [
            "phases.0.tokens=1000000",
            "model.hidden_size=128",
            "train.lr=2e-3",
            "phases.1.variants.all.tau=0.1",
        ],
    )
    assert r.phases[0].tokens == 1_000_000
    assert r.model.overrides["hidden_size"] == 128
    assert r.train.lr == 2e-3
    assert r.phases_for_variant("all")[1].tau == 0.1
    r = load_recipe(write(tmp_path, BASE), ["phases.0.languages=[deu_Latn]", "phases.0.sources.1.share=0.25"])
    assert r.phases[0].languages == ["deu_Latn"]


@pytest.mark.parametrize(
    "override, key",
    [
        ("phases.5.tokens=3", "phases.5"),
        ("train.lr=-1", "train.lr"),
        ("train.lrr=1", "train.lrr"),
        ("phases.0.sources.0.share=0.5", "phases[0].sources"),
        ("phases.1.sources.0.share=0.5", "phases[1].sources[0].share"),
        ("phases.0.decay=cosine", "phases[0].decay"),
        ("phases.0.tokens=abc", "phases[0].tokens"),
        ("phases.1.variants.eng.sources.0.share=0.5", "phases[1].variants.eng.sources"),
        ("phases.0.sources.1.fixed_shares={code: 1.5}", "phases[0].sources[1].fixed_shares.code"),
        ("phases.1.variants.eng.name=x", "phases[1].variants.eng.name"),
        ("phases.0.fitted_to_released=[tokens, french_share]", "phases[0].fitted_to_released[1]"),
        ("phases.1.batch_tokens=0", "phases[1].batch_tokens"),
        ("train.batch_warmup_mode=steps", "train.batch_warmup_mode"),
        # names that name files, and model keys
        ("phases.0.name=../../x", "phases[0].name"),
        ("phases.0.name=.hidden", "phases[0].name"),
        ("phases.1.variants={'../x': {tau: 0.5}}", "phases[1].variants.../x"),
        ("model.hidden_size=[64]", "model.hidden_size"),
        ("model.layer_types=7", "model.layer_types"),
        ("model.preset=huge", "model.preset"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, override: str, key: str) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, BASE), [override])
    assert info.value.key == key, str(info.value)


def test_error_names_the_file_and_yaml_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("mask_rate: 0.3", "mask_rate: 1.3"))
    with pytest.raises(RecipeError, match=r"r\.yaml: phases\[0\]\.mask_rate: must be in"):
        load_recipe(path)
    with pytest.raises(RecipeError, match=r"r\.yaml:3: invalid YAML"):
        load_recipe(write(tmp_path, "a: 1\nb: [1,\nc: }\n"))


def test_variants(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, BASE))
    assert r.variant_names() == ["eng", "all"]
    eng = r.phases_for_variant("eng")
    assert eng[0] == r.phases[0]
    assert eng[1].sources[0].multipliers == {"eng": 4.0} and not eng[1].variants
    one = r.with_variant("all")
    assert one.variant == "all" and one.phases[1].languages == "all" and one.variant_names() == []
    assert Recipe.from_dict(one.to_dict()) == one
    with pytest.raises(RecipeError, match="no variant 'x'"):
        r.phases_for_variant("x")
    data = yaml.safe_load(BASE)
    data["phases"][0]["variants"] = {"v": {"tau": 0.1}}
    with pytest.raises(RecipeError, match="only the last phase"):
        Recipe.from_dict(data)


def test_parse_tokens() -> None:
    assert parse_tokens("2.3T") == 2_300_000_000_000
    assert parse_tokens("600B") == 600 * 10**9
    assert parse_tokens("1_000") == 1000 and parse_tokens(1e6) == 10**6 and parse_tokens("20k") == 20_000
    for bad in ("1.5", "x", 1.5, True):
        with pytest.raises(ValueError):
            parse_tokens(bad)


def test_apply_override_on_plain_data() -> None:
    data = {"phases": [{"name": "a"}]}
    apply_override(data, "phases.-1.tau=0.5")
    apply_override(data, "train.lr=1e-4")
    assert data == {"phases": [{"name": "a", "tau": 0.5}], "train": {"lr": "1e-4"}}
    with pytest.raises(RecipeError):
        apply_override(data, "phases.name=x")
    with pytest.raises(RecipeError):
        apply_override(data, "novalue")


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path: Path) -> None:
    r = load_recipe(path)
    assert len(r.phases) == 3
    for name in r.variant_names():
        assert Recipe.from_dict(r.with_variant(name).to_dict()) == r.with_variant(name)


def test_tiny_recipe_mixtures_on_the_bundled_languages() -> None:
    from mmbert.data.corpus import load_udhr
    from mmbert.data.mixture import recipe_mixtures

    counts = {"udhr": {d.lang: 1000 for d in load_udhr()}, "code": {"code": 5000}}
    r = load_recipe(RECIPES / "tiny.yaml")
    assert r.model.preset == "mini" and [p.mask_rate for p in r.phases] == [0.3, 0.15, 0.05]
    assert r.variant_names() == ["eng", "cont", "all"]
    seen = {}
    for name in r.variant_names():
        mixes = recipe_mixtures(r.phases_for_variant(name), counts)
        seen[name] = [set(m.languages) for m in mixes]
        assert all(abs(sum(m.token_shares().values()) - 1) < 1e-9 for m in mixes)
    pre, mid, _ = seen["all"]
    assert "code" in pre and "eng_Latn" in pre and pre < mid
    # Decay-only languages (the paper's examples): only the all-language variant sees them.
    for lang in ("fao_Latn", "tir_Ethi"):
        assert lang in seen["all"][2] and lang not in seen["cont"][2] and lang not in mid
    eng = recipe_mixtures(r.phases_for_variant("eng"), counts)[2].language_shares()["eng_Latn"]
    assert abs(eng - 0.95 * 0.19) < 1e-9
