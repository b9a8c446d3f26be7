"""Show each phase's source x language sampling budget.

`mmbert.plan.plan_file` computes the plan; it is printed as text tables (`format_plan`) or JSON.
"""

from __future__ import annotations

import argparse
import json

from mmbert.cli import Options, add_shared, call, int_at_least, own_option, positive_float
from mmbert.plan import format_plan, plan_file

INTERMIXED = True  # dotted overrides may come after the options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    o = Options(parser, plan_file)
    o.add("recipe_path", positional=True, metavar="recipe", help="recipe YAML file")
    source = parser.add_mutually_exclusive_group()
    o.add(
        "data",
        group=source,
        action="append",
        nargs=None,
        help="a prepared data directory, repeatable (default: the recipe's `data`)",
    )
    o.add(
        "released", "--released-counts", group=source, help="use mmBERT's released per-language token counts"
    )
    o.add("variant", help="a decay variant of the recipe (default: the phases as written)")
    o.add("max_epochs", type=positive_float, help="flag cells repeated more")
    own_option(
        parser,
        "--top",
        type=int_at_least(0),
        default=15,
        help="cells shown per phase (0 = all; flagged always)",
    )
    add_shared(parser, "json")
    o.add("overrides", positional=True, nargs="*", help="dotted recipe overrides, e.g. phases.0.tokens=1M")


def run(args: argparse.Namespace) -> int:
    plan = call(plan_file, args)
    print(json.dumps(plan, indent=1) if args.json else format_plan(plan, args.top))
    return 0
