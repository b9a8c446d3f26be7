"""Train a multilingual tokenizer with mmBERT's layout: `mmbert tokenizer train`.

Loading, saving, identity and the layout itself live in `mmbert.tokenizer`; this module is the one part
of tokenization that reads a corpus (the bundled one, or files through `mmbert.data.sources`), so
nothing that only loads a tokenizer or a model imports the document readers.

Our tokenizers (Unigram or BPE, `tokenizers` library) are SentencePiece-like:
- no normalization: text is tokenized as given, so `decode(encode(text)) == text` for every string
  (the bundled corpus is NFC; normalize your own text yourself if you want NFC/NFKC folding);
- pre-tokenization splits words with their leading space kept on the word (`" world"`) and other
  whitespace (newlines, tabs, runs of spaces) into pieces of their own; nothing is replaced;
- byte fallback: the 256 byte tokens `<0x00>`..`<0xFF>` follow the special tokens (ids 5..260), and a
  character outside the learned alphabet becomes its UTF-8 bytes, so no text gives `<unk>`, including
  scripts never seen in training.
The special-token strings are matched in input text (`"a <mask> b"` gives id 4, as fill-mask needs),
and decode back to themselves.

Training samples languages the way training does (`p(lang) ∝ n(lang) ** tau`, n in characters), so
that the hundreds of small languages of a multilingual corpus get pieces of their own; characters
beyond `character_coverage` of the sample are left to byte fallback instead of taking vocabulary.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from mmbert.data.corpus import iter_code_documents, iter_documents
from mmbert.data.sources import LocalFilesSource, lang_from_path
from mmbert.io import check_output
from mmbert.tokenizer import only_tokenizer_files, post_processor, save_tokenizer, wrap
from mmbert.tokens import SPECIAL_TOKENS, UNK, UNK_ID

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast


logger = logging.getLogger(__name__)

_SPECIALS = list(SPECIAL_TOKENS.values())  # the special tokens in id order (ids 0..4)
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]
_BYTE_TOKEN_CHARS = "<>x0123456789ABCDEF"
_NEVER = -1e6  # Unigram score of the byte tokens (see _finalize)
# A word with its leading space, or one other whitespace character (the unmatched rest, e.g. the
# spaces of an indent, are pieces of their own too).
_PRE_TOKENIZE = r" ?[^\s]+|\s"

Model = Literal["unigram", "bpe"]


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(Regex(_PRE_TOKENIZE), behavior="isolated")


def _decoder() -> decoders.Decoder:
    # byte tokens back to bytes, then the pieces joined as they are: no space handling needed
    return decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])


def balanced_sample(
    texts_by_lang: Mapping[str, list[str]], tau: float, max_chars: int | None, seed: int
) -> Iterator[tuple[str, str]]:
    """(lang, text) pairs where each language's share of characters is ∝ n(lang) ** tau.

    The total is the corpus size (or `max_chars` if smaller): large languages are subsampled, small
    ones repeated, the same rule as the training sampler. Documents are drawn without replacement
    within each pass over a language, in a seeded order.
    """
    sizes = {lang: sum(map(len, texts)) for lang, texts in texts_by_lang.items()}
    sizes = {lang: n for lang, n in sizes.items() if n > 0}
    if not sizes:
        raise ValueError("no training text (every language is empty)")
    total = sum(sizes.values()) if max_chars is None else min(max_chars, sum(sizes.values()))
    weights = {lang: n**tau for lang, n in sizes.items()}
    norm = sum(weights.values())
    rng = random.Random(seed)
    for lang in sorted(sizes):
        target = total * weights[lang] / norm
        texts = [t for t in texts_by_lang[lang] if t]
        taken = 0
        while taken < target:
            order = list(range(len(texts)))
            rng.shuffle(order)
            for i in order:
                yield lang, texts[i]
                taken += len(texts[i])
                if taken >= target:
                    break


def _alphabet(texts: list[str], coverage: float, max_size: int) -> set[str]:
    """The most frequent characters covering `coverage` of all characters, at most `max_size`."""
    counts = collections.Counter(ch for t in texts for ch in t if not ch.isspace())
    total = sum(counts.values())
    kept, covered = set(), 0
    for ch, n in counts.most_common(max_size):
        if covered >= coverage * total:
            break
        kept.add(ch)
        covered += n
    return kept


def _split_on_rare(texts: list[str], alphabet: set[str]) -> Iterator[str]:
    """The texts cut at characters outside the alphabet (byte fallback will spell those)."""
    for text in texts:
        piece: list[str] = []
        for ch in text:
            if ch in alphabet or ch.isspace():
                piece.append(ch)
            elif piece:
                yield "".join(piece)
                piece = []
        if piece:
            yield "".join(piece)


def train_tokenizer(
    texts_by_lang: Mapping[str, list[str]] | Iterable[str],
    vocab_size: int,
    model: Model = "bpe",
    tau: float = 0.3,
    seed: int = 0,
    max_chars: int | None = None,
    character_coverage: float = 0.9995,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a byte-fallback Unigram or BPE tokenizer with mmBERT's special tokens (module docstring).

    `texts_by_lang` maps a language key to its documents (balanced with `tau`), or is a plain iterable
    of documents (used as given). `vocab_size` counts everything: 5 special tokens, 256 byte tokens
    and the learned pieces.
    """
    if model not in ("unigram", "bpe"):
        raise ValueError(f"model must be 'unigram' or 'bpe', got {model!r}")
    n_reserved = len(_SPECIALS) + len(BYTE_TOKENS)
    if vocab_size < n_reserved + 64:
        raise ValueError(
            f"vocab_size {vocab_size} too small: at least {n_reserved + 64} ({n_reserved} special and "
            "byte tokens, and 64 learned pieces)"
        )
    if isinstance(texts_by_lang, Mapping):
        sample = [text for _, text in balanced_sample(texts_by_lang, tau, max_chars, seed)]
    else:
        sample = [t for t in texts_by_lang if t]
        if not sample:
            raise ValueError("no training text")
    n_pieces = vocab_size - n_reserved
    # Leave at least half of the learned vocabulary to multi-character pieces.
    alphabet = _alphabet(sample, character_coverage, max(n_pieces // 2, 1))

    tok = Tokenizer(models.Unigram() if model == "unigram" else models.BPE(unk_token=UNK, byte_fallback=True))
    tok.pre_tokenizer = _pre_tokenizer()
    if model == "unigram":
        trainer: trainers.Trainer = trainers.UnigramTrainer(
            vocab_size=n_pieces + len(_SPECIALS),
            special_tokens=_SPECIALS,
            unk_token=UNK,
            show_progress=show_progress,
            max_piece_length=16,
            # SentencePiece's 1M seed pieces cost minutes of EM for a small vocabulary; 10 per final
            # piece leaves pruning plenty to choose from.
            seed_size=min(1_000_000, max(10 * n_pieces, 10_000)),
        )
    else:
        trainer = trainers.BpeTrainer(
            vocab_size=n_pieces + len(_SPECIALS),
            special_tokens=_SPECIALS,
            show_progress=show_progress,
        )
    t0 = time.perf_counter()
    tok.train_from_iterator(_split_on_rare(sample, alphabet), trainer=trainer, length=len(sample))
    logger.info("trained %s on %d documents in %.1fs", model, len(sample), time.perf_counter() - t0)
    wrapped = _finalize(tok, model)
    if len(wrapped) < vocab_size:  # the text ran out of merges: said, since the size was asked for
        logger.warning(
            "vocabulary of %d ids, not the %d asked for: the text has too few distinct pieces "
            "(give more text or a smaller --vocab-size)",
            len(wrapped), vocab_size,
        )  # fmt: skip
    return wrapped


def _finalize(trained: Tokenizer, model: Model) -> PreTrainedTokenizerFast:
    """Rebuild the trained model with ids 0..4 special, 5..260 bytes, then the pieces; wrap it for HF."""
    state = json.loads(trained.to_str())["model"]
    head = _SPECIALS + BYTE_TOKENS
    reserved = set(head)
    if model == "unigram":
        pieces = [(p, s) for p, s in state["vocab"] if p not in reserved]
        floor = min((s for _, s in pieces), default=0.0)
        # Byte fallback finds the byte tokens by name, but the Unigram lattice also matches them as
        # pieces: a literal "<0x41>" in text would decode as "A". With a prohibitive score they lose to
        # the path through their characters, which are therefore always pieces.
        known = {p for p, _ in pieces}
        missing = [(ch, floor) for ch in _BYTE_TOKEN_CHARS if ch not in known]
        # make room by dropping the lowest-scoring multi-character pieces (the trainer sorts by score)
        drop = set([i for i in range(len(pieces) - 1, -1, -1) if len(pieces[i][0]) > 1][: len(missing)])
        pieces = [p for i, p in enumerate(pieces) if i not in drop] + missing
        vocab = [(t, 0.0) for t in _SPECIALS] + [(b, _NEVER) for b in BYTE_TOKENS] + pieces
        new = Tokenizer(models.Unigram(vocab, unk_id=UNK_ID, byte_fallback=True))
    else:
        learned = sorted((i, p) for p, i in state["vocab"].items() if p not in reserved)
        vocab_map = {t: i for i, t in enumerate(head)}
        for _, p in learned:
            vocab_map[p] = len(vocab_map)
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
        new = Tokenizer(models.BPE(vocab_map, merges, unk_token=UNK, byte_fallback=True))
    new.pre_tokenizer = _pre_tokenizer()
    new.decoder = _decoder()
    new.post_processor = post_processor()
    new.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _SPECIALS])
    return wrap(new)


