"""`mmbert ablate`: the recipe's choices (mask schedule, tau, language schedule, decay and merge) ablated
with seeds on the bundled corpus; claim by claim, whether the difference lies outside its intervals.

    mmbert ablate [--out runs/ablate] [--arms ARM ...] [--seeds N] [--scale F | --quick]

`mmbert.ablate.run_ablation` trains, merges and evaluates each arm x seed (its module docstring says
what and how) and writes OUT/ablations.md, OUT/results.json and OUT/plots/; rerunning the same command
continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mmbert.ablate import ARMS, Settings, run_ablation
from mmbert.cli import Options, call, positive_float

INTERRUPTED = "finished runs and evaluations are kept: rerun the same command to continue"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ablation = Options(parser, run_ablation)
    settings = Options(parser, Settings.create)
    ablation.add("out", default=Path("runs/ablate"), help="ablation directory (rerun to continue)")
    settings.add("recipe", help="default: recipes/tiny.yaml")
    ablation.add("arms", choices=list(ARMS), help=f"default: all ({', '.join(ARMS)})")
    settings.add("seeds", help="seeds per arm (default 3)")
    settings.add(
        "scale",
        type=positive_float,
        help=f"multiply every token budget of the recipe (default {Settings.scale:g}: about 35 min on 2 cores)",
    )
    settings.add("quick", help="smoke-test size: the tiny model, 0.5%% of the tokens")
    ablation.add("workers", default=min(2, os.cpu_count() or 1), help="tokenizer processes (at most 2)")
    ablation.shared("progress")


def run(args: argparse.Namespace) -> int:
    result = call(run_ablation, args, settings=call(Settings.create, args))
    print(f"done: {result.report} ({result.seconds / 60:.1f} min); numbers in {result.results}")
    return 0
