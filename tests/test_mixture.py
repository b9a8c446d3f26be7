"""The data mixture (`mmbert.data.mixture`): the temperature rule, a phase's two axes resolved against the
data, errors naming the phase and the source, and one answer to which languages a phase trains on."""

from __future__ import annotations

import pytest

from mmbert.data.mixture import (
    phase_mixture,
    source_languages,
    source_tau,
    temperature_probs,
    trained_languages,
)
from mmbert.recipe import RecipeError
from tests.helpers.data import WEB_AND_CODE, FakeStore, make_phase

STORE = FakeStore(WEB_AND_CODE)


def test_temperature_rule_multipliers_and_fixed_shares() -> None:
    p = temperature_probs({"a": 100, "b": 10_000}, 0.5)
    assert p["a"] == pytest.approx(10 / 110) and p["b"] == pytest.approx(100 / 110)
    p = temperature_probs({"a": 100, "b": 10_000}, 0.5, multipliers={"a": 100})
    assert p["a"] == pytest.approx(0.5)
    p = temperature_probs({"a": 100, "b": 10_000, "c": 1}, 0.0, fixed_shares={"c": 0.4})
    assert p == pytest.approx({"a": 0.3, "b": 0.3, "c": 0.4})
    with pytest.raises(ValueError):
        temperature_probs({"a": 1}, 0.5, fixed_shares={"a": 0.5})


def test_phase_mixture_two_axes() -> None:
    ph = make_phase(
        sources=[
            {"name": "web", "share": 0.8, "multipliers": {"eng": 4.0}},
            {"name": "code", "share": 0.2, "languages": ["code"]},
        ],
        languages=["fra_Latn", "deu_Latn", "eng_Latn"],
    )
    mix = phase_mixture(ph, STORE.counts(), 0)
    web = mix.sources[0]
    assert web.languages == ["deu_Latn", "eng_Latn", "fra_Latn"]  # fao not in the phase
    w = {"deu_Latn": 2000**0.5, "eng_Latn": 4000**0.5, "fra_Latn": 8000**0.5}
    assert web.probs == pytest.approx([w[k] / sum(w.values()) for k in web.languages])
    shares = mix.token_shares()
    assert shares[("code", "code")] == pytest.approx(0.2) and sum(shares.values()) == pytest.approx(1)
    assert mix.language_shares()["eng_Latn"] == pytest.approx(0.8 * w["eng_Latn"] / sum(w.values()))


@pytest.mark.parametrize(
    "kw, key, words",
    [
        (
            {"sources": [{"name": "books", "share": 1.0}]},
            "phases[2].sources[0].name",
            ["'books'", "not in the data"],
        ),
        (
            {
                "languages": ["fra_Latn"],
                "sources": [{"name": "web", "weight": 1}, {"name": "code", "weight": 1}],
            },
            "phases[2].sources[1]",
            ["phase 'p'", "source 'code'", "no data"],
        ),
        (
            {"languages": "mmbert-60", "sources": [{"name": "web", "weight": 1, "languages": ["xho"]}]},
            "phases[2].sources[0].languages",
            ["xho"],
        ),
        ({"languages": ["tir"]}, "phases[2].languages", ["tir"]),
        (
            {"sources": [{"name": "web", "share": 1.0, "multipliers": {"kor": 2}}]},
            "phases[2].sources[0].multipliers.kor",
            ["matches none"],
        ),
        ({"sources": []}, "phases[2].sources", ["list them"]),
    ],
)
def test_errors_name_phase_and_source(kw: dict, key: str, words: list[str]) -> None:
    with pytest.raises(RecipeError) as info:
        phase_mixture(make_phase(**kw), STORE.counts(), 2)
    assert info.value.key == key
    for w in words:
        assert w in str(info.value)


def test_language_set_matching_nothing() -> None:
    store = FakeStore({("web", "tir_Ethi"): [5] * 3})
    with pytest.raises(RecipeError, match="matches none"):
        phase_mixture(make_phase(languages="mmbert-60"), store.counts(), 0)


def test_a_source_takes_the_phases_languages_and_tau_unless_it_names_its_own():
    ph = make_phase(
        languages=["fra_Latn", "deu_Latn"],
        tau=0.5,
        sources=[
            {"name": "web", "share": 0.8},
            {"name": "code", "share": 0.2, "languages": ["code"], "tau": 1.0},
        ],
    )
    web, code = ph.sources
    assert (source_languages(ph, web), source_tau(ph, web)) == (["fra_Latn", "deu_Latn"], 0.5)
    assert (source_languages(ph, code), source_tau(ph, code)) == (["code"], 1.0)
    mix = phase_mixture(ph, STORE.counts(), 0)
    assert [(s.name, s.tau) for s in mix.sources] == [("web", 0.5), ("code", 1.0)]


@pytest.mark.parametrize(
    "kw",
    [
        {"languages": ["fra_Latn", "eng_Latn"]},
        {
            "languages": "all",
            "sources": [
                {"name": "web", "weight": 3, "languages": ["deu_Latn", "fao"]},
                {"name": "code", "weight": 1, "languages": ["code"]},
            ],
        },
        {
            "languages": ["fra_Latn"],
            "sources": [{"name": "web", "weight": 1}, {"name": "code", "weight": 1, "languages": ["code"]}],
        },
    ],
)
def test_evaluation_and_training_agree_on_the_languages_of_a_phase(kw):
    """`trained_languages` (evaluation's groups) is the set `phase_mixture` (training) draws from; a
    source's own set replaces the phase's for that source, it does not add the phase's."""
    ph = make_phase(**kw)
    if not ph.sources:
        ph = make_phase(**kw, sources=[{"name": "web", "share": 1.0}])
    counts = STORE.counts()
    available = sorted({lang for per in counts.values() for lang in per})
    assert trained_languages(ph, available) == set(phase_mixture(ph, counts, 0).languages)
    # Evaluated languages lacking one (no held-out `code`) are passed over, not refused.
    assert trained_languages(ph, [k for k in available if k != "code"]) == set(
        phase_mixture(ph, counts, 0).languages
    ) - {"code"}