def bundled_texts(
    split: str = "train", articles: Iterable[int] | None = None, code_chars: int | None = None
) -> dict[str, list[str]]:
    """The bundled corpus as `{lang: [texts]}` (UDHR articles of `split`, plus `code`).

    `articles` keeps only those article numbers; `code_chars` caps the code source (files cut in
    order) so that small test tokenizers are not dominated by it.
    """
    wanted = None if articles is None else set(articles)
    texts: dict[str, list[str]] = collections.defaultdict(list)
    for doc in iter_documents(split):  # type: ignore[arg-type]
        if wanted is None or doc.meta["article"] in wanted:
            texts[doc.lang].append(doc.text)
    budget = math.inf if code_chars is None else code_chars
    for doc in iter_code_documents():
        if budget <= 0:
            break
        texts["code"].append(doc.text[: int(min(budget, len(doc.text)))])
        budget -= len(doc.text)
    return dict(texts)


UNKNOWN_LANG = "und_Zzzz"  # ISO 639-3 "undetermined", ISO 15924 "unknown script"


def read_text_files(
    paths: Iterable[str | Path],
    text_field: str = "text",
    lang_field: str | None = None,
    lang: str | None = None,
) -> dict[str, list[str]]:
    """Training text from files or directories of `.jsonl[.gz]`, `.parquet` or `.txt` (one document per
    file), read by `mmbert.data.sources.LocalFilesSource` (same formats and errors as `mmbert prepare`).

    The language is `lang_field` of each record, else `lang`, else a `lang_Script` directory in the
    path (FineWeb2's layout), else `und_Zzzz`.
    """
    texts: dict[str, list[str]] = collections.defaultdict(list)
    for path in paths:
        for f in LocalFilesSource(path).files():
            fallback = lang or (None if lang_field or lang_from_path(f) else UNKNOWN_LANG)
            src = LocalFilesSource(f, text_field=text_field, lang_field=lang_field, lang=fallback)
            for unit in src.units():
                for doc in src.read(unit, "input"):
                    texts[doc.lang].append(doc.text)
    return dict(texts)


