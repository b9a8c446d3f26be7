"""Tiny HF-format exports (our model + tokenizer), and transformers' ModernBERT beside them."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from mmbert import MmBertConfig, MmBertForMaskedLM
from mmbert.data.corpus import load_udhr
from mmbert.tokenizer import save_tokenizer
from mmbert.tokenizer_training import train_tokenizer
from tests.helpers.model import TINY

# An "export" is what `mmbert train` and `mmbert demo` write and what mmBERT releases look like: a
# directory with `config.json` + `model.safetensors` (HF `ModernBertForMaskedLM` format) beside a
# tokenizer with the mmBERT token layout trained by `mmbert.tokenizer_training`. The tokenizer learns the bundled
# UDHR text of a few languages, so tests that train on them see real pieces, not byte fallback.
# Two Latin-script languages, one Cyrillic, one Arabic: scripts enough for language ID, overlap enough
# (Latin) for cross-lingual pairs to be learnable by a tiny model in a few steps.
TINY_LANGS: tuple[str, ...] = ("eng_Latn", "fra_Latn", "rus_Cyrl", "arb_Arab")


def udhr_texts(langs: Sequence[str] = TINY_LANGS) -> list[str]:
    """Every article of the bundled UDHR declaration whose key is one of `langs`."""
    return [a.text for d in load_udhr() if d.key in langs for a in d.articles]


def save_tiny(path: str | Path, texts: Sequence[str], seed: int = 0, **overrides) -> Path:
    """A BPE tokenizer trained on `texts` + a random `tiny` MLM of ours (preset + `overrides`), in HF format."""
    path = Path(path)
    tok = train_tokenizer(list(texts), vocab_size=512, model="bpe", seed=seed)
    save_tokenizer(tok, path)
    torch.manual_seed(seed)
    MmBertForMaskedLM(MmBertConfig.preset("tiny", vocab_size=len(tok), **overrides)).save_pretrained(path)
    return path


def make_tiny_export(path: str | Path, langs: Sequence[str] = TINY_LANGS, seed: int = 0) -> Path:
    """Write a tiny masked-LM export (our model + our tokenizer) to `path` and return it."""
    return save_tiny(path, udhr_texts(langs), seed)


def hf_model(seed: int = 0, attn: str = "eager", **config):
    """transformers' ModernBertForMaskedLM with the tiny preset's shapes (`config` overrides), norms and
    biases randomized so that a mix-up would show."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM  # seconds to import: see below

    torch.manual_seed(seed)
    model = ModernBertForMaskedLM(ModernBertConfig(**{**TINY.to_hf_dict(), **config})).eval()
    with torch.no_grad():  # norms are 1 at init: randomize them so a mix-up would show
        for name, p in model.named_parameters():
            if "norm" in name or "bias" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.config._attn_implementation = attn
    return model


def real_logits(model, ids, mask):
    """Logits at the real (unpadded) positions of a padded batch."""
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits[mask.bool()]


def resave_with_transformers(src: Path, dst: Path) -> Path:
    """The same model written by transformers' ModernBertForMaskedLM (its own config form)."""
    from transformers import ModernBertForMaskedLM  # seconds to import: only the tests that need it pay

    ModernBertForMaskedLM.from_pretrained(src).save_pretrained(dst)
    for f in src.glob("*token*"):
        shutil.copy(f, dst / f.name)
    return dst
