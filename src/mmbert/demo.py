"""`mmbert demo`: the whole mmBERT recipe in miniature on the bundled corpus, on a laptop CPU.

    mmbert demo [--out runs/demo] [--scale F | --quick]

Nothing is downloaded. The steps, each a call of the function that the matching command runs:

1. `tokenizer`: train a BPE tokenizer with mmBERT's special ids on the bundled UDHR + code
   (`mmbert.tokenizer_training.train_and_save`), and `prepare`: tokenize the corpus into shards
   (`mmbert.data.prepare.prepare`);
2. `train`: the tiny recipe (`recipes/tiny.yaml`) through its three phases, 30% → 15% → 5% masking,
   tau 0.7 → 0.5 → 0.3, growing language sets, longer context and a new RoPE theta, then its three
   decay variants from the end-of-mid-training checkpoint (`mmbert.runs.run_recipe`);
3. `merge`: TIES-merge the three decay variants against that checkpoint (`mmbert.merge.merge_dirs`);
4. `evaluate`: held-out MLM accuracy and retrieval per language for the pre-decay model, each
   variant and the merge, languages grouped by the phase that introduced them, with bootstrap
   intervals over the held-out documents (`mmbert.evaluate`);
5. `export` the merge to `OUT/model` (HF format + tokenizer), fill in one masked whole word (all of
   its tokens) in several languages with the top 5 of a beam over its tokens (`masked_word`,
   `fill_word`, `mmbert.inference`), and write `OUT/report.md`, `OUT/metrics.json` and `OUT/plots/`
   (`mmbert.demo_report`).
   `mmbert.demo_layout` says where each step writes.

Rerunning the same command continues where it stopped: the trainer and `prepare` resume inside their
steps, and a finished step is recorded in `OUT/demo_state.json` (written atomically after the step's
own outputs) and skipped. `--scale` multiplies every token budget of the recipe; `--quick` is the
smoke-test configuration (the `tiny` model, a small tokenizer, 3% of the tokens, fewer languages
evaluated) that the test suite runs end to end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmbert.data.corpus import load_udhr
from mmbert.data.prepare import prepare
from mmbert.data.sources import open_source
from mmbert.demo_layout import (
    FILL_MASK_ARTICLE,
    FILL_MASK_LANGUAGES,
    QUICK_SCALE,
    Layout,
    eval_stem,
)
from mmbert.demo_report import write_demo_report
from mmbert.distributed import init_distributed
from mmbert.evaluate import (
    build_eval_set,
    evaluate_model,
    recipe_groups,
    write_result,
)
from mmbert.experiment import ExperimentError, ExperimentSettings, eval_languages, find_recipe, read_state
from mmbert.inference import fill_word, load, masked_word
from mmbert.io import atomic_dir, atomic_write_text, check_output, remove_stale_temps
from mmbert.merge import merge_dirs
from mmbert.recipe import Recipe, load_recipe
from mmbert.runs import run_recipe
from mmbert.tokenizer_training import train_and_save
from mmbert.train import TrainOptions

logger = logging.getLogger(__name__)


class DemoError(ExperimentError):
    """A demo that cannot go on as asked (a recipe without decay variants, a merge without a tokenizer)."""


@dataclasses.dataclass
class Settings(ExperimentSettings):
    """What determines the demo's results (a rerun must use the same, or a new --out)."""

    tokenizer_model: str = "bpe"  # Gemma 2's kind; Unigram trains several times slower

    @classmethod
    def create(cls, recipe: Path | None = None, scale: float | None = None, quick: bool = False) -> Settings:
        """The full demo (every token budget times `scale`, default 1), or the quick smoke test."""
        path = str(find_recipe(recipe))
        if quick:
            return cls(
                recipe=path,
                scale=scale or QUICK_SCALE,
                quick=True,
                model_preset="tiny",
                batch_tokens=1024,
                lr=2e-3,  # the tiny model in 3% of the tokens: a few dozen steps, a higher LR
                tokenizer_vocab=1000,
                tokenizer_model="bpe",
                tokenizer_max_chars=400_000,
                eval_max_length=48,
                eval_per_group=4,
            )
        return cls(recipe=path, scale=scale or 1.0)


