"""The two-axis data sampler: a source by its share of the phase, then a language inside it by `n ** tau`.

`mmbert.data.mixture.phase_mixture` turns a phase's mixture and the available token counts into
target token shares per (source, language); `store_counts` gives those counts of prepared data.

`DataSampler` then draws documents. Targets are shares of tokens, so a (source, language) cell is
drawn with probability ∝ share / mean document length, which makes its expected share of drawn tokens
equal to the target. Within a cell, documents come in epochs: each epoch is a fresh permutation of the
cell's documents (seeded by seed, cell and epoch, identical on every rank), and rank r of w takes
positions r, r + w, r + 2w, ... of the concatenated epochs, so ranks never draw the same document of
an epoch and together cover each epoch exactly once. Repeats are therefore counted (`epochs`).
The permutation is computed one index at a time (`mmbert.data.permutation`): no per-document array,
so a cell of 10^9 documents costs what a cell of ten does, and nothing is rebuilt on a resume or at
an epoch wrap.

The sampler is Stateful: its state is the random generator's state, each cell's position (a count of
documents drawn) and the realized counts; `load_state_dict` on a fresh sampler continues the
identical stream. Positions persist across phase changes (`set_phase`), so a later phase does not
restart a language's data.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mmbert.data.mixture import Mixture
from mmbert.data.permutation import IndexPermutation, mix_key
from mmbert.seeds import stable_hash

logger = logging.getLogger(__name__)

# Document lengths read ahead of the step: every rank draws the global batch's documents (~74 per rank
# per step at mmBERT's scale, so ~4.7k at 64 ranks), 16 bytes of offsets each.
DEFAULT_READ_AHEAD = 1024


class DocumentStore(Protocol):
    """The part of `mmbert.data.shards.TokenStore` the sampler uses."""

    def sources(self) -> list[str]: ...
    def languages(self, source: str | None = None) -> list[str]: ...
    def num_tokens(self, source: str, lang: str) -> int: ...
    def num_docs(self, source: str, lang: str) -> int: ...
    def doc(self, source: str, lang: str, i: int) -> np.ndarray: ...
    def doc_length(self, source: str, lang: str, i: int) -> int: ...


def store_counts(store: DocumentStore) -> dict[str, dict[str, int]]:
    """Available tokens per source and language in a prepared data directory."""
    return {s: {lang: store.num_tokens(s, lang) for lang in store.languages(s)} for s in store.sources()}


@dataclass
class SampledDocument:
    """A drawn document: its cell, its index in the cell, which epoch over the cell, and its length.

    Its `tokens` are read from the store when first asked for, so a reader that only needs the
    length (the packer passing over another rank's rows) reads 16 bytes of offsets, not the document.
    """

    source: str
    lang: str
    index: int
    epoch: int
    length: int
    store: DocumentStore = field(repr=False, compare=False)
    _tokens: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None:
            self._tokens = self.store.doc(self.source, self.lang, self.index)
        return self._tokens


@dataclass(frozen=True)
class _Cell:
    source: str
    lang: str
    num_docs: int
    key: int  # with the epoch, chooses the epoch's order (the same on every rank)


@dataclass(frozen=True)
class _Plan:
    """How a phase draws: the cell a uniform number picks, and where a cell's n-th draw on a rank lands.

    Immutable, so that the read-ahead thread draws from a copy of the state exactly as the sampler does.
    """

    cells: tuple[_Cell, ...]
    cum: np.ndarray  # cumulative document probabilities of `cells`, the last one exactly 1
    rank: int
    world_size: int

    def draw(
        self, rng: np.random.Generator, drawn: dict[tuple[str, str], int]
    ) -> tuple[_Cell, int, int, int]:
        """Advance (rng, drawn) by one draw: (cell, how many were drawn from it before, index, epoch)."""
        cell = self.cells[int(np.searchsorted(self.cum, rng.random(), side="right"))]
        key = (cell.source, cell.lang)
        n = drawn.get(key, 0)
        drawn[key] = n + 1
        position = self.rank + n * self.world_size  # in the concatenation of all epochs
        epoch, offset = divmod(position, cell.num_docs)
        return cell, n, IndexPermutation(cell.num_docs, mix_key(cell.key, epoch))[offset], epoch


class DataSampler:
    """Draws documents for one rank from a phase's mixture; iterate it or call `next_document()`.

    A draw reads the document's length only (its offsets); its tokens are read when first used
    (`SampledDocument.tokens`). `read_ahead` > 0 reads the lengths of up to that many of the next
    documents in a background thread (`ReadAhead`), so drawing rarely waits on storage; the stream,
    and the state, are the same with it or without it.
    """

    def __init__(
        self,
        store: DocumentStore,
        mixture: Mixture,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        read_ahead: int = 0,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if read_ahead < 0:
            raise ValueError(f"read_ahead is a number of documents, not {read_ahead}")
        self.store = store
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.read_ahead = read_ahead
        self._ahead: ReadAhead | None = None
        # Each rank draws its own cell sequence (seeded by rank); documents are disjoint through the
        # per-cell position arithmetic, not through the generator.
        self._rng = np.random.Generator(np.random.PCG64([seed, rank, 0x6D6D62]))
        self._cells: dict[tuple[str, str], _Cell] = {}
        # Documents this rank has drawn from each cell: its position in the cell's stream.
        self._drawn: dict[tuple[str, str], int] = {}
        self.mixture: Mixture | None = None
        self.realized_docs: dict[tuple[str, str], int] = {}
        self.realized_tokens: dict[tuple[str, str], int] = {}
        self.set_phase(mixture)

    # -- phase ----------------------------------------------------------------------------------------
    def set_phase(self, mixture: Mixture) -> None:
        """Switch to another phase's mixture, keeping the generator and every cell's position."""
        self._stop_read_ahead()
        previous = self.mixture
        self.mixture = mixture
        cells, weights, targets = [], [], []
        for src in mixture.sources:
            for lang, p in zip(src.languages, src.probs, strict=True):
                if p <= 0:
                    continue
                n_docs = self.store.num_docs(src.name, lang)
                n_tokens = self.store.num_tokens(src.name, lang)
                if n_docs == 0:
                    raise ValueError(
                        f"phase {mixture.phase_name!r}: source {src.name!r} has no documents for {lang}"
                    )
                if n_docs < self.world_size:
                    logger.warning(
                        "%s/%s has %d documents for %d ranks: ranks take turns, some rounds skip a rank",
                        src.name,
                        lang,
                        n_docs,
                        self.world_size,
                    )
                key = (src.name, lang)
                if key not in self._cells:
                    self._cells[key] = self._new_cell(src.name, lang, n_docs)
                # Tokens per document include <bos>/<eos> (2 per document), as the packer emits them.
                mean_len = n_tokens / n_docs + 2
                cells.append(key)
                weights.append(src.share * p / mean_len)
                targets.append(src.share * p)
        w = np.asarray(weights, dtype=np.float64)
        cum = np.cumsum(w / w.sum())
        cum[-1] = 1.0
        self._plan = _Plan(tuple(self._cells[k] for k in cells), cum, self.rank, self.world_size)
        self.doc_probs = dict(zip(cells, (w / w.sum()).tolist(), strict=True))
        self.target_shares = dict(zip(cells, targets, strict=True))
        if previous is None or previous.phase_name != mixture.phase_name:
            # Realized shares are per phase; re-entering the same phase (a resume) keeps them.
            self.realized_docs = {k: 0 for k in cells}
            self.realized_tokens = {k: 0 for k in cells}

    # -- drawing --------------------------------------------------------------------------------------
    def _new_cell(self, source: str, lang: str, num_docs: int) -> _Cell:
        # No rank in the key: ranks split one permutation per epoch.
        key = mix_key(self.seed % 2**64, stable_hash(source), stable_hash(lang))
        return _Cell(source, lang, num_docs, key)

    def next_document(self) -> SampledDocument:
        cell, n, index, epoch = self._plan.draw(self._rng, self._drawn)
        length = self._ahead.take(cell, n) if self._ahead is not None else None
        if length is None:
            length = self.store.doc_length(cell.source, cell.lang, index)
            if self.read_ahead:  # (re)start reading ahead from the state after this draw
                self._stop_read_ahead()
                self._ahead = ReadAhead(self.store, self._plan, self._rng, self._drawn, self.read_ahead)
        key = (cell.source, cell.lang)
        self.realized_docs[key] += 1
        self.realized_tokens[key] += length + 2
        return SampledDocument(cell.source, cell.lang, index, epoch, length, self.store)

    def _stop_read_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.stop()
            self._ahead = None

    def close(self) -> None:
        """Stop reading ahead (drawing again starts it anew)."""
        self._stop_read_ahead()

    def __iter__(self) -> Iterator[SampledDocument]:
        while True:
            yield self.next_document()

    def epochs(self) -> dict[tuple[str, str], float]:
        """Epochs over each cell's documents drawn so far by all ranks together (this rank's view)."""
        return {k: self._drawn.get(k, 0) * self.world_size / c.num_docs for k, c in self._cells.items()}

    # -- reporting ------------------------------------------------------------------------------------
    def realized_shares(self) -> dict[str, dict[str, float]]:
        """Realized token shares since the last phase change, by source and by language."""
        total = sum(self.realized_tokens.values()) or 1
        by_source: dict[str, float] = {}
        by_lang: dict[str, float] = {}
        for (source, lang), n in self.realized_tokens.items():
            by_source[source] = by_source.get(source, 0.0) + n / total
            by_lang[lang] = by_lang.get(lang, 0.0) + n / total
        return {"source": by_source, "language": by_lang}

    def log_realized(self, top: int = 8) -> None:
        """One log line: realized vs target shares per source and the largest languages."""
        shares = self.realized_shares()
        targets = self.mixture.source_shares()
        src = ", ".join(
            f"{s} {100 * shares['source'].get(s, 0):.1f}% (target {100 * t:.1f}%)" for s, t in targets.items()
        )
        lang_targets = self.mixture.language_shares()
        largest = sorted(lang_targets, key=lambda k: -lang_targets[k])[:top]
        langs = ", ".join(
            f"{k} {100 * shares['language'].get(k, 0):.1f}%/{100 * lang_targets[k]:.1f}%" for k in largest
        )
        logger.info(
            "sampler %s: sources %s | languages (realized/target) %s", self.mixture.phase_name, src, langs
        )

    # -- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "phase_name": self.mixture.phase_name,
            "rng": self._rng.bit_generator.state,
            "drawn": {f"{s}\t{lang}": self._drawn.get((s, lang), 0) for s, lang in self._cells},
            "realized_docs": {f"{s}\t{lang}": n for (s, lang), n in self.realized_docs.items()},
            "realized_tokens": {f"{s}\t{lang}": n for (s, lang), n in self.realized_tokens.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state saved by `state_dict` (after `set_phase` with the same phase's mixture)."""
        mine = (self.seed, self.rank, self.world_size)
        theirs = (state["seed"], state["rank"], state["world_size"])
        if mine != theirs:
            raise ValueError(
                f"sampler state is for (seed, rank, world_size) {theirs}, this sampler is {mine}"
            )
        if state["phase_name"] != self.mixture.phase_name:
            raise ValueError(
                f"sampler state is for phase {state['phase_name']!r}, this sampler is in {self.mixture.phase_name!r}"
            )
        self._stop_read_ahead()
        self._rng.bit_generator.state = state["rng"]
        for joined, drawn in state["drawn"].items():
            source, lang = joined.split("\t")
            if (source, lang) not in self._cells:
                self._cells[(source, lang)] = self._new_cell(source, lang, self.store.num_docs(source, lang))
            self._drawn[(source, lang)] = int(drawn)
        self.realized_docs = {tuple(k.split("\t")): int(v) for k, v in state["realized_docs"].items()}  # type: ignore[misc]
        self.realized_tokens = {tuple(k.split("\t")): int(v) for k, v in state["realized_tokens"].items()}  # type: ignore[misc]


