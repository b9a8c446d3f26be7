"""The options `mmbert demo` and `mmbert ablate` share (their library side is `mmbert.experiment`).

Not a command: the two commands declare these through `experiment_options` and add their own.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmbert.cli import Options, call, positive_float


def experiment_options(
    parser: argparse.ArgumentParser,
    run: Callable[..., Any],
    create: Callable[..., Any],
    out: str,
    scale: str,
    quick: str,
) -> Options:
    """`--out`, `--recipe`, `--scale`, `--quick` and `--workers`: `run` (the command's library call)
    takes the directory and the workers, `create` (its `Settings.create`) the settings; `scale` and
    `quick` say what those mean for the command. Returns `run`'s options, for the command's own."""
    runner, settings = Options(parser, run), Options(parser, create)
    runner.add("out", default=Path(out), help="the directory (rerun the same command to continue)")
    settings.add("recipe", help="default: recipes/tiny.yaml")
    settings.add("scale", type=positive_float, help=f"multiply every token budget of the recipe ({scale})")
    settings.add("quick", help=quick)
    runner.add("workers", default=min(2, os.cpu_count() or 1), help="tokenizer processes (at most 2)")
    return runner


def run_experiment(run: Callable[..., Any], create: Callable[..., Any], args: argparse.Namespace) -> Any:
    """`run(settings=create(...))` with the parsed options."""
    return call(run, args, settings=call(create, args))
