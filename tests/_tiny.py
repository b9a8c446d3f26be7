"""Tiny exported models, tokenizers and parallel text for interop and fine-tuning tests.

An "export" is a directory in the Hugging Face format that mmBERT releases use: `config.json` +
`model.safetensors` (`ModernBertForMaskedLM`) beside a fast tokenizer with the mmBERT token layout
(pad 0, eos 1, bos 2, unk 3, mask 4; a sequence is `<bos> text <eos>`). Everything here is built
from scratch in a few hundred milliseconds, so tests never download weights or data.

The parallel corpus is synthetic: each fake language has its own alphabet and lexicon, and an
article is the same sequence of "meanings" rendered word by word in every language. It has the
shape of `mmbert.data.corpus.load_udhr()` (declarations holding numbered articles), which is what
the example scripts consume, and it is trivially separable by language, which is what the language
identification tests need.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

# (key, alphabet): four scripts so that language identification is learnable in a few steps.
FAKE_LANGUAGES: tuple[tuple[str, str], ...] = (
    ("aaa_Latn", "abcdefghijklmnop"),
    ("bbb_Latn", "qrstuvwxyzaeiouy"),
    ("ccc_Cyrl", "абвгдежзиклмнопр"),
    ("ddd_Grek", "αβγδεζηθικλμνξοπ"),
)
SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")


@dataclass(frozen=True)
class FakeArticle:
    number: int
    text: str


@dataclass(frozen=True)
class FakeDeclaration:
    """Field names follow `mmbert.data.corpus.Declaration`."""

    key: str
    lang: str
    iso639_3: str
    script: str
    name: str
    articles: list[FakeArticle] = field(default_factory=list)


def fake_udhr(n_articles: int = 12, words_per_article: int = 10, seed: int = 0) -> list[FakeDeclaration]:
    """A parallel corpus: article i says the same thing in every fake language (number 0 = preamble)."""
    rng = random.Random(seed)
    n_meanings = 40
    articles = [[rng.randrange(n_meanings) for _ in range(words_per_article)] for _ in range(n_articles)]
    declarations = []
    for key, alphabet in FAKE_LANGUAGES:
        lexicon = ["".join(rng.choice(alphabet) for _ in range(rng.randint(3, 6))) for _ in range(n_meanings)]
        iso, script = key.split("_")
        declarations.append(
            FakeDeclaration(
                key=key,
                lang=key,
                iso639_3=iso,
                script=script,
                name=f"Fake {iso}",
                articles=[
                    FakeArticle(number=i, text=" ".join(lexicon[m] for m in meanings) + ".")
                    for i, meanings in enumerate(articles)
                ],
            )
        )
    return declarations


def corpus_texts(declarations: list[FakeDeclaration]) -> list[str]:
    return [a.text for d in declarations for a in d.articles]


def train_tiny_tokenizer(texts: list[str], out_dir: Path, vocab_size: int = 400):
    """A BPE tokenizer with the mmBERT special-token layout, saved to `out_dir` and returned."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    # special_tokens are added first, in order, so they get ids 0..4.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    assert [tok.token_to_id(t) for t in SPECIALS] == [0, 1, 2, 3, 4]
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>",
        pair="<bos> $A <eos> $B:1 <eos>:1",
        special_tokens=[("<bos>", 2), ("<eos>", 1)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<bos>",
        sep_token="<eos>",
        model_max_length=128,
    )
    fast.save_pretrained(out_dir)
    return fast


def tiny_config_kwargs(vocab_size: int) -> dict:
    """ModernBERT config fields for a 3-layer model (global, local, local) with an 8-token window."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        local_attention=8,
        global_attn_every_n_layers=3,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        cls_token_id=2,
        sep_token_id=1,
        classifier_pooling="mean",
    )


def make_tiny_export(path: Path, texts: list[str] | None = None, seed: int = 0) -> Path:
    """Write a tiny HF-format masked-LM export (model + tokenizer) to `path` and return it."""
    import torch
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = train_tiny_tokenizer(texts if texts is not None else corpus_texts(fake_udhr()), path)
    torch.manual_seed(seed)
    model = ModernBertForMaskedLM(ModernBertConfig(**tiny_config_kwargs(len(tok))))
    model.save_pretrained(path)
    return path
