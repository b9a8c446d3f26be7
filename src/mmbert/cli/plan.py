"""Show each phase's source x language sampling budget.

`mmbert.plan.plan_file` computes the plan; it is printed as text tables (`format_plan`) or JSON.
"""

from __future__ import annotations

import argparse
import json

from mmbert.cli import add_shared, call, int_at_least, positive_float
from mmbert.plan import format_plan, plan_file

INTERMIXED = True  # dotted overrides may come after the options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML file")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--data", action="append", help="a prepared data directory, repeatable (default: the recipe's `data`)"
    )
    source.add_argument(
        "--released-counts",
        dest="released",
        action="store_true",
        help="use mmBERT's released per-language token counts",
    )
    parser.add_argument("--variant", help="a decay variant of the recipe (default: the phases as written)")
    parser.add_argument(
        "--max-epochs", type=positive_float, default=10.0, help="flag cells repeated more (default 10)"
    )
    parser.add_argument(
        "--top", type=int_at_least(0), default=15, help="cells shown per phase (0 = all; flagged always)"
    )
    add_shared(parser, "json")
    parser.add_argument("overrides", nargs="*", help="dotted recipe overrides, e.g. phases.0.tokens=1M")


def run(args: argparse.Namespace) -> int:
    plan = call(plan_file, args, args.recipe, args.overrides)
    print(json.dumps(plan, indent=1) if args.json else format_plan(plan, args.top))
    return 0
