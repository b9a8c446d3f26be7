"""evaluate: language groups, fixed masks, MLM scores against a direct computation, retrieval, CLI output."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmbert import cli
from mmbert.data.corpus import HELDOUT_ARTICLES, load_udhr
from mmbert.evaluate import (
    DocumentScores,
    build_eval_set,
    evaluate_model,
    group_scores,
    masked_inputs,
    recipe_groups,
    released_groups,
    summarize,
    variant_languages,
)
from mmbert.inference import load
from mmbert.recipe import Recipe
from tests.helpers.exports import resave_with_transformers, save_tiny

LANGS = ["eng_Latn", "deu_Latn", "fra_Latn", "fao_Latn", "tir_Ethi"]


def udhr_texts(langs=LANGS) -> list[str]:
    return [a.text for d in load_udhr() if d.lang in langs for a in d.articles]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("udhr-model"), udhr_texts())


def tiny_recipe(with_all_variant: bool = True) -> Recipe:
    decay = {"name": "decay", "tokens": 100, "languages": ["eng", "deu", "fra"]}
    if with_all_variant:
        decay["variants"] = {"cont": {}, "all": {"languages": "all"}}
    return Recipe.from_dict(
        {
            "name": "t",
            "phases": [
                {"name": "pre", "tokens": 100, "languages": ["eng_Latn", "deu"]},
                {
                    "name": "mid",
                    "tokens": 100,
                    "languages": ["eng", "deu"],
                    "sources": [
                        {"name": "udhr", "share": 0.9, "languages": ["fra"]},
                        {"name": "code", "share": 0.1},
                    ],
                },
                decay,
            ],
        }
    )


def test_recipe_groups_follow_the_phase_that_introduced_each_language():
    groups, order = recipe_groups(tiny_recipe(), LANGS)
    assert order == ["pre", "mid", "decay"]
    assert groups == {
        "eng_Latn": "pre",
        "deu_Latn": "pre",
        "fra_Latn": "mid",  # through a source's own language list
        "fao_Latn": "decay",  # only the `all` variant has it
        "tir_Ethi": "decay",
    }
    groups, order = recipe_groups(tiny_recipe(with_all_variant=False), LANGS)
    assert groups["fao_Latn"] == "unseen" and order[-1] == "unseen"
    seen = variant_languages(tiny_recipe(), LANGS)
    assert seen["cont"] == {"eng_Latn", "deu_Latn", "fra_Latn"}
    assert seen["all"] == set(LANGS)


def test_released_groups_use_mmberts_sets():
    groups, order = released_groups(LANGS + ["lat_Latn"])
    assert groups["eng_Latn"].startswith("pre-training")
    # Faroese and Tigrinya: the paper's decay-only examples
    assert groups["fao_Latn"].startswith("decay-only")
    assert groups["tir_Ethi"].startswith("decay-only")
    assert set(groups.values()) <= set(order)


def test_eval_set_aligns_paragraphs_with_english(model_dir):
    _, tok = load(model_dir, "cpu")
    es = build_eval_set(tok, LANGS, max_length=64)
    assert es.languages == sorted(LANGS)
    assert "eng_Latn" not in es.pairs  # English is the pivot, not a query
    n_articles = sum(
        1 for d in load_udhr() if d.lang in LANGS for a in d.articles if a.number in HELDOUT_ARTICLES
    )
    assert len(es.mlm) == n_articles
    assert all(len(ids) <= 64 for _, ids in es.mlm)
    rows, en_rows = es.pairs["deu_Latn"]
    assert len(rows) == len(en_rows) >= len(HELDOUT_ARTICLES)


def test_mlm_scores_match_a_direct_computation(model_dir):
    model, tok = load(model_dir, "cpu")
    es = build_eval_set(tok, ["deu", "fao"], max_length=96)
    groups, order = released_groups(es.languages)
    result = evaluate_model(model, tok, es, groups, order, seed=3, batch_tokens=200)
    specials = sorted(set(tok.all_special_ids))
    masked = masked_inputs(es, model.config.vocab_size, specials, tok.mask_token_id, 3, 0.15)
    for lang in es.languages:
        loss_sum, correct, n = 0.0, 0, 0
        for (key, _), (ids, labels) in zip(es.mlm, masked, strict=True):
            if es.lang_of[key] != lang:
                continue
            with torch.no_grad():
                logits = model(input_ids=ids[None], attention_mask=torch.ones_like(ids)[None]).logits[0]
            keep = labels != -100
            loss_sum += float(F.cross_entropy(logits[keep], labels[keep], reduction="sum"))
            correct += int((logits[keep].argmax(-1) == labels[keep]).sum())
            n += int(keep.sum())
        got = result["languages"][lang]
        assert got["masked_tokens"] == n > 0
        assert got["mlm_accuracy"] == pytest.approx(correct / n)
        assert got["mlm_loss"] == pytest.approx(loss_sum / n, rel=1e-4)
    # the masks are fixed: about 15% of the maskable tokens, and the same on a second run
    maskable = sum(sum(t not in specials for t in ids) for _, ids in es.mlm)
    assert 0.10 < result["settings"]["masked_tokens"] / maskable < 0.20
    again = evaluate_model(model, tok, es, groups, order, seed=3, batch_tokens=200)
    assert again["languages"] == result["languages"]


def test_scores_do_not_depend_on_the_language_subset(model_dir):
    model, tok = load(model_dir, "cpu")
    alone = build_eval_set(tok, ["fra"], max_length=64)
    many = build_eval_set(tok, ["fra", "deu", "tir"], max_length=64)
    a = evaluate_model(model, tok, alone, *released_groups(alone.languages))
    b = evaluate_model(model, tok, many, *released_groups(many.languages))
    fa, fb = a["languages"]["fra_Latn"], b["languages"]["fra_Latn"]
    # the same masks: same masked tokens and predictions (the loss differs by batching round-off only)
    assert fa["masked_tokens"] == fb["masked_tokens"] and fa["mlm_accuracy"] == fb["mlm_accuracy"]
    assert fa["mlm_loss"] == pytest.approx(fb["mlm_loss"], rel=1e-6)
    assert fa["retrieval_x2en"] == pytest.approx(fb["retrieval_x2en"])


def test_retrieval_finds_an_identical_translation(model_dir, monkeypatch):
    """A 'language' whose text is English's: every unit retrieves its twin (accuracy 1 both ways)."""
    english = next(d for d in load_udhr() if d.lang == "eng_Latn")
    twin = dataclasses.replace(english, key="xxx_Latn", lang="xxx_Latn", iso639_3="xxx")
    german = next(d for d in load_udhr() if d.lang == "deu_Latn")
    monkeypatch.setattr("mmbert.evaluate.load_udhr", lambda: [english, twin, german])
    model, tok = load(model_dir, "cpu")
    es = build_eval_set(tok)
    result = evaluate_model(model, tok, es, *released_groups(es.languages))
    twin_scores = result["languages"]["xxx_Latn"]
    assert twin_scores["retrieval_x2en"] == 1.0 and twin_scores["retrieval_en2x"] == 1.0
    assert twin_scores["group"] == "not in mmBERT"
    assert result["languages"]["eng_Latn"]["retrieval_x2en"] is None  # the pivot is not scored
    assert 0.0 <= result["languages"]["deu_Latn"]["retrieval_x2en"] <= 1.0


