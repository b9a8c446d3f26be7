"""Peak memory of `mmbert prepare` on one huge document, against the same text cut into many documents.

Writes a synthetic corpus of --mb megabytes (words of a random lexicon, lines of about 100 characters)
twice: as one document (one JSON line) and as documents of about 4 KB. Each is prepared by
`mmbert prepare --workers 1` in a fresh process, and that process's peak resident memory (`wait4`) is
reported. A third case is one document with no line breaks at all. Tokenizing in bounded pieces
(`mmbert.data.prepare.piece_bounds`) keeps the one-document case close to the many-document one; a
tokenizer given the whole document at once held about 100 bytes per character (5 GB for 47 MB).

    python bench/prepare_memory.py                      # 40 MB
    python bench/prepare_memory.py --mb 4 --smoke       # what the tests run
    python bench/prepare_memory.py --pythonpath OTHER/src   # measure another checkout of the code

Prints a table and writes bench/results/prepare_memory.json (not with --smoke).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def synthetic_text(n_chars: int, seed: int = 0, newlines: bool = True) -> str:
    """Words of a 3000-word lexicon (Latin and Cyrillic letters), one line break per ~100 characters."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyzабвгдежзиклмнопрст"
    lexicon = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(3000)]
    parts, size, line = [], 0, 0
    while size < n_chars:
        word = rng.choice(lexicon)
        sep = "\n" if newlines and line > 100 else " "
        line = 0 if sep == "\n" else line + len(word) + 1
        parts.append(word + sep)
        size += len(word) + 1
    return "".join(parts)[:n_chars]


def _write_jsonl(path: Path, texts: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"text": text, "id": str(i)}, ensure_ascii=False) + "\n")


# Runs the command and prints its peak resident memory in KB. A process's peak counts the memory of
# the process it was forked from (Linux keeps the high-water mark across exec), so the command is
# started from this small process, not from the benchmark (which holds the corpus).
_MEASURE = (
    "import os, subprocess, sys\n"
    "proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "_, status, usage = os.wait4(proc.pid, 0)\n"
    "print(usage.ru_maxrss)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def peak_rss_mb(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak resident MB, seconds) of one command run to completion in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(done.stdout) / 1024, time.perf_counter() - start  # ru_maxrss is in KB on Linux


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=40.0, help="size of the corpus in millions of characters")
    p.add_argument(
        "--baseline", help="another checkout's src/ to measure beside this one (e.g. before a change)"
    )
    p.add_argument("--smoke", action="store_true", help="no result file")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "prepare_memory.json"))
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT / "src"))
    from mmbert.tokenizer import save_tokenizer
    from mmbert.tokenizer_training import train_tokenizer

    n_chars = int(args.mb * 1e6)
    codes = {"this": str(ROOT / "src")} | ({"baseline": args.baseline} if args.baseline else {})
    cases = {
        "one document": lambda: [synthetic_text(n_chars)],
        "documents of ~4 KB": lambda: [
            text[i : i + 4096] for text in [synthetic_text(n_chars)] for i in range(0, len(text), 4096)
        ],
        "one document, no line breaks": lambda: [synthetic_text(n_chars, newlines=False)],
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok = root / "tok"
        save_tokenizer(train_tokenizer({"eng_Latn": [synthetic_text(2_000_000)]}, 2000, model="bpe"), tok)
        for k, (name, texts) in enumerate(cases.items()):
            source = root / f"{k}.jsonl"
            _write_jsonl(source, texts())
            for code, path in codes.items():
                cmd = [
                    sys.executable, "-m", "mmbert.cli", "prepare", "--source", str(source), "--lang", "eng_Latn",
                    "--tokenizer", str(tok), "--out", str(root / f"data{k}-{code}"), "--workers", "1",
                    "--no-progress",
                ]  # fmt: skip
                env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
                mb, seconds = peak_rss_mb(cmd, env)
                row = {"case": name, "code": code, "chars": n_chars, "peak_rss_mb": round(mb, 1)}
                rows.append({**row, "seconds": round(seconds, 1)})
                print(f"{name:<30} {code:<8} {n_chars / 1e6:5.1f}M chars  peak RSS {mb:7.1f} MB", flush=True)
    result = {
        "machine": {"python": platform.python_version(), "load_average": os.getloadavg()},
        "code": codes,
        "rows": rows,
    }
    if not args.smoke:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
