"""`mmbert finetune`: sequence classification or regression on an HF-format mmBERT.

    mmbert finetune --model runs/demo/export --train train.csv --dev dev.csv --out runs/clf

The options are `mmbert.finetune.FinetuneOptions`, one each; `mmbert.finetune.finetune` trains.
"""

from __future__ import annotations

import argparse

from mmbert.cli import Options, call
from mmbert.finetune import METRICS, TASKS, FinetuneOptions, finetune


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Every field of FinetuneOptions, its comment as the help.
    Options(parser, FinetuneOptions).add_all(
        task={"choices": TASKS},
        metric={"choices": sorted(METRICS)},
        classifier_pooling={"choices": ["mean", "cls"]},
    )


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
