"""BatchLoader (`mmbert.data.loader`): a saved stream continues identically across a phase change, and
the phases are resolved against the data when the loader is built; a rank reads only its own rows' documents
and gets exactly what packing (and reading) every row gives."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from mmbert.data.loader import BatchLoader
from mmbert.recipe import Recipe, RecipeError
from tests.helpers.data import FakeStore

STORE = FakeStore(
    {
        ("web", "fra_Latn"): [20] * 40,
        ("web", "deu_Latn"): [30] * 40,
        ("web", "swh_Latn"): [25] * 40,
    }
)
# Two phases: the second adds a language, doubles the context and masks less.
PHASES = [
    {
        "name": "first",
        "tokens": 10_000,
        "languages": ["fra_Latn", "deu_Latn"],
        "seq_len": 32,
        "mask_rate": 0.3,
    },
    {"name": "second", "tokens": 10_000, "languages": "all", "seq_len": 64, "mask_rate": 0.15},
]
STEP_TOKENS = 256


def _loader(phases: list[dict] = PHASES, first_phase: int = 0) -> BatchLoader:
    recipe = Recipe.from_dict({"phases": phases})
    return BatchLoader(
        STORE,
        recipe.phases,
        seed=3,
        rank=0,
        world_size=1,
        vocab_size=64,
        micro_batch_tokens=128,
        first_phase=first_phase,
    )


def _steps(loader: BatchLoader, phase: int, steps: int) -> list[tuple]:
    """`steps` optimizer steps of `phase`: every micro-batch's ids, labels, boundaries and languages."""
    loader.set_phase(phase, report=False)
    spec = PHASES[phase]
    out = []
    for _ in range(steps):
        for batch in loader.next_step(STEP_TOKENS, spec["seq_len"], spec["mask_rate"]):
            out.append(
                (
                    batch.input_ids.tolist(),
                    batch.labels.tolist(),
                    batch.cu_seqlens.tolist(),
                    sorted(batch.tokens_per_language),
                )
            )
    return out


def test_a_state_saved_before_a_phase_change_continues_the_same_stream_after_it():
    reference = _loader()
    _steps(reference, 0, 3)
    state = copy.deepcopy(reference.state_dict())
    expected = _steps(reference, 0, 1) + _steps(reference, 1, 4)
    assert any("swh_Latn" in langs for *_, langs in expected)  # the second phase's mixture is drawn

    resumed = _loader()
    resumed.load_state_dict(state)
    assert _steps(resumed, 0, 1) + _steps(resumed, 1, 4) == expected


def test_a_state_saved_after_a_phase_change_continues_in_the_new_phase():
    reference = _loader()
    _steps(reference, 0, 2)
    _steps(reference, 1, 2)
    state = copy.deepcopy(reference.state_dict())
    expected = _steps(reference, 1, 3)

    resumed = _loader()  # a fresh run process: its loader starts at the first phase
    resumed.set_phase(1, report=False)
    resumed.load_state_dict(state)
    assert _steps(resumed, 1, 3) == expected


def test_phases_are_resolved_when_the_loader_is_built_except_those_before_the_first():
    unmatched = [{**PHASES[0], "languages": ["tir_Ethi"]}, PHASES[1]]
    with pytest.raises(RecipeError, match="tir_Ethi"):
        _loader(unmatched)
    later = _loader(unmatched, first_phase=1)  # `--from-phase`: the skipped phase is never resolved
    assert _steps(later, 1, 1)
    with pytest.raises(ValueError, match="before the first phase"):
        later.set_phase(0)


# ---------------------------------------------------------------------------------------------- ranks
# A rank reads only its own rows: the same micro-batches and state as packing every row, for any number
# of ranks, across a phase change, an epoch wrap and a resume; about a quarter of the reads at 4 ranks.
RANK_VOCAB = 1000
RANK_SEQ_LENS = (32, 32, 32, 64, 64, 64)  # the phase (and the row length) changes after three steps
RANK_STEP_TOKENS = 24 * 32  # 24 rows, then 12: uneven slices for 3 ranks as well as 4 under the second
RANK_MASK_RATE = 0.3


