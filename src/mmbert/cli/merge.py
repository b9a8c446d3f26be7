"""Merge Hugging Face ModernBERT checkpoints: TIES (task vectors against --base),
linear (weighted average) or ema (exponentially weighted average of checkpoints of one run).
An input is an HF model directory or a training checkpoint file (Composer `.pt`, e.g. mmBERT's raw ones).

`mmbert.merge.merge_dirs` does the work, streamed tensor by tensor, and writes the output atomically.
"""

from __future__ import annotations

import argparse
import json

from mmbert.cli import add_shared, call
from mmbert.merge import METHODS, merge_dirs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--base", help="base model (ties only): task vectors are taken against it")
    p.add_argument(
        "--models", nargs="+", required=True, metavar="DIR|PT", help="models to merge (ema: oldest first)"
    )
    p.add_argument(
        "--weights", nargs="+", type=float, metavar="W", help="one weight per model (default: equal)"
    )
    p.add_argument(
        "--density", type=float, help="ties: fraction of each task vector kept, in (0, 1] (default 1)"
    )
    ema = p.add_mutually_exclusive_group()
    ema.add_argument(
        "--decay", type=float, help="ema: beta in [0, 1); weight of a checkpoint t steps old is beta^t"
    )
    ema.add_argument(
        "--half-life", type=float, help="ema: half-life in checkpoints (beta = 0.5 ** (1 / half_life))"
    )
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    add_shared(p, "overwrite")


def run(args: argparse.Namespace) -> int:
    out = call(merge_dirs, args)
    record = json.loads((out / "merge_config.json").read_text())
    print(
        f"{args.method} merge of {len(args.models)} models ({record['parameters'] / 1e6:.1f}M params) -> {out}"
    )
    return 0
