"""Train or inspect a tokenizer.

`mmbert tokenizer train` trains a multilingual Unigram/BPE tokenizer with mmBERT's special ids on the
bundled corpus or on files (`mmbert.tokenizer_training.train_and_save`) and prints how it covers a check set;
it exits with 1 when that check finds unknown tokens or a text that does not decode back to itself.
`mmbert tokenizer info` shows a tokenizer's size, special ids and fingerprint, and each way its files
differ from mmBERT's layout; `mmbert tokenizer adapt SRC --out DIR` writes it with that layout
(`mmbert.tokenizer.adapt_and_save`: the same ids, `<mask>` special and the mask token, `<bos> a <eos>`).
"""

from __future__ import annotations

import argparse

from mmbert.cli import Options, call
from mmbert.tokenizer import adapt_and_save, summarize_tokenizer
from mmbert.tokenizer_training import TrainingReport, train_and_save

BUNDLED = "bundled"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train a multilingual Unigram/BPE tokenizer with mmBERT's special ids")
    o = Options(tr, train_and_save)
    o.add("out", help="directory to write (AutoTokenizer loads it)")
    o.add("vocab_size", help="ids in all: 5 special, 256 bytes, the learned pieces")
    o.add("model", help="bpe (as Gemma 2) or unigram")
    o.add("tau", help="language sampling exponent: p ∝ chars ** tau")
    o.add("seed", help="the sampling seed")
    o.add("max_chars", help="cap on the sampled training characters")
    o.add(
        "inputs",
        "--input",
        metavar="PATH",
        default=[BUNDLED],
        help="'bundled' (default), or files/directories of .jsonl[.gz], .parquet, .txt (one document each)",
    )
    o.shared("text_field", "lang_field", "lang")
    o.add("progress", "--quiet", default=True, help="no progress bars")
    o.shared("overwrite", overwrite={"help": "replace the tokenizer files of a directory that holds more"})
    info = sub.add_parser("info", help="show a tokenizer's size, special ids and layout")
    o = Options(info, summarize_tokenizer)
    o.add(
        "path_or_name",
        positional=True,
        metavar="tokenizer",
        help="tokenizer directory or locally cached Hub name",
    )
    o.add("model_max_length", help="the model's context length")
    adapt = sub.add_parser("adapt", help="write a tokenizer (e.g. Gemma 2's as shipped) with mmBERT's layout")
    o = Options(adapt, adapt_and_save)
    o.add("source", positional=True, help="tokenizer directory or locally cached Hub name")
    o.add("out", help="directory to write (a model's files there stay)")
    o.add("model_max_length", help="the model's context length")
    o.shared("overwrite", overwrite={"help": "replace a tokenizer already in --out (or the source)"})
    for sub_parser in (tr, info, adapt):
        # `--debug` after the sub-command too; SUPPRESS keeps the value given before it.
        sub_parser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
        )


def run(args: argparse.Namespace) -> int:
    return {"train": _train, "info": _info, "adapt": _adapt}[args.cmd](args)


def _train(args: argparse.Namespace) -> int:
    report = call(train_and_save, args, inputs=None if args.inputs == [BUNDLED] else args.inputs)
    print("\n".join(_report_lines(report)))
    return 1 if report.unknown_tokens or report.roundtrip_failures else 0


def _report_lines(report: TrainingReport) -> list[str]:
    bad = report.roundtrip_failures
    fert = sorted(report.coverage.items(), key=lambda kv: kv[1]["tokens_per_char"])
    lines = [
        f"trained in {report.seconds:.1f}s; vocab {report.vocab_size}; wrote {report.out}",
        f"on {report.check_set} of {len(report.coverage)} languages: {report.tokens_per_char:.3f} tokens/char, "
        f"{report.unknown_tokens} unknown tokens, "
        f"round trip {'exact' if not bad else 'FAILED for ' + ', '.join(bad[:10])}",
    ]
    for label, items in (("fewest", fert[:3]), ("most", fert[-3:])):
        lines.append(
            f"  {label} tokens/char: " + ", ".join(f"{k} {r['tokens_per_char']:.2f}" for k, r in items)
        )
    return lines


def _info(args: argparse.Namespace) -> int:
    s = call(summarize_tokenizer, args)
    print(f"{s.name}: {s.class_name}, {s.size} tokens, model_max_length {s.model_max_length}")
    for name, (token, id_) in s.special.items():
        print(f"  {name:<5} {token!r:<10} id {id_}")
    if s.problems:
        print("cannot take mmBERT's layout (`mmbert tokenizer adapt` refuses it): " + "; ".join(s.problems))
    else:
        print("special ids match mmBERT's layout")
        if s.changes:
            print(f"differs from mmBERT's layout in {len(s.changes)} ways; `mmbert tokenizer adapt` would:")
            print("\n".join(f"  {change}" for change in s.changes))
        elif s.changes is not None:
            print("layout: mmBERT's (nothing to adapt)")
    print(f"fingerprint {s.fingerprint}")
    return 0


def _adapt(args: argparse.Namespace) -> int:
    report = call(adapt_and_save, args)
    same = report.fingerprint == report.source_fingerprint
    ids = "the same token ids" if same else f"other token ids than the source's {report.source_fingerprint}"
    print(f"wrote {report.out}: fingerprint {report.fingerprint} ({ids})")
    if report.changes:
        print("\n".join(f"  {change}" for change in report.changes))
    else:
        print("  nothing changed: it had mmBERT's layout already")
    return 0
