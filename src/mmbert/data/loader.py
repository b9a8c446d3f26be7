"""The training batch pipeline of one rank: sampler -> packer -> masking -> micro-batches, resumable.

One `BatchLoader` per rank lives for the whole run. For each optimizer step it takes this rank's share
of the global batch (whole rows of the phase's `seq_len`, the same number on every rank), cuts it into
micro-batches of at most `micro_batch_tokens` tokens so that memory stays bounded whatever the batch
size, and masks each one at the phase's rate with the rank's own generator.

A phase change swaps only the sampler's mixture: positions in every (source, language) cell carry on,
so a later phase does not restart a language's data, and the packer's carried document remainder is
cut at the new `seq_len`. Every phase is resolved against the data when the loader is built, so a
language set that matches nothing fails before the first step; the phases before `first_phase` (a run
started from a later phase, `mmbert train --from-phase`) are never drawn from and not resolved.

Stateful: `state_dict()` holds the sampler's, the packer's and the masking generator's states, and
`load_state_dict` on a fresh loader continues the identical stream (nothing is re-read or re-drawn).
The sampler reads up to `read_ahead` documents ahead in a background thread (0: none), which changes
neither the stream nor the state.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch

from mmbert.data.masking import mask_tokens
from mmbert.data.packing import PackedBatch, Packer
from mmbert.data.sampler import (
    DEFAULT_READ_AHEAD,
    DataSampler,
    DocumentStore,
    Mixture,
    recipe_mixtures,
    store_counts,
)
from mmbert.recipe import Phase
from mmbert.seeds import derive_seed


class BatchLoader:
    """Masked, packed micro-batches for one rank, drawn from a prepared data store."""

    def __init__(
        self,
        store: DocumentStore,
        phases: list[Phase],
        *,
        seed: int,
        rank: int,
        world_size: int,
        vocab_size: int,
        micro_batch_tokens: int,
        first_phase: int = 0,
        read_ahead: int = DEFAULT_READ_AHEAD,
    ) -> None:
        resolved = recipe_mixtures(phases[first_phase:], store_counts(store))
        self.mixtures: list[Mixture | None] = [None] * first_phase + resolved
        self.sampler = DataSampler(
            store, resolved[0], seed=seed, rank=rank, world_size=world_size, read_ahead=read_ahead
        )
        self.packer = Packer()
        self.mask_generator = torch.Generator().manual_seed(derive_seed(seed, "mask", rank))
        self.world_size = world_size
        self.vocab_size = vocab_size
        self.micro_batch_tokens = micro_batch_tokens
        self._language_tokens: Counter = Counter()

    def set_phase(self, index: int, report: bool = True) -> None:
        """Switch to phase `index`'s mixture; `report` logs the realized shares of the phase that ends."""
        mixture = self.mixtures[index]
        if mixture is None:
            raise ValueError(f"phase {index} comes before the first phase this loader draws from")
        if self.sampler.mixture is not mixture:
            if report:
                self.sampler.log_realized()
                self.packer.log_efficiency()
            self.sampler.set_phase(mixture)

    def next_step(self, step_tokens: int, seq_len: int, mask_rate: float) -> list[PackedBatch]:
        """This rank's share of a global batch of `step_tokens` tokens, as masked micro-batches."""
        rows = max(1, math.ceil(step_tokens / (seq_len * self.world_size)))
        rows_per_micro = max(1, self.micro_batch_tokens // seq_len)
        micro = []
        while rows > 0:
            take = min(rows, rows_per_micro)
            rows -= take
            batch = self.packer.next_batch(iter(self.sampler), take, seq_len)
            assert batch is not None  # the sampler never runs out: it starts another epoch
            batch.input_ids, batch.labels = mask_tokens(
                batch.input_ids, mask_rate, self.mask_generator, self.vocab_size
            )
            self._language_tokens.update(batch.tokens_per_language)
            micro.append(batch)
        return micro

    def close(self) -> None:
        """Stop reading ahead and close the store's open shards (drawing again restarts both): a run
        that ends leaves no thread and no descriptor behind, however long its process lives on."""
        self.sampler.close()
        close_store = getattr(self.sampler.store, "close", None)
        if close_store is not None:
            close_store()

    def take_language_tokens(self) -> dict[str, int]:
        """Tokens drawn per language since the last call."""
        counts, self._language_tokens = dict(self._language_tokens), Counter()
        return counts

    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler.state_dict(),
            "packer": self.packer.state_dict(),
            "mask_rng": self.mask_generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream saved by `state_dict`, then return to the current phase's mixture."""
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
        self.mask_generator.set_state(state["mask_rng"])
