"""`mmbert prepare`: tokenize a document source into token shards, indexed per language, plus a manifest.

    mmbert prepare --source bundled|PATH|hf:NAME|mds:PATH --tokenizer DIR --out DATA [--workers N]
                   [--part I/N | --join]

Layout of DATA (read back by `mmbert.data.shards.TokenStore`):

    DATA/manifest.json                   sources x languages: docs, tokens, shards (relative paths) and
                                         each shard's document range [first, end) for that language;
                                         the tokenizer's identity; each source's fingerprint
                                         (the format: `mmbert.data.manifest`)
    DATA/<source>/<unit>.<k>.tokens.npy  uint32 token ids of the documents, no special tokens,
                                         documents grouped by language
    DATA/<source>/<unit>.<k>.offsets.npy int64 document boundaries (docs + 1 entries, from 0)
    DATA/<source>/_units/<unit>.json     a finished work unit (what makes a rerun resume)
    DATA/<source>/_source.json           the source's fingerprint and the tokenizer it was cut with
    DATA/<source>/_parts/<i>-of-<n>/     the lock of one part (`--part`), when prepared across machines

Why it is built this way:
- A source is split into work units (a file, a chunk of rows, an MDS shard) that worker processes
  tokenize independently. A unit's shards are written to temporary names and renamed, and its record
  in `_units/` is written last: a unit is finished exactly when its record exists, so a killed run
  leaves no half-written file under a real name, and a rerun skips finished units.
- A shard holds all of its unit's languages, each a contiguous document range: per-language files
  would cost two fsynced files per language per unit, which for the bundled corpus (465 languages)
  made writing 25x slower than tokenizing.
- The manifest is written (atomically) only when every unit of the source is finished, and it is a
  merge: several sources (`--name`) can be prepared into one DATA directory.
- Several machines prepare one source into one shared DATA with `--part I/N` each (units I, I + N,
  I + 2N, ...: disjoint, and together all of them); a part locks only `<source>/_parts/I-of-N/` and
  writes no manifest, so the parts run at once. `--join` (once, when they are done) writes the
  manifest from the unit records, tokenizing nothing. A cell (source, language) then spans the
  parts' shards like any other.
- The tokenizer's identity (vocab size, special ids, `mmbert.tokenizer.fingerprint_sha256`) and the
  source's fingerprint are checked on every run: resuming with different ones would mix incompatible
  shards, so it is an error unless `--overwrite` starts that source (or, for a new tokenizer, DATA)
  afresh.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import re
import shutil
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from mmbert import languages
from mmbert.data.documents import Document, TokenizedDocument
from mmbert.data.manifest import (
    MANIFEST,
    SOURCE_NAME_RE,
    ManifestTokenizerError,
    language_entries,
    new_manifest,
    read_manifest,
    write_manifest,
)
from mmbert.data.records import BadInputError
from mmbert.data.shards import shard_id_range
from mmbert.data.sources import DocumentSource, SkipReport, Unit
from mmbert.errors import MmbertError
from mmbert.io import atomic_open, atomic_write_text, check_output, inside, remove_stale_temps
from mmbert.process import LOCK_FILE, die_with_parent, directory_lock
from mmbert.tokenizer import read_tokenizer_files

logger = logging.getLogger(__name__)

PARTS = "_parts"  # DATA/<source>/_parts/<i>-of-<n>/: the lock of one part of a prepare across machines
DEFAULT_SHARD_TOKENS = 1 << 25  # 32M tokens = 128 MiB of uint32 per shard file (and in memory)
BATCH_DOCS = 256  # documents per encode_batch call: amortizes the Python <-> Rust crossing
# Characters per encode_batch call and per piece of a long document. The tokenizer holds about 100
# bytes per character while it works (offsets, alignments, token strings): 47M characters in one
# call took 5 GB, so long documents are cut into pieces and the calls are bounded in characters.
BATCH_CHARS = 1 << 20
PIECE_CHARS = 1 << 18
_WORD_GAP = re.compile(r"(?<=\S) (?=\S)")  # one space between two words: a cut before it
_LINE_GAP = re.compile(r"(?<=\S)(?=\n)")  # the end of a non-empty line: a cut before the newline


class PrepareError(MmbertError, RuntimeError):
    """A run that cannot go ahead as asked (mismatched tokenizer or source, a DATA dir in use)."""


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    """One of prepare's own JSON records; a damaged one is an error naming it (delete it to redo its part)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PrepareError(f"{path}: damaged record ({e}); delete it to prepare that part again") from None
    if not isinstance(obj, dict):
        raise PrepareError(
            f"{path}: damaged record (not a JSON object); delete it to prepare that part again"
        )
    return obj


