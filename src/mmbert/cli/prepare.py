"""Tokenize documents into per-language token shards plus DATA/manifest.json.
Resumable: rerun the same command after an interruption to finish the rest.

`mmbert.data.prepare.prepare` does the work; the source string is read by
`mmbert.data.sources.open_source`.
"""

from __future__ import annotations

import argparse
import os

from mmbert.cli import Options, call
from mmbert.data.prepare import PrepareError, PrepareResult, prepare
from mmbert.data.sources import BadInputError, open_source

INTERRUPTED = "finished units are kept: rerun the same command to resume"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = Options(parser, open_source)
    o = Options(parser, prepare)
    src.add(
        "spec",
        "--source",
        metavar="SOURCE",
        help="bundled[:heldout|:code], a PATH of files, hf:NAME or mds:PATH",
    )
    o.add("name", help="the source's name in the manifest (default: from the source)")
    o.add("tokenizer", help="tokenizer directory (with tokenizer.json) or cached HF name")
    o.add("out", help="prepared data directory (DATA)")
    src.shared(
        "text_field", "lang_field", "lang", lang_field={"help": "field holding the language; default: path"}
    )
    src.add("id_field", help="field holding a document id (optional in the data)")
    src.add("hf_split", help="Hugging Face dataset split")
    src.add("hf_config", help="Hugging Face dataset configuration name")
    src.add("streaming", help="stream the Hugging Face dataset")
    src.add(
        "mds_column", help="MDS column of token ids (ndarray) or text (str); default: input_ids, else text"
    )
    # On the command line every core tokenizes unless told otherwise (the library takes one).
    o.add("workers", default=os.cpu_count() or 1, help="tokenizer processes (default: every core)")
    o.add("skip_bad", help="skip (and count) bad records instead of stopping")
    o.add(
        "allow_unknown_languages",
        help="accept language keys outside the bundled and released lists (e.g. a language mmBERT never saw)",
    )
    o.add("shard_tokens", help="tokens per shard file")
    machines = parser.add_mutually_exclusive_group()
    o.add(
        "part",
        group=machines,
        type=_part,
        metavar="I/N",
        help="tokenize only part I of N (0 <= I < N: units I, I+N, ...) and write no manifest; "
        "N machines run one part each into one shared --out, then one --join",
    )
    o.add(
        "join",
        group=machines,
        help="write the manifest once every --part is done (tokenizes nothing; an error lists the parts left)",
    )
    o.shared("overwrite", "progress", overwrite={"help": "prepare the source again from scratch"})


def run(args: argparse.Namespace) -> int:
    try:
        result = call(prepare, args, call(open_source, args))
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
