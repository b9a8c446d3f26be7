"""The demo end to end (`--quick`): every step runs, the outputs exist and say something, reruns skip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mmbert import MmBertConfig, MmBertForMaskedLM, cli
from mmbert.demo import Demo, Settings, fill_mask_examples, recipe_overrides
from mmbert.demo_layout import FILL_MASK_LANGUAGES, STATE_FILE
from mmbert.inference import MaskedWord, fill_word, load, masked_word
from mmbert.recipe import load_recipe
from mmbert.tokenizer import save_tokenizer
from mmbert.tokenizer_training import bundled_texts, train_tokenizer

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert cli.main(["demo", "--out", str(out), "--quick", "--recipe", str(RECIPE)]) == 0
    return out


def test_quick_demo_writes_model_report_metrics_and_plots(quick_demo):
    out = quick_demo
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (out / "model" / f).is_file(), f
    metrics = json.loads((out / "metrics.json").read_text())
    recipe = load_recipe(out / "recipe.yaml")
    variants = recipe.variant_names()
    assert set(metrics["evaluation"]) == {
        f"pre-decay ({recipe.phases[-2].name})",
        *(f"decay-{v}" for v in variants),
        "merge (TIES)",
    }
    # every phase trained, and the loss came down from its random-init value (~ln(vocab))
    shared = next(iter(metrics["training"].values()))
    assert list(shared) == [p.name for p in recipe.phases[:-1]]
    for v in variants:
        assert recipe.phases[-1].name in metrics["training"][f"{recipe.phases[-1].name}-{v}"]
    vocab = json.loads((out / "model" / "config.json").read_text())["vocab_size"]
    merged = metrics["evaluation"]["merge (TIES)"]["groups"]
    assert merged[recipe.phases[0].name]["mlm_loss"] < math.log(vocab) - 0.4
    # the decay experiment: the decay-only languages, scored for every model, seen only by `all`
    exp = metrics["decay_experiment"]
    assert exp["languages"] > 0 and exp["variants_that_saw_them"] == ["all"]
    saw = {r["model"]: r["saw_languages"] for r in exp["models"]}
    assert saw["decay-all"] and not saw["decay-cont"] and not saw["decay-eng"] and saw["merge (TIES)"]
    for name in (
        "loss",
        "schedule",
        "sampling",
        "accuracy_by_language",
        "models_by_group",
        "decay_experiment",
    ):
        png = out / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC, name
    report = (out / "report.md").read_text()
    for heading in ("## Training", "## Language sampling", "## Evaluation", "## The decay-phase experiment"):
        assert heading in report
    assert "mmbert demo --out" in report and "--quick" in report
    assert metrics["fill_mask"] and all(len(ex["predictions"]) == 5 for ex in metrics["fill_mask"])
    # the evaluation comes with bootstrap intervals around each group mean
    for group in merged.values():
        low, high = group["ci"]["mlm_loss"]
        assert low <= group["mlm_loss"] <= high


def test_rerun_skips_finished_steps_and_redoes_missing_ones(quick_demo, capsys):
    state = json.loads((quick_demo / STATE_FILE).read_text())
    del state["steps"]["report"]
    (quick_demo / STATE_FILE).write_text(json.dumps(state))
    (quick_demo / "report.md").unlink()
    capsys.readouterr()
    assert cli.main(["demo", "--out", str(quick_demo), "--quick", "--recipe", str(RECIPE)]) == 0
    printed = capsys.readouterr().err  # the steps are logged
    assert printed.count("skipped") == len(state["steps"])
    assert (quick_demo / "report.md").is_file()
    after = json.loads((quick_demo / STATE_FILE).read_text())
    for step, record in state["steps"].items():
        assert after["steps"][step] == record


def test_other_settings_in_the_same_directory_are_refused(quick_demo, capsys):
    argv = ["demo", "--out", str(quick_demo), "--quick", "--scale", "0.5", "--recipe", str(RECIPE)]
    assert cli.main(argv) == 2
    assert "started with other settings (scale" in capsys.readouterr().err


def test_scale_multiplies_every_token_budget(tmp_path):
    demo = Demo(tmp_path, Settings(recipe=str(RECIPE), scale=0.5), workers=1)
    base = load_recipe(RECIPE)
    scaled = load_recipe(RECIPE, recipe_overrides(base, demo))
    for a, b in zip(base.phases, scaled.phases, strict=True):
        assert b.tokens == round(a.tokens * 0.5)
        assert b.warmup_tokens == round(a.warmup_tokens * 0.5)
    assert scaled.train.batch_warmup_tokens == round(base.train.batch_warmup_tokens * 0.5)
    assert scaled.tokenizer == str(tmp_path / "tokenizer") and scaled.data == [str(tmp_path / "data")]
    assert scaled.variant_names() == base.variant_names()


def test_masked_word_masks_every_token_of_one_word(quick_demo):
    _, tok = load(quick_demo / "model", "cpu")
    sentence = "Everyone has the right to freedom of peaceful assembly and association."
    made = masked_word(tok, sentence)
    assert made.length >= 1 and made.text.count("<mask>") == made.length
    assert tok.decode(made.ids[made.start : made.start + made.length]).strip() == made.word
    assert made.text.replace(" " + "<mask>" * made.length, " " + made.word) == sentence
    assert made.word != "Everyone" and len(made.word) >= 4  # never the first word, never a short one


def _probs(model, tok, ids):
    """Next-token distribution at the first <mask> of `ids` (specials excluded), computed directly."""
    seq = torch.tensor([[tok.bos_token_id, *ids, tok.eos_token_id]])
    with torch.no_grad():
        logits = model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[0]
    row = logits[1 + ids.index(tok.mask_token_id)].clone()
    row[sorted(set(tok.all_special_ids) | {tok.mask_token_id})] = -math.inf
    return row.softmax(-1)


def test_fill_word_scores_each_filling_by_the_chain_of_its_tokens(quick_demo):
    model, tok = load(quick_demo / "model", "cpu")
    ids = tok("Everyone has the right to freedom of peaceful assembly.", add_special_tokens=False)[
        "input_ids"
    ]
    mask = tok.mask_token_id
    # one token: the top 5 of the distribution at the mask
    one = MaskedWord(ids, 3, 1, "", "")
    p = _probs(model, tok, ids[:3] + [mask] + ids[4:])
    top = p.topk(5)
    got = fill_word(model, tok, one, top_k=5)
    assert [w for w, _ in got] == [tok.decode([int(t)]).strip() for t in top.indices]
    assert [s for _, s in got] == pytest.approx(top.values.tolist(), rel=1e-4)
    # two tokens: the best of p(t1) p(t2 | t1) over the 5 best first tokens (the beam's reach)
    two = MaskedWord(ids, 3, 2, "", "")
    first = _probs(model, tok, ids[:3] + [mask, mask] + ids[5:])
    best = 0.0
    for t1 in first.topk(5).indices.tolist():
        second = _probs(model, tok, ids[:3] + [t1, mask] + ids[5:])
        best = max(best, float(first[t1] * second.max()))
    got = fill_word(model, tok, two, top_k=5)
    assert got[0][1] == pytest.approx(best, rel=1e-4)
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)


def test_fill_mask_examples_cover_the_eight_languages(tmp_path):
    """README: the demo shows fill-mask predictions in eight languages. With the full demo's tokenizer
    (`Settings`; the quick demo's 1k one cannot cut Tigrinya at word boundaries) every one of
    FILL_MASK_LANGUAGES gets a held-out sentence with one whole word masked and its top 5."""
    settings = Settings(recipe=str(RECIPE))
    tok = train_tokenizer(
        bundled_texts("train"),
        settings.tokenizer_vocab,
        model=settings.tokenizer_model,  # type: ignore[arg-type]
        max_chars=settings.tokenizer_max_chars,
    )  # as the demo's step_tokenizer (train_and_save), without its coverage check
    save_tokenizer(tok, tmp_path)
    torch.manual_seed(0)
    MmBertForMaskedLM(MmBertConfig.preset("tiny", vocab_size=len(tok))).save_pretrained(tmp_path)
    examples = fill_mask_examples(tmp_path)
    assert [ex["lang"] for ex in examples] == list(FILL_MASK_LANGUAGES) and len(examples) == 8
    for ex in examples:
        assert ex["text"].count("<mask>") == ex["tokens"] >= 1, ex
        assert ex["answer"].strip() and len(ex["predictions"]) == 5, ex
