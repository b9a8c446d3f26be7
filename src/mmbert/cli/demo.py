"""`mmbert demo`: the whole mmBERT recipe in miniature on the bundled corpus, on a laptop CPU.

    mmbert demo [--out runs/demo] [--scale F | --quick]

`mmbert.demo.run_demo` runs the steps (its module docstring lists them) and logs each; rerunning the
same command continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mmbert.cli import Options, call, positive_float
from mmbert.demo import Settings, run_demo

INTERRUPTED = "finished steps are kept: rerun the same command to continue"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    demo = Options(parser, run_demo)
    settings = Options(parser, Settings.create)
    demo.add("out", default=Path("runs/demo"), help="demo directory (rerun to continue)")
    settings.add("recipe", help="default: recipes/tiny.yaml")
    settings.add("scale", type=positive_float, help="multiply every token budget of the recipe (default 1)")
    settings.add(
        "quick", help="smoke-test size: the tiny model, 3%% of the tokens, fewer languages evaluated"
    )
    demo.add("workers", default=min(2, os.cpu_count() or 1), help="tokenizer processes (at most 2)")


def run(args: argparse.Namespace) -> int:
    result = call(run_demo, args, settings=call(Settings.create, args))
    print(
        f"done: {result.report} ({result.seconds / 60:.1f} min of steps in all); the model is in {result.model}"
    )
    return 0