def _same_tokenizer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("vocab_size", "special_ids", "sha256")
    return all(a.get(k) == b.get(k) for k in keys)


# --------------------------------------------------------------------------------------------------
# Worker side: one unit -> shard files + a record


@dataclass
class _Job:
    source: DocumentSource
    source_name: str
    unit: Unit
    source_dir: str
    shard_tokens: int
    skip_bad: bool
    bos_id: int | None
    eos_id: int | None
    vocab_size: int
    allow_unknown_languages: bool = False
    # What the unit was cut from and with (the source's fingerprint, the tokenizer's sha256), kept in
    # its record: parts started at once on several machines can each find no `_source.json` to check.
    stamp: dict[str, str] = field(default_factory=dict)


_tokenizer: Any = None


def _no_progress(docs: int, tokens: int) -> None:
    return None


_progress: Callable[[int, int], None] = _no_progress


def _init_worker(tokenizer_json: str, queue: Any, parent_pid: int | None = None) -> None:
    """Per-process setup: one tokenizer thread per process (the processes are the parallelism).

    A worker process (`parent_pid` given) ends with its parent, however the parent ends: left
    running, it would go on writing shards that no run will record.
    """
    global _tokenizer, _progress
    if parent_pid is not None:
        die_with_parent(parent_pid)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _tokenizer = Tokenizer.from_str(tokenizer_json)
    if queue is not None:
        _progress = lambda docs, tokens: queue.put((docs, tokens))  # noqa: E731


class _UnitWriter:
    """Buffers one unit's documents and writes them as shards of about `shard_tokens` tokens.

    A shard holds the documents of every language in the unit, grouped by language, and the record
    says which document range of the shard each language owns: a source with hundreds of small
    languages (the bundled corpus) then costs two files per shard, not two per language.
    """

    def __init__(self, source_dir: Path, uid: str, shard_tokens: int) -> None:
        self.source_dir, self.uid, self.shard_tokens = source_dir, uid, shard_tokens
        self.docs: list[tuple[str, np.ndarray]] = []
        self.buffered = 0
        self.shards: list[dict[str, Any]] = []

    def add(self, lang: str, tokens: np.ndarray) -> None:
        self.docs.append((lang, tokens))
        self.buffered += len(tokens)
        if self.buffered >= self.shard_tokens:
            self._flush()

    def _flush(self) -> None:
        docs = sorted(self.docs, key=lambda d: d[0])  # stable: document order kept within a language
        self.docs, self.buffered = [], 0
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum([len(t) for _, t in docs], out=offsets[1:])
        tokens = np.concatenate([t for _, t in docs]).astype(np.uint32, copy=False)  # (total tokens,)
        langs: dict[str, list[int]] = {}
        for i, (lang, _) in enumerate(docs):
            span = langs.setdefault(lang, [i, i])
            span[1] = i + 1
        rel = f"{self.source_dir.name}/{self.uid}.{len(self.shards):04d}"
        # Offsets first: a tokens file under its real name always has its offsets beside it.
        with atomic_open(self.source_dir.parent / f"{rel}.offsets.npy") as f:
            np.save(f, offsets)
        with atomic_open(self.source_dir.parent / f"{rel}.tokens.npy") as f:
            np.save(f, tokens)
        self.shards.append(
            {
                "path": f"{rel}.tokens.npy",
                "docs": len(docs),
                "tokens": int(offsets[-1]),
                # lang -> [first doc, end doc, tokens]
                "langs": {lang: [a, b, int(offsets[b] - offsets[a])] for lang, (a, b) in langs.items()},
                # checked here once, so that a run reads the range from the manifest, not the shard
                "ids": [int(tokens.min()), int(tokens.max())],
            }
        )

    def finish(self) -> list[dict[str, Any]]:
        if self.docs:
            self._flush()
        return self.shards