# ---------------------------------------------------------------------------------------------- state
class Demo:
    """The demo's directory, settings and finished steps."""

    def __init__(self, out: Path, settings: Settings, workers: int, log_every_steps: int = 0) -> None:
        self.out = out
        self.layout = Layout(out)
        self.settings = settings
        self.workers = workers
        self.log_every_steps = log_every_steps  # the step lines of training (0: the bars only)
        self.t0 = time.perf_counter()
        check_output(out, [settings.recipe], is_own=lambda _: self.layout.state.is_file(), overwrite=None)
        out.mkdir(parents=True, exist_ok=True)
        self.state = read_state(self.layout, settings, steps={})

    def _save_state(self) -> None:
        atomic_write_text(self.layout.state, json.dumps(self.state, indent=1) + "\n")

    def step(self, name: str, title: str, fn: Callable[[], Any]) -> None:
        """Run `fn` unless the state says `name` is finished; record it (with its time) when it is."""
        done = self.state["steps"].get(name)
        if done is not None:
            logger.info("== %s: done (%.0fs, skipped)", title, done["seconds"])
            return
        logger.info("== %s [%s]", title, self._elapsed())
        start = time.perf_counter()
        fn()
        self.state["steps"][name] = {"seconds": time.perf_counter() - start}
        self._save_state()
        logger.info("== %s: finished in %.0fs [%s]", title, time.perf_counter() - start, self._elapsed())

    def _elapsed(self) -> str:
        s = int(time.perf_counter() - self.t0)
        return f"{s // 60}:{s % 60:02d} elapsed"


# ---------------------------------------------------------------------------------------------- recipe
def recipe_overrides(recipe: Recipe, demo: Demo) -> list[str]:
    """Overrides that point the recipe at the demo's tokenizer and data, and scale its token budgets."""
    return demo.settings.recipe_overrides(recipe, demo.layout.tokenizer, demo.layout.data)


def resolved_recipe(demo: Demo) -> Recipe:
    """The recipe the demo trains (written to OUT/recipe.yaml, which the training step then reads)."""
    base = load_recipe(demo.settings.recipe)
    recipe = load_recipe(demo.settings.recipe, recipe_overrides(base, demo))
    if len(recipe.phases) < 2 or len(recipe.variant_names()) < 2:
        raise DemoError(
            f"{demo.settings.recipe}: the demo needs phases before a last phase with decay variants"
        )
    return recipe


# ---------------------------------------------------------------------------------------------- steps
def step_tokenizer(demo: Demo) -> None:
    s = demo.settings
    report = train_and_save(
        demo.layout.tokenizer,
        vocab_size=s.tokenizer_vocab,
        model=s.tokenizer_model,  # type: ignore[arg-type]
        max_chars=s.tokenizer_max_chars or None,
        progress=False,
    )
    bad = report.roundtrip_failures
    if report.unknown_tokens or bad:
        raise DemoError(
            f"the tokenizer in {report.out} fails its check on {report.check_set}: "
            f"{report.unknown_tokens} unknown tokens, round trip failed for {', '.join(bad) or 'no language'}"
        )
    logger.info("   vocab %d, %.3f tokens/char on %s, trained in %.1fs",
                report.vocab_size, report.tokens_per_char, report.check_set, report.seconds)  # fmt: skip


def step_prepare(demo: Demo) -> None:
    for spec in ("bundled", "bundled:code"):
        result = prepare(open_source(spec), demo.layout.tokenizer, demo.layout.data, workers=demo.workers)
        logger.info("   %s: %s documents, %s tokens in %d languages",
                    result.name, f"{result.docs:,}", f"{result.tokens:,}", len(result.langs))  # fmt: skip


def step_train(demo: Demo) -> None:
    recipe = load_recipe(demo.layout.recipe)
    options = TrainOptions(log_every_steps=demo.log_every_steps)
    run_recipe(recipe, demo.layout.run, init_distributed("cpu"), options)


def step_merge(demo: Demo, recipe: Recipe) -> None:
    layout = demo.layout
    models = [layout.variant_export(recipe, v) for v in recipe.variant_names()]
    # mmBERT's density is not published; 0.5 trims half of each variant's task vector (TIES's usual setting).
    merge_dirs("ties", layout.pre_decay_export(recipe), models, layout.merged, density=0.5, overwrite=True)


def step_evaluate(demo: Demo, recipe: Recipe) -> None:
    layout = demo.layout
    eval_set = groups = order = None
    for name, path in layout.model_dirs(recipe).items():
        if layout.eval_result(name).exists():
            logger.info("   %s: already evaluated", name)
            continue
        model, tok = load(path, "cpu")
        if eval_set is None:
            eval_set = build_eval_set(tok, eval_languages(recipe, demo.settings.eval_per_group),
                                      demo.settings.eval_max_length)  # fmt: skip
            groups, order = recipe_groups(recipe, eval_set.languages)
        result = evaluate_model(model, tok, eval_set, groups, order, progress=True)
        result = {
            "model": str(path),
            "name": name,
            "grouping": "phase of the tiny recipe that introduced the language",
            **result,
        }
        write_result(result, layout.eval_dir, eval_stem(name))
        g = result["groups"]
        logger.info("   %s: %s (%.0fs)", name, ", ".join(
            f"{k} MLM {100 * v['mlm_accuracy']:.1f}% / retrieval {100 * (v['retrieval'] or 0):.1f}%" for k, v in g.items()
        ), result["seconds"])  # fmt: skip


