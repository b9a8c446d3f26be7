"""`mmbert demo`: the whole mmBERT recipe in miniature on the bundled corpus, on a laptop CPU.

    mmbert demo [--out runs/demo] [--scale F | --quick]

Nothing is downloaded. The steps, each calling the module that owns it:

1. `tokenizer`: train a BPE tokenizer with mmBERT's special ids on the bundled UDHR + code
   (`mmbert tokenizer train`), and `prepare`: tokenize the corpus into shards (`mmbert prepare`);
2. `train`: the tiny recipe (`recipes/tiny.yaml`) through its three phases, 30% → 15% → 5% masking,
   tau 0.7 → 0.5 → 0.3, growing language sets, longer context and a new RoPE theta, then its three
   decay variants from the end-of-mid-training checkpoint (`mmbert train`);
3. `merge`: TIES-merge the three decay variants against that checkpoint (`mmbert merge`);
4. `evaluate`: held-out MLM accuracy and retrieval per language for the pre-decay model, each
   variant and the merge, languages grouped by the phase that introduced them (`mmbert evaluate`);
5. `export` the merge to `OUT/model` (HF format + tokenizer), show fill-mask predictions in several
   languages (`mmbert fill-mask`), and write `OUT/report.md`, `OUT/metrics.json` and `OUT/plots/`.

Rerunning the same command continues where it stopped: the trainer and `prepare` resume inside their
steps, and a finished step is recorded in `OUT/demo_state.json` (written atomically after the step's
own outputs) and skipped. `--scale` multiplies every token budget of the recipe; `--quick` is the
smoke-test configuration (the `tiny` model, a small tokenizer, 2% of the tokens, fewer languages
evaluated) that the test suite runs end to end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmbert.io import atomic_write_text, fsync_dir

logger = logging.getLogger(__name__)

STATE_FILE = "demo_state.json"
QUICK_SCALE = 0.02  # of recipes/tiny.yaml's tokens, with the tiny model: the smoke test
# Held-out sentences for fill-mask: UDHR article 5 in languages of every group (English and French
# pre-training, Swahili mid-training in the tiny recipe, Faroese and Tigrinya decay-only: the paper's
# examples).
FILL_MASK_LANGUAGES = (
    "eng_Latn",
    "fra_Latn",
    "deu_Latn",
    "spa_Latn",
    "rus_Cyrl",
    "swh_Latn",
    "fao_Latn",
    "tir_Ethi",
)
FILL_MASK_ARTICLE = 5
# Languages whose shares the sampling plot names.
HIGHLIGHT = ("eng_Latn", "fra_Latn", "cmn_Hans", "swh_Latn", "fao_Latn", "tir_Ethi", "code")


class DemoError(RuntimeError):
    pass


@dataclasses.dataclass
class Settings:
    """What determines the demo's results (a rerun must use the same, or a new --out)."""

    recipe: str
    scale: float = 1.0
    quick: bool = False
    model_preset: str | None = None  # None: the recipe's
    batch_tokens: int | None = None  # None: the recipe's
    lr: float | None = None  # None: the recipe's
    tokenizer_vocab: int = 8192
    tokenizer_model: str = "bpe"  # Gemma 2's kind; Unigram trains several times slower
    # A 2M-character sample of the 5.5M-character corpus: half the training time, the same vocabulary size.
    tokenizer_max_chars: int | None = 2_000_000
    # The evaluation runs 5 models: English + 24 languages of each group, texts cut to 48 tokens, keep it
    # to about half a minute per model here (`mmbert evaluate` alone defaults to every language).
    eval_max_length: int = 48
    eval_per_group: int | None = 24

    @classmethod
    def for_args(cls, args: argparse.Namespace) -> Settings:
        recipe = str(find_recipe(args.recipe))
        if args.quick:
            return cls(
                recipe=recipe,
                scale=args.scale or QUICK_SCALE,
                quick=True,
                model_preset="tiny",
                batch_tokens=1024,
                lr=2e-3,  # the tiny model in 2% of the tokens: a few dozen steps, a higher LR
                tokenizer_vocab=1000,
                tokenizer_model="bpe",
                tokenizer_max_chars=400_000,
                eval_max_length=48,
                eval_per_group=4,
            )
        return cls(recipe=recipe, scale=args.scale or 1.0)


def find_recipe(path: Path | None) -> Path:
    """`--recipe`, else `recipes/tiny.yaml` in the working directory or in the source checkout."""
    if path is not None:
        if not path.is_file():
            raise DemoError(f"{path}: no such recipe file")
        return path.resolve()
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / "recipes" / "tiny.yaml"
        if candidate.is_file():
            return candidate.resolve()
    raise DemoError("recipes/tiny.yaml not found: run from the repository root or pass --recipe")


