"""Prepared data, a three-phase recipe and its metrics for the training tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

# Four fake languages, each with its own alphabet: the recipe's phases add them one group at a time.
FAKE_LANGUAGES = {
    "aaa_Latn": "abcdefghij",
    "bbb_Latn": "klmnopqrst",
    "ccc_Cyrl": "абвгдежзик",
    "ddd_Grek": "αβγδεζηθικ",
}


TRAIN_RECIPE = """\
name: test
seed: 0
model: {{preset: tiny}}
tokenizer: {tok}
data: [{data}]
train: {{lr: 3e-3, batch_tokens: 128, batch_warmup_start_tokens: 64, batch_warmup_tokens: 300,
         checkpoint_every_tokens: 250, keep_last: 2}}
phases:
  - {{name: pre, tokens: 900, languages: [aaa_Latn, bbb_Latn], tau: 0.7, mask_rate: 0.3, seq_len: 32,
      warmup_tokens: 200}}
  - {{name: mid, tokens: 500, languages: [aaa_Latn, bbb_Latn, ccc_Cyrl], tau: 0.5, mask_rate: 0.15,
      seq_len: 64, global_rope_theta: 160000, local_rope_theta: 160000}}
  - name: decay
    tokens: 300
    languages: all
    tau: 0.3
    mask_rate: 0.05
    seq_len: 64
    global_rope_theta: 160000
    local_rope_theta: 160000
    decay: one_minus_sqrt
{variants}"""


TRAIN_VARIANTS = """\
    variants:
      eng: {languages: [aaa_Latn]}
      all: {languages: all}
"""


def fake_documents(n_docs: int = 30, seed: int = 0) -> list[tuple[str, str]]:
    """(language, text) pairs: each fake language has its own alphabet and a 40-word lexicon."""
    rng = random.Random(seed)
    docs = []
    for lang, alphabet in FAKE_LANGUAGES.items():
        lexicon = ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 6))) for _ in range(40)]
        docs += [(lang, " ".join(rng.choices(lexicon, k=rng.randint(5, 60))) + ".") for _ in range(n_docs)]
    return docs


def write_recipe(path: Path, tok: Path, data: Path, variants: bool = True) -> Path:
    path.write_text(TRAIN_RECIPE.format(tok=tok, data=data, variants=TRAIN_VARIANTS if variants else ""))
    return path


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
