"""The demo end to end (`--quick`): every step runs, the outputs exist and say something, reruns skip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mmbert import MmBertConfig, MmBertForMaskedLM, cli
from mmbert.demo import Demo, Settings, fill_mask_examples, masked_example, recipe_overrides
from mmbert.demo_layout import FILL_MASK_LANGUAGES, STATE_FILE
from mmbert.recipe import load_recipe
from mmbert.tokenizer import bundled_texts, save_tokenizer, train_tokenizer

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
    assert metrics["fill_mask"] and all(len(ex["predictions"]) == 3 for ex in metrics["fill_mask"])


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


def test_masked_example_masks_a_word_start(quick_demo):
    from mmbert.tokenizer import load_tokenizer

    tok = load_tokenizer(quick_demo / "model")
    text, answer = masked_example(
        tok, "Everyone has the right to freedom of peaceful assembly and association."
    )
    assert text.count("<mask>") == 1 and answer.startswith(" ")
    assert (
        text.replace(" <mask>", answer)
        == "Everyone has the right to freedom of peaceful assembly and association."
    )


def test_fill_mask_examples_cover_the_eight_languages(tmp_path):
    """README: the demo shows fill-mask predictions in eight languages. With the full demo's tokenizer
    (8k BPE, `Settings`; the quick demo's 1k one cannot split Tigrinya at a word start) every one of
    FILL_MASK_LANGUAGES gets a held-out sentence with one <mask> and its predictions."""
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
        assert ex["text"].count("<mask>") == 1 and ex["answer"].strip() and len(ex["predictions"]) == 3, ex
