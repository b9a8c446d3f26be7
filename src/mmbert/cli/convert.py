"""Convert a ModernBERT / mmBERT training checkpoint (Composer `.pt`) to an HF-format model directory.

    mmbert convert CKPT.pt --out DIR [--preset mmbert-base|mmbert-small] [--tokenizer TOK] [key=value ...]

`mmbert.composer.convert_checkpoint` reads the file without running pickled code, takes the shapes
from its tensors and the rest (heads, window, RoPE thetas, context) from the preset (default: the one
whose shapes match) and `key=value` config overrides (`global_rope_theta=10000` for a pre-training
checkpoint); `--tokenizer` writes that tokenizer beside the weights with mmBERT's layout.
"""

from __future__ import annotations

import argparse

import yaml

from mmbert.cli import Options, call
from mmbert.composer import convert_checkpoint
from mmbert.config import PRESETS

INTERMIXED = True  # config overrides may come before and after the options


def add_arguments(p: argparse.ArgumentParser) -> None:
    o = Options(p, convert_checkpoint)
    o.add(
        "path",
        positional=True,
        metavar="checkpoint",
        help="a Composer .pt checkpoint (or a plain state dict)",
    )
    o.add(
        "overrides",
        positional=True,
        nargs="*",
        help="model config overrides, key=value (global_rope_theta=10000)",
    )
    o.add("out", help="HF-format directory to write")
    o.add("preset", choices=sorted(PRESETS), help="default: the preset whose shapes match")
    o.add("tokenizer", help="tokenizer to write beside the weights (e.g. Gemma 2's), adapted")
    o.shared("overwrite")


def run(args: argparse.Namespace) -> int:
    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected key=value (a model config field)")
        overrides[key.strip()] = yaml.safe_load(value)
    report = call(convert_checkpoint, args, overrides=overrides)
    c = report.config
    print(
        f"wrote {report.out}: {report.parameters / 1e6:.1f}M parameters ({str(report.dtype).removeprefix('torch.')}), "
        f"{c.num_hidden_layers} layers, hidden {c.hidden_size}, vocab {c.vocab_size}, "
        f"RoPE {c.global_rope_theta:g}/{c.local_rope_theta:g}, tokenizer: {report.tokenizer or 'none (--tokenizer)'}"
    )
    if report.new_keys:
        print(f"  initialized afresh (not in the checkpoint): {', '.join(report.new_keys)}")
    for what, items in (("entries", report.skipped_keys), ("pickled objects", report.skipped_objects)):
        if items:
            print(f"  skipped {what}: {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}")
    return 0
