"""The sampler: realized shares against the mixture's targets, epochs, ranks, determinism, state (the
mixture itself: `tests/test_mixture.py`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmbert.data.mixture import phase_mixture, temperature_probs
from mmbert.data.sampler import DataSampler
from mmbert.languages import released_counts
from tests.helpers.data import WEB_AND_CODE, FakeStore, make_phase

STORE = FakeStore(WEB_AND_CODE)


def within(count: int, n: int, p: float, k: float = 5.0) -> bool:
    return abs(count - n * p) <= k * math.sqrt(n * p * (1 - p)) + 1e-9


def test_realized_proportions_match_targets() -> None:
    ph = make_phase(sources=[{"name": "web", "share": 0.7}, {"name": "code", "share": 0.3}], tau=0.3)
    mix = phase_mixture(ph, STORE.counts(), 0)
    sampler = DataSampler(STORE, mix, seed=1)
    n = 20_000
    for _ in range(n):
        sampler.next_document()
    # Documents: each draw is a categorical draw with the sampler's document probabilities.
    for key, p in sampler.doc_probs.items():
        assert within(sampler.realized_docs[key], n, p), key
    # Tokens: web documents are all 22 tokens with bos/eos, so web's token share is a scaled binomial.
    shares = sampler.realized_shares()
    assert shares["source"]["web"] == pytest.approx(0.7, abs=5 * math.sqrt(0.7 * 0.3 / n) * 1.5)
    for lang, target in mix.language_shares().items():
        assert abs(shares["language"][lang] - target) < 6 * math.sqrt(target * (1 - target) / n) * 1.5, lang
    # Repeats are counted: fao has 20 documents, so it is many epochs in.
    assert sampler.epochs()[("web", "fao_Latn")] > 5


def test_epochs_are_permutations_and_ranks_are_disjoint() -> None:
    store = FakeStore({("web", "fra_Latn"): [3] * 30})
    mix = phase_mixture(make_phase(), store.counts(), 0)
    world = 3
    per_rank = [DataSampler(store, mix, seed=7, rank=r, world_size=world) for r in range(world)]
    draws = [[s.next_document() for _ in range(20)] for s in per_rank]  # 2 epochs in all
    for epoch in (0, 1):
        seen = [d.index for rank in draws for d in rank if d.epoch == epoch]
        assert sorted(seen) == list(range(30))  # the ranks together cover the epoch once
    for a in range(world):
        for b in range(a + 1, world):
            ea = {(d.epoch, d.index) for d in draws[a]}
            eb = {(d.epoch, d.index) for d in draws[b]}
            assert not ea & eb
    order0 = [d.index for d in draws[0] if d.epoch == 0]
    order1 = [d.index for d in draws[0] if d.epoch == 1]
    assert order0 != order1  # reshuffled each epoch


def test_state_round_trip_continues_the_identical_stream() -> None:
    mix = phase_mixture(
        make_phase(sources=[{"name": "web", "weight": 2}, {"name": "code", "weight": 1}]), STORE.counts(), 0
    )
    a = DataSampler(STORE, mix, seed=3, rank=1, world_size=2)
    for _ in range(777):
        a.next_document()
    state = a.state_dict()
    b = DataSampler(STORE, mix, seed=3, rank=1, world_size=2)
    b.load_state_dict(state)
    for _ in range(300):
        x, y = a.next_document(), b.next_document()
        assert (x.source, x.lang, x.index, x.epoch) == (y.source, y.lang, y.index, y.epoch)
    assert a.realized_tokens == b.realized_tokens and a.epochs() == b.epochs()
    c = DataSampler(STORE, mix, seed=3, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        c.load_state_dict(state)


def test_positions_persist_across_phase_change() -> None:
    counts = STORE.counts()
    web = [{"name": "web", "share": 1.0}]
    first = phase_mixture(make_phase(languages=["fra_Latn"], sources=web), counts, 0)
    second = phase_mixture(make_phase(name="q", languages=["fra_Latn", "deu_Latn"], sources=web), counts, 1)
    s = DataSampler(STORE, first, seed=0)
    seen = [s.next_document().index for _ in range(200)]
    s.set_phase(second)
    later = [d.index for d in (s.next_document() for _ in range(400)) if d.lang == "fra_Latn"]
    # fra has 400 documents: the second phase continues the first epoch instead of restarting it.
    assert len(set(seen) | set(later[:150])) == len(seen) + len(later[:150])


def test_released_counts_tau_from_pretraining_shares() -> None:
    """mmBERT's mid-training shares follow its pre-training shares through n ** tau.

    With pre-training shares c ∝ n ** 0.7, the data available is n ∝ c ** (1 / 0.7); sampling it at
    tau 0.5 predicts mid-training shares ∝ c ** (0.5 / 0.7) for the languages of both phases
    (English and code excluded: they are separate sources). The released counts follow that power.
    """
    counts = released_counts()
    shared = [
        k
        for k, v in counts["pretrain"].items()
        if v > 0 and counts["ext"][k] > 0 and k not in ("eng", "code")
    ]
    assert len(shared) == 59  # the 60 pre-training languages minus English
    available = {k: counts["pretrain"][k] ** (1 / 0.7) for k in shared}
    predicted = temperature_probs(available, 0.5)
    released_total = sum(counts["ext"][k] for k in shared)
    x = np.log([predicted[k] for k in shared])
    y = np.log([counts["ext"][k] / released_total for k in shared])
    slope, _ = np.polyfit(x, y, 1)
    r = np.corrcoef(x, y)[0, 1]
    assert r > 0.97 and abs(slope - 1) < 0.1, (slope, r)
    # The sampler reproduces those targets: draw from a store whose documents are equal in length.
    mix = phase_mixture(make_phase(tau=0.5), {"fw2": {f"{k}_Latn": int(n) for k, n in available.items()}}, 1)
    for lang, share in mix.language_shares().items():
        assert share == pytest.approx(predicted[lang.split("_")[0]], rel=1e-6)
    # The sampler draws those targets (equal-length documents: document shares are token shares).
    store = FakeStore({("fw2", f"{k}_Latn"): [10] * 50 for k in shared})
    sampler = DataSampler(store, mix, seed=0)
    n = 20_000
    for _ in range(n):
        sampler.next_document()
    for key, p in sampler.doc_probs.items():
        assert p == pytest.approx(predicted[key[1].split("_")[0]], rel=1e-6)
        assert within(sampler.realized_docs[key], n, p)


def test_resume_into_the_same_phase_keeps_realized_counts() -> None:
    mix = phase_mixture(make_phase(sources=[{"name": "web", "share": 1.0}]), STORE.counts(), 0)
    a = DataSampler(STORE, mix, seed=2)
    for _ in range(50):
        a.next_document()
    b = DataSampler(STORE, mix, seed=2)
    b.load_state_dict(a.state_dict())
    b.set_phase(mix)  # what a trainer does after restoring: re-enter the current phase
    assert b.realized_tokens == a.realized_tokens and sum(b.realized_docs.values()) == 50


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 17, 1000, 4099])
def test_index_permutation_is_a_bijection(n: int) -> None:
    from mmbert.data.permutation import IndexPermutation

    perm = IndexPermutation(n, 12345)
    assert sorted(perm[i] for i in range(n)) == list(range(n))
    with pytest.raises(IndexError):
        perm[n]
    if n >= 1000:  # a shuffle: another key gives another order, and the order is far from the identity
        other = IndexPermutation(n, 12346)
        assert sum(perm[i] == other[i] for i in range(n)) < n // 100
        assert sum(perm[i] == i for i in range(n)) < n // 100
        assert abs(np.corrcoef(np.arange(n), [perm[i] for i in range(n)])[0, 1]) < 0.1


def test_cell_of_tens_of_millions_of_documents_in_bounded_memory_and_time() -> None:
    """Drawing from a 50M-document cell allocates nothing per document and starts at once, on every resume."""
    import time
    import tracemalloc

    class Metadata(FakeStore):  # the sampler needs the counts; the documents are a few tokens each
        def num_tokens(self, source, lang):
            return 8 * self.num_docs(source, lang)

        def num_docs(self, source, lang):
            return 50_000_000 if lang == "eng_Latn" else 1000

        def doc(self, source, lang, i):
            return np.full(8, i % 1000, dtype=np.uint32)

        def doc_length(self, source, lang, i):
            return 8

    store = Metadata({("web", "eng_Latn"): [], ("web", "fra_Latn"): []})
    mix = phase_mixture(make_phase(sources=[{"name": "web", "share": 1.0}]), store.counts(), 0)
    tracemalloc.start()
    start = time.perf_counter()
    a = DataSampler(store, mix, seed=5, rank=3, world_size=64)
    big = [d.index for d in (a.next_document() for _ in range(2000)) if d.lang == "eng_Latn"]
    b = DataSampler(store, mix, seed=5, rank=3, world_size=64)
    b.load_state_dict(a.state_dict())
    nxt = [a.next_document() for _ in range(200)]
    assert [(d.lang, d.index) for d in nxt] == [
        (d.lang, d.index) for d in (b.next_document() for _ in range(200))
    ]
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 << 20, peak  # a materialized permutation would be 400 MB
    assert seconds < 5, seconds  # building it: seconds per cell
    assert len(big) > 1000 and len(set(big)) == len(big) and max(big) > 40_000_000  # spread over the cell


def test_read_ahead_gives_the_same_stream_and_state() -> None:
    """Reading ahead in a thread changes nothing the sampler returns or saves, across phase changes and
    resumes; a document whose length fails to read raises in the draw that needs it."""
    counts = STORE.counts()
    web = [{"name": "web", "share": 0.6}, {"name": "code", "share": 0.4}]
    first = phase_mixture(make_phase(sources=web), counts, 0)
    second = phase_mixture(
        make_phase(name="q", languages=["fra_Latn"], sources=[{"name": "web", "share": 1.0}]), counts, 1
    )

    def run(sampler, n):
        return [
            (d.source, d.lang, d.index, d.epoch, d.tokens.tolist()) for d in (next(sampler) for _ in range(n))
        ]

    plain, ahead = DataSampler(STORE, first, seed=4), DataSampler(STORE, first, seed=4, read_ahead=16)
    a, b = iter(plain), iter(ahead)
    assert run(a, 300) == run(b, 300)
    assert plain.state_dict() == ahead.state_dict()  # the position of what was returned, not read ahead
    resumed = DataSampler(STORE, first, seed=4, read_ahead=8)
    resumed.load_state_dict(ahead.state_dict())
    plain.set_phase(second), ahead.set_phase(second), resumed.set_phase(second)
    assert run(a, 200) == run(b, 200) == run(iter(resumed), 200)
    ahead.close(), resumed.close()

    class Failing(FakeStore):
        def doc_length(self, source, lang, i):
            if i == 7:
                raise OSError(f"{source}/{lang}: document {i} unreadable")
            return super().doc_length(source, lang, i)

    failing = DataSampler(Failing(STORE.cells), first, seed=4, read_ahead=16)
    reference = DataSampler(STORE, first, seed=4)
    before = 0
    while reference.next_document().index != 7:
        before += 1
    for _ in range(before):
        failing.next_document()
    with pytest.raises(OSError, match="document 7 unreadable"):
        failing.next_document()
