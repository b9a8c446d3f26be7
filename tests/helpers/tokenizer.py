"""Tokenizers built in the test: tiny BPE, one trained on the bundled corpus, Gemma 2-like."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from mmbert.tokenizer import wrap
from mmbert.tokenizer_training import bundled_texts, train_tokenizer
from mmbert.tokens import SPECIAL_TOKENS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


def make_tokenizer(out: Path, texts: list[str], vocab_size: int = 300) -> Path:
    """A tiny byte-level BPE tokenizer with mmBERT's special ids (pad 0, eos 1, bos 2, unk 3, mask 4)."""
    specials = list(SPECIAL_TOKENS.values())
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)]
    )
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    names = {f"{name}_token": token for name, token in SPECIAL_TOKENS.items()}
    (out / "tokenizer_config.json").write_text(json.dumps(names))
    return out


GEMMA_EXTRA_TOKENS = ("<2mass>", "[@BOS@]", "<unused0>", "<unused1>", "<start_of_turn>", "<end_of_turn>")


_BUNDLED_CACHE: dict[tuple, str] = {}


def train_bundled(
    vocab_size: int = 1000,
    model: str = "bpe",
    tau: float = 0.3,
    seed: int = 0,
    articles: Sequence[int] | None = (0, 1, 2, 3),
    code_chars: int | None = 100_000,
) -> PreTrainedTokenizerFast:
    """A tokenizer trained on (part of) the bundled corpus: the tests' tiny tokenizer.

    The default (1,000 ids, preamble + articles 1-3 of every declaration, 100k characters of code)
    trains in seconds. Results are cached in-process by arguments; each call returns a new object.
    """
    arts = None if articles is None else tuple(sorted(articles))
    key = (vocab_size, model, tau, seed, arts, code_chars)
    if key not in _BUNDLED_CACHE:
        texts = bundled_texts("train", arts, code_chars)
        tok = train_tokenizer(texts, vocab_size, model, tau, seed)  # type: ignore[arg-type]
        _BUNDLED_CACHE[key] = tok.backend_tokenizer.to_str()
    return wrap(Tokenizer.from_str(_BUNDLED_CACHE[key]))


def make_gemma_like_tokenizer(
    out: Path,
    texts: list[str],
    vocab_size: int = 600,
    specials: Sequence[str] = tuple(SPECIAL_TOKENS.values()),
) -> Path:
    """A small tokenizer with the properties of Gemma 2's as Google ships it (mmBERT's tokenizer).

    SentencePiece-style BPE with byte fallback (spaces become `▁`, no pre-tokenizer); `specials` at ids
    0.. (mmBERT's by default), then Gemma's other control tokens, the 256 byte tokens and the learned
    pieces; every one of them an added token, `<mask>` (and the other unused ones) *not* marked
    special; a post-processor that adds `<bos>` only (`<bos> a`, `<bos> a <bos> b`); a
    `tokenizer_config.json` of class GemmaTokenizer naming no mask, cls or sep token, with an
    unbounded `model_max_length`. Passing other `specials` puts other tokens at the special ids.
    """
    head = [*specials, *GEMMA_EXTRA_TOKENS, *(f"<0x{b:02X}>" for b in range(256))]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    state = json.loads(tok.to_str())["model"]
    vocab = {t: i for i, t in enumerate(head)}
    for piece, _ in sorted(state["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    gemma = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    gemma.normalizer = normalizers.Replace(" ", "\u2581")
    gemma.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    control = {"<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"}
    gemma.add_tokens([AddedToken(t, special=t in control, normalized=False) for t in head[:-256]])
    gemma.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos>:1 $B:1", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    out.mkdir(parents=True, exist_ok=True)
    gemma.save(str(out / "tokenizer.json"))
    flags = dict(lstrip=False, normalized=False, rstrip=False, single_word=False)
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(i): {"content": t, **flags, "special": t in control} for i, t in enumerate(head[:-256])
        },
        "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
        "bos_token": "<bos>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<eos>",
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<pad>",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    specials_map = {"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]}
    specials_map.update({f"{r}_token": f"<{r}>" for r in ("bos", "eos", "pad", "unk")})
    (out / "special_tokens_map.json").write_text(json.dumps(specials_map, indent=2))
    return out