# ---------------------------------------------------------------------------------------------- state
class Demo:
    """The demo's directory, settings and finished steps."""

    def __init__(self, out: Path, settings: Settings, workers: int) -> None:
        self.out = out
        self.settings = settings
        self.workers = workers
        self.t0 = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        self.state_path = out / STATE_FILE
        state = json.loads(self.state_path.read_text()) if self.state_path.exists() else None
        wanted = dataclasses.asdict(settings)
        if state is not None and state["settings"] != wanted:
            changed = sorted(k for k in wanted if state["settings"].get(k) != wanted[k])
            raise DemoError(
                f"{out} was started with other settings ({', '.join(changed)}: "
                f"{', '.join(repr(state['settings'].get(k)) for k in changed)}); rerun with the same options "
                "or use another --out"
            )
        self.state = state or {"settings": wanted, "steps": {}}
        self.tokenizer = out / "tokenizer"
        self.data = out / "data"
        self.run = out / "run"
        self.merged = out / "merged"
        self.model = out / "model"
        self.eval_dir = out / "eval"
        self.plots = out / "plots"
        self.recipe_path = out / "recipe.yaml"

    def _save_state(self) -> None:
        atomic_write_text(self.state_path, json.dumps(self.state, indent=1) + "\n")

    def step(self, name: str, title: str, fn: Callable[[], Any]) -> None:
        """Run `fn` unless the state says `name` is finished; record it (with its time) when it is."""
        done = self.state["steps"].get(name)
        if done is not None:
            print(f"== {title}: done ({done['seconds']:.0f}s, skipped)", flush=True)
            return
        print(f"== {title} [{self._elapsed()}]", flush=True)
        start = time.perf_counter()
        fn()
        self.state["steps"][name] = {"seconds": time.perf_counter() - start}
        self._save_state()
        print(f"== {title}: finished in {time.perf_counter() - start:.0f}s [{self._elapsed()}]", flush=True)

    def _elapsed(self) -> str:
        s = int(time.perf_counter() - self.t0)
        return f"{s // 60}:{s % 60:02d} elapsed"


def _call(main: Callable[[list[str]], int], argv: list[str], what: str) -> None:
    rc = main(argv)
    if rc != 0:
        raise DemoError(f"{what} failed (exit status {rc}): {' '.join(argv)}")


# ---------------------------------------------------------------------------------------------- recipe
def recipe_overrides(recipe: Any, demo: Demo) -> list[str]:
    """Overrides that point the recipe at the demo's tokenizer and data, and scale its token budgets.

    The checkpoint interval is not scaled: it is about how much work a kill may lose, not the recipe.
    """
    s = demo.settings
    out = [f"tokenizer={demo.tokenizer}", f"data=[{demo.data}]"]
    if s.model_preset:
        out.append(f"model.preset={s.model_preset}")
    if s.batch_tokens:
        out.append(f"train.batch_tokens={s.batch_tokens}")
        start = recipe.train.batch_warmup_start_tokens
        if start is not None and start > s.batch_tokens:
            out.append(f"train.batch_warmup_start_tokens={s.batch_tokens}")
    if s.lr:
        out.append(f"train.lr={s.lr}")
    if s.scale != 1.0:

        def scaled(n: int) -> int:
            return max(1, round(n * s.scale))

        for i, phase in enumerate(recipe.phases):
            out.append(f"phases.{i}.tokens={scaled(phase.tokens)}")
            if phase.warmup_tokens:
                out.append(f"phases.{i}.warmup_tokens={scaled(phase.warmup_tokens)}")
            if phase.decay_tokens:
                out.append(f"phases.{i}.decay_tokens={scaled(phase.decay_tokens)}")
            for name, variant in phase.variants.items():
                for key in ("tokens", "warmup_tokens", "decay_tokens"):
                    if variant.get(key):
                        out.append(f"phases.{i}.variants.{name}.{key}={scaled(int(variant[key]))}")
        if recipe.train.batch_warmup_tokens:
            out.append(f"train.batch_warmup_tokens={scaled(recipe.train.batch_warmup_tokens)}")
    return out


