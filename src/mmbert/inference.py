"""Inference: `mmbert fill-mask` (top predictions at `<mask>` tokens) and `mmbert embed` (mean-pooled vectors).

    mmbert fill-mask MODEL "The capital of France is <mask>." ["..."] [--file F] [--top-k K] [--json]
    mmbert embed MODEL --input texts.txt|texts.jsonl --out vectors.npy|vectors.parquet

Both work on any Hugging Face ModernBERT / mmBERT directory that holds the tokenizer files (ours,
transformers', the released mmBERT). Texts go through the model's unpadded path: a batch is one flat
token stream with `cu_seqlens`, so no compute is spent on padding, and texts are sorted by length
before they are cut into batches (then put back in order) so that batches hold similar lengths.
Fill-mask runs the MLM head and the decoder only at the `<mask>` positions (`prediction_mask`): with
a 256k vocabulary the decoder over every token would cost more than the whole small encoder.
`fill_mask` predicts each `<mask>` on its own; `masked_word` + `fill_word` fill one whole word of
several tokens with a beam over them, left to right (the demo's fill-mask examples).

Embeddings are mmBERT's pooling: the mean of the last hidden states over every token of the
sequence, `<bos>` and `<eos>` included (what Sentence Transformers' mean pooling over the attention
mask computes).

No sequence is longer than the model's `max_position_embeddings` (`fit_length`): a longer
`max_length` is lowered to it, and a fill-mask text beyond it keeps its first and last token and the
part around its masks, each with a warning.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from mmbert.data.masking import never_masked
from mmbert.data.packing import PackedBatch
from mmbert.data.records import BadInputError, iter_jsonl, iter_lines
from mmbert.errors import MmbertError
from mmbert.hf import check_loaded_tokenizer
from mmbert.io import atomic_open, check_output, not_found
from mmbert.model import MmBertForMaskedLM, MmBertModel, pool_packed
from mmbert.tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

DEFAULT_BATCH_TOKENS = 16_384


# ---------------------------------------------------------------------------------------------- loading
def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` (None: `default_device()`), refused in one line when torch cannot use it (a CUDA device
    on a host without one), instead of an assertion deep inside torch at the first tensor moved."""
    if device is None:
        return default_device()
    resolved = torch.device(device)
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise MmbertError(f"--device {device} was asked for, but torch sees no CUDA device")
        if resolved.index is not None and resolved.index >= count:
            raise MmbertError(
                f"--device {device}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    return resolved


def load(model_dir: str | Path, device: str | torch.device | None = None) -> tuple[MmBertForMaskedLM, Any]:
    """An HF-format masked-LM directory -> (model in eval mode on `device`, its tokenizer).

    A tokenizer as shipped (Gemma 2's: `<mask>` not named the mask token, no `<eos>` added) is adapted
    to mmBERT's layout in memory (`mmbert.tokenizer.load_tokenizer(adapt=True)`).
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(not_found(path, "model directory"))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a model directory (no config.json)")
    device = resolve_device(device)
    model = MmBertForMaskedLM.from_pretrained(path, device=device)
    tokenizer = load_tokenizer(path, adapt=True)
    if tokenizer.mask_token_id is None:
        raise ValueError(f"{path}: the tokenizer has no mask token")
    check_loaded_tokenizer(model.config, tokenizer, path, path)
    return model, tokenizer


# ---------------------------------------------------------------------------------------------- batching
def length_batches(
    lengths: Sequence[int], batch_tokens: int, max_sequences: int | None = None
) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most `batch_tokens` tokens (and `max_sequences`).

    A sequence longer than `batch_tokens` gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in order:
        full = max_sequences is not None and len(current) >= max_sequences
        if current and (tokens + lengths[i] > batch_tokens or full):
            batches.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += lengths[i]
    if current:
        batches.append(current)
    return batches


def fit_length(model: torch.nn.Module, max_length: int) -> int:
    """`max_length`, lowered (with a warning) to the model's `max_position_embeddings`."""
    limit = model.config.max_position_embeddings
    if max_length > limit:
        logger.warning(
            "max length %d is more than the model's %d positions: using %d", max_length, limit, limit
        )
        return limit
    return max_length


def _around_masks(ids: list[int], limit: int, mask_id: int, where: str) -> list[int]:
    """`ids` cut to `limit` tokens: the first and last token and the window around the masks."""
    if len(ids) <= limit:
        return ids
    masks = [j for j, t in enumerate(ids) if t == mask_id]
    span = masks[-1] - masks[0] + 1
    room = limit - 2
    if span > room:
        raise ValueError(f"{where}: its masks span {span} tokens, more than the model's {limit} positions")
    start = min(max(1, masks[0] - (room - span) // 2), len(ids) - 1 - room)
    logger.warning(
        "%s has %d tokens, more than the model's %d positions: using the %d around its masks",
        where, len(ids), limit, room,
    )  # fmt: skip
    return [ids[0], *ids[start : start + room], ids[-1]]


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------- fill-mask
@dataclass
class Prediction:
    token_id: int
    token: str  # the decoded token, with its leading space if it has one
    score: float  # softmax probability


@dataclass
class FillMaskResult:
    text: str
    predictions: list[list[Prediction]]  # per <mask> in the text, the top-k predictions, best first
    sequence: str  # the text with every <mask> replaced by its top prediction


def token_text(tokenizer: Any, token_id: int) -> str:
    """A token as text; a byte-fallback piece that is not a character alone keeps its name (`<0xE2>`)."""
    text = tokenizer.decode([token_id])
    return tokenizer.convert_ids_to_tokens(token_id) if "\ufffd" in text else text


def _is_space_token(tokenizer: Any, token_id: int) -> bool:
    piece = tokenizer.convert_ids_to_tokens(token_id)
    return isinstance(piece, str) and piece != "" and piece.strip(" \u2581\u0120") == ""


def encode_masked(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a text with `<mask>` tokens, `<bos>`/`<eos>` added as the tokenizer does.

    A tokenizer whose words carry their leading space (` Paris`, SentencePiece's `▁Paris`) cuts
    `is <mask>` into `is`, ` `, `<mask>`; the lone space token is dropped so that the mask stands for
    the word with its space, which is what the model saw in training.
    """
    ids = list(tokenizer(text)["input_ids"])
    mask_id = tokenizer.mask_token_id
    out: list[int] = []
    for t in ids:
        if t == mask_id and out and _is_space_token(tokenizer, out[-1]):
            out.pop()
        out.append(t)
    return out


@torch.inference_mode()
def fill_mask(
    model: MmBertForMaskedLM,
    tokenizer: Any,
    texts: Sequence[str],
    top_k: int = 5,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> list[FillMaskResult]:
    """Top-k predictions at every `<mask>` of every text (a text may hold several masks)."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    mask_id = tokenizer.mask_token_id
    encoded = [encode_masked(tokenizer, t) for t in texts]
    for i, ids in enumerate(encoded):
        if mask_id not in ids:
            raise ValueError(f"text {i + 1} has no {tokenizer.mask_token} token: {texts[i]!r}")
    limit = model.config.max_position_embeddings
    encoded = [_around_masks(ids, limit, mask_id, f"text {i + 1}") for i, ids in enumerate(encoded)]
    device = _model_device(model)
    k = min(top_k, model.config.vocab_size)
    model.eval()
    per_text: list[list[list[Prediction]]] = [[] for _ in texts]
    for batch in length_batches([len(e) for e in encoded], batch_tokens):
        packed = PackedBatch.from_sequences([encoded[i] for i in batch], device)
        where = packed.input_ids == mask_id
        logits = model(**packed.model_inputs(device), prediction_mask=where).logits
        probs, ids = logits.float().softmax(-1).topk(k, dim=-1)  # (M, k): masks in stream order
        probs, ids = probs.cpu().tolist(), ids.cpu().tolist()
        m = 0
        for i in batch:  # the batch's texts are in the stream in this order
            for _ in range(encoded[i].count(mask_id)):
                per_text[i].append(
                    [
                        Prediction(t, token_text(tokenizer, t), p)
                        for t, p in zip(ids[m], probs[m], strict=True)
                    ]
                )
                m += 1
    results = []
    for text, ids, preds in zip(texts, encoded, per_text, strict=True):
        best = iter(p[0].token_id for p in preds)
        filled = [next(best) if t == mask_id else t for t in ids]
        results.append(FillMaskResult(text, preds, tokenizer.decode(filled, skip_special_tokens=True)))
    return results


def fill_mask_dir(
    model_dir: str | Path,
    texts: Sequence[str],
    top_k: int = 5,
    device: str | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> list[FillMaskResult]:
    """`fill_mask` with the model and tokenizer of an HF-format directory."""
    model, tokenizer = load(model_dir, device)
    return fill_mask(model, tokenizer, texts, top_k=top_k, batch_tokens=batch_tokens)


# ---------------------------------------------------------------------------------------------- whole words
@dataclass
class MaskedWord:
    """A sentence with one whole word masked: its token ids (no specials) and the masked span."""

    ids: list[int]
    start: int  # first masked token
    length: int  # tokens of the word (all masked)
    word: str  # the answer
    text: str  # the sentence with one `<mask>` per masked token, for display


def masked_word(tokenizer: Any, sentence: str, min_letters: int = 4) -> MaskedWord | None:
    """Mask every token of one word: of the words of `min_letters`+ letters (not the first), the one with
    the fewest tokens, then the longest, then nearest the middle. None when no word fits."""
    enc = tokenizer(sentence, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    candidates = []
    for k, m in enumerate(re.finditer(r"\w+", sentence)):
        a, b = m.span()
        if k == 0 or not m.group().isalpha() or len(m.group()) < min_letters:
            continue
        span = [j for j, (s, e) in enumerate(offsets) if s < b and e > a]
        # the word's tokens only: none reaches into a neighbour (a leading space is part of the word)
        if not span or offsets[span[0]][0] < a - 1 or offsets[span[-1]][1] > b:
            continue
        mid = abs((a + b) / 2 - len(sentence) / 2)
        candidates.append((len(span), -len(m.group()), mid, span[0], m.group()))
    if not candidates:
        return None
    length, _, _, start, word = min(candidates)
    mask = tokenizer.mask_token
    text = tokenizer.decode(ids[:start]) + " " + mask * length + tokenizer.decode(ids[start + length :])
    return MaskedWord(ids, start, length, word, text)


@torch.inference_mode()
def fill_word(model: Any, tokenizer: Any, masked: MaskedWord, top_k: int = 5) -> list[tuple[str, float]]:
    """The `top_k` fillings of the masked word, decoded left to right with a beam of `top_k`.

    Each step fills the leftmost masked token of every beam (special tokens excluded) and keeps the
    `top_k` best by the product of the step probabilities, so the score of a word is the chain
    p(t1 | context) p(t2 | context, t1) ... ; returned as (word, probability), best first.
    """
    model.eval()
    device = next(model.parameters()).device
    mask, bos, eos = tokenizer.mask_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id
    specials = torch.tensor(never_masked(tokenizer), device=device)
    before, after = masked.ids[: masked.start], masked.ids[masked.start + masked.length :]
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    for step in range(masked.length):
        rows = [[bos, *before, *filled, *[mask] * (masked.length - step), *after, eos] for filled, _ in beams]
        packed = PackedBatch.from_sequences(rows, device)
        where = torch.zeros_like(packed.input_ids, dtype=torch.bool)
        where[packed.cu_seqlens[:-1] + 1 + masked.start + step] = True  # after <bos>
        logits = model(**packed.model_inputs(device), prediction_mask=where).logits.float()  # (beams, V)
        logits[:, specials] = -math.inf
        logp, ids = logits.log_softmax(-1).topk(top_k, dim=-1)
        grown = [
            (filled + [int(t)], score + float(lp))
            for (filled, score), row_lp, row_ids in zip(beams, logp, ids, strict=True)
            for lp, t in zip(row_lp, row_ids, strict=True)
        ]
        beams = sorted(grown, key=lambda b: -b[1])[:top_k]
    return [(tokenizer.decode(filled).strip(), math.exp(score)) for filled, score in beams]


# ---------------------------------------------------------------------------------------------- embed
@torch.inference_mode()
def embed_ids(
    model: MmBertModel | MmBertForMaskedLM,
    sequences: Sequence[Sequence[int]],
    batch_size: int = 64,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    progress: bool = False,
) -> np.ndarray:
    """Mean-pooled final hidden states of token id sequences: (len(sequences), hidden) float32."""
    encoder = model.model if isinstance(model, MmBertForMaskedLM) else model
    encoder.eval()
    device = _model_device(encoder)
    out = np.zeros((len(sequences), encoder.config.hidden_size), dtype=np.float32)
    batches = length_batches([len(s) for s in sequences], batch_tokens, batch_size)
    bar = None
    if progress:
        bar = tqdm(total=len(sequences), desc="embed", unit="text", dynamic_ncols=True)
    for batch in batches:
        packed = PackedBatch.from_sequences([sequences[i] for i in batch], device)
        enc = encoder(**packed.model_inputs(device))  # last_hidden_state (N, H)
        pooled = pool_packed(enc.last_hidden_state, enc.batch, "mean")  # (S, H)
        out[batch] = pooled.float().cpu().numpy()
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return out


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """`<bos> text <eos>` ids, truncated to `max_length` tokens (specials included)."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    if not texts:  # transformers' fast tokenizers fail on an empty batch
        return []
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [list(ids) for ids in enc["input_ids"]]


def embed(
    model: MmBertModel | MmBertForMaskedLM,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 512,
    progress: bool = False,
) -> np.ndarray:
    """Mean-pooled embeddings of `texts`: (len(texts), hidden) float32, in the order given.

    Each text is cut to `max_length` tokens (at most the model's positions, `fit_length`).
    """
    max_length = fit_length(model, max_length)
    ids = tokenize(tokenizer, texts, max_length)
    cut = sum(len(x) == max_length for x in ids)
    if cut:
        logger.info("%d of %d texts reach %d tokens (longer ones are cut there)", cut, len(ids), max_length)
    return embed_ids(model, ids, batch_size=batch_size, progress=progress)


def embed_file(
    model_dir: str | Path,
    input_path: str | Path,
    out: str | Path,
    text_field: str = "text",
    batch_size: int = 64,
    max_length: int = 512,
    device: str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Embed the texts of a file (`read_texts`) with an HF-format directory's model; write them to
    `out` (`write_embeddings`) and return them."""
    if Path(out).suffix not in (".npy", ".parquet"):
        raise ValueError(f"{out}: output must end in .npy or .parquet")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    # The shared --out check (before the work): not an input, not a directory, somewhere writable.
    check_output(out, [model_dir, input_path], is_own=lambda _: False, overwrite=None, file=True)
    texts = read_texts(input_path, text_field)
    model, tokenizer = load(model_dir, device)
    vectors = embed(model, tokenizer, texts, batch_size, max_length, progress=progress)
    write_embeddings(out, vectors, texts)
    return vectors


# ---------------------------------------------------------------------------------------------- files
def read_texts(path: str | Path, text_field: str = "text") -> list[str]:
    """Texts from `.txt` (one per line; an empty line is an error) or `.jsonl` (a `text_field` per object)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(not_found(path, "file"))
    if path.suffix not in (".txt", ".jsonl"):
        raise ValueError(f"{path}: expected a .txt (one text per line) or .jsonl file")
    if path.suffix == ".txt" and text_field != "text":  # accepted and ignored would mislead
        raise ValueError(f"{path}: a text field ({text_field!r}) applies to .jsonl input, not .txt")
    texts = []
    if path.suffix == ".jsonl":
        for lineno, record in iter_jsonl(path):
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise BadInputError(
                    f"expected an object with a string {text_field!r} field", str(path), lineno
                )
            texts.append(record[text_field])
    else:
        for lineno, line in iter_lines(path):
            if not line.strip():
                raise BadInputError(
                    "empty line (one text per line; row i of the output is line i)", str(path), lineno
                )
            texts.append(line)
    if not texts:
        raise BadInputError("no texts", str(path))
    return texts


def write_embeddings(path: str | Path, vectors: np.ndarray, texts: Sequence[str]) -> Path:
    """`.npy` (the float32 matrix) or `.parquet` (columns `text` and `embedding`), written atomically."""
    path = Path(path)
    if path.suffix == ".npy":
        with atomic_open(path, "wb") as f:
            np.save(f, vectors)
    elif path.suffix == ".parquet":
        dim = vectors.shape[1]
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
        table = pa.table({"text": pa.array(list(texts), pa.string()), "embedding": column})
        with atomic_open(path, "wb") as f:
            pq.write_table(table, f)
    else:
        raise ValueError(f"{path}: output must end in .npy or .parquet")
    return path
