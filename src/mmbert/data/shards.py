"""TokenStore: random access to the documents `mmbert prepare` wrote, by source, language and index.

The trainer's sampler draws random documents of a language, so a document must be cheap to fetch by
number: a per-(source, language) table of cumulative document counts maps a document number to its
shard with one bisection, and the document is read from the shard with two positional reads (`os.pread`:
its two offsets, then its tokens), so a draw reads what it uses and nothing else.
A shard holds the documents of several languages grouped by language; the manifest gives, for each
language, its shards and the document range [first, end) it owns in each.

Open files are bounded whatever the number of shards: a store keeps at most `max_open_shards` shards
open (two descriptors each, no memory maps), closing the least recently used. The real run has ~82k
shards, which a rank soon touches all of (sampling is uniform inside a cell): keeping them all open
would run into `ulimit -n` and the kernel's map count long before the run ends. When the process
still runs out of descriptors (a low limit, other files open), the store closes shards and tries
again, and shrinks its cache to what fitted; it reports a limit as a limit (`OpenFilesError`), never
as a corrupt shard. A shard's layout (where its arrays start, their lengths), checked at its first
open, is kept (~150 bytes per shard), so a reopen reads no header.

A shard that is missing, unreadable or inconsistent with the manifest raises `ShardError` naming the
file; a shard is checked where it is read (its header, its first and last offsets, the offsets of
each document read), and in full by `verify()`.

What the ids mean: `check_tokenizer` stops a run whose tokenizer is not the one the data was prepared
with. `prepare` records each shard's token-id range in the manifest as it writes the shard, so a store
given the model's `vocab_size` checks every shard against it at its first read, from the manifest alone
(no shard read) (an id the model has no embedding for never reaches it: a `ShardError` naming the shard). A
manifest written before the ranges were recorded is upgraded once (`record_id_ranges`: one pass over
its shards under the data directory's lock, written atomically); the ranks that wait for the lock
find it done (a directory that cannot be written, a shared read-only dataset, is not scanned). Each document read is still checked against `vocab_size` (it costs no I/O), in case a
shard was changed after `prepare`.
"""

from __future__ import annotations

import errno
import fcntl
import io
import logging
import os
import resource
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmbert.data.manifest import MANIFEST, ManifestError, read_manifest, write_manifest
from mmbert.errors import MmbertError
from mmbert.process import LOCK_FILE

logger = logging.getLogger(__name__)

DEFAULT_OPEN_SHARDS = 64  # 128 descriptors: well inside the usual `ulimit -n` of 1024
_LIMIT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
_TOKENS = np.dtype("<u4")
_OFFSETS = np.dtype("<i8")
_SCAN_TOKENS = 1 << 22  # tokens per read when a whole shard is scanned (16 MiB)
_HEADER_BYTES = 128
_MAX_HEADER_BYTES = 1 << 16


class ShardError(MmbertError, RuntimeError):
    """A prepared shard (or the manifest) is missing or corrupt; the message names the file."""


class OpenFilesError(MmbertError, OSError):
    """The process cannot open another file (descriptor or memory limit): not the shard's fault."""


def _offsets_path(tokens_path: Path) -> Path:
    return tokens_path.with_name(tokens_path.name.replace(".tokens.npy", ".offsets.npy"))


def _read_header(fd: int) -> bytes:
    """A `.npy` file's header: one small read (128 bytes is what numpy writes for a 1-D array), a
    second one only for a longer header. Not a page: a shard opened for one document reads ~300 bytes
    besides it."""
    head = os.pread(fd, _HEADER_BYTES, 0)
    if len(head) >= 12 and head[:6] == b"\x93NUMPY":
        width = 2 if head[6] == 1 else 4  # the header length: uint16 in version 1, uint32 after
        need = 8 + width + int.from_bytes(head[8 : 8 + width], "little")
        if len(head) < need <= _MAX_HEADER_BYTES:
            head += os.pread(fd, need - len(head), len(head))
    return head