def resolved_recipe(demo: Demo) -> Any:
    """The recipe the demo trains (written to OUT/recipe.yaml, which `mmbert train` then reads)."""
    from mmbert.recipe import load_recipe

    base = load_recipe(demo.settings.recipe)
    recipe = load_recipe(demo.settings.recipe, recipe_overrides(base, demo))
    if len(recipe.phases) < 2 or len(recipe.variant_names()) < 2:
        raise DemoError(
            f"{demo.settings.recipe}: the demo needs phases before a last phase with decay variants"
        )
    return recipe


# ---------------------------------------------------------------------------------------------- steps
def step_tokenizer(demo: Demo) -> None:
    from mmbert import tokenizer

    s = demo.settings
    argv = ["train", "--out", str(demo.tokenizer), "--vocab-size", str(s.tokenizer_vocab),
            "--model", s.tokenizer_model, "--quiet"]  # fmt: skip
    if s.tokenizer_max_chars:
        argv += ["--max-chars", str(s.tokenizer_max_chars)]
    _call(tokenizer.main, argv, "tokenizer training")


def step_prepare(demo: Demo) -> None:
    from mmbert.data import prepare

    for source in ("bundled", "bundled:code"):
        argv = ["--source", source, "--tokenizer", str(demo.tokenizer), "--out", str(demo.data),
                "--workers", str(demo.workers)]  # fmt: skip
        _call(prepare.main, argv, f"prepare {source}")


def step_train(demo: Demo) -> None:
    from mmbert import train

    _call(train.main, [str(demo.recipe_path), "--out", str(demo.run), "--device", "cpu"], "training")


def pre_decay_export(demo: Demo, recipe: Any) -> Path:
    return demo.run / "export" / recipe.phases[-2].name


def variant_export(demo: Demo, recipe: Any, variant: str) -> Path:
    return demo.run / "variants" / variant / "export" / recipe.phases[-1].name


def step_merge(demo: Demo, recipe: Any) -> None:
    from mmbert import merge

    models = [str(variant_export(demo, recipe, v)) for v in recipe.variant_names()]
    # mmBERT's density is not published; 0.5 trims half of each variant's task vector (TIES's usual setting).
    argv = ["--method", "ties", "--base", str(pre_decay_export(demo, recipe)), "--models", *models,
            "--density", "0.5", "--out", str(demo.merged), "--overwrite"]  # fmt: skip
    _call(merge.main, argv, "TIES merge")


def model_dirs(demo: Demo, recipe: Any) -> dict[str, Path]:
    """The evaluated models, by display name: pre-decay checkpoint, each decay variant, the merge."""
    out = {f"pre-decay ({recipe.phases[-2].name})": pre_decay_export(demo, recipe)}
    for v in recipe.variant_names():
        out[f"decay-{v}"] = variant_export(demo, recipe, v)
    out["merge (TIES)"] = demo.merged
    return out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-").replace("--", "-")


def eval_languages(recipe: Any, per_group: int | None) -> list[str] | None:
    """English plus `per_group` languages of each group (the named ones first), or all (None)."""
    if per_group is None:
        return None
    from mmbert.data.corpus import load_udhr
    from mmbert.evaluate import ENGLISH, recipe_groups

    langs = sorted({d.lang for d in load_udhr()})
    groups, order = recipe_groups(recipe, langs)
    chosen = {ENGLISH}
    for g in order:
        # the languages the report names (Faroese, Tigrinya, ...) first, then alphabetical
        members = sorted((lang for lang in langs if groups[lang] == g), key=lambda k: (k not in HIGHLIGHT, k))
        chosen.update(members[:per_group])
    return sorted(chosen)


def step_evaluate(demo: Demo, recipe: Any) -> None:
    from mmbert.evaluate import build_eval_set, evaluate_model, recipe_groups, write_result
    from mmbert.inference import load

    eval_set = groups = order = None
    for name, path in model_dirs(demo, recipe).items():
        stem = _slug(name)
        if (demo.eval_dir / f"{stem}.json").exists():
            print(f"   {name}: already evaluated", flush=True)
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
        write_result(result, demo.eval_dir, stem)
        g = result["groups"]
        print(f"   {name}: " + ", ".join(
            f"{k} MLM {100 * v['mlm_accuracy']:.1f}% / retrieval {100 * (v['retrieval'] or 0):.1f}%" for k, v in g.items()
        ) + f" ({result['seconds']:.0f}s)", flush=True)  # fmt: skip


