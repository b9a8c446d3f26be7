"""`mmbert finetune`: sequence classification or regression on an HF-format mmBERT.

    mmbert finetune --model runs/demo/export --train train.csv --dev dev.csv --out runs/clf

The options are `mmbert.finetune.FinetuneOptions`, one each; `mmbert.finetune.finetune` trains.
"""

from __future__ import annotations

import argparse

from mmbert.cli import Options, call
from mmbert.finetune import METRICS, TASKS, FinetuneOptions, finetune


def add_arguments(parser: argparse.ArgumentParser) -> None:
    o = Options(parser, FinetuneOptions)
    o.add(
        "model",
        help="HF-format mmBERT: a local directory (an export) or a Hub name such as jhu-clsp/mmBERT-small",
    )
    o.add("tokenizer", help="tokenizer directory (default: --model)")
    o.add(
        "train",
        help="training data: a .csv/.tsv/.jsonl/.json file, or a dataset directory or HF dataset name "
        "(NAME or NAME:SPLIT)",
    )
    o.add(
        "dev",
        help="dev data, same forms as --train (default: the dataset's validation/dev/test split, "
        "else --dev-fraction of train)",
    )
    o.add("test", help="optional test data, evaluated with the best checkpoint")
    o.add("out", help="output directory (HF model + tokenizer + finetune.json)")
    o.add("text_column", help="the column holding the text")
    o.add("text_pair_column", help="second text of a pair (e.g. text_pair)")
    o.add("label_column", help="the column holding the label")
    o.add("task", choices=TASKS, help="classification, regression, or auto (from the labels)")
    o.add(
        "metric",
        choices=sorted(METRICS),
        help="early-stopping metric (default: accuracy for classification, pearson for regression)",
    )
    o.add("epochs", help="passes over the training data")
    o.add("max_steps", help="stop after this many steps (overrides --epochs)")
    o.add("batch_size", help="examples per step")
    o.add("lr", help="peak learning rate")
    o.add("weight_decay", help="AdamW weight decay (not on norms and biases)")
    o.add("warmup_ratio", help="fraction of the steps warming the LR up")
    o.add("max_length", help="tokens per example (longer is truncated)")
    o.add("eval_every", help="evaluate every N steps (default: each epoch)")
    o.add("patience", help="stop after N evaluations without improvement")
    o.add("dev_fraction", help="the part of train held out as dev when there is no dev split")
    o.add("classifier_pooling", choices=["mean", "cls"], help="override the model's classifier_pooling")
    o.add("seed", help="seed of the head's initialization and the data order")
    o.shared("device", "progress", "overwrite")


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
