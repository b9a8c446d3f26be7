"""`mmbert finetune`: sequence classification or regression on an HF-format mmBERT.

    mmbert finetune --model runs/demo/export --train train.csv --dev dev.csv --out runs/clf

The options are `mmbert.finetune.FinetuneOptions`, one each; `mmbert.finetune.finetune` trains.
"""

from __future__ import annotations

import argparse

from mmbert.cli import add_shared, call
from mmbert.finetune import METRICS, TASKS, FinetuneOptions, finetune


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument(
        "--model",
        required=True,
        help="HF-format mmBERT: a local directory (an export) or a Hub name such as jhu-clsp/mmBERT-small",
    )
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: --model)")
    p.add_argument(
        "--train",
        required=True,
        help="training data: a .csv/.tsv/.jsonl/.json file, or a dataset directory or HF dataset name "
        "(NAME or NAME:SPLIT)",
    )
    p.add_argument(
        "--dev",
        default=None,
        help="dev data, same forms as --train (default: the dataset's validation/dev/test split, "
        "else --dev-fraction of train)",
    )
    p.add_argument("--test", default=None, help="optional test data, evaluated with the best checkpoint")
    p.add_argument("--out", required=True, help="output directory (HF model + tokenizer + finetune.json)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--text-pair-column", default=None, help="second text of a pair (e.g. text_pair)")
    p.add_argument("--label-column", default="label")
    p.add_argument("--task", choices=TASKS, default="auto")
    p.add_argument(
        "--metric",
        choices=sorted(METRICS),
        default=None,
        help="early-stopping metric (default: accuracy for classification, pearson for regression)",
    )
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument(
        "--max-steps", type=int, default=None, help="stop after this many steps (overrides --epochs)"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--max-length", type=int, default=512, help="tokens per example (longer is truncated)")
    p.add_argument(
        "--eval-every", type=int, default=None, help="evaluate every N steps (default: each epoch)"
    )
    p.add_argument("--patience", type=int, default=3, help="stop after N evaluations without improvement")
    p.add_argument("--dev-fraction", type=float, default=0.1)
    p.add_argument(
        "--classifier-pooling",
        choices=["mean", "cls"],
        default=None,
        help="override the model's classifier_pooling",
    )
    p.add_argument("--seed", type=int, default=0)
    add_shared(p, "device", "progress", "overwrite")


def run(args: argparse.Namespace) -> int:
    result = finetune(call(FinetuneOptions, args))
    metric, best = result.metric, result.best
    print(
        f"finetune: {result.steps} steps, best dev {metric} {best[metric]:.4f} at step {result.best_step} "
        f"(before training {result.before[metric]:.4f})"
        + (f", test {metric} {result.test[metric]:.4f}" if result.test is not None else "")
        + f"; wrote {result.out}"
    )
    return 0
