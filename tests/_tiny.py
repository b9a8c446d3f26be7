"""Tiny exported models for interop and fine-tuning tests, built with this project's own code.

An "export" is what `mmbert train` and `mmbert demo` write and what mmBERT releases look like: a
directory with `config.json` + `model.safetensors` (HF `ModernBertForMaskedLM` format, written by
`MmBertForMaskedLM.save_pretrained`) beside a tokenizer with the mmBERT token layout (pad 0, eos 1,
bos 2, unk 3, mask 4; `<bos> text <eos>`) trained by `mmbert.tokenizer`. The tokenizer learns the
bundled UDHR text of a few languages, so tests that train on those languages see real pieces, not
byte fallback. Building one takes about a second; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# Two Latin-script languages, one Cyrillic, one Arabic: scripts enough for language ID, overlap
# enough (Latin) for cross-lingual pairs to be learnable by a tiny model in a few steps.
TINY_LANGS: tuple[str, ...] = ("eng_Latn", "fra_Latn", "rus_Cyrl", "arb_Arab")

# Smaller than the `tiny` preset (this is for library plumbing, not numerics): 3 layers, global /
# local / local, an 8-token window, so sequences in tests are longer than the window.
TINY_OVERRIDES = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=2,
    local_attention=8,
    global_attn_every_n_layers=3,
    max_position_embeddings=256,
)


def udhr_texts(langs: Sequence[str] = TINY_LANGS) -> list[str]:
    """Every article of the bundled UDHR declaration whose key is one of `langs`."""
    from mmbert.data.corpus import load_udhr

    return [a.text for d in load_udhr() if d.key in langs for a in d.articles]


def save_tiny(path: str | Path, texts: Sequence[str], seed: int = 0, **overrides) -> Path:
    """A BPE tokenizer trained on `texts` + a random `tiny` MLM of ours (preset + `overrides`), in HF format."""
    import torch

    from mmbert import MmBertConfig, MmBertForMaskedLM
    from mmbert.tokenizer import save_tokenizer, train_tokenizer

    path = Path(path)
    tok = train_tokenizer(list(texts), vocab_size=512, model="bpe", seed=seed)
    save_tokenizer(tok, path)
    torch.manual_seed(seed)
    MmBertForMaskedLM(MmBertConfig.preset("tiny", vocab_size=len(tok), **overrides)).save_pretrained(path)
    return path


def make_tiny_export(path: str | Path, langs: Sequence[str] = TINY_LANGS, seed: int = 0) -> Path:
    """Write a tiny masked-LM export (our model + our tokenizer) to `path` and return it."""
    return save_tiny(path, udhr_texts(langs), seed, **TINY_OVERRIDES)


def resave_with_transformers(src: Path, dst: Path) -> Path:
    """The same model written by transformers' ModernBertForMaskedLM (its own config form)."""
    import shutil

    from transformers import ModernBertForMaskedLM

    ModernBertForMaskedLM.from_pretrained(src).save_pretrained(dst)
    for f in src.glob("*token*"):
        shutil.copy(f, dst / f.name)
    return dst