def test_cli_writes_json_and_markdown_for_a_transformers_export(model_dir, tmp_path, capsys):
    model = resave_with_transformers(model_dir, tmp_path / "hf")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(tiny_recipe().to_dict()))
    out = tmp_path / "eval"
    argv = [str(model), "--languages", "eng", "deu", "fao", "--recipe", str(recipe), "--out", str(out)]
    assert cli.main(["evaluate", *argv]) == 0
    table = capsys.readouterr().out
    assert "| pre | 2 |" in table and "| decay | 1 |" in table
    result = json.loads((out / "eval.json").read_text())
    assert set(result["languages"]) == {"eng_Latn", "deu_Latn", "fao_Latn"}
    assert result["groups"]["decay"]["languages"] == 1
    assert (out / "eval.md").read_text().startswith("### ")
    assert cli.main(["evaluate", str(model), "--languages", "zzz"]) == 2
    assert "languages not in the data: zzz" in capsys.readouterr().err


def test_english_alone_skips_retrieval_with_a_note(model_dir, capsys):
    """English is retrieval's pivot: alone it has no pairs, so MLM is scored and retrieval is said skipped."""
    assert cli.main(["evaluate", str(model_dir), "--languages", "eng_Latn", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "retrieval skipped: no language besides English" in captured.err
    assert "| all | 1 |" in captured.out and "Traceback" not in captured.err


def test_group_means_and_intervals_come_from_the_document_counts(model_dir):
    model, tok = load(model_dir, "cpu")
    es = build_eval_set(tok, LANGS, max_length=64)
    groups, order = released_groups(es.languages)
    result = evaluate_model(model, tok, es, groups, order, n_boot=300)
    docs = DocumentScores.from_dict(result["documents"])
    assert len(docs) == len(es.mlm) == result["settings"]["documents"]
    assert DocumentScores.from_dict(docs.to_dict()).to_dict() == result["documents"]
    # a language pools its documents: the per-language numbers are sums over them
    for lang, row in result["languages"].items():
        mine = [i for i, x in enumerate(docs.langs) if x == lang]
        assert row["masked_tokens"] == docs.masked[mine].sum()
        assert row["mlm_loss"] == pytest.approx(docs.loss[mine].sum() / docs.masked[mine].sum())
    # weights of one reproduce the point estimates; every interval holds its point
    ones = group_scores(docs, groups, order, np.ones((1, len(docs))))
    for group, row in result["groups"].items():
        assert ones[group]["mlm_loss"][0] == pytest.approx(row["mlm_loss"])
        for metric, (low, high) in row["ci"].items():
            assert low <= row[metric] <= high, (group, metric)
    # the bootstrap resamples documents inside each language: a language with one document has no spread
    one_doc = DocumentScores.from_dict({k: v[:1] for k, v in result["documents"].items()})
    point = summarize(one_doc, groups, order, n_boot=50)["all"]
    assert point["ci"]["mlm_loss"] == [point["mlm_loss"], point["mlm_loss"]]