def piece_bounds(text: str, limit: int = PIECE_CHARS) -> list[tuple[int, int]]:
    """`[start, end)` of the pieces of at most `limit` characters that `text` is tokenized in.

    Each cut is made, in the second half of the piece's room, before a single space between two
    words, else at the end of a line, else at the limit. The first two are places where common
    pre-tokenizers (whitespace splits, GPT-2-style regexes, SentencePiece's `▁`, this project's
    tokenizers) start a new piece anyway, so the pieces' token ids, joined, are the whole text's.
    """
    bounds, start = [], 0
    while len(text) - start > limit:
        lo, hi = start + limit // 2, start + limit
        cut = hi
        for gap in (_WORD_GAP, _LINE_GAP):
            last = deque(gap.finditer(text, lo, hi), maxlen=1)  # the last match only
            if last:
                cut = last[0].start()
                break
        bounds.append((start, cut))
        start = cut
    bounds.append((start, len(text)))
    return bounds


def _encode(texts: list[str]) -> list[np.ndarray]:
    """Token ids of each text (no special tokens), in calls of at most `BATCH_CHARS` characters.

    The tokenizer's working memory is that of one call, whatever a text's length; what grows with a
    text is the text and its ids (about 10 bytes per character in all, against ~100 in one call).
    """
    encode = getattr(_tokenizer, "encode_batch_fast", _tokenizer.encode_batch)
    pieces = [(i, a, b) for i, text in enumerate(texts) for a, b in piece_bounds(text)]
    parts: list[list[np.ndarray]] = [[] for _ in texts]
    start = 0
    while start < len(pieces):
        end, chars = start + 1, pieces[start][2] - pieces[start][1]
        while end < len(pieces) and chars + pieces[end][2] - pieces[end][1] <= BATCH_CHARS:
            chars += pieces[end][2] - pieces[end][1]
            end += 1
        call = pieces[start:end]
        encoded = encode([texts[i][a:b] for i, a, b in call], add_special_tokens=False)
        for (i, _, _), enc in zip(call, encoded, strict=True):
            parts[i].append(np.asarray(enc.ids, dtype=np.uint32))
        start = end
    return [p[0] if len(p) == 1 else np.concatenate(p) for p in parts]


def _pretokenized(doc: TokenizedDocument, job: _Job) -> np.ndarray:
    """Token ids of an already tokenized document, without the sequence start/end tokens."""
    tokens = doc.tokens
    if len(tokens) and job.bos_id is not None and tokens[0] == job.bos_id:
        tokens = tokens[1:]
    if len(tokens) and job.eos_id is not None and tokens[-1] == job.eos_id:
        tokens = tokens[:-1]
    if len(tokens) and (int(tokens.max()) >= job.vocab_size or int(tokens.min()) < 0):
        raise BadInputError(
            "token id out of range",
            doc.doc_id,
            None,
            f"ids in [{int(tokens.min())}, {int(tokens.max())}] but the tokenizer has {job.vocab_size}: "
            "was this data tokenized with another tokenizer?",
        )
    return tokens.astype(np.uint32, copy=False)


def _check_language(doc: Document | TokenizedDocument) -> None:
    """A document's language key must be a known one (`mmbert.languages.check_key`)."""
    try:
        languages.check_key(doc.lang)
    except languages.UnknownLanguageError as err:
        meta = getattr(doc, "meta", None) or {}
        file = str(meta.get("file", doc.doc_id))
        raise BadInputError("unknown language key", file, meta.get("line"), err.detail) from None


