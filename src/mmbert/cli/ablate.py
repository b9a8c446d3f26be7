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
from mmbert.cli import add_shared, positive_float

INTERRUPTED = "finished runs and evaluations are kept: rerun the same command to continue"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument(
        "--out", type=Path, default=Path("runs/ablate"), help="ablation directory (rerun to continue)"
    )
    p.add_argument("--recipe", type=Path, help="default: recipes/tiny.yaml")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), help=f"default: all ({', '.join(ARMS)})")
    p.add_argument("--seeds", type=int, help="seeds per arm (default 3)")
    p.add_argument(
        "--scale",
        type=positive_float,
        help=f"multiply every token budget of the recipe (default {Settings.scale:g}: about 35 min on 2 cores)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke-test size: the tiny model, 0.5%% of the tokens"
    )
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="tokenizer processes")
    add_shared(p, "progress")


def run(args: argparse.Namespace) -> int:
    settings = Settings.create(args.recipe, seeds=args.seeds, scale=args.scale, quick=args.quick)
    result = run_ablation(args.out, settings, args.arms, args.workers, args.progress)
    print(f"done: {result.report} ({result.seconds / 60:.1f} min); numbers in {result.results}")
    return 0
