"""`mmbert benchmark`: fine-tune and score a model under one of the paper's evaluation protocols.

    mmbert benchmark cola --model runs/demo/export --data glue/ --out runs/bench/cola seeds=[0] lr=3e-5

TASK is a task of the built-in settings files (GLUE: cola sst2 mrpc qqp stsb mnli qnli rte; XTREME:
xnli pawsx xcopa xquad mlqa tydiqa wikiann; squad: any SQuAD-format set; mteb), or a family (glue,
xtreme: its tasks one after another, then the average beside the paper's). key=value overrides change the
task's resolved settings; the options are `mmbert.benchmark.BenchmarkOptions`.
"""

from __future__ import annotations

import argparse

from mmbert.benchmark import FAMILIES, BenchmarkOptions, run_benchmark, run_family
from mmbert.benchmark.report import score_text
from mmbert.cli import Options, call

INTERMIXED = True  # TASK key=value --model M key=value keeps every override


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Every field of BenchmarkOptions, its comment as the help.
    Options(parser, BenchmarkOptions).add_all(
        task={"positional": True}, overrides={"positional": True, "nargs": "*"}
    )


def run(args: argparse.Namespace) -> int:
    options = call(BenchmarkOptions, args, overrides=tuple(args.overrides))
    if args.task in FAMILIES:
        family = run_family(options)
        for result in family.tasks:
            _print(result)
        paper = ", ".join(f"{k} {v:.1f}" for k, v in family.paper_average.items() if v is not None)
        print(
            f"{family.family} average {family.average:.1f}; paper (same tasks): {paper}; wrote {family.out}/summary.json"
        )
        return 0
    _print(run_benchmark(options))
    return 0


def _print(result) -> None:
    s = result.settings
    print(
        f"settings: {s.file} version {s.version}"
        + (f", overrides {' '.join(s.overrides)}" if s.overrides else "")
    )
    paper = ", ".join(f"{k} {v}" for k, v in result.paper.items() if k != "table" and v is not None)
    print(
        f"benchmark {result.task}: {result.metric} {score_text(result.score)}"
        + (f", lr {result.lr:g}" if result.lr is not None else "")
        + (f"; paper: {paper}" if paper else "")
        + f"; wrote {result.out}/result.json and report.md"
    )