def evaluate_coverage(
    tok: PreTrainedTokenizerBase, texts_by_lang: Mapping[str, list[str]]
) -> dict[str, dict]:
    """Per language: characters, tokens, tokens per character, unknown tokens, byte-fallback tokens,
    and whether every text decodes back to itself."""
    byte_ids = {tok.convert_tokens_to_ids(b) for b in BYTE_TOKENS}
    report = {}
    for lang, texts in texts_by_lang.items():
        ids_list = tok(list(texts), add_special_tokens=False)["input_ids"]
        n_tokens = sum(map(len, ids_list))
        chars = sum(map(len, texts))
        report[lang] = {
            "chars": chars,
            "tokens": n_tokens,
            "tokens_per_char": n_tokens / max(chars, 1),
            "unk": sum(i == tok.unk_token_id for ids in ids_list for i in ids),
            "byte_tokens": sum(i in byte_ids for ids in ids_list for i in ids),
            "roundtrip": all(tok.decode(ids) == t for ids, t in zip(ids_list, texts, strict=True)),
        }
    return report


@dataclass
class TrainingReport:
    """What `train_and_save` trained and wrote, and how the tokenizer covers a check set."""

    out: Path
    source: str  # what the training text was
    languages: int  # in the training text
    chars: int  # of the training text (before sampling)
    vocab_size: int  # of the trained tokenizer
    seconds: float  # training time
    check_set: str  # what `coverage` was measured on
    coverage: dict[str, dict]  # `evaluate_coverage` of the check set

    @property
    def unknown_tokens(self) -> int:
        return sum(r["unk"] for r in self.coverage.values())

    @property
    def roundtrip_failures(self) -> list[str]:
        """The check-set languages where some text does not decode back to itself."""
        return [lang for lang, r in self.coverage.items() if not r["roundtrip"]]

    @property
    def tokens_per_char(self) -> float:
        chars = sum(r["chars"] for r in self.coverage.values())
        return sum(r["tokens"] for r in self.coverage.values()) / max(chars, 1)


