"""Mean-pooled embeddings of a file of texts.

    mmbert embed MODEL --input texts.txt|texts.jsonl --out vectors.npy|vectors.parquet

`mmbert.inference.embed_file` reads, embeds and writes; row i of the output is text i of the input.
"""

from __future__ import annotations

import argparse

from mmbert.cli import Options, call
from mmbert.inference import embed_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    o = Options(parser, embed_file)
    o.add(
        "model_dir", positional=True, metavar="model", help="HF-format model directory with tokenizer files"
    )
    o.add("input_path", "--input", metavar="INPUT", help=".txt (one text per line) or .jsonl")
    o.shared("text_field")
    o.add("out", help=".npy (float32 matrix) or .parquet (text, embedding)")
    o.add("batch_size", help="texts per forward pass (at most)")
    o.add("max_length", help="tokens per text, <bos>/<eos> included")
    o.shared("device", "progress")


def run(args: argparse.Namespace) -> int:
    vectors = call(embed_file, args)
    print(f"wrote {args.out}: {vectors.shape[0]} x {vectors.shape[1]} float32 (mean-pooled)")
    return 0
