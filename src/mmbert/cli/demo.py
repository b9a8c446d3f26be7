"""`mmbert demo`: the whole mmBERT recipe in miniature on the bundled corpus, on a laptop CPU.

    mmbert demo [--out runs/demo] [--scale F | --quick]

`mmbert.demo.run_demo` runs the steps (its module docstring lists them) and logs each; rerunning the
same command continues where it stopped.
"""

from __future__ import annotations

import argparse

from mmbert.cli.experiment import experiment_options, run_experiment
from mmbert.demo import Settings, run_demo

INTERRUPTED = "finished steps are kept: rerun the same command to continue"
QUICK = "smoke-test size: the tiny model, 3%% of the tokens, fewer languages evaluated"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runner = experiment_options(parser, run_demo, Settings.create, "runs/demo", "default 1", QUICK)
    runner.add(
        "log_every_steps",
        "--log-every",
        help="a training step line every N steps (0: none; the bars show progress, "
        "every step is in metrics.jsonl and TensorBoard)",
    )


def run(args: argparse.Namespace) -> int:
    result = run_experiment(run_demo, Settings.create, args)
    print(
        f"done: {result.report} ({result.seconds / 60:.1f} min of steps in all); the model is in {result.model}"
    )
    return 0
