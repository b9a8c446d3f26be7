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
    """What the packer reads from a document (the sampler's `SampledDocument` has these).

    `length` is known without reading the document; `tokens` is read only when a piece of the document
    lands in a batch that is built (`next_batch`), never for rows passed over (`skip`).
    """

    source: str
    lang: str

    @property
    def length(self) -> int: ...

    @property
    def tokens(self) -> np.ndarray: ...


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
    """The document being packed: its wrapped form `<bos> tokens <eos>` (`size` tokens), of which
    `[start:]` is still to place. The wrapped tokens are built on the first piece that needs them."""

    source: str
    lang: str
    doc: PackableDocument | None  # where the tokens come from (None: `wrapped` given, a restored carry)
    size: int
    start: int = 0
    split: bool = False  # already cut once (so it is counted once in `split_documents`)
    wrapped: np.ndarray | None = field(default=None, repr=False)

    def piece(self, start: int, stop: int, bos_id: int, eos_id: int) -> np.ndarray:
        """Tokens `[start:stop]` of the wrapped document (reads the document the first time)."""
        if self.wrapped is None:
            assert self.doc is not None
            tokens = np.asarray(self.doc.tokens, dtype=np.int64)
            if tokens.size + 2 != self.size:
                raise ValueError(
                    f"{self.source}/{self.lang}: a document of {self.size - 2} tokens read as {tokens.size}"
                )
            wrapped = np.empty(self.size, dtype=np.int64)
            wrapped[0], wrapped[1:-1], wrapped[-1] = bos_id, tokens, eos_id
            self.wrapped = wrapped
        return self.wrapped[start:stop]


@dataclass
class _Piece:
    """A run of one document's wrapped tokens placed in a row."""

    carry: _Carry
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class Packer:
    """Packs documents into batches of rows; Stateful (`state_dict`/`load_state_dict`)."""

    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    stats: PackStats = field(default_factory=PackStats)
    _carry: _Carry | None = field(default=None, init=False, repr=False)

    def _start(self, doc: PackableDocument) -> _Carry:
        self.stats.documents += 1
        return _Carry(doc.source, doc.lang, doc, int(doc.length) + 2)

    def _layout(
        self, documents: Iterator[PackableDocument], num_rows: int, seq_len: int
    ) -> tuple[list[_Piece], int]:
        """Place the next `num_rows` rows of `seq_len` from the documents' lengths alone (nothing read):
        the pieces in order and the rows filled. Advances the carry and the statistics."""
        if num_rows < 1 or seq_len < 1:
            raise ValueError(f"num_rows and seq_len must be >= 1, got {num_rows}, {seq_len}")
        pieces: list[_Piece] = []
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
                    self._carry = self._start(doc)
                carry = self._carry
                take = min(space, carry.size - carry.start)
                pieces.append(_Piece(carry, carry.start, carry.start + take))
                space -= take
                carry.start += take
                if carry.start < carry.size:
                    # The row is full and the document is not: carry the rest to the next row.
                    if not carry.split:
                        self.stats.split_documents += 1
                    carry.split = True
                else:
                    self._carry = None
            if space < seq_len:
                rows += 1
                self.stats.rows += 1
                self.stats.capacity += seq_len
        self.stats.tokens += sum(p.size for p in pieces)
        self.stats.pieces += len(pieces)
        return pieces, rows

    def skip(self, documents: Iterator[PackableDocument], num_rows: int, seq_len: int) -> int:
        """Pass over the next `num_rows` rows exactly as `next_batch` would pack them (same documents
        drawn, same carry and statistics after), reading no document: only their lengths. Returns
        the rows passed (fewer when `documents` ran out)."""
        return self._layout(documents, num_rows, seq_len)[1]

    def next_batch(
        self, documents: Iterator[PackableDocument], num_rows: int, seq_len: int
    ) -> PackedBatch | None:
        """The next `num_rows` rows of `seq_len` tokens, drawing documents from `documents` as needed.

        The batch holds N == num_rows * seq_len tokens unless `documents` ran out (then the last row
        is short); None if it ran out before the first token. Its per-language and per-source counts
        are real tokens, bos/eos included.
        """
        pieces, rows = self._layout(documents, num_rows, seq_len)
        if not pieces:
            return None
        per_lang: dict[str, int] = {}
        per_source: dict[str, int] = {}
        for p in pieces:
            per_lang[p.carry.lang] = per_lang.get(p.carry.lang, 0) + p.size
            per_source[p.carry.source] = per_source.get(p.carry.source, 0) + p.size
        lengths = [p.size for p in pieces]
        cu = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=cu[1:])
        ids = [p.carry.piece(p.start, p.stop, self.bos_id, self.eos_id) for p in pieces]
        return PackedBatch(
            input_ids=torch.from_numpy(np.concatenate(ids)),  # (N,)
            cu_seqlens=torch.from_numpy(cu),  # (S+1,)
            max_seqlen=int(max(lengths)),
            num_rows=rows,
            seq_len=seq_len,
            segment_languages=[p.carry.lang for p in pieces],
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
        if self._carry is not None:  # its tokens are read here if no built batch needed them
            c = self._carry
            rest = c.piece(c.start, c.size, self.bos_id, self.eos_id)
            carry = {"source": c.source, "lang": c.lang, "tokens": rest.tolist(), "split": c.split}
        return {"carry": carry, "stats": dict(self.stats.__dict__)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        carry = state["carry"]
        self._carry = None
        if carry is not None:
            tokens = np.asarray(carry["tokens"], dtype=np.int64)
            self._carry = _Carry(
                carry["source"], carry["lang"], None, tokens.size, split=bool(carry["split"]), wrapped=tokens
            )
        self.stats = PackStats(**state["stats"])
