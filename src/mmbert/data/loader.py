"""The training batch pipeline: one global stream (sampler -> packer -> masking) that every rank cuts the same way.

The data stream does not depend on the number of ranks. For each optimizer step every rank draws the
global batch's documents with the same seed and packs them into the same global rows of the phase's
`seq_len`; rank r of w then takes its contiguous slice of those rows (rows `[r*G//w, (r+1)*G//w)` of
the step's G rows) and cuts it into micro-batches of at most `micro_batch_tokens` tokens, so that memory
stays bounded whatever the batch size. Masks are drawn per global row, from a generator seeded by the
run's seed and the row's number in the run, so a row is masked the same way whichever rank trains it.
The documents of every step, their packing and their masks are therefore the same on 1, 2 or 8 ranks,
and so is the state: a checkpoint written by w ranks continues the identical stream on any w'.

Reads: a rank reads the tokens of its own rows only. Every rank draws all the step's documents, but a
drawn document is lazy (`SampledDocument`: its length from its two offsets, 16 bytes; its tokens read
on first use), and the packer lays rows out from lengths alone: the rows before and after this rank's
slice are passed over (`Packer.skip`: the same documents drawn, the same carry and statistics after,
nothing read), and only the documents with a piece in this rank's rows are read, whole (a document
straddling into the slice from another rank's row included). So bytes read per rank per step are the
rank's own tokens, plus the straddling documents' other pieces, plus 16 bytes per document of the
global batch (at 64 ranks and documents of ~1,000 tokens, ~1 KiB per ~4 KiB document of its own). The
sampler's read-ahead thread reads the lengths ahead (for w ranks, w times as many small reads as
documents trained on, so these are the reads worth taking out of the step); the tokens of the rank's
own documents are read one step ahead: `prefetch(...)` builds the next step's micro-batches in one
background thread while this step trains, and `next_step` with the same arguments returns them
(other arguments: the prefetch is undone and the step built in place, the same batches either way). A checkpoint reads the one
document carried over the step's end if no built row needed it (the packer's state holds its tokens).

A phase change swaps only the sampler's mixture: positions in every (source, language) cell carry on,
so a later phase does not restart a language's data, and the packer's carried document remainder is
cut at the new `seq_len`. Every phase is resolved against the data when the loader is built, so a
language set that matches nothing fails before the first step; the phases before `first_phase` (a run
started from a later phase, `mmbert train --from-phase`) are never drawn from and not resolved.

Stateful: `state_dict()` holds the sampler's and the packer's states and the number of global rows
drawn; it is the same on every rank, and `load_state_dict` on a fresh loader (any rank, any world
size) continues the identical stream (nothing is re-read or re-drawn). The read-ahead (`read_ahead`
lengths, 0: none) changes neither the stream nor the state, and neither does the step prefetch: while a
step is prefetched, `state_dict()` is the snapshot taken before it (the position after the steps
returned), and a phase change, `load_state_dict` or `close` first waits for it and undoes it.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch

from mmbert.data.masking import mask_tokens
from mmbert.data.mixture import Mixture, PhaseMixture, recipe_mixtures
from mmbert.data.packing import PackedBatch, Packer
from mmbert.data.sampler import DEFAULT_READ_AHEAD, DataSampler, DocumentStore, store_counts
from mmbert.seeds import derive_seed


def global_rows(step_tokens: int, seq_len: int) -> int:
    """Rows of `seq_len` in a global batch of `step_tokens` tokens (at least one)."""
    return max(1, -(-step_tokens // seq_len))


def rank_rows(rows: int, rank: int, world_size: int) -> range:
    """The contiguous slice of a step's `rows` global rows that `rank` of `world_size` trains on."""
    return range(rank * rows // world_size, (rank + 1) * rows // world_size)


@dataclass
class _Prefetch:
    """A step being built in the background: its arguments, the state before it, its result."""

    args: tuple[int, int, float]
    snapshot: dict[str, Any]
    thread: threading.Thread
    result: Future

    def wait(self) -> list[PackedBatch]:
        self.thread.join()
        return self.result.result()


class BatchLoader:
    """Masked, packed micro-batches of one rank's slice of the global stream drawn from a data store."""

    def __init__(
        self,
        store: DocumentStore,
        phases: list[PhaseMixture],
        *,
        seed: int,
        rank: int,
        world_size: int,
        vocab_size: int,
        micro_batch_tokens: int,
        first_phase: int = 0,
        read_ahead: int = DEFAULT_READ_AHEAD,
        prefetch: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        resolved = recipe_mixtures(phases[first_phase:], store_counts(store))
        self.mixtures: list[Mixture | None] = [None] * first_phase + resolved
        # One stream for the whole run, the same on every rank (the sampler's own rank split unused).
        self.sampler = DataSampler(store, resolved[0], seed=seed, read_ahead=read_ahead)
        self.packer = Packer()
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.vocab_size = vocab_size
        self.micro_batch_tokens = micro_batch_tokens
        self.rows_drawn = 0  # global rows packed so far in the run (numbers the rows' masks)
        self._language_tokens: Counter = Counter()
        self.prefetch_enabled = prefetch  # False: `prefetch` does nothing, every step is built in place
        self._pending: _Prefetch | None = None

    def set_phase(self, index: int, report: bool = True) -> None:
        """Switch to phase `index`'s mixture; `report` logs the realized shares of the phase that ends."""
        mixture = self.mixtures[index]
        if mixture is None:
            raise ValueError(f"phase {index} comes before the first phase this loader draws from")
        if self.sampler.mixture is not mixture:
            self._discard()  # a step prefetched in the old phase is drawn again in the new one
            if report:
                self.sampler.log_realized()
                self.packer.log_efficiency()
            self.sampler.set_phase(mixture)

    def rows_per_micro(self, seq_len: int) -> int:
        return max(1, self.micro_batch_tokens // seq_len)

    def micro_batches(self, step_tokens: int, seq_len: int) -> int:
        """Micro-batches of the rank with the most rows: every rank runs as many forward and backward
        passes (FSDP gathers each layer's weights in every one), a rank with fewer rows pads with
        passes that weigh nothing."""
        most = -(-global_rows(step_tokens, seq_len) // self.world_size)
        return -(-most // self.rows_per_micro(seq_len))

    def next_step(self, step_tokens: int, seq_len: int, mask_rate: float) -> list[PackedBatch]:
        """This rank's slice of the next global batch of `step_tokens` tokens, as masked micro-batches
        (at most `micro_batches(...)`; none when the batch has fewer rows than there are ranks and this
        rank's slice is empty). The step prefetched with the same arguments, if any."""
        args = (step_tokens, seq_len, mask_rate)
        pending, self._pending = self._pending, None
        if pending is not None and pending.args == args:
            try:
                micro = pending.wait()
            except BaseException:
                self._restore(pending.snapshot)
                raise
        else:
            if pending is not None:
                self._undo(pending)
            micro = self._build(*args)
        for batch in micro:  # counted when trained on, not when prefetched
            self._language_tokens.update(batch.tokens_per_language)
        return micro

    def prefetch(self, step_tokens: int, seq_len: int, mask_rate: float) -> None:
        """Start building the step `next_step(step_tokens, seq_len, mask_rate)` will return, in one
        background thread (its documents' tokens are read there); the state is snapshot first."""
        if not self.prefetch_enabled:
            return
        self._discard()
        args = (step_tokens, seq_len, mask_rate)
        snapshot = copy.deepcopy(self.state_dict())
        result: Future = Future()

        def build() -> None:
            try:
                result.set_result(self._build(*args))
            except BaseException as error:  # raised again by `next_step`
                result.set_exception(error)

        thread = threading.Thread(target=build, name="mmbert-batch-prefetch", daemon=True)
        self._pending = _Prefetch(args, snapshot, thread, result)
        thread.start()

    def _discard(self) -> None:
        """Undo a pending prefetch (the stream returns to where the steps returned left it)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._undo(pending)

    def _undo(self, pending: _Prefetch) -> None:
        pending.thread.join()
        self._restore(pending.snapshot)

    def _restore(self, snapshot: dict[str, Any]) -> None:
        self.sampler.load_state_dict(snapshot["sampler"])
        self.packer.load_state_dict(snapshot["packer"])
        self.rows_drawn = int(snapshot["rows_drawn"])

    def _build(self, step_tokens: int, seq_len: int, mask_rate: float) -> list[PackedBatch]:
        rows = global_rows(step_tokens, seq_len)
        mine = rank_rows(rows, self.rank, self.world_size)
        self._skip(mine.start, seq_len)
        rows_per_micro = self.rows_per_micro(seq_len)
        micro = []
        for first in range(mine.start, mine.stop, rows_per_micro):
            take = min(rows_per_micro, mine.stop - first)
            batch = self._pack(take, seq_len)
            self._mask(batch, self.rows_drawn - take, mask_rate)
            micro.append(batch)
        self._skip(rows - mine.stop, seq_len)
        return micro

    def _pack(self, rows: int, seq_len: int) -> PackedBatch:
        batch = self.packer.next_batch(iter(self.sampler), rows, seq_len)
        assert batch is not None and batch.num_rows == rows  # the sampler never runs out: another epoch
        self.rows_drawn += rows
        return batch

    def _skip(self, rows: int, seq_len: int) -> None:
        """Pass over `rows` global rows that other ranks train on: the stream goes through their
        documents, which are laid out from their lengths and never read."""
        if rows > 0:
            skipped = self.packer.skip(iter(self.sampler), rows, seq_len)
            assert skipped == rows  # the sampler never runs out: another epoch
            self.rows_drawn += rows

    def _mask(self, batch: PackedBatch, first_row: int, rate: float) -> None:
        """Mask each row with the generator of its global row number (rows are `seq_len` apart)."""
        ids, labels = [], []
        for k, row in enumerate(batch.input_ids.split(batch.seq_len)):
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "mask", first_row + k))
            masked, label = mask_tokens(row, rate, generator, self.vocab_size)
            ids.append(masked)
            labels.append(label)
        batch.input_ids, batch.labels = torch.cat(ids), torch.cat(labels)

    def close(self) -> None:
        """Stop reading ahead and close the store's open shards (drawing again restarts both): a run
        that ends leaves no thread and no descriptor behind, however long its process lives on."""
        self._discard()
        self.sampler.close()
        close_store = getattr(self.sampler.store, "close", None)
        if close_store is not None:
            close_store()

    def take_language_tokens(self) -> dict[str, int]:
        """Tokens this rank trained on per language since the last call (summed over ranks: the batch's)."""
        counts, self._language_tokens = dict(self._language_tokens), Counter()
        return counts

    def state_dict(self) -> dict[str, Any]:
        """The stream's position after the steps returned (a prefetched step not counted)."""
        if self._pending is not None:
            return copy.deepcopy(self._pending.snapshot)
        return {
            "sampler": self.sampler.state_dict(),
            "packer": self.packer.state_dict(),
            "rows_drawn": self.rows_drawn,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream saved by `state_dict`, then return to the current phase's mixture."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.thread.join()  # its state is replaced below
        phase_name = state["sampler"]["phase_name"]
        saved = next((m for m in self.mixtures if m is not None and m.phase_name == phase_name), None)
        if saved is None:
            raise ValueError(
                f"the checkpoint's data stream is in phase {phase_name!r}, which this recipe lacks"
            )
        current = self.sampler.mixture
        self.sampler.set_phase(saved)
        self.sampler.load_state_dict(state["sampler"])
        self.sampler.set_phase(current)
        self.packer.load_state_dict(state["packer"])
        self.rows_drawn = int(state["rows_drawn"])