def _open_array(
    path: Path, dtype: np.dtype, known: tuple[int, int] | None = None
) -> tuple[int, int, int, int]:
    """(descriptor, byte offset of the data, number of elements, bytes read) of a 1-D `.npy` file of `dtype`.

    `known`: the (offset, elements) found when the file was last opened, trusted while the file's
    size still agrees (no header read). A limit on open files (EMFILE, ENFILE, ENOMEM) is raised as
    the `OSError` it is, for the caller to make room; anything else wrong with the file is a
    `ShardError` naming it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ShardError(f"{path}: shard file missing") from None
    except OSError as e:
        if e.errno in _LIMIT_ERRNOS:
            raise
        raise ShardError(f"{path}: cannot open shard file: {e.strerror}") from None
    try:
        if known is not None and os.fstat(fd).st_size == known[0] + known[1] * dtype.itemsize:
            return fd, known[0], known[1], 0
        raw = _read_header(fd)
        head = io.BytesIO(raw)
        try:
            version = np.lib.format.read_magic(head)
            if version == (1, 0):
                shape, _, found = np.lib.format.read_array_header_1_0(head)
            else:
                shape, _, found = np.lib.format.read_array_header_2_0(head)
        except (ValueError, OSError, EOFError, SyntaxError) as e:
            raise ShardError(f"{path}: corrupt shard file: {e}") from None
        if found != dtype or len(shape) != 1:
            raise ShardError(f"{path}: expected a 1-D {dtype.name} array, found {found} {shape}")
        start, length = head.tell(), int(shape[0])
        size = os.fstat(fd).st_size
        if size != start + length * dtype.itemsize:
            raise ShardError(
                f"{path}: corrupt shard file: {size} bytes, its header says {start + length * dtype.itemsize}"
            )
        return fd, start, length, len(raw)
    except BaseException:
        os.close(fd)
        raise


class _Shard:
    """One shard's two open files: uint32 tokens and int64 document offsets (docs + 1 entries).

    Reads are positional, so a shard holds two descriptors and no memory map, and what a read costs is
    what it returns. `layout` (a checked shard's `layout` from an earlier open) skips reading its
    headers and checking its first and last offsets again while the files' sizes agree with it: with
    tens of thousands of shards and 64 open, nearly every draw reopens its shard.
    """

    def __init__(self, tokens_path: Path, layout: tuple[int, int, int, int] | None = None) -> None:
        self.path = tokens_path
        self.offsets_path = _offsets_path(tokens_path)
        known = (layout[:2], layout[2:]) if layout is not None else (None, None)
        self._tokens_fd, self._tokens_start, self.num_tokens, head = _open_array(
            tokens_path, _TOKENS, known[0]
        )
        try:
            self._offsets_fd, self._offsets_start, n, head2 = _open_array(
                self.offsets_path, _OFFSETS, known[1]
            )
        except BaseException:
            os.close(self._tokens_fd)
            raise
        self.bytes_read = head + head2  # everything read from the two files, headers included
        self.layout = (self._tokens_start, self.num_tokens, self._offsets_start, n)
        self.num_docs = n - 1
        if self.layout == layout and not head and not head2:
            return  # checked when first opened, and unchanged in size since
        try:
            if n < 1 or self.offsets(0, 1)[0] != 0:
                raise ShardError(f"{self.offsets_path}: corrupt offsets (must start at 0 and not decrease)")
            last = int(self.offsets(n - 1, n)[0])
            if last != self.num_tokens:
                raise ShardError(f"{tokens_path}: {self.num_tokens} tokens but its offsets end at {last}")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        os.close(self._tokens_fd)
        os.close(self._offsets_fd)

    def _read(self, fd: int, path: Path, start: int, first: int, count: int, dtype: np.dtype) -> np.ndarray:
        nbytes = count * dtype.itemsize
        data = os.pread(fd, nbytes, start + first * dtype.itemsize)
        self.bytes_read += len(data)
        if len(data) != nbytes:
            raise ShardError(f"{path}: shorter than its header says (changed while being read?)")
        return np.frombuffer(data, dtype)

    def offsets(self, first: int, end: int) -> np.ndarray:
        """Offsets [first, end) (read-only int64)."""
        return self._read(
            self._offsets_fd, self.offsets_path, self._offsets_start, first, end - first, _OFFSETS
        )

    def tokens(self, first: int, end: int) -> np.ndarray:
        """Tokens [first, end) (read-only uint32)."""
        return self._read(self._tokens_fd, self.path, self._tokens_start, first, end - first, _TOKENS)

    def doc(self, i: int) -> np.ndarray:
        begin, end = (int(x) for x in self.offsets(i, i + 2))
        if not 0 <= begin <= end <= self.num_tokens:
            raise ShardError(
                f"{self.offsets_path}: corrupt offsets (document {i} at [{begin}, {end}) of {self.num_tokens} tokens)"
            )
        return self.tokens(begin, end)

    def check_offsets(self) -> np.ndarray:
        """All the offsets, checked to never decrease (one pass over the offsets file)."""
        offsets = self.offsets(0, self.num_docs + 1)
        if np.any(np.diff(offsets) < 0):
            raise ShardError(f"{self.offsets_path}: corrupt offsets (must start at 0 and not decrease)")
        return offsets

    def id_range(self) -> list[int]:
        """[smallest, largest] token id (one pass over the tokens file, in bounded reads)."""
        low, high = None, None
        for first in range(0, self.num_tokens, _SCAN_TOKENS):
            part = self.tokens(first, min(first + _SCAN_TOKENS, self.num_tokens))
            low = int(part.min()) if low is None else min(low, int(part.min()))
            high = int(part.max()) if high is None else max(high, int(part.max()))
        return [low or 0, high or 0]


def shard_id_range(tokens_path: str | os.PathLike) -> list[int]:
    """[smallest, largest] token id of a shard file (one pass over it)."""
    shard = _Shard(Path(tokens_path))
    try:
        return shard.id_range()
    finally:
        shard.close()


def _vocabulary_error(path: Path, top: int, vocab_size: int, manifest: Path, note: str = "") -> ShardError:
    return ShardError(
        f"{path}: token id {top} is outside the model's vocabulary of {vocab_size}: it was cut "
        f"with another tokenizer than this run's (the tokenizer in {manifest}){note}"
    )


def _missing_id_ranges(manifest: Mapping[str, Any]) -> bool:
    return any("ids" not in entry for langs in manifest["sources"].values() for entry in langs.values())


def record_id_ranges(root: str | os.PathLike) -> dict[str, Any]:
    """Add each shard's token-id range to a manifest written before `prepare` recorded them; returns it.

    One pass over every shard, once: under the data directory's lock (the one `prepare` holds), so that
    ranks starting together scan it once between them, and written atomically. A directory this
    process cannot lock (read-only: a shared dataset) is not scanned: a pass over every shard by every
    rank of every run is what recording the ranges avoids. The manifest comes back without ranges, and
    each document's ids are checked as it is read (`TokenStore.doc`), which costs no I/O.
    """
    root = Path(root)
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        return _not_recorded(root, f"{root / LOCK_FILE}: {e.strerror}")
    if not os.access(root, os.W_OK):  # a lock file anyone may write, in a directory this process may not
        os.close(fd)
        return _not_recorded(root, f"{root}: not writable")
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            logger.info("%s: waiting for its lock (another rank recording the id ranges, or a prepare)", root)
            fcntl.lockf(fd, fcntl.LOCK_EX)
        manifest = _read(root)
        if not _missing_id_ranges(manifest):
            return manifest  # another rank did it while this one waited
        logger.info("%s: recording each shard's token-id range in the manifest (once)", root / MANIFEST)
        found: dict[str, list[int]] = {}
        for langs in manifest["sources"].values():
            for entry in langs.values():
                for rel in entry["shards"]:
                    if rel not in found:
                        found[rel] = shard_id_range(root / rel)
                entry["ids"] = [found[rel] for rel in entry["shards"]]
        try:
            write_manifest(root, manifest)
        except OSError as e:
            logger.warning("%s: cannot record the id ranges (%s): every run checks them again", root, e)
        return manifest
    finally:
        os.close(fd)


def _not_recorded(root: Path, reason: str) -> dict[str, Any]:
    """The manifest as it is, without id ranges, and a warning that says what this costs and what to do."""
    logger.warning(
        "%s records no token-id ranges (written before `prepare` recorded them) and cannot be upgraded "
        "here (%s): each document's ids are checked as it is read instead. To record them once, run with "
        "write access to it: python -c \"from mmbert.data.shards import record_id_ranges; "
        "record_id_ranges('%s')\"",
        root / MANIFEST, reason, root,
    )  # fmt: skip
    return _read(root)


def _close_all(shards: OrderedDict[str, _Shard]) -> None:
    while shards:
        shards.popitem()[1].close()


def _read(root: Path) -> dict[str, Any]:
    try:
        manifest = read_manifest(root)
    except ManifestError as e:
        raise ShardError(str(e)) from None
    if manifest is None:
        raise ShardError(f"{root / MANIFEST}: no manifest (run `mmbert prepare --out {root}` first)")
    return manifest


class TokenStore:
    """Read a prepared data directory: `TokenStore(DATA).doc(source, lang, i) -> np.ndarray` of uint32 ids.

    Documents carry no special tokens (the packer adds `<bos>`/`<eos>`). Shards open lazily, so opening
    a store with thousands of shards is instant, and at most `max_open_shards` are open at a time.
    Safe to read from several threads (the sampler's read-ahead); `bytes_read` and `shard_opens` count
    what the reads cost.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        vocab_size: int | None = None,
        max_open_shards: int = DEFAULT_OPEN_SHARDS,
    ) -> None:
        if max_open_shards < 1:
            raise ValueError(f"max_open_shards must be at least 1, not {max_open_shards}")
        self.root = Path(root)
        self.vocab_size = vocab_size
        self.max_open_shards = max_open_shards
        manifest = _read(self.root)
        self.manifest: dict[str, Any] = manifest
        # Documents before each of a language's shards, plus the total: [0, n0, n0 + n1, ...].
        self._cum: dict[tuple[str, str], np.ndarray] = {}
        for source, langs in manifest["sources"].items():
            for lang, entry in langs.items():
                counts = [b - a for a, b in entry["ranges"]]
                self._cum[(source, lang)] = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self._vocabulary_checked = vocab_size is None
        self._open: OrderedDict[str, _Shard] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._closed_bytes = 0  # read from shards since closed
        # Each shard's checked layout (4 integers, ~150 bytes with its key): a reopen reads no header.
        self._layouts: dict[str, tuple[int, int, int, int]] = {}
        self.shard_opens = 0
        # Descriptors are plain integers: a store dropped without `close()` closes them when collected.
        weakref.finalize(self, _close_all, self._open)

    def check_vocabulary(self) -> None:
        """Every shard's recorded largest id is below the store's `vocab_size` (the manifest alone: no
        shard read, except once for a manifest without id ranges). Done by the first `doc`, so that a
        run's tokenizer check, which says more, comes first."""
        if self._vocabulary_checked:
            return
        vocab_size = self.vocab_size
        assert vocab_size is not None
        if _missing_id_ranges(self.manifest):
            self.manifest = record_id_ranges(self.root)  # without them when it cannot record them
        for langs in self.manifest["sources"].values():
            for entry in langs.values():
                for rel, (_, top) in zip(entry["shards"], entry.get("ids", ()), strict=False):
                    if top >= vocab_size:
                        raise _vocabulary_error(self.root / rel, top, vocab_size, self.root / MANIFEST)
        self._vocabulary_checked = True

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

    # -- open shards --------------------------------------------------------------------------------

    def _shard(self, source: str, lang: str, k: int) -> tuple[_Shard, int, int]:
        """A language's k-th shard and the document range it owns there (the caller holds the lock)."""
        entry = self._entry(source, lang)
        rel = entry["shards"][k]
        shard = self._open.get(rel)
        if shard is None:
            while len(self._open) >= self.max_open_shards:
                self._close_oldest()
            shard = self._open[rel] = self._open_shard(rel)
        else:
            self._open.move_to_end(rel)
        a, b = entry["ranges"][k]
        if not 0 <= a <= b <= shard.num_docs:
            raise ShardError(
                f"{shard.path}: has {shard.num_docs} documents, the manifest gives {source}/{lang} [{a}, {b})"
            )
        return shard, a, b

    def _open_shard(self, rel: str) -> _Shard:
        """Open a shard; out of descriptors (or memory), close shards and try again, keeping the cache smaller."""
        path = self.root / rel
        while True:
            try:
                shard = _Shard(path, self._layouts.get(rel))
            except OSError as e:
                if e.errno not in _LIMIT_ERRNOS:
                    raise
                if not self._open:
                    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
                    raise OpenFilesError(
                        f"{path}: cannot open the shard: {e.strerror}, though no other shard is open "
                        f"(`ulimit -n` is {soft}): the process holds too many other files, or the limit is too low"
                    ) from None
                self.max_open_shards = max(1, len(self._open) // 2)
                logger.warning(
                    "%s while opening %s: keeping at most %d shards open",
                    e.strerror,
                    path,
                    self.max_open_shards,
                )
                while len(self._open) > self.max_open_shards - 1:
                    self._close_oldest()
                continue
            self.shard_opens += 1
            self._layouts[rel] = shard.layout
            return shard

    def _close_oldest(self) -> None:
        _, shard = self._open.popitem(last=False)
        shard.close()
        self._closed_bytes += shard.bytes_read

    @property
    def bytes_read(self) -> int:
        """Bytes read from shard files so far: documents, and the headers and offsets of every open."""
        with self._lock:
            return self._closed_bytes + sum(shard.bytes_read for shard in self._open.values())

    def close(self) -> None:
        """Close every open shard (reading again reopens them)."""
        with self._lock:
            while self._open:
                self._close_oldest()

    @property
    def open_shards(self) -> int:
        return len(self._open)

    # -- documents ----------------------------------------------------------------------------------

    def _locate(self, source: str, lang: str, i: int) -> tuple[int, int]:
        """(shard number within the language, document number within that shard's range)."""
        self._entry(source, lang)
        cum = self._cum[(source, lang)]
        if not 0 <= i < cum[-1]:
            raise IndexError(f"document {i} out of range for {source}/{lang} ({int(cum[-1])} documents)")
        k = int(np.searchsorted(cum, i, side="right")) - 1
        return k, i - int(cum[k])

    def doc(self, source: str, lang: str, i: int) -> np.ndarray:
        """Document `i` (0 <= i < num_docs) of a source's language: a read-only uint32 array."""
        k, j = self._locate(source, lang, i)
        with self._lock:
            self.check_vocabulary()
            shard, a, _ = self._shard(source, lang, k)
            tokens = shard.doc(a + j)
        if self.vocab_size is not None and tokens.size and int(tokens.max()) >= self.vocab_size:
            raise _vocabulary_error(
                shard.path, int(tokens.max()), self.vocab_size, self.root / MANIFEST,
                ", though the manifest's range for it is below: the shard changed after `prepare`",
            )  # fmt: skip
        return tokens

    def doc_length(self, source: str, lang: str, i: int) -> int:
        """Tokens in document `i`, from its two offsets (16 bytes read): for a reader that passes over
        documents without using them (another rank's rows of a global batch)."""
        k, j = self._locate(source, lang, i)
        with self._lock:
            shard, a, _ = self._shard(source, lang, k)
            begin, end = (int(x) for x in shard.offsets(a + j, a + j + 2))
        return end - begin

    def doc_lengths(self, source: str, lang: str) -> np.ndarray:
        """Token count of every document of a source's language, in document order: (num_docs,) int64."""
        parts = []
        for k in range(len(self._entry(source, lang)["shards"])):
            with self._lock:
                shard, a, b = self._shard(source, lang, k)
                parts.append(np.diff(shard.offsets(a, b + 1)))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def verify(self) -> None:
        """Read every shard in full and check it against the manifest (raises `ShardError` naming the file)."""
        for source, lang in self._cum:
            entry = self._entry(source, lang)
            for k in range(len(entry["shards"])):
                with self._lock:
                    shard, _, _ = self._shard(source, lang, k)
                    shard.check_offsets()
                    ids = shard.id_range() if "ids" in entry else None
                if ids is not None and ids != entry["ids"][k]:
                    raise ShardError(
                        f"{shard.path}: holds ids in {ids}, the manifest records {entry['ids'][k]}"
                    )
            lengths = self.doc_lengths(source, lang)
            if int(lengths.sum()) != self.num_tokens(source, lang):
                raise ShardError(
                    f"{self.root / MANIFEST}: {source}/{lang} lists {self.num_tokens(source, lang)} tokens, "
                    f"its shards hold {int(lengths.sum())}"
                )


class UnionStore:
    """Several prepared data directories read as one.

    A (source, language) cell may be spread over several directories: its documents are those of each
    directory in the order listed. So a language added to a released mixture (its own directory,
    prepared under the mixture's source name) joins that source's sampling, and a cell prepared in
    pieces on machines that share no storage is read whole. The same data listed twice (a cell whose
    source has the same fingerprint in two directories: a copy) is an error.
    """

    def __init__(self, stores: Sequence[TokenStore]) -> None:
        self.stores = list(stores)
        self._by_cell: dict[tuple[str, str], list[TokenStore]] = {}
        for store in stores:
            for source in store.sources():
                for lang in store.languages(source):
                    holders = self._by_cell.setdefault((source, lang), [])
                    for other in holders:
                        if _same_data(other, store, source):
                            raise ShardError(
                                f"{source}/{lang} is in both {other.root} and {store.root}, prepared from "
                                "the same data (a copy listed twice?)"
                            )
                    holders.append(store)
        # Documents before each directory's part of a cell, plus the total.
        self._cum = {
            key: np.concatenate([[0], np.cumsum([s.num_docs(*key) for s in holders], dtype=np.int64)])
            for key, holders in self._by_cell.items()
        }

    def sources(self) -> list[str]:
        return sorted({source for source, _ in self._by_cell})

    def languages(self, source: str | None = None) -> list[str]:
        return sorted({lang for s, lang in self._by_cell if source in (None, s)})

    def _holders(self, source: str, lang: str) -> list[TokenStore]:
        try:
            return self._by_cell[(source, lang)]
        except KeyError:
            raise KeyError(
                f"no language {lang!r} in source {source!r} of {[s.root for s in self.stores]}"
            ) from None

    def num_tokens(self, source: str, lang: str) -> int:
        return sum(s.num_tokens(source, lang) for s in self._holders(source, lang))

    def num_docs(self, source: str, lang: str) -> int:
        return sum(s.num_docs(source, lang) for s in self._holders(source, lang))

    def _locate(self, source: str, lang: str, i: int) -> tuple[TokenStore, int]:
        """The directory holding a cell's document `i`, and its number there."""
        holders, cum = self._holders(source, lang), self._cum[(source, lang)]
        if not 0 <= i < cum[-1]:
            raise IndexError(f"document {i} out of range for {source}/{lang} ({int(cum[-1])} documents)")
        k = int(np.searchsorted(cum, i, side="right")) - 1
        return holders[k], i - int(cum[k])

    def doc(self, source: str, lang: str, i: int) -> np.ndarray:
        store, j = self._locate(source, lang, i)
        return store.doc(source, lang, j)

    def doc_length(self, source: str, lang: str, i: int) -> int:
        store, j = self._locate(source, lang, i)
        return store.doc_length(source, lang, j)

    def close(self) -> None:
        for store in self.stores:
            store.close()


def _same_data(a: TokenStore, b: TokenStore, source: str) -> bool:
    """Whether two directories hold `source` prepared from the same data (by its fingerprint; without
    one, by the shard files themselves)."""
    info_a = a.manifest.get("source_info", {}).get(source, {}).get("fingerprint")
    info_b = b.manifest.get("source_info", {}).get(source, {}).get("fingerprint")
    if info_a is not None and info_b is not None:
        return info_a == info_b
    files = {
        (a.root / rel).resolve()
        for entry in a.manifest["sources"][source].values()
        for rel in entry["shards"]
    }
    return any(
        (b.root / rel).resolve() in files
        for entry in b.manifest["sources"][source].values()
        for rel in entry["shards"]
    )


def open_data(
    paths: Sequence[str | os.PathLike],
    vocab_size: int | None = None,
    max_open_shards: int = DEFAULT_OPEN_SHARDS,
) -> TokenStore | UnionStore:
    """Prepared data directories (a recipe's `data`) as one store (ids checked against `vocab_size`).

    `max_open_shards` bounds each directory's open shards.
    """
    stores = [TokenStore(p, vocab_size, max_open_shards) for p in paths]
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