def step_export(demo: Demo) -> None:
    """Copy the merge (with its tokenizer files) to OUT/model through a temporary directory."""
    from mmbert.inference import load

    if not (demo.merged / "tokenizer.json").exists() and not (demo.merged / "tokenizer_config.json").exists():
        raise DemoError(f"{demo.merged} has no tokenizer files")
    tmp = demo.out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(demo.merged, tmp)
    if demo.model.exists():
        shutil.rmtree(demo.model)
    os.replace(tmp, demo.model)
    fsync_dir(demo.out)
    load(demo.model, "cpu")  # the export loads on its own (model + tokenizer)


def masked_example(tokenizer: Any, sentence: str) -> tuple[str, str] | None:
    """The sentence with its longest word-initial token masked (nearest the middle on ties), and that token."""
    ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
    pieces = [tokenizer.decode([i]) for i in ids]
    candidates = [j for j, p in enumerate(pieces) if p.startswith(" ") and p.strip()]
    if not candidates:
        return None
    j = min(candidates, key=lambda j: (-len(pieces[j].strip()), abs(j - len(ids) / 2)))
    text = tokenizer.decode(ids[:j]) + " " + tokenizer.mask_token + tokenizer.decode(ids[j + 1 :])
    return text, pieces[j]


def fill_mask_examples(model_dir: Path, top_k: int = 3) -> list[dict[str, Any]]:
    """Fill-mask on the first sentence of a held-out article in several languages."""
    from mmbert.data.corpus import load_udhr
    from mmbert.inference import fill_mask, load

    model, tok = load(model_dir, "cpu")
    examples = []
    by_lang = {d.lang: d for d in reversed(load_udhr())}  # the first declaration of each language
    for lang in FILL_MASK_LANGUAGES:
        decl = by_lang.get(lang)
        article = decl.article(FILL_MASK_ARTICLE) if decl else None
        made = masked_example(tok, article.text.split("\n")[0]) if article else None
        if made is None:
            continue
        text, answer = made
        result = fill_mask(model, tok, [text], top_k=top_k)[0]
        examples.append(
            {
                "lang": lang,
                "text": text,
                "answer": answer,
                "predictions": [{"token": p.token, "score": p.score} for p in result.predictions[0]],
            }
        )
    return examples


def step_fill_mask(demo: Demo) -> None:
    examples = fill_mask_examples(demo.model)
    atomic_write_text(demo.out / "fill_mask.json", json.dumps(examples, indent=1, ensure_ascii=False) + "\n")
    for ex in examples:
        preds = "  ".join(f"{p['token']!r} {p['score']:.2f}" for p in ex["predictions"])
        print(f"   [{ex['lang']}] {ex['text']}\n      answer {ex['answer']!r}; predicted {preds}", flush=True)


def step_report(demo: Demo, recipe: Any) -> None:
    from mmbert.report import write_demo_report

    write_demo_report(demo, recipe)


# ---------------------------------------------------------------------------------------------- main
def run_demo(out: Path, settings: Settings, workers: int = 2) -> Path:
    """Run (or continue) the demo in `out`; returns the report's path."""
    demo = Demo(out, settings, workers)
    recipe = resolved_recipe(demo)
    recipe.save(demo.recipe_path)
    print(
        f"mmbert demo in {out}: recipe {settings.recipe} (x{settings.scale:g} tokens, "
        f"{recipe.total_tokens - recipe.phases[-1].tokens + len(recipe.variant_names()) * recipe.phases[-1].tokens:,} "
        f"tokens to train), variants {', '.join(recipe.variant_names())}",
        flush=True,
    )
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
    demo.step("export", f"6/7 export the merged model to {demo.model}", lambda: step_export(demo))
    demo.step(
        "fill_mask", "6/7 fill-mask in several languages (mmbert fill-mask)", lambda: step_fill_mask(demo)
    )
    demo.step("report", "7/7 report and plots", lambda: step_report(demo, recipe))
    total = sum(s["seconds"] for s in demo.state["steps"].values())
    print(f"done: {out / 'report.md'} ({total / 60:.1f} min of steps in all); the model is in {demo.model}")
    return out / "report.md"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mmbert demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo directory (rerun to continue)")
    p.add_argument("--recipe", type=Path, help="default: recipes/tiny.yaml")
    p.add_argument("--scale", type=float, help="multiply every token budget of the recipe (default 1)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test size: the tiny model, 2%% of the tokens, fewer languages evaluated",
    )
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="tokenizer processes")
    args = p.parse_args(argv)
    if args.scale is not None and args.scale <= 0:
        p.error("--scale must be > 0")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        run_demo(args.out, Settings.for_args(args), args.workers)
    except DemoError as e:
        print(f"mmbert demo: error: {e}", file=sys.stderr)
        return 2
    return 0