def _rank_phase(name: str, languages) -> dict:
    return {"name": name, "tokens": 10_000, "languages": languages, "tau": 0.5,
            "sources": [{"name": "web", "share": 0.7}, {"name": "code", "share": 0.3}]}  # fmt: skip


RANK_PHASES = Recipe.from_dict(
    {"phases": [_rank_phase("first", ["fra_Latn", "code"]), _rank_phase("second", "all")]}
).phases


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


def _counting_store() -> CountingStore:
    """Documents of 1 to 150 tokens (some span several 32-token rows); small cells, so epochs wrap."""
    rng = np.random.default_rng(0)
    sizes = {("web", "fra_Latn"): 12, ("web", "deu_Latn"): 10, ("code", "code"): 8}
    return CountingStore({k: rng.integers(1, 150, n).tolist() for k, n in sizes.items()})


class PackEveryRow(BatchLoader):
    """The loader as it was: every rank packs (and reads) the other ranks' rows too."""

    def _skip(self, rows: int, seq_len: int) -> None:
        if rows > 0:
            self._pack(rows, seq_len)


def _rank_loader(cls, store, rank: int, world_size: int, **options) -> BatchLoader:
    return cls(store, RANK_PHASES, seed=3, rank=rank, world_size=world_size, vocab_size=RANK_VOCAB,
               micro_batch_tokens=128, read_ahead=8, **options)  # fmt: skip


def _rank_step(loader: BatchLoader, index: int) -> list[tuple]:
    loader.set_phase(0 if index < 3 else 1, report=False)
    micro = loader.next_step(RANK_STEP_TOKENS, RANK_SEQ_LENS[index], RANK_MASK_RATE)
    return [(b.input_ids, b.labels, b.cu_seqlens, b.segment_languages, b.num_rows) for b in micro]


def _same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(p, q, strict=True))
        for p, q in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_each_rank_gets_what_packing_every_row_gives_across_phases_epochs_and_a_resume(world_size) -> None:
    store = _counting_store()
    for rank in range(world_size):
        lazy, eager = (
            _rank_loader(BatchLoader, store, rank, world_size),
            _rank_loader(PackEveryRow, store, rank, world_size),
        )
        for index in range(len(RANK_SEQ_LENS)):
            if index == 4:  # resume both from the lazy loader's state, into fresh loaders
                state = lazy.state_dict()
                lazy, eager = (
                    _rank_loader(BatchLoader, store, rank, world_size),
                    _rank_loader(PackEveryRow, store, rank, world_size),
                )
                lazy.load_state_dict(state)
                eager.load_state_dict(state)
            assert _same(_rank_step(lazy, index), _rank_step(eager, index)), (rank, index)
            assert lazy.state_dict() == eager.state_dict()
        assert max(lazy.sampler.epochs().values()) > 1  # the small cells wrapped


def test_ranks_together_train_the_one_rank_rows() -> None:
    store = _counting_store()
    one = _rank_loader(BatchLoader, store, 0, 1)
    four = [_rank_loader(BatchLoader, store, r, 4) for r in range(4)]
    for index in range(len(RANK_SEQ_LENS)):
        whole = torch.cat([m[0] for m in _rank_step(one, index)])
        assert torch.equal(whole, torch.cat([m[0] for loader in four for m in _rank_step(loader, index)]))


def test_a_rank_of_four_reads_a_quarter_of_the_tokens() -> None:
    """Tokens read per rank: its rows' tokens plus at most the two documents straddling its slice's
    ends; the others' documents cost a length each."""
    longest = max(max(lengths) for lengths in _counting_store().cells.values())
    for rank in range(4):
        store = _counting_store()
        loader = _rank_loader(BatchLoader, store, rank, 4)
        eager_store = _counting_store()
        eager = _rank_loader(PackEveryRow, eager_store, rank, 4)
        for index in range(3):  # 24 rows of 32 a step, 6 per rank
            before = store.tokens_read
            _rank_step(loader, index)
            _rank_step(eager, index)
            own = 6 * 32
            assert store.tokens_read - before <= own + 2 * longest
        drawn = sum(loader.sampler.realized_docs.values())
        # One length per document drawn, and the read-ahead's: 8 queued, one waiting for room.
        assert drawn <= store.lengths_read <= drawn + 9
        assert eager_store.tokens_read >= 3 * 24 * 32 - 2 * drawn  # bos/eos are not read
        assert store.tokens_read < eager_store.tokens_read / 4 + 3 * 2 * longest