def _run_unit(job: _Job) -> dict[str, Any]:
    """Tokenize one unit into shard files, then record it as finished; returns the record."""
    source_dir = Path(job.source_dir)
    uid = job.unit.uid
    # Shards of an earlier, interrupted attempt at this unit: not recorded anywhere, so stale.
    for stale in source_dir.glob(f"{uid}.*.npy"):
        stale.unlink()
    for stale in source_dir.glob(f".{uid}.*.tmp"):  # its temporaries (a unit runs in one process at a time)
        stale.unlink(missing_ok=True)
    writer = _UnitWriter(source_dir, uid, job.shard_tokens)
    report = SkipReport() if job.skip_bad else None
    no_tokens = 0
    batch: list[Document] = []

    def flush() -> None:
        nonlocal no_tokens
        tokens = _encode([d.text for d in batch])
        n_tokens = 0
        for doc, ids in zip(batch, tokens, strict=True):
            if len(ids) == 0:
                no_tokens += 1
                continue
            writer.add(doc.lang, ids)
            n_tokens += len(ids)
        _progress(len(batch), n_tokens)
        batch.clear()

    pending_docs = pending_tokens = batch_chars = 0
    known: set[str] = set()  # the unit's language keys found known
    for doc in job.source.read(job.unit, job.source_name, report):
        if doc.lang not in known and not job.allow_unknown_languages:
            try:
                _check_language(doc)
            except BadInputError as err:
                if report is None:
                    raise
                report.add(err)
                continue
            known.add(doc.lang)
        if isinstance(doc, TokenizedDocument):
            try:
                ids = _pretokenized(doc, job)
            except BadInputError as err:
                if report is None:
                    raise
                report.add(err)
                continue
            if len(ids) == 0:
                no_tokens += 1
                continue
            writer.add(doc.lang, ids)
            pending_docs, pending_tokens = pending_docs + 1, pending_tokens + len(ids)
            if pending_docs >= BATCH_DOCS:
                _progress(pending_docs, pending_tokens)
                pending_docs = pending_tokens = 0
        else:
            batch.append(doc)
            batch_chars += len(doc.text)
            if len(batch) >= BATCH_DOCS or batch_chars >= BATCH_CHARS:
                flush()
                batch_chars = 0
    if batch:
        flush()
    if pending_docs:
        _progress(pending_docs, pending_tokens)
    record = {
        "uid": uid,
        "shards": writer.finish(),
        "no_tokens": no_tokens,
        "skipped": (report or SkipReport()).to_dict(),
        **job.stamp,
    }
    _write_json(source_dir / "_units" / f"{uid}.json", record)
    return record


def _record_complete(record: dict[str, Any], data: Path, where: Path) -> bool:
    """Whether every shard a unit record names is there whole (its paths must lie inside DATA): both
    files, each as long as the record says. A shard cut short (a copy that stopped, a damaged disk)
    makes its unit be prepared again."""
    for shard in record["shards"]:
        tokens = inside(data, shard["path"], f"{where}: shards")
        offsets = tokens.with_name(tokens.name.replace(".tokens.npy", ".offsets.npy"))
        if not (_npy_length(tokens) == shard["tokens"] and _npy_length(offsets) == shard["docs"] + 1):
            logger.warning("%s: missing or cut short, preparing its unit again", tokens)
            return False
    return True


def _npy_length(path: Path) -> int | None:
    """The length of the 1-d array in a .npy file, read from its header; None when the file is missing
    or shorter than its header says."""
    try:
        return len(np.load(path, mmap_mode="r"))
    except (OSError, ValueError):  # missing; or "mmap length is greater than file size"
        return None


def _check_stamp(record: dict[str, Any], state: dict[str, Any], where: Path) -> None:
    """A unit record written by a part with another tokenizer or other source data or options is an
    error naming it: joined, its shards would mix ids of two tokenizers in one dataset."""
    for key, what in (("tokenizer_sha256", "tokenizer"), ("fingerprint", "source data or options")):
        if key in record and record[key] != state[key]:
            raise PrepareError(
                f"{where}: this unit was prepared with another {what} ({key} {record[key][:16]}, this run's "
                f"{state[key][:16]}): every part of a source must use the same; prepare the source again "
                f"(delete {where.parent.parent}) with one {what}"
            )


def _with_id_ranges(record: dict[str, Any], data: Path, where: Path) -> dict[str, Any]:
    """A unit record with each shard's token-id range (a record written before they were: its shards read once)."""
    missing = [shard for shard in record["shards"] if "ids" not in shard]
    for shard in missing:
        shard["ids"] = shard_id_range(data / shard["path"])
    if missing:
        _write_json(where, record)
    return record


# --------------------------------------------------------------------------------------------------
# Driver


@dataclass
class PrepareResult:
    name: str
    langs: dict[str, dict[str, int]]
    skipped: dict[str, Any]
    units_total: int
    units_resumed: int
    seconds: float
    tokens_this_run: int = 0
    docs_this_run: int = 0
    manifest_path: Path = field(default_factory=Path)  # Path() for a part (no manifest written)
    part: tuple[int, int] | None = None

    @property
    def docs(self) -> int:
        return sum(v["docs"] for v in self.langs.values())

    @property
    def tokens(self) -> int:
        return sum(v["tokens"] for v in self.langs.values())