def step_export(demo: Demo) -> None:
    """Copy the merge (with its tokenizer files) to OUT/model, swapped in whole."""
    layout = demo.layout
    if not any((layout.merged / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise DemoError(f"{layout.merged} has no tokenizer files")
    remove_stale_temps(demo.out, layout.model.name)
    with atomic_dir(layout.model) as tmp:
        shutil.copytree(layout.merged, tmp, dirs_exist_ok=True)
    load(layout.model, "cpu")  # the export loads on its own (model + tokenizer)


def fill_mask_examples(model_dir: Path, top_k: int = 5) -> list[dict[str, Any]]:
    """Fill-mask of one whole word in the first sentence of a held-out article, in several languages."""
    model, tok = load(model_dir, "cpu")
    examples = []
    by_lang = {d.lang: d for d in reversed(load_udhr())}  # the first declaration of each language
    for lang in FILL_MASK_LANGUAGES:
        decl = by_lang.get(lang)
        article = decl.article(FILL_MASK_ARTICLE) if decl else None
        made = masked_word(tok, article.text.split("\n")[0]) if article else None
        if made is None:
            continue
        predictions = fill_word(model, tok, made, top_k)
        examples.append(
            {
                "lang": lang,
                "text": made.text,
                "answer": made.word,
                "tokens": made.length,
                "rank": next((i + 1 for i, (w, _) in enumerate(predictions) if w == made.word), None),
                "predictions": [{"token": w, "score": p} for w, p in predictions],
            }
        )
    return examples


def step_fill_mask(demo: Demo) -> None:
    examples = fill_mask_examples(demo.layout.model)
    text = json.dumps(examples, indent=1, ensure_ascii=False) + "\n"
    atomic_write_text(demo.layout.fill_mask, text)
    for ex in examples:
        preds = "  ".join(f"{p['token']!r} {p['score']:.2g}" for p in ex["predictions"])
        logger.info("   [%s] %s\n      answer %r; predicted %s", ex["lang"], ex["text"], ex["answer"], preds)


# ---------------------------------------------------------------------------------------------- run
@dataclasses.dataclass
class DemoResult:
    report: Path
    model: Path  # the final model (HF format with its tokenizer)
    seconds: float  # of all the steps, over every run that made them


def run_demo(out: Path, settings: Settings, workers: int = 2, log_every_steps: int = 0) -> DemoResult:
    """Run (or continue) the demo in `out`."""
    demo = Demo(out, settings, workers, log_every_steps)
    layout = demo.layout
    recipe = resolved_recipe(demo)
    recipe.save(layout.recipe)
    last = recipe.phases[-1].tokens
    to_train = recipe.total_tokens - last + len(recipe.variant_names()) * last
    logger.info("mmbert demo in %s: recipe %s (x%s tokens, %s tokens to train), variants %s",
                out, settings.recipe, f"{settings.scale:g}", f"{to_train:,}", ", ".join(recipe.variant_names()))  # fmt: skip
    demo.step("tokenizer", "1/7 train the tokenizer (mmbert tokenizer train)", lambda: step_tokenizer(demo))
    demo.step(
        "prepare", "2/7 tokenize the bundled corpus into shards (mmbert prepare)", lambda: step_prepare(demo)
    )
    demo.step(
        "train",
        "3/7 train the three phases, then the three decay variants (mmbert train)",
        lambda: step_train(demo),
    )
    demo.step("merge", "4/7 TIES-merge the decay variants (mmbert merge)", lambda: step_merge(demo, recipe))
    demo.step("evaluate", "5/7 evaluate each model (mmbert evaluate)", lambda: step_evaluate(demo, recipe))
    demo.step("export", f"6/7 export the merged model to {layout.model}", lambda: step_export(demo))
    demo.step(
        "fill_mask", "6/7 fill-mask in several languages (mmbert fill-mask)", lambda: step_fill_mask(demo)
    )
    demo.step("report", "7/7 report and plots", lambda: write_demo_report(layout, recipe, demo.state))
    total = sum(s["seconds"] for s in demo.state["steps"].values())
    return DemoResult(report=layout.report, model=layout.model, seconds=total)
