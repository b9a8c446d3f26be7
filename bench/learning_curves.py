"""Learning curves on this CPU: held-out MLM loss against training tokens and seconds for a few shapes,
to choose the demo's model, vocabulary, sequence length and token budget.

    python bench/learning_curves.py [--minutes 6] [--shapes A B C] [--out bench/results/learning_curves.json]
    python bench/learning_curves.py --smoke          # seconds: the tests run this

A shape is a model (a preset and overrides), a tokenizer vocabulary and a sequence length. Every shape
trains the first phase of `recipes/tiny.yaml` (30% masking, tau 0.7, its languages and sources, its
learning rate and batch) from scratch with `mmbert.train.Trainer`, on the bundled corpus tokenized by its
own tokenizer (`mmbert tokenizer train` + `mmbert prepare`, cached under `--work`). The shapes' steps
are interleaved round robin, so a busy machine slows each alike, and each shape trains for `--minutes`
of its own step time. At evenly spaced times its held-out MLM loss is measured (`mmbert.evaluate`:
15% masking, the held-out articles of that phase's languages, with a bootstrap interval over them).

Losses under different vocabularies are not comparable per token, so the curves are also given per
character: nats per character = loss per masked token x held-out tokens per character (that
tokenizer's, on the full held-out articles). The choice is the shape with the lowest held-out nats per
character at `--budget-minutes` of training (default: the demo's share of training time, `--minutes`
x 0.8), and its throughput sets the demo's token budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mmbert import distributed as dist
from mmbert.data.corpus import HELDOUT_ARTICLES, load_udhr
from mmbert.data.prepare import prepare
from mmbert.data.sources import open_source
from mmbert.evaluate import build_eval_set, evaluate_model, heldout_languages, recipe_groups
from mmbert.io import atomic_open, atomic_write_text
from mmbert.recipe import Recipe, load_recipe
from mmbert.tokenizer import load_tokenizer
from mmbert.tokenizer_training import train_and_save
from mmbert.train import Trainer, TrainOptions

ROOT = Path(__file__).resolve().parents[1]
# name -> model preset and overrides, tokenizer vocabulary, sequence length of the first phase
SHAPES = {
    "mini-8k": dict(model={"preset": "mini"}, vocab=8192, seq_len=128),
    "small-8k": dict(
        model={
            "preset": "mini",
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 2,
        },
        vocab=8192,
        seq_len=128,
    ),  # fmt: skip
    "mini-16k": dict(model={"preset": "mini"}, vocab=16384, seq_len=128),
    "mini-8k-256": dict(model={"preset": "mini"}, vocab=8192, seq_len=256),
}
DEFAULT_SHAPES = ("mini-8k", "small-8k", "mini-16k")
SMOKE = {"tiny-1k": dict(model={"preset": "tiny"}, vocab=1000, seq_len=64)}


def prepare_vocab(work: Path, vocab: int, max_chars: int) -> tuple[Path, Path]:
    """The tokenizer and prepared bundled corpus for one vocabulary (cached in `work`)."""
    tok, data = work / f"vocab-{vocab}" / "tokenizer", work / f"vocab-{vocab}" / "data"
    if not (tok / "tokenizer.json").exists():
        train_and_save(tok, vocab_size=vocab, model="bpe", max_chars=max_chars, progress=False)
    for spec in ("bundled", "bundled:code"):
        prepare(open_source(spec), tok, data, workers=2, progress=False)
    return tok, data


def shape_recipe(base: Path, shape: dict, tok: Path, data: Path, seed: int) -> Recipe:
    """The recipe's first phase alone, long enough never to end, for this shape."""
    recipe = load_recipe(base)
    d = recipe.to_dict()
    first = d["phases"][0]
    first.update(tokens=10**12, seq_len=shape["seq_len"], decay="constant")
    d.update(phases=[first], tokenizer=str(tok), data=[str(data)], model=shape["model"], seed=seed)
    d["train"]["checkpoint_every_tokens"] = None
    return Recipe.from_dict(d)


def tokens_per_char(tokenizer, langs: list[str]) -> float:
    """Held-out tokens per character of this tokenizer on the evaluated languages (untruncated)."""
    texts = [
        a.text for d in load_udhr() if d.lang in langs for a in d.articles if a.number in HELDOUT_ARTICLES
    ]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return sum(map(len, ids)) / sum(map(len, texts))