def _is_prepared_data(data: Path) -> bool:
    """Whether a directory was written by `mmbert prepare` (a manifest, or a run's lock, sources or parts)."""
    return (
        (data / MANIFEST).exists()
        or (data / LOCK_FILE).exists()
        or any(data.glob("*/_source.json"))
        or any(data.glob(f"*/{PARTS}"))
    )


def _usable_manifest(data: Path, overwrite: bool) -> dict[str, Any] | None:
    """`data`'s manifest; with `overwrite`, one without its tokenizer entry (what its error advises) is
    deleted, to be written again: each source's finished units stay in its directory, and a rerun of
    `prepare` for that source lists it again without tokenizing anew (`_record_complete`). Nothing it
    names is followed or deleted; any other fault of a manifest stays an error."""
    try:
        return read_manifest(data)
    except ManifestTokenizerError as err:
        if not overwrite:
            raise
        logger.warning("--overwrite: %s; writing a new manifest (prepare each source again to list it)", err)
        (data / MANIFEST).unlink()
        return None


def _check_tokenizer(
    data: Path, manifest: dict[str, Any] | None, identity: dict[str, Any], overwrite: bool
) -> dict | None:
    if manifest is None or not manifest.get("sources") or _same_tokenizer(manifest["tokenizer"], identity):
        return manifest
    if not overwrite:
        raise PrepareError(
            f"{data} was prepared with another tokenizer ({manifest['tokenizer'].get('path')}, "
            f"vocab {manifest['tokenizer'].get('vocab_size')}): use another --out, or --overwrite to "
            "delete every source prepared there"
        )
    logger.warning("--overwrite: new tokenizer, deleting every source in %s", data)
    for name in manifest["sources"]:
        shutil.rmtree(inside(data, name, f"{data / MANIFEST}: sources"), ignore_errors=True)
    (data / MANIFEST).unlink()
    return None


def _check_source(
    data: Path, name: str, state: dict[str, Any], manifest: dict[str, Any] | None, overwrite: bool
) -> None:
    """Refuse to resume (or add to) a source prepared from other data or with another tokenizer."""
    source_dir = data / name
    state_path = source_dir / "_source.json"
    old = _read_json(state_path) if state_path.exists() else None
    if old is None and manifest is not None and name in manifest.get("source_info", {}):
        old = manifest["source_info"][name]
    if overwrite:
        shutil.rmtree(source_dir, ignore_errors=True)
        if manifest is not None and name in manifest["sources"]:
            # Until this run finishes, the manifest must not list shards that no longer exist.
            del manifest["sources"][name]
            manifest.get("source_info", {}).pop(name, None)
            write_manifest(data, manifest)
        return
    if old is None:
        # A part's lock (`_parts`) or another part's first files may already be there.
        own = re.compile(r"^(_parts|_units|\..*\.tmp)$")
        if source_dir.exists() and any(not own.match(p.name) for p in source_dir.iterdir()):
            raise PrepareError(
                f"{source_dir} exists but was not written by `mmbert prepare`: use --overwrite"
            )
        return
    if old.get("fingerprint") != state["fingerprint"]:
        raise PrepareError(
            f"source {name!r} in {data} was prepared from other data or options ({old.get('spec')}): "
            "the fingerprint changed; use --overwrite to prepare it again, or another --name"
        )
    if "tokenizer_sha256" in old and old["tokenizer_sha256"] != state["tokenizer_sha256"]:
        raise PrepareError(f"source {name!r} in {data} was cut with another tokenizer: use --overwrite")


