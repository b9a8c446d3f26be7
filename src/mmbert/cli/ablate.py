"""`mmbert ablate`: the recipe's choices (mask schedule, tau, language schedule, decay and merge) ablated
with seeds on the bundled corpus; claim by claim, whether the difference lies outside its intervals.

    mmbert ablate [--out runs/ablate] [--arms ARM ...] [--seeds N] [--scale F | --quick]

`mmbert.ablate.run_ablation` trains, merges and evaluates each arm x seed (its module docstring says
what and how) and writes OUT/ablations.md, OUT/results.json and OUT/plots/; rerunning the same command
continues where it stopped.
"""

from __future__ import annotations

import argparse

from mmbert.ablate import ARMS, Settings, run_ablation
from mmbert.cli import Options
from mmbert.cli.experiment import experiment_options, run_experiment

INTERRUPTED = "finished runs and evaluations are kept: rerun the same command to continue"
SCALE = f"default {Settings.scale:g}: about 35 min on 2 cores"
QUICK = "smoke-test size: the tiny model, 0.5%% of the tokens"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ablation = experiment_options(parser, run_ablation, Settings.create, "runs/ablate", SCALE, QUICK)
    ablation.add("arms", choices=list(ARMS), help=f"default: all ({', '.join(ARMS)})")
    Options(parser, Settings.create).add("seeds", help="seeds per arm (default 3)")
    ablation.shared("progress")


def run(args: argparse.Namespace) -> int:
    result = run_experiment(run_ablation, Settings.create, args)
    print(f"done: {result.report} ({result.seconds / 60:.1f} min); numbers in {result.results}")
    return 0
