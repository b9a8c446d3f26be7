"""Sequence packing: documents -> rows of `seq_len` tokens in one flat stream with `cu_seqlens`.

The trainer feeds the model unpadded: a batch is one flat token stream (`input_ids`, shape (N,)) and
the boundaries of its sequences (`cu_seqlens`, int32, shape (S+1,)), so attention never crosses a
document and no compute goes to padding. Rows of `seq_len` tokens bound the longest sequence
(`max_seqlen <= seq_len`) and so the attention cost, exactly like mmBERT's packed 1024/8192 rows.

Each document is wrapped `<bos> tokens <eos>` (ids 2 and 1). Rows are filled greedily and completely:
when a document does not fit in what is left of a row, it is *split*: the head fills the row and the
remainder is carried into the next row (and the next batch: the carry is part of the state). Each
piece is its own sequence in `cu_seqlens` (positions restart at 0, no attention between pieces), so a
long document becomes several sequences of at most `seq_len` tokens: the first piece starts with
`<bos>`, the last ends with `<eos>`, and middle pieces have neither. That choice keeps every row 100%
real tokens (no padding at all while documents keep coming), at the cost of some sequences that start
or end mid-document, which is also what training on pre-chunked data (mmBERT's MDS shards) does.

`seq_len` is an argument of each `next_batch` call, so a phase change (1024 -> 8192) needs no rebuild;
the carried remainder is simply split at the new length.

`PackedBatch` is the one packed-batch type of the project: what the packer emits for training and what
inference, evaluation and fine-tuning build from token lists (`PackedBatch.from_sequences`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from mmbert.tokens import BOS_ID, EOS_ID, IGNORE_INDEX

logger = logging.getLogger(__name__)


@dataclass
class PackedBatch:
    """Sequences end to end in one flat stream, no padding: the model's packed input.

    Sequence i is `input_ids[cu_seqlens[i]:cu_seqlens[i + 1]]`; positions restart at every sequence and
    no token attends across a boundary. `labels` (MLM targets, `IGNORE_INDEX` elsewhere) is set by
    masking; the per-language and per-source counts are the packer's bookkeeping.
    """

    input_ids: torch.Tensor  # (N,) int64
    cu_seqlens: torch.Tensor  # (S+1,) int32
    max_seqlen: int
    labels: torch.Tensor | None = None  # (N,) int64
    num_rows: int = 0  # rows of `seq_len` the packer filled (0 when not packed into rows)
    seq_len: int = 0
    segment_languages: list[str] = field(default_factory=list)  # (S,)
    tokens_per_language: dict[str, int] = field(default_factory=dict)
    tokens_per_source: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_sequences(
        cls, sequences: Sequence[Sequence[int]], device: str | torch.device = "cpu"
    ) -> PackedBatch:
        """Token id lists -> one packed batch (each list is one sequence, kept whole)."""
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int32)
        cu = torch.nn.functional.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
        flat = torch.tensor([t for s in sequences for t in s], dtype=torch.long)
        return cls(flat.to(device), cu.to(device), int(lengths.max()))

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())

    @property
    def num_masked(self) -> int:
        """Positions with a label (0 before masking)."""
        return 0 if self.labels is None else int((self.labels != IGNORE_INDEX).sum())

    def lengths(self) -> list[int]:
        return torch.diff(self.cu_seqlens).tolist()

    def model_inputs(self, device: str | torch.device) -> dict[str, Any]:
        """The keyword arguments of the model's packed forward, on `device`."""
        inputs = {
            "input_ids": self.input_ids.to(device, non_blocking=True),
            "cu_seqlens": self.cu_seqlens.to(device, non_blocking=True),
            "max_seqlen": self.max_seqlen,
        }
        if self.labels is not None:
            inputs["labels"] = self.labels.to(device, non_blocking=True)
        return inputs


class PackableDocument(Protocol):
    """What the packer reads from a document (the sampler's `SampledDocument` has these)."""

    source: str
    lang: str
    tokens: np.ndarray


@dataclass
class PackStats:
    """Running totals: how full the rows are and how often documents are split."""

    rows: int = 0
    capacity: int = 0  # rows * seq_len
    tokens: int = 0  # real tokens emitted (bos/eos included)
    documents: int = 0  # documents started
    pieces: int = 0  # sequences emitted
    split_documents: int = 0  # documents cut across rows at least once

    @property
    def efficiency(self) -> float:
        """Fraction of the row capacity holding real tokens (1.0 = no padding)."""
        return self.tokens / self.capacity if self.capacity else 1.0