class Curve:
    """One shape's trainer, evaluation set and measured points."""

    def __init__(
        self, name: str, shape: dict, recipe: Recipe, run: Path, max_length: int, max_languages: int | None
    ) -> None:
        self.name, self.shape = name, shape
        options = TrainOptions(progress=False, tensorboard=False)
        self.trainer = Trainer(recipe, run, dist.init_distributed("cpu"), options)
        self.tokenizer = load_tokenizer(recipe.tokenizer)
        langs = heldout_languages()
        groups, order = recipe_groups(recipe, langs)
        phase_langs = [lang for lang in langs if groups[lang] == order[0]][:max_languages]
        self.eval_set = build_eval_set(self.tokenizer, phase_langs, max_length)
        self.groups, self.order = recipe_groups(recipe, self.eval_set.languages)
        self.tpc = tokens_per_char(self.tokenizer, self.eval_set.languages)
        self.seconds = 0.0
        self.tokens = 0
        self.points: list[dict] = []
        self.train_losses: list[float] = []
        self.params = sum(p.numel() for p in self.trainer.model.parameters())

    def step(self) -> None:
        record = self.trainer.train_step()
        self.seconds += record["step_s"]
        self.tokens = record["tokens"]
        self.train_losses.append(record["loss"])

    def evaluate(self) -> dict:
        model = dist.unwrap(self.trainer.model)
        result = evaluate_model(model, self.tokenizer, self.eval_set, self.groups, self.order, n_boot=200)
        model.train()
        g = result["groups"]["all"]
        point = {
            "seconds": self.seconds,
            "tokens": self.tokens,
            "heldout_loss": g["mlm_loss"],
            "heldout_loss_ci": g["ci"]["mlm_loss"],
            "heldout_accuracy": g["mlm_accuracy"],
            "nats_per_char": g["mlm_loss"] * self.tpc,
            "train_loss_last10": float(np.mean(self.train_losses[-10:])) if self.train_losses else None,
        }
        self.points.append(point)
        return point


def at_budget(points: list[dict], seconds: float) -> dict | None:
    """The last measured point at or before `seconds` of training."""
    before = [p for p in points if p["seconds"] <= seconds * 1.001]
    return before[-1] if before else None


def plot(results: dict, path: Path) -> None:
    import matplotlib  # only the plot needs it: a second or more to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, r in results["shapes"].items():
        pts = r["points"]
        axes[0].plot([p["seconds"] / 60 for p in pts], [p["nats_per_char"] for p in pts], "o-", label=name)
        axes[1].plot([p["tokens"] / 1e3 for p in pts], [p["heldout_loss"] for p in pts], "o-", label=name)
    axes[0].axvline(results["budget_seconds"] / 60, color="0.5", ls="--", lw=1)
    axes[0].set_xlabel("training minutes (own step time, interleaved)")
    axes[0].set_ylabel("held-out MLM nats per character")
    axes[1].set_xlabel("training tokens (thousands)")
    axes[1].set_ylabel("held-out MLM loss per masked token")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"Learning curves on this CPU; choice at {results['budget_seconds'] / 60:.1f} min: {results['choice']}"
    )
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), choices=list(SHAPES))
    p.add_argument("--minutes", type=float, default=6.0, help="training minutes per shape")
    p.add_argument(
        "--budget-minutes", type=float, help="the demo's training minutes (default: 0.8 x --minutes)"
    )
    p.add_argument("--evals", type=int, default=8, help="held-out measurements per shape")
    p.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "tiny.yaml")
    p.add_argument(
        "--work", type=Path, default=ROOT / "runs" / "learning_curves", help="tokenizers, data, runs"
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "learning_curves.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="one tiny shape for a few seconds (the tests)")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    shapes = SMOKE if args.smoke else {k: SHAPES[k] for k in args.shapes}
    minutes = 0.05 if args.smoke else args.minutes
    evals = 2 if args.smoke else args.evals
    budget = 60 * (args.budget_minutes or 0.8 * minutes)
    max_chars = 300_000 if args.smoke else 2_000_000
    curves = []
    for name, shape in shapes.items():
        tok, data = prepare_vocab(args.work, shape["vocab"], max_chars)
        recipe = shape_recipe(args.recipe, shape, tok, data, args.seed)
        run = args.work / "runs" / name
        if run.exists():  # a fresh run every time: a resumed one would not be timed from its start
            shutil.rmtree(run)
        curves.append(Curve(name, shape, recipe, run, 64 if args.smoke else 128, 6 if args.smoke else None))
        print(f"{name}: {curves[-1].params:,} parameters, {curves[-1].tpc:.3f} tokens/char", flush=True)
    limit = 60 * minutes
    marks = [limit * (k + 1) / evals for k in range(evals)]
    for c in curves:
        c.evaluate()  # at 0 tokens
    t0 = time.perf_counter()
    while any(c.seconds < limit for c in curves):
        for c in curves:  # round robin, one step each
            if c.seconds >= limit:
                continue
            c.step()
            passed = sum(c.seconds >= m for m in marks)  # measurements due (after the one at 0 tokens)
            if len(c.points) <= passed:
                pt = c.evaluate()
                print(f"{c.name}: {pt['seconds']:.0f}s, {pt['tokens']:,} tokens, held-out loss "
                      f"{pt['heldout_loss']:.3f} ({pt['nats_per_char']:.3f} nats/char)", flush=True)  # fmt: skip
    for c in curves:
        c.trainer.close()
    results = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "load_average_at_end": os.getloadavg()[0]},
        "command": "python bench/learning_curves.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "wall_seconds": time.perf_counter() - t0,
        "minutes_per_shape": minutes,
        "budget_seconds": budget,
        "shapes": {},
    }  # fmt: skip
    for c in curves:
        at = at_budget(c.points, budget)
        results["shapes"][c.name] = {
            **c.shape,
            "parameters": c.params,
            "tokens_per_char": c.tpc,
            "tokens_per_s": c.tokens / c.seconds if c.seconds else None,
            "at_budget": at,
            "points": c.points,
        }
    scored = {k: v["at_budget"]["nats_per_char"] for k, v in results["shapes"].items() if v["at_budget"]}
    results["choice"] = min(scored, key=scored.get) if scored else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=1) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(f"choice at {budget / 60:.1f} min: {results['choice']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