def prepare(
    source: DocumentSource,
    tokenizer: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    workers: int = 1,
    skip_bad: bool = False,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    overwrite: bool = False,
    progress: bool = True,
    allow_unknown_languages: bool = False,
    part: tuple[int, int] | None = None,
    join: bool = False,
) -> PrepareResult:
    """Tokenize `source` into `out` (resuming a previous run), then merge it into `out/manifest.json`.

    A document whose language key is not a known one (`mmbert.languages.check_key`) is bad input,
    unless `allow_unknown_languages`.

    Several machines: `part=(i, n)` tokenizes only units i, i + n, i + 2n, ... of the source (0 <= i < n)
    and writes no manifest, so that n machines can prepare one source into one shared `out` at once,
    each under its own lock; `join=True` then records every unit in the manifest, tokenizing nothing
    (an error lists the parts with units left).
    """
    start = time.perf_counter()
    data = Path(out)
    name = name or source.default_name
    if not SOURCE_NAME_RE.match(name) or name == MANIFEST:
        raise PrepareError(f"source name {name!r}: use letters, digits, '.', '_', '-' (not first)")
    if shard_tokens < 1:
        raise PrepareError(f"--shard-tokens must be positive, not {shard_tokens}")
    if workers < 1:
        raise PrepareError(f"--workers must be at least 1, not {workers}")
    if part is not None:
        if not 0 <= part[0] < part[1]:
            raise PrepareError(f"--part {part[0]}/{part[1]}: expected I/N with 0 <= I < N")
        if join or overwrite:
            raise PrepareError(
                f"--part cannot be combined with {'--join' if join else '--overwrite'} (to start a source "
                f"afresh, delete {data / name} before the parts run)"
            )
    # every run reads the data with mmBERT's ids: a tokenizer without them is refused before any work
    tok = read_tokenizer_files(tokenizer, require_layout=True)
    identity = tok.identity()
    check_output(
        data, [getattr(source, "root", None), tokenizer], is_own=_is_prepared_data, overwrite=overwrite
    )
    # A part holds its own lock only: the parts run at once, on several machines, and none of them
    # touches the manifest or another part's files.
    lock = data if part is None else data / name / PARTS / f"{part[0]}-of-{part[1]}"
    with directory_lock(lock, "mmbert prepare"):
        if part is None:
            remove_stale_temps(data)  # a killed run's manifest temporaries (its shards': below)
        manifest = _check_tokenizer(data, _usable_manifest(data, overwrite), identity, overwrite)
        fingerprint = source.fingerprint()
        state = {
            "spec": source.spec(),
            "kind": source.kind,
            "fingerprint": fingerprint,
            "tokenizer_sha256": identity["sha256"],
        }
        _check_source(data, name, state, manifest, overwrite)
        source_dir = data / name
        source_dir.mkdir(parents=True, exist_ok=True)
        _write_json(source_dir / "_source.json", state)
        if part is None:  # of a killed run: never referenced (a part removes only its own units')
            remove_stale_temps(source_dir, recursive=True)

        units = source.units()
        mine = units if part is None else units[part[0] :: part[1]]
        records: dict[str, dict[str, Any]] = {}
        for unit in mine:
            path = source_dir / "_units" / f"{unit.uid}.json"
            if path.exists():
                record = _read_json(path)
                _check_stamp(record, state, path)
                if _record_complete(record, data, path):
                    records[unit.uid] = _with_id_ranges(record, data, path)
        todo = [u for u in mine if u.uid not in records]
        if join and todo:
            raise PrepareError(_parts_missing(source_dir, units, todo))
        resumed = len(records)
        if resumed:
            logger.info("%s: %d of %d units already prepared, %d to go", name, resumed, len(mine), len(todo))
        special = identity["special_ids"]
        stamp = {key: state[key] for key in ("fingerprint", "tokenizer_sha256")}
        jobs = [
            _Job(source, name, u, str(source_dir), shard_tokens, skip_bad, special["bos"], special["eos"],
                 identity["vocab_size"], allow_unknown_languages, stamp=stamp)
            for u in todo
        ]  # fmt: skip
        known = [u.docs for u in todo]
        total = sum(known) if all(d is not None for d in known) else None  # type: ignore[misc]
        done_docs, done_tokens = _run_jobs(jobs, tok.text, workers, records, total, progress, name)

        skipped = SkipReport()
        no_tokens = 0
        for unit in mine:
            skipped.merge(records[unit.uid]["skipped"])
            no_tokens += records[unit.uid]["no_tokens"]
        # In unit order, so that shard lists do not depend on which worker finished first.
        langs = language_entries(shard for unit in mine for shard in records[unit.uid]["shards"])
        manifest_path = Path()
        if part is None:
            manifest = read_manifest(data) or new_manifest()
            manifest["tokenizer"] = identity
            manifest["sources"][name] = langs
            manifest.setdefault("source_info", {})[name] = {
                **state,
                "units": len(units),
                "skipped": skipped.to_dict(),
                "no_tokens": no_tokens,
                "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            manifest_path = write_manifest(data, manifest)
    return PrepareResult(
        name=name,
        langs={k: {"docs": v["docs"], "tokens": v["tokens"]} for k, v in langs.items()},
        skipped=skipped.to_dict(),
        units_total=len(mine),
        units_resumed=resumed,
        seconds=time.perf_counter() - start,
        tokens_this_run=done_tokens,
        docs_this_run=done_docs,
        manifest_path=manifest_path,
        part=part,
    )


def _parts_missing(source_dir: Path, units: list[Unit], todo: list[Unit]) -> str:
    """The `--join` error: how many units are left, and which parts (as the parts' locks name them) own them."""
    counts = {int(d.name.split("-of-")[1]) for d in (source_dir / PARTS).glob("*-of-*") if d.is_dir()}
    position = {u.uid: k for k, u in enumerate(units)}
    left = [position[u.uid] for u in todo]
    owners = "; ".join(
        f"parts {', '.join(str(i) for i in sorted({k % n for k in left}))} of {n}" for n in sorted(counts)
    )
    return (
        f"{source_dir}: {len(todo)} of {len(units)} units are not prepared yet ({todo[0].uid}, ...)"
        + (f", owned by {owners}" if owners else "")
        + ": finish those parts (`--part I/N`), or prepare without --join to tokenize them here"
    )


def _run_jobs(
    jobs: list[_Job],
    tokenizer_json: str,
    workers: int,
    records: dict[str, dict[str, Any]],
    total: int | None,
    progress: bool,
    name: str,
) -> tuple[int, int]:
    """Run the units (in this process for one worker, else in a process pool) with a progress bar."""
    counts = [0, 0]  # documents, tokens
    # The bar counts documents when the source knows how many there are (for the ETA), else units.
    by_units = total is None
    bar = tqdm(
        total=len(jobs) if by_units else total,
        unit="unit" if by_units else "doc",
        desc=f"prepare {name}",
        disable=not progress or not jobs,
        dynamic_ncols=True,
    )

    last_refresh = [time.monotonic()]

    def update(docs: int, tokens: int) -> None:
        counts[0] += docs
        counts[1] += tokens
        if not by_units:
            bar.update(docs)
        elapsed = bar.format_dict["elapsed"] or 1e-9
        docs_note = f"{counts[0]:,} docs, " if by_units else ""
        bar.set_postfix_str(f"{docs_note}{counts[1]:,} tok, {counts[1] / elapsed:,.0f} tok/s", refresh=False)
        if by_units and time.monotonic() - last_refresh[0] > 0.5:  # a long unit still shows progress
            last_refresh[0] = time.monotonic()
            bar.refresh()

    def unit_done(record: dict[str, Any]) -> None:
        records[record["uid"]] = record
        if by_units:
            bar.update(1)

    global _progress
    try:
        if workers <= 1 or len(jobs) <= 1:
            saved = os.environ.get("TOKENIZERS_PARALLELISM")
            _init_worker(tokenizer_json, None)
            _progress = update
            try:
                for job in jobs:
                    unit_done(_run_unit(job))
            finally:
                _progress = _no_progress
                _restore_env("TOKENIZERS_PARALLELISM", saved)
            return counts[0], counts[1]
        # fork where there is one: workers inherit the imported modules (importing the `mmbert` package
        # imports torch, seconds per process under spawn). The children only tokenize and write numpy
        # files, never touch torch's thread pools, and build their own tokenizer after the fork.
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else "spawn")
        queue = ctx.Queue()
        # Set before the fork so that tokenizers' at-fork check sees it (no "forked after parallelism" warning).
        saved = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        with ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(tokenizer_json, queue, os.getpid()),
        ) as pool:
            pending = {pool.submit(_run_unit, job) for job in jobs}
            try:
                while pending:
                    finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    _drain(queue, update)
                    for fut in finished:
                        unit_done(fut.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            finally:
                _drain(queue, update)
                _restore_env("TOKENIZERS_PARALLELISM", saved)
        return counts[0], counts[1]
    finally:
        bar.close()


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _drain(queue: Any, update: Callable[[int, int], None]) -> None:
    while True:
        try:
            docs, tokens = queue.get_nowait()
        except queue_mod.Empty:
            return
        update(docs, tokens)