@dataclass
class _Carry:
    source: str
    lang: str
    tokens: np.ndarray  # the rest of the wrapped document (ends with <eos>)
    split: bool = False  # already cut once (so it is counted once in `split_documents`)


@dataclass
class Packer:
    """Packs documents into batches of rows; Stateful (`state_dict`/`load_state_dict`)."""

    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    stats: PackStats = field(default_factory=PackStats)
    _carry: _Carry | None = field(default=None, init=False, repr=False)

    def _wrap(self, doc: PackableDocument) -> _Carry:
        tokens = np.asarray(doc.tokens, dtype=np.int64)
        wrapped = np.empty(tokens.size + 2, dtype=np.int64)
        wrapped[0], wrapped[1:-1], wrapped[-1] = self.bos_id, tokens, self.eos_id
        self.stats.documents += 1
        return _Carry(doc.source, doc.lang, wrapped)

    def next_batch(
        self, documents: Iterator[PackableDocument], num_rows: int, seq_len: int
    ) -> PackedBatch | None:
        """The next `num_rows` rows of `seq_len` tokens, drawing documents from `documents` as needed.

        The batch holds N == num_rows * seq_len tokens unless `documents` ran out (then the last row
        is short); None if it ran out before the first token. Its per-language and per-source counts
        are real tokens, bos/eos included.
        """
        if num_rows < 1 or seq_len < 1:
            raise ValueError(f"num_rows and seq_len must be >= 1, got {num_rows}, {seq_len}")
        pieces: list[np.ndarray] = []
        lengths: list[int] = []
        langs: list[str] = []
        per_lang: dict[str, int] = {}
        per_source: dict[str, int] = {}
        exhausted = False
        rows = 0
        while rows < num_rows and not exhausted:
            space = seq_len
            while space > 0:
                if self._carry is None:
                    doc = next(documents, None)
                    if doc is None:
                        exhausted = True
                        break
                    self._carry = self._wrap(doc)
                carry = self._carry
                piece = carry.tokens[:space]
                pieces.append(piece)
                lengths.append(piece.size)
                langs.append(carry.lang)
                per_lang[carry.lang] = per_lang.get(carry.lang, 0) + piece.size
                per_source[carry.source] = per_source.get(carry.source, 0) + piece.size
                space -= piece.size
                if piece.size < carry.tokens.size:
                    # The row is full and the document is not: carry the rest to the next row.
                    if not carry.split:
                        self.stats.split_documents += 1
                    carry.tokens, carry.split = carry.tokens[piece.size :], True
                else:
                    self._carry = None
            if space < seq_len:
                rows += 1
                self.stats.rows += 1
                self.stats.capacity += seq_len
        if not lengths:
            return None
        n = int(sum(lengths))
        self.stats.tokens += n
        self.stats.pieces += len(lengths)
        cu = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=cu[1:])
        return PackedBatch(
            input_ids=torch.from_numpy(np.concatenate(pieces)),  # (N,)
            cu_seqlens=torch.from_numpy(cu),  # (S+1,)
            max_seqlen=int(max(lengths)),
            num_rows=rows,
            seq_len=seq_len,
            segment_languages=langs,
            tokens_per_language=per_lang,
            tokens_per_source=per_source,
        )

    def log_efficiency(self) -> None:
        s = self.stats
        logger.info(
            "packer: %d rows, %.2f%% real tokens, %d documents (%d split), %.2f sequences per row",
            s.rows,
            100 * s.efficiency,
            s.documents,
            s.split_documents,
            s.pieces / max(s.rows, 1),
        )

    def state_dict(self) -> dict[str, Any]:
        carry = None
        if self._carry is not None:
            c = self._carry
            carry = {"source": c.source, "lang": c.lang, "tokens": c.tokens.tolist(), "split": c.split}
        return {"carry": carry, "stats": dict(self.stats.__dict__)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        carry = state["carry"]
        self._carry = None
        if carry is not None:
            tokens = np.asarray(carry["tokens"], dtype=np.int64)
            self._carry = _Carry(carry["source"], carry["lang"], tokens, bool(carry["split"]))
        self.stats = PackStats(**state["stats"])