# ------------------------------------------------------------------------------------------- prefetch
# The next step built in a background thread: the same micro-batches and states as building it in the
# step, across a phase change, a save and restore with a step pending, and arguments that then differ.
def _settings(index: int) -> tuple[int, int, float]:
    return RANK_STEP_TOKENS, RANK_SEQ_LENS[index], RANK_MASK_RATE


def _prefetched_run(store, rank: int, world_size: int, save_at: int) -> tuple[list, list, dict]:
    """The steps of `RANK_SEQ_LENS` with the next step prefetched within a phase (as the trainer
    does), restored into a fresh loader after step `save_at` from a state taken with a step pending;
    steps 1 and 3 (a phase change) are prefetched with other arguments first. Micro-batches, states
    and language counts."""
    loader = _rank_loader(BatchLoader, store, rank, world_size)
    steps, states, languages = [], [], {}
    for index in range(len(RANK_SEQ_LENS)):
        steps.append(_rank_step(loader, index))
        for lang, n in loader.take_language_tokens().items():
            languages[lang] = languages.get(lang, 0) + n
        if index == 0:  # other arguments than the next step's: undone, the step built in place
            loader.prefetch(RANK_STEP_TOKENS // 2, 32, RANK_MASK_RATE)
        elif index == 2:  # pending at a phase change: `set_phase` undoes it
            loader.prefetch(*_settings(index))
        elif index + 1 < len(RANK_SEQ_LENS) and RANK_SEQ_LENS[index + 1] == RANK_SEQ_LENS[index]:
            loader.prefetch(*_settings(index + 1))
        states.append(copy.deepcopy(loader.state_dict()))
        assert loader.take_language_tokens() == {}  # a prefetched step is not counted
        if index == save_at:
            assert loader._pending is not None
            loader._pending.wait()
            assert loader.rows_drawn > states[-1]["rows_drawn"]  # the next step is built, not saved
            resumed = _rank_loader(BatchLoader, store, rank, world_size)
            resumed.set_phase(0 if index < 3 else 1, report=False)  # as the trainer resumes
            resumed.load_state_dict(states[-1])
            loader.close()
            assert loader.state_dict() == states[-1]  # closing undid the prefetch
            loader = resumed
    loader.close()
    return steps, states, languages


@pytest.mark.parametrize("world_size", [1, 2])
def test_a_prefetched_step_is_the_step_built_in_place_across_phases_a_resume_and_other_arguments(world_size):
    store = _counting_store()
    for rank in range(world_size):
        plain = _rank_loader(BatchLoader, store, rank, world_size, prefetch=False)
        steps, states, languages = [], [], {}
        for index in range(len(RANK_SEQ_LENS)):
            steps.append(_rank_step(plain, index))
            plain.prefetch(*_settings(min(index + 1, len(RANK_SEQ_LENS) - 1)))  # switched off: nothing
            states.append(plain.state_dict())
            for lang, n in plain.take_language_tokens().items():
                languages[lang] = languages.get(lang, 0) + n
        got_steps, got_states, got_languages = _prefetched_run(store, rank, world_size, save_at=4)
        assert all(_same(a, b) for a, b in zip(steps, got_steps, strict=True)), rank
        assert got_states == states
        assert got_languages == languages
        assert any(len(s) for s in steps)  # each rank has rows to compare


def test_a_prefetch_runs_in_one_thread_that_is_gone_after_close():
    def threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "mmbert-batch-prefetch"]

    loader = _rank_loader(BatchLoader, _counting_store(), 0, 1)
    _rank_step(loader, 0)
    loader.prefetch(*_settings(1))
    assert len(threads()) <= 1
    loader.close()
    assert threads() == []
    assert loader._pending is None
