"""A FineWeb2-layout corpus of small languages and the token ids `prepare` must make of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import (
    Tokenizer,
)

from mmbert.data.sources import LocalFilesSource

WORDS = {
    "fra_Latn": "le la les un une et est dans pour avec maison chat".split(),
    "deu_Latn": "der die das und ist mit haus katze nicht ein".split(),
    "ell_Grek": "και το της η ο σε για σπίτι γάτα".split(),
}


def make_texts(lang: str, n: int, seed: int = 0, words: int = 12) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = WORDS[lang]
    return [" ".join(rng.choice(vocab, rng.integers(1, words + 1))) for _ in range(n)]


def write_corpus(root: Path, files_per_lang: int = 2, docs_per_file: int = 20, seed: int = 0) -> Path:
    """FineWeb2 layout: root/<lang>/train/NNN.jsonl."""
    for li, lang in enumerate(WORDS):
        for k in range(files_per_lang):
            d = root / lang / "train"
            d.mkdir(parents=True, exist_ok=True)
            texts = make_texts(lang, docs_per_file, seed=seed + 100 * li + k)
            (d / f"{k:03d}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return root


def expected_docs(root: Path, tokdir: Path) -> dict[str, list[list[int]]]:
    """What prepare must produce: each file's texts (in file order) tokenized without special tokens."""
    tok = Tokenizer.from_file(str(tokdir / "tokenizer.json"))
    out: dict[str, list[list[int]]] = {}
    src = LocalFilesSource(root)
    for unit in src.units():
        for doc in src.read(unit, "x"):
            out.setdefault(doc.lang, []).append(tok.encode(doc.text, add_special_tokens=False).ids)
    return out
