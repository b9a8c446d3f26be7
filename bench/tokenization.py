"""Tokenization throughput of `mmbert prepare` on the bundled corpus (UDHR train split).

Trains a tokenizer on the bundled corpus (or takes --tokenizer DIR, e.g. Gemma 2's), then times the whole
`prepare` run (read the corpus, tokenize, write shards + manifest) with 1 and 2 worker processes, best of
--repeats, each into a fresh directory. Also times the bare tokenizer (one thread, `encode_batch_fast`)
on the same texts, the ceiling one worker is measured against.

    python bench/tokenization.py                     # unigram, 8192 ids, workers 1 and 2
    python bench/tokenization.py --tokenizer DIR     # any tokenizer directory

Prints a table and writes bench/results/tokenization.json. Wall-clock rates depend on what else runs on the
machine (the load average is printed); tokens per CPU-second (this process + its workers) much less so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker processes of a pool)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(fn, repeats: int) -> tuple[float, float, object]:
    """Best (wall seconds, CPU seconds) over `repeats` calls, and the last call's result."""
    best, result = (float("inf"), 0.0), None
    for _ in range(repeats):
        t, c = time.perf_counter(), _cpu_seconds()
        result = fn()
        best = min(best, (time.perf_counter() - t, _cpu_seconds() - c))
    return best[0], best[1], result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", help="tokenizer directory (default: train one on the bundled corpus)")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--model", default="unigram", choices=["unigram", "bpe"])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "tokenization.json"))
    args = p.parse_args(argv)

    from tokenizers import Tokenizer

    from mmbert.data import corpus
    from mmbert.data.prepare import prepare
    from mmbert.data.sources import open_source
    from mmbert.tokenizer import read_tokenizer_files

    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="mmbert-bench-tokenize-"))
    try:
        texts = [d.text for d in corpus.iter_documents(split="train")]  # also warms the corpus cache
        chars = sum(map(len, texts))
        trained = None
        if args.tokenizer:
            tokdir = Path(args.tokenizer)
        else:
            from mmbert.tokenizer import save_tokenizer
            from mmbert.tokenizer_training import bundled_texts, train_tokenizer

            t = time.perf_counter()
            # Trained on part of the corpus (preamble and articles 1-3 of every declaration): the model
            # and vocabulary size, not the sample, set the tokenizer's speed.
            sample = bundled_texts("train", articles=(0, 1, 2, 3), code_chars=100_000)
            tok = train_tokenizer(sample, args.vocab_size, args.model)
            trained = {"model": args.model, "vocab_size": args.vocab_size, "seconds": time.perf_counter() - t}
            tokdir = save_tokenizer(tok, work / "tok")
        files = read_tokenizer_files(tokdir, require_layout=True)
        identity = files.identity()

        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the bare tokenizer on one thread
        bare = Tokenizer.from_str(files.text)

        def encode_all() -> int:
            return sum(len(e.ids) for e in bare.encode_batch_fast(texts, add_special_tokens=False))

        wall, cpu, n_tokens = _timed(encode_all, args.repeats)
        rows = [{"what": "tokenizer only (1 thread)", "workers": 1, "seconds": wall, "cpu_seconds": cpu,
                 "tokens": n_tokens}]  # fmt: skip

        for workers in args.workers:

            def run(workers: int = workers) -> int:
                out = work / f"data-{workers}"
                result = prepare(open_source("bundled"), tokdir, out, workers=workers, progress=False)
                shutil.rmtree(out)
                return result.tokens

            wall, cpu, tokens = _timed(run, args.repeats)
            rows.append({"what": "mmbert prepare", "workers": workers, "seconds": wall, "cpu_seconds": cpu,
                         "tokens": tokens})  # fmt: skip
        for row in rows:
            row["tokens_per_s"] = row["tokens"] / row["seconds"]
            row["tokens_per_cpu_s"] = row["tokens"] / row["cpu_seconds"]
            row["chars_per_s"] = chars / row["seconds"]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"bundled corpus (train): {len(texts):,} documents, {chars:,} characters, {n_tokens:,} tokens")
    how = f", {trained['model']} trained in {trained['seconds']:.0f} s" if trained else f" ({tokdir})"
    print(f"tokenizer: {identity['vocab_size']:,} ids{how}")
    print(f"load average before/after: {load[0]:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'':26} {'workers':>7} {'wall s':>7} {'tokens/s':>10} {'chars/s':>11} {'tokens/CPU-s':>13}")
    for row in rows:
        print(
            f"{row['what']:26} {row['workers']:>7} {row['seconds']:>7.2f} {row['tokens_per_s']:>10,.0f} "
            f"{row['chars_per_s']:>11,.0f} {row['tokens_per_cpu_s']:>13,.0f}"
        )

    report = {
        "corpus": {"documents": len(texts), "characters": chars, "tokens": n_tokens},
        "tokenizer": {**{k: v for k, v in identity.items() if k != "path"}, "trained": trained},
        "rows": rows,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": load[0],
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
