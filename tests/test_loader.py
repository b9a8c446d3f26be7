"""The batch loader reads only its own rows: the same micro-batches and state as packing every row,
for any number of ranks, across a phase change, an epoch wrap and a resume; a quarter of the reads at 4 ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmbert.data.loader import BatchLoader
from mmbert.recipe import Phase, _build
from tests.conftest import FakeStore

VOCAB = 1000
SEQ_LENS = (32, 32, 32, 64, 64, 64)  # the phase (and the row length) changes after three steps
STEP_TOKENS = 24 * 32  # 24 rows, then 12: uneven slices for 3 ranks as well as 4 under the second
MASK_RATE = 0.3


def _phase(name: str, languages) -> Phase:
    base = {"name": name, "tokens": 10_000, "languages": languages, "tau": 0.5,
            "sources": [{"name": "web", "share": 0.7}, {"name": "code", "share": 0.3}]}  # fmt: skip
    return _build(Phase, base, "")


PHASES = [_phase("first", ["fra_Latn", "code"]), _phase("second", "all")]


class CountingStore(FakeStore):
    """Counts the tokens read (documents) and the lengths read (offsets)."""

    def __init__(self, cells) -> None:
        super().__init__(cells)
        self.tokens_read = 0
        self.lengths_read = 0

    def doc(self, source, lang, i):
        tokens = super().doc(source, lang, i)
        self.tokens_read += tokens.size
        return tokens

    def doc_length(self, source, lang, i):
        self.lengths_read += 1
        return super().doc_length(source, lang, i)


def _store() -> CountingStore:
    """Documents of 1 to 150 tokens (some span several 32-token rows); small cells, so epochs wrap."""
    rng = np.random.default_rng(0)
    sizes = {("web", "fra_Latn"): 12, ("web", "deu_Latn"): 10, ("code", "code"): 8}
    return CountingStore({k: rng.integers(1, 150, n).tolist() for k, n in sizes.items()})


class PackEveryRow(BatchLoader):
    """The loader as it was: every rank packs (and reads) the other ranks' rows too."""

    def _skip(self, rows: int, seq_len: int) -> None:
        if rows > 0:
            self._pack(rows, seq_len)


def _loader(cls, store, rank: int, world_size: int) -> BatchLoader:
    return cls(store, PHASES, seed=3, rank=rank, world_size=world_size, vocab_size=VOCAB,
               micro_batch_tokens=128, read_ahead=8)  # fmt: skip


def _step(loader: BatchLoader, index: int) -> list[tuple]:
    loader.set_phase(0 if index < 3 else 1, report=False)
    micro = loader.next_step(STEP_TOKENS, SEQ_LENS[index], MASK_RATE)
    return [(b.input_ids, b.labels, b.cu_seqlens, b.segment_languages, b.num_rows) for b in micro]


def _same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(p, q, strict=True))
        for p, q in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_each_rank_gets_what_packing_every_row_gives_across_phases_epochs_and_a_resume(world_size) -> None:
    store = _store()
    for rank in range(world_size):
        lazy, eager = (
            _loader(BatchLoader, store, rank, world_size),
            _loader(PackEveryRow, store, rank, world_size),
        )
        for index in range(len(SEQ_LENS)):
            if index == 4:  # resume both from the lazy loader's state, into fresh loaders
                state = lazy.state_dict()
                lazy, eager = (
                    _loader(BatchLoader, store, rank, world_size),
                    _loader(PackEveryRow, store, rank, world_size),
                )
                lazy.load_state_dict(state)
                eager.load_state_dict(state)
            assert _same(_step(lazy, index), _step(eager, index)), (rank, index)
            assert lazy.state_dict() == eager.state_dict()
        assert max(lazy.sampler.epochs().values()) > 1  # the small cells wrapped


def test_ranks_together_train_the_one_rank_rows() -> None:
    store = _store()
    one = _loader(BatchLoader, store, 0, 1)
    four = [_loader(BatchLoader, store, r, 4) for r in range(4)]
    for index in range(len(SEQ_LENS)):
        whole = torch.cat([m[0] for m in _step(one, index)])
        assert torch.equal(whole, torch.cat([m[0] for loader in four for m in _step(loader, index)]))


def test_a_rank_of_four_reads_a_quarter_of_the_tokens() -> None:
    """Tokens read per rank: its rows' tokens plus at most the two documents straddling its slice's
    ends; the others' documents cost a length each."""
    longest = max(max(lengths) for lengths in _store().cells.values())
    for rank in range(4):
        store = _store()
        loader = _loader(BatchLoader, store, rank, 4)
        eager_store = _store()
        eager = _loader(PackEveryRow, eager_store, rank, 4)
        for index in range(3):  # 24 rows of 32 a step, 6 per rank
            before = store.tokens_read
            _step(loader, index)
            _step(eager, index)
            own = 6 * 32
            assert store.tokens_read - before <= own + 2 * longest
        drawn = sum(loader.sampler.realized_docs.values())
        # One length per document drawn, and the read-ahead's: 8 queued, one waiting for room.
        assert drawn <= store.lengths_read <= drawn + 9
        assert eager_store.tokens_read >= 3 * 24 * 32 - 2 * drawn  # bos/eos are not read
        assert store.tokens_read < eager_store.tokens_read / 4 + 3 * 2 * longest