class ReadAhead:
    """Reads the lengths of the documents a sampler will draw next, up to `depth` of them, in a
    background thread (the tokens are read by whoever uses them: a rank reads only its own rows').

    The thread draws from a copy of the sampler's state (its generator and positions), with the same
    `_Plan`, so it reads exactly the documents the sampler will ask for, in order. The sampler still
    makes every draw itself and only takes the lengths from here: its state is always the position of
    the documents it returned (what a checkpoint saves), never that of those read ahead. A read that
    fails in the thread ends the thread; the sampler then reads that document itself, where its error
    is raised in the step that needs it.
    """

    def __init__(
        self,
        store: DocumentStore,
        plan: _Plan,
        rng: np.random.Generator,
        drawn: dict[tuple[str, str], int],
        depth: int,
    ) -> None:
        copy = np.random.Generator(np.random.PCG64())
        copy.bit_generator.state = rng.bit_generator.state
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_read_ahead,
            args=(store, plan, copy, dict(drawn), self._queue, self._stop),
            name="mmbert-read-ahead",
            daemon=True,
        )
        self._thread.start()
        # The thread holds no reference to the sampler: dropping the sampler stops it.
        weakref.finalize(self, self._stop.set)

    def take(self, cell: _Cell, n: int) -> int | None:
        """The length of `cell`'s n-th draw when it is the next read ahead, else None (read it yourself)."""
        while True:
            try:
                key, m, length = self._queue.get(timeout=0.05)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    return None
        if (key, m) != ((cell.source, cell.lang), n):  # cannot happen with one plan; never trust it blindly
            return None
        return length

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _read_ahead(
    store: DocumentStore,
    plan: _Plan,
    rng: np.random.Generator,
    drawn: dict[tuple[str, str], int],
    out: queue.Queue,
    stop: threading.Event,
) -> None:
    """The read-ahead thread: draw as the sampler will, read the length, queue; until stopped or a read fails."""
    while not stop.is_set():
        cell, n, index, _ = plan.draw(rng, drawn)
        try:
            item = ((cell.source, cell.lang), n, store.doc_length(cell.source, cell.lang, index))
        except Exception:  # the sampler reads this document again and raises there
            return
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                break
            except queue.Full:
                continue
