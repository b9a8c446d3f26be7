"""`mmbert evaluate`: per-language masked-LM accuracy and cross-lingual retrieval on the held-out UDHR.

    mmbert evaluate MODEL [--recipe RECIPE] [--languages SPEC] [--out DIR] [--json]

`mmbert.evaluate.evaluate_dir` measures (its module docstring says how); this prints the per-group
table (or the JSON result) and writes DIR/eval.json and DIR/eval.md with `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmbert.cli import Options, add_shared, call, own_option
from mmbert.data.corpus import HELDOUT_ARTICLES
from mmbert.evaluate import evaluate_dir, markdown_table, write_result
from mmbert.io import check_output
from mmbert.recipe import load_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    o = Options(parser, evaluate_dir)
    o.add(
        "model_dir", positional=True, metavar="model", help="HF-format model directory with tokenizer files"
    )
    o.add("recipe", type=Path, help="group languages by the phase of this recipe that introduced them")
    o.add(
        "languages",
        nargs="+",
        help="languages to evaluate: keys, ISO 639-3 codes or a set (mmbert-60); default: all bundled",
    )
    own_option(parser, "--out", type=Path, help="write DIR/eval.json and DIR/eval.md")
    add_shared(parser, "json")
    o.shared("progress")
    o.add("max_length", help="tokens per article/paragraph")
    o.add("seed", help="masking seed")
    o.add("articles", help=f"a subset of the held-out articles {sorted(HELDOUT_ARTICLES)}")
    o.shared("device", "batch_tokens")


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe) if args.recipe is not None else None
    # one argument is a spec ("mmbert-60", "fra,deu"), several are a list of languages
    languages = args.languages[0] if args.languages and len(args.languages) == 1 else args.languages
    if args.out is not None:
        # Before the work: a file, a dangling link or a read-only place there. The directory may hold
        # anything (the model's own folder is a natural place): only eval.json and eval.md are replaced.
        check_output(args.out, [], is_own=lambda _: True, overwrite=None)
    result = call(evaluate_dir, args, recipe=recipe, languages=languages)
    if args.out is not None:
        paths = write_result(result, args.out)
        print(f"wrote {paths[0]} and {paths[1]}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
    else:
        print(markdown_table(result, f"{args.model_dir} ({result['grouping']})"))
    print(f"{result['seconds']:.1f}s", file=sys.stderr)
    return 0
