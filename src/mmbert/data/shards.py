"""TokenStore: random access to the documents `mmbert prepare` wrote, by source, language and index.

The trainer's sampler draws random documents of a language, so a document must be cheap to fetch by
number: each shard's tokens and offsets are memory-mapped (opened on first use), and a per-(source,
language) table of cumulative document counts maps a document number to its shard with one bisection.
A shard holds the documents of several languages grouped by language; the manifest gives, for each
language, its shards and the document range [first, end) it owns in each.
A shard that is missing, unreadable or inconsistent with the manifest raises `ShardError` naming the file.
The manifest's format is `mmbert.data.manifest`'s. `open_data` reads several data directories as one.

What the ids mean: `check_tokenizer` stops a run whose tokenizer is not the one the data was prepared
with, and a store given the model's `vocab_size` checks each shard the first time it is read, so that
an id the model has no embedding for never reaches it (a `ShardError` naming the shard instead).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Mapping, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np

from mmbert.data.manifest import MANIFEST, ManifestError, read_manifest
from mmbert.errors import MmbertError


class ShardError(MmbertError, RuntimeError):
    """A prepared shard (or the manifest) is missing or corrupt; the message names the file."""


class _Shard:
    """One shard: memory-mapped uint32 tokens and int64 document offsets (docs + 1 entries)."""

    def __init__(self, tokens_path: Path) -> None:
        self.path = tokens_path
        offsets_path = tokens_path.with_name(tokens_path.name.replace(".tokens.npy", ".offsets.npy"))
        self.tokens = _load(tokens_path, np.uint32)
        self.offsets = _load(offsets_path, np.int64)
        if len(self.offsets) < 1 or self.offsets[0] != 0 or np.any(np.diff(self.offsets) < 0):
            raise ShardError(f"{offsets_path}: corrupt offsets (must start at 0 and not decrease)")
        if int(self.offsets[-1]) != len(self.tokens):
            raise ShardError(
                f"{tokens_path}: {len(self.tokens)} tokens but its offsets end at {int(self.offsets[-1])}"
            )

    @property
    def num_docs(self) -> int:
        return len(self.offsets) - 1

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def check_ids(self, vocab_size: int, manifest: Path) -> None:
        """Every token id is below `vocab_size` (one pass over the memory-mapped file)."""
        top = int(self.tokens.max()) if len(self.tokens) else -1
        if top >= vocab_size:
            raise ShardError(
                f"{self.path}: token id {top} is outside the model's vocabulary of {vocab_size}: it was cut "
                f"with another tokenizer than this run's (the tokenizer in {manifest})"
            )


def _load(path: Path, dtype: type) -> np.ndarray:
    if not path.exists():
        raise ShardError(f"{path}: shard file missing")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ShardError(f"{path}: corrupt shard file: {e}") from None
    if arr.dtype != dtype or arr.ndim != 1:
        raise ShardError(
            f"{path}: expected a 1-D {np.dtype(dtype).name} array, found {arr.dtype} {arr.shape}"
        )
    return arr


class TokenStore:
    """Read a prepared data directory: `TokenStore(DATA).doc(source, lang, i) -> np.ndarray` of uint32 ids.

    Documents carry no special tokens (the packer adds `<bos>`/`<eos>`). Shards open lazily, so opening
    a store with thousands of shards is instant and a process only maps the shards it reads.
    """

    def __init__(self, root: str | os.PathLike, vocab_size: int | None = None) -> None:
        self.root = Path(root)
        self.vocab_size = vocab_size  # when given, each shard's ids are checked against it on first use
        try:
            manifest = read_manifest(self.root)
        except ManifestError as e:
            raise ShardError(str(e)) from None
        if manifest is None:
            raise ShardError(
                f"{self.root / MANIFEST}: no manifest (run `mmbert prepare --out {self.root}` first)"
            )
        self.manifest: dict[str, Any] = manifest
        # Documents before each of a language's shards, plus the total: [0, n0, n0 + n1, ...].
        self._cum: dict[tuple[str, str], list[int]] = {}
        for source, langs in manifest["sources"].items():
            for lang, entry in langs.items():
                self._cum[(source, lang)] = list(accumulate((b - a for a, b in entry["ranges"]), initial=0))
        self._shards: dict[str, _Shard] = {}

    # -- the manifest's tables ----------------------------------------------------------------------

    @property
    def tokenizer(self) -> dict[str, Any]:
        return self.manifest.get("tokenizer", {})

    def sources(self) -> list[str]:
        return sorted(self.manifest["sources"])

    def languages(self, source: str | None = None) -> list[str]:
        if source is None:
            return sorted({lang for _, lang in self._cum})
        return sorted(self._source(source))

    def num_tokens(self, source: str, lang: str) -> int:
        return int(self._entry(source, lang)["tokens"])

    def num_docs(self, source: str, lang: str) -> int:
        return int(self._entry(source, lang)["docs"])

    def _source(self, source: str) -> dict[str, Any]:
        try:
            return self.manifest["sources"][source]
        except KeyError:
            raise KeyError(f"no source {source!r} in {self.root} (has {self.sources()})") from None

    def _entry(self, source: str, lang: str) -> dict[str, Any]:
        langs = self._source(source)
        if lang not in langs:
            raise KeyError(f"no language {lang!r} in source {source!r} of {self.root}")
        return langs[lang]

    # -- documents ----------------------------------------------------------------------------------

    def _shard(self, source: str, lang: str, k: int) -> tuple[_Shard, int, int]:
        """A language's k-th shard and the document range it owns there."""
        entry = self._entry(source, lang)
        rel = entry["shards"][k]
        shard = self._shards.get(rel)
        if shard is None:
            shard = _Shard(self.root / rel)
            if self.vocab_size is not None:
                shard.check_ids(self.vocab_size, self.root / MANIFEST)
            self._shards[rel] = shard
        a, b = entry["ranges"][k]
        if not 0 <= a <= b <= shard.num_docs:
            raise ShardError(
                f"{shard.path}: has {shard.num_docs} documents, the manifest gives {source}/{lang} [{a}, {b})"
            )
        return shard, a, b

    def doc(self, source: str, lang: str, i: int) -> np.ndarray:
        """Document `i` (0 <= i < num_docs) of a source's language: a read-only uint32 array view."""
        self._entry(source, lang)
        cum = self._cum[(source, lang)]
        if not 0 <= i < cum[-1]:
            raise IndexError(f"document {i} out of range for {source}/{lang} ({cum[-1]} documents)")
        k = bisect.bisect_right(cum, i) - 1
        shard, a, _ = self._shard(source, lang, k)
        return shard.doc(a + i - cum[k])

    def doc_lengths(self, source: str, lang: str) -> np.ndarray:
        """Token count of every document of a source's language, in document order: (num_docs,) int64."""
        parts = []
        for k in range(len(self._entry(source, lang)["shards"])):
            shard, a, b = self._shard(source, lang, k)
            parts.append(np.diff(shard.offsets[a : b + 1]))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def verify(self) -> None:
        """Open every shard and check it against the manifest (raises `ShardError` naming the file)."""
        for source, lang in self._cum:
            lengths = self.doc_lengths(source, lang)
            if int(lengths.sum()) != self.num_tokens(source, lang):
                raise ShardError(
                    f"{self.root / MANIFEST}: {source}/{lang} lists {self.num_tokens(source, lang)} tokens, "
                    f"its shards hold {int(lengths.sum())}"
                )


