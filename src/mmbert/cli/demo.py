"""`mmbert demo`: the whole mmBERT recipe in miniature on the bundled corpus, on a laptop CPU.

    mmbert demo [--out runs/demo] [--scale F | --quick]

`mmbert.demo.run_demo` runs the steps (its module docstring lists them) and logs each; rerunning the
same command continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mmbert.cli import positive_float
from mmbert.demo import Settings, run_demo

INTERRUPTED = "finished steps are kept: rerun the same command to continue"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo directory (rerun to continue)")
    p.add_argument("--recipe", type=Path, help="default: recipes/tiny.yaml")
    p.add_argument(
        "--scale", type=positive_float, help="multiply every token budget of the recipe (default 1)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test size: the tiny model, 3%% of the tokens, fewer languages evaluated",
    )
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="tokenizer processes")
    p.add_argument(
        "--log-every",
        dest="log_every_steps",
        type=int,
        default=0,
        help="a training step line every N steps (default 0: none; the bars show progress, "
        "every step is in metrics.jsonl and TensorBoard)",
    )


def run(args: argparse.Namespace) -> int:
    settings = Settings.create(args.recipe, scale=args.scale, quick=args.quick)
    result = run_demo(args.out, settings, args.workers, args.log_every_steps)
    print(
        f"done: {result.report} ({result.seconds / 60:.1f} min of steps in all); the model is in {result.model}"
    )
    return 0
