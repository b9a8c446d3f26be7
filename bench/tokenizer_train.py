"""Training time of `mmbert tokenizer train` on the bundled corpus, against one encoding pass over it.

    python bench/tokenizer_train.py                                        # 32k BPE, the command's default
    python bench/tokenizer_train.py --vocab-size 8192 --max-chars 2000000  # the demo's tokenizer

Each repetition trains a tokenizer the way `mmbert tokenizer train --input bundled` does
(`mmbert.tokenizer_training.train_tokenizer` on `bundled_texts("train")`, the part `train_and_save` times), then
encodes the same texts once with it (`encode_batch_fast`, same threads). The wall-clock seconds depend
on the machine and on what else runs (the load average is recorded); the ratio of the two, measured
side by side, much less. Prints the median and min-max and writes bench/results/tokenizer_train.json
with the date, the command, the machine and every repetition.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from mmbert.io import atomic_write_text
from mmbert.tokenizer_training import bundled_texts, train_tokenizer


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab-size", type=int, default=32_000, help="default: the command's")
    p.add_argument("--model", default="bpe", choices=["bpe", "unigram"])
    p.add_argument("--max-chars", type=int, default=None, help="training sample size (default: all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "tokenizer_train.json"))
    args = p.parse_args(argv)

    texts = bundled_texts("train")
    flat = [t for ts in texts.values() for t in ts]
    chars = sum(map(len, flat))
    load_before = os.getloadavg()[0]
    runs = []
    for i in range(args.repeats):
        t = time.perf_counter()
        tok = train_tokenizer(texts, args.vocab_size, model=args.model, max_chars=args.max_chars)
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        tokens = sum(
            len(e.ids) for e in tok.backend_tokenizer.encode_batch_fast(flat, add_special_tokens=False)
        )
        encode_s = time.perf_counter() - t
        runs.append({"train_s": train_s, "encode_s": encode_s, "ratio": train_s / encode_s, "tokens": tokens,
                     "vocab_size": len(tok), "load_average": os.getloadavg()[0]})  # fmt: skip
        print(f"run {i + 1}: trained in {train_s:.1f} s, encoded the corpus ({tokens:,} tokens) in {encode_s:.2f} s: "
              f"{train_s / encode_s:.1f}x (load {runs[-1]['load_average']:.1f})", flush=True)  # fmt: skip

    report = {
        "what": f"{args.model} tokenizer, {args.vocab_size:,} ids, trained on the bundled corpus "
        f"({len(texts)} languages, {chars:,} characters{'' if args.max_chars is None else f', sample of {args.max_chars:,}'}), "
        "against one encode_batch_fast pass over the same texts",
        "train_s": _summary([r["train_s"] for r in runs]),
        "encode_s": _summary([r["encode_s"] for r in runs]),
        "train_over_encode": _summary([r["ratio"] for r in runs]),
        "runs": runs,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python bench/tokenizer_train.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {
            "cpu": _cpu_name(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    s, r = report["train_s"], report["train_over_encode"]
    print(f"training: median {s['median']:.1f} s ({s['min']:.1f}-{s['max']:.1f}) over {args.repeats} runs, "
          f"{r['median']:.1f}x ({r['min']:.1f}-{r['max']:.1f}) one encoding pass")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
