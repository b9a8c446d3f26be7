"""Top predictions for <mask> tokens.

    mmbert fill-mask MODEL "The capital of France is <mask>." ["..."] [--file F] [--top-k K] [--json]

`mmbert.inference.fill_mask_dir` predicts; this prints each text, its predictions per `<mask>` and
the text filled with the best ones (or the results as JSON).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from mmbert.cli import Options, add_shared, call, own_option, text
from mmbert.inference import FillMaskResult, fill_mask_dir, read_texts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    o = Options(parser, fill_mask_dir)
    o.add(
        "model_dir", positional=True, metavar="model", help="HF-format model directory with tokenizer files"
    )
    own_option(
        parser, "texts", nargs="*", type=text, help="texts containing the tokenizer's mask token (<mask>)"
    )
    own_option(parser, "--file", type=Path, help="more texts: .txt (one per line) or .jsonl (a text field)")
    o.add("top_k", help="predictions per <mask>")
    add_shared(parser, "json")
    o.shared("device", "batch_tokens")


def run(args: argparse.Namespace) -> int:
    texts = list(args.texts) + (read_texts(args.file) if args.file else [])
    if not texts:
        raise ValueError("give texts on the command line or with --file")
    results = call(fill_mask_dir, args, texts=texts)
    if args.json:
        print(json.dumps([asdict(r) for r in results], ensure_ascii=False, indent=1))
    else:
        print("\n".join(_lines(results)))
    return 0


def _lines(results: list[FillMaskResult]) -> Iterator[str]:
    for r in results:
        yield r.text
        for j, preds in enumerate(r.predictions):
            label = f"  <mask> {j + 1}:" if len(r.predictions) > 1 else "  "
            yield label + "  ".join(f"{p.token!r} {p.score:.3f}" for p in preds)
        yield f"  -> {r.sequence}"