def train_and_save(
    out: str | Path,
    inputs: Sequence[str | Path] | None = None,
    *,
    vocab_size: int = 32_000,
    model: Model = "bpe",
    tau: float = 0.3,
    seed: int = 0,
    max_chars: int | None = None,
    text_field: str = "text",
    lang_field: str | None = None,
    lang: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainingReport:
    """Train a tokenizer on `inputs` (files or directories, `read_text_files`; None: the bundled
    corpus), save it to `out`, and measure it: on the held-out UDHR articles for the bundled corpus,
    else on the first 20 documents of each language.

    `out` must not be an input, nor a non-empty directory holding anything but tokenizer files (a
    model's directory), unless `overwrite`; then its tokenizer files are replaced and the rest stays.
    """
    if not 0 <= tau <= 1:  # as in recipes: p ∝ n^tau between uniform (0) and proportional (1)
        raise ValueError(f"--tau must be in [0, 1], got {tau}")
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"--max-chars must be >= 1, got {max_chars}")
    check_output(out, inputs or (), is_own=only_tokenizer_files, overwrite=overwrite, replaced=True)
    if inputs is None:
        texts = bundled_texts("train")
        source = "bundled corpus (UDHR train articles + code)"
    else:
        texts = read_text_files(inputs, text_field, lang_field, lang)
        source = f"{len(inputs)} file(s)"
    n_chars = sum(len(t) for ts in texts.values() for t in ts)
    logger.info(
        "training %s tokenizer, vocab %d, tau %s, on %s: %d languages, %s characters",
        model,
        vocab_size,
        tau,
        source,
        len(texts),
        f"{n_chars:,}",
    )
    t0 = time.perf_counter()
    tok = train_tokenizer(
        texts, vocab_size, model=model, tau=tau, seed=seed, max_chars=max_chars, show_progress=progress
    )
    seconds = time.perf_counter() - t0
    save_tokenizer(tok, out)
    if inputs is None:
        check, check_set = bundled_texts("heldout", code_chars=0), "held-out UDHR articles"
    else:
        check = {key: ts[:20] for key, ts in texts.items()}
        check_set = "the first 20 documents per language"
    return TrainingReport(
        out=Path(out),
        source=source,
        languages=len(texts),
        chars=n_chars,
        vocab_size=len(tok),
        seconds=seconds,
        check_set=check_set,
        coverage=evaluate_coverage(tok, check),
    )
