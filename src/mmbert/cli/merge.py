"""Merge Hugging Face ModernBERT checkpoints: TIES (task vectors against --base),
linear (weighted average) or ema (exponentially weighted average of checkpoints of one run).
An input is an HF model directory or a training checkpoint file (Composer `.pt`, e.g. mmBERT's raw ones).

`mmbert.merge.merge_dirs` does the work, streamed tensor by tensor, and writes the output atomically.
"""

from __future__ import annotations

import argparse
import json

from mmbert.cli import Options, call
from mmbert.merge import METHODS, merge_dirs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    o = Options(parser, merge_dirs)
    o.add("method", choices=METHODS)
    o.add("base", default=None, help="base model (ties only): task vectors are taken against it")
    o.add("models", metavar="DIR|PT", help="models to merge (ema: oldest first)")
    o.add("weights", metavar="W", help="one weight per model (default: equal)")
    o.add("density", help="ties: fraction of each task vector kept, in (0, 1] (default 1)")
    ema = parser.add_mutually_exclusive_group()
    o.add("decay", group=ema, help="ema: beta in [0, 1); weight of a checkpoint t steps old is beta^t")
    o.add("half_life", group=ema, help="ema: half-life in checkpoints (beta = 0.5 ** (1 / half_life))")
    o.add("out", help="output directory (written atomically)")
    o.shared("overwrite")


def run(args: argparse.Namespace) -> int:
    out = call(merge_dirs, args)
    record = json.loads((out / "merge_config.json").read_text())
    print(
        f"{args.method} merge of {len(args.models)} models ({record['parameters'] / 1e6:.1f}M params) -> {out}"
    )
    return 0
