"""Tokenize documents into per-language token shards plus DATA/manifest.json.
Resumable: rerun the same command after an interruption to finish the rest.

`mmbert.data.prepare.prepare` does the work; the source string is read by
`mmbert.data.sources.open_source`.
"""

from __future__ import annotations

import argparse
import os

from mmbert.cli import add_shared, call
from mmbert.data.prepare import DEFAULT_SHARD_TOKENS, PrepareError, PrepareResult, prepare
from mmbert.data.sources import BadInputError, open_source

INTERRUPTED = "finished units are kept: rerun the same command to resume"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument(
        "--source", required=True, help="bundled[:heldout|:code], a PATH of files, hf:NAME or mds:PATH"
    )
    p.add_argument("--name", help="the source's name in the manifest (default: from the source)")
    p.add_argument(
        "--tokenizer", required=True, help="tokenizer directory (with tokenizer.json) or cached HF name"
    )
    p.add_argument("--out", required=True, help="prepared data directory (DATA)")
    add_shared(
        p,
        "text_field",
        "lang_field",
        "lang",
        lang_field={"help": "field holding the language; default: path"},
    )
    p.add_argument("--id-field", default="id", help="field holding a document id (optional in the data)")
    p.add_argument("--hf-split", default="train", help="Hugging Face dataset split")
    p.add_argument("--hf-config", help="Hugging Face dataset configuration name")
    p.add_argument("--streaming", action="store_true", help="stream the Hugging Face dataset")
    p.add_argument(
        "--mds-column", help="MDS column of token ids (ndarray) or text (str); default: input_ids, else text"
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tokenizer processes")
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) bad records instead of stopping")
    p.add_argument(
        "--allow-unknown-languages",
        action="store_true",
        help="accept language keys outside the bundled and released lists (e.g. a language mmBERT never saw)",
    )
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="tokens per shard file")
    machines = p.add_mutually_exclusive_group()
    machines.add_argument(
        "--part",
        type=_part,
        metavar="I/N",
        help="tokenize only part I of N (0 <= I < N: units I, I+N, ...) and write no manifest; "
        "N machines run one part each into one shared --out, then one --join",
    )
    machines.add_argument(
        "--join",
        action="store_true",
        help="write the manifest once every --part is done (tokenizes nothing; an error lists the parts left)",
    )
    add_shared(p, "overwrite", "progress", overwrite={"help": "prepare the source again from scratch"})


def run(args: argparse.Namespace) -> int:
    try:
        result = call(prepare, args, call(open_source, args, args.source))
    except BadInputError as err:
        # The options that get past a bad record belong to the command, not to the data's message.
        raise PrepareError(f"{err} (--skip-bad skips bad records; a rerun resumes)") from err
    print("\n".join(_summary(result)))
    return 0


def _part(text: str) -> tuple[int, int]:
    i, slash, n = text.partition("/")
    if not (slash and i.isdigit() and n.isdigit() and int(i) < int(n)):
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N (e.g. 3/16), not {text!r}")
    return int(i), int(n)


def _summary(result: PrepareResult) -> list[str]:
    rate = result.tokens_this_run / max(result.seconds, 1e-9)
    work = "nothing left to do" if result.units_resumed == result.units_total else f"{rate:,.0f} tok/s"
    what = result.name if result.part is None else f"part {result.part[0]}/{result.part[1]} of {result.name}"
    where = (
        result.manifest_path
        if result.part is None
        else "no manifest yet (once every part is done: the same command with --join instead of --part)"
    )
    lines = [
        f"prepared {what}: {result.docs:,} documents, {result.tokens:,} tokens in "
        f"{len(result.langs)} languages ({result.units_total} units, {result.units_resumed} resumed) "
        f"-> {where} in {result.seconds:.1f} s ({work})"
    ]
    skipped = result.skipped["counts"]
    if skipped:
        lines.append(
            f"skipped {sum(skipped.values()):,} bad records: "
            + ", ".join(f"{k} {v}" for k, v in skipped.items())
        )
        lines += [f"  {example}" for example in result.skipped["examples"]]
    return lines