class UnionStore:
    """Several prepared data directories read as one.

    A source may be spread over several directories as long as each of its languages is in one of them:
    a language added to a released mixture (its own directory, prepared under the mixture's source
    name) joins that source's sampling.
    """

    def __init__(self, stores: Sequence[TokenStore]) -> None:
        self.stores = list(stores)
        self._by_cell: dict[tuple[str, str], TokenStore] = {}
        for store in stores:
            for source in store.sources():
                for lang in store.languages(source):
                    other = self._by_cell.get((source, lang))
                    if other is not None:
                        raise ShardError(f"{source}/{lang} is in both {other.root} and {store.root}")
                    self._by_cell[(source, lang)] = store

    def sources(self) -> list[str]:
        return sorted({source for source, _ in self._by_cell})

    def languages(self, source: str | None = None) -> list[str]:
        return sorted({lang for s, lang in self._by_cell if source in (None, s)})

    def _store(self, source: str, lang: str) -> TokenStore:
        try:
            return self._by_cell[(source, lang)]
        except KeyError:
            raise KeyError(
                f"no language {lang!r} in source {source!r} of {[s.root for s in self.stores]}"
            ) from None

    def num_tokens(self, source: str, lang: str) -> int:
        return self._store(source, lang).num_tokens(source, lang)

    def num_docs(self, source: str, lang: str) -> int:
        return self._store(source, lang).num_docs(source, lang)

    def doc(self, source: str, lang: str, i: int) -> np.ndarray:
        return self._store(source, lang).doc(source, lang, i)


def open_data(paths: Sequence[str | os.PathLike], vocab_size: int | None = None) -> TokenStore | UnionStore:
    """Prepared data directories (a recipe's `data`) as one store (ids checked against `vocab_size`)."""
    stores = [TokenStore(p, vocab_size) for p in paths]
    return stores[0] if len(stores) == 1 else UnionStore(stores)


class DataTokenizerError(MmbertError, ValueError):
    """Prepared data cut with another tokenizer than the run's; the message names both."""


def check_tokenizer(store: TokenStore | UnionStore, tokenizer: Mapping[str, Any]) -> None:
    """Stop unless every data directory of `store` was prepared with `tokenizer`.

    `tokenizer` is an identity as a manifest records it (`mmbert.tokenizer.TokenizerFiles.identity`);
    the fingerprint decides, so Gemma 2's tokenizer as shipped and its adapted form are the same.
    """
    for one in store.stores if isinstance(store, UnionStore) else [store]:
        recorded = one.tokenizer
        if recorded.get("sha256") == tokenizer["sha256"]:
            continue
        ours = f"{tokenizer['path']} (fingerprint {tokenizer['fingerprint']}, {tokenizer['vocab_size']} ids)"
        if not recorded.get("sha256"):
            raise DataTokenizerError(
                f"{one.root / MANIFEST}: records no tokenizer, so its ids cannot be checked against this run's "
                f"tokenizer {ours}: prepare the data again"
            )
        raise DataTokenizerError(
            f"{one.root / MANIFEST}: the data was prepared with tokenizer {recorded.get('path')} (fingerprint "
            f"{recorded.get('fingerprint')}, {recorded.get('vocab_size')} ids), this run's tokenizer is {ours}: "
            "prepare the data with this run's tokenizer, or train with the data's"
        )
