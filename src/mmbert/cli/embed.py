"""Mean-pooled embeddings of a file of texts.

    mmbert embed MODEL --input texts.txt|texts.jsonl --out vectors.npy|vectors.parquet

`mmbert.inference.embed_file` reads, embeds and writes; row i of the output is text i of the input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmbert.cli import add_shared, call
from mmbert.inference import embed_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("model", type=Path, help="HF-format model directory with tokenizer files")
    p.add_argument("--input", required=True, type=Path, help=".txt (one text per line) or .jsonl")
    add_shared(p, "text_field")
    p.add_argument(
        "--out", required=True, type=Path, help=".npy (float32 matrix) or .parquet (text, embedding)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (at most)")
    p.add_argument("--max-length", type=int, default=512, help="tokens per text, <bos>/<eos> included")
    add_shared(p, "device", "progress")


def run(args: argparse.Namespace) -> int:
    vectors = call(embed_file, args, args.model, args.input, args.out)
    print(f"wrote {args.out}: {vectors.shape[0]} x {vectors.shape[1]} float32 (mean-pooled)")
    return 0
