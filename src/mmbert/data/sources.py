"""Document sources: the bundled corpus, local files, Hugging Face datasets and MDS shards.

Every source yields `Document`s (one text in one language; MDS shards, which are already tokenized,
yield `TokenizedDocument`s) so that `mmbert prepare` treats them alike. A source is split into work
units (a file, a chunk of rows, an MDS shard): the unit is what `prepare` hands to a worker process and
what it records as finished, so a unit's id must not change between runs over the same data.

Bad input (invalid UTF-8, a broken JSON line, a missing text field, an unknown language code, an empty
file, a corrupt MDS shard) raises `BadInputError`, which names the file and line. With a `SkipReport`
the reader counts the bad record and carries on instead.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Document:
    """One training document: its text, its FineWeb2-style language key (`fra_Latn`), where it came from."""

    text: str
    lang: str
    source: str
    doc_id: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenizedDocument:
    """A document that arrives already tokenized (MDS shards): token ids instead of text."""

    tokens: np.ndarray
    lang: str
    source: str
    doc_id: str


@dataclass(frozen=True)
class Unit:
    """A piece of a source that one worker reads on its own; `uid` names its shards and its resume record."""

    uid: str
    arg: Any
    docs: int | None = None  # number of documents when known cheaply (for the progress bar's ETA)


class BadInputError(ValueError):
    """A record that cannot be used, with the file (or dataset) and line (or row) it came from."""

    def __init__(self, reason: str, file: str, line: int | None = None, detail: str = "") -> None:
        self.reason, self.file, self.line, self.detail = reason, file, line, detail
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {reason}" + (f": {detail}" if detail else ""))

    def __reduce__(self) -> tuple:
        # Raised in worker processes: pickle the constructor arguments, not the formatted message.
        return (BadInputError, (self.reason, self.file, self.line, self.detail))


@dataclass
class SkipReport:
    """What `--skip-bad` skipped: counts per reason and the first few messages."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 10

    def add(self, err: BadInputError) -> None:
        self.counts[err.reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(err))

    def merge(self, other: dict[str, Any]) -> None:
        self.counts.update(other.get("counts", {}))
        room = self.max_examples - len(self.examples)
        self.examples.extend(other.get("examples", [])[: max(room, 0)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())), "examples": list(self.examples)}


def _handle(err: BadInputError, report: SkipReport | None) -> None:
    """Raise `err` unless the caller asked to skip bad input, in which case count it."""
    if report is None:
        raise err
    report.add(err)


# FineWeb2 language keys: ISO 639-3 (or 639-1/2 for a few) + "_" + ISO 15924 script; data keys may add
# a variant suffix (`deu_Latn-1996`, see `mmbert.languages`). Directory names must be plain keys:
# FineWeb2's `fra_Latn_removed` (filtered-out data) is not a language directory.
LANG_DIR_RE = re.compile(r"^[a-z]{2,3}_[A-Z][a-z]{3}$")
LANG_KEY_RE = re.compile(r"^[a-z]{2,3}_[A-Z][a-z]{3}(-[A-Za-z0-9]+)?$")
# Keys that are not natural languages but are sampled like one (the code source).
SPECIAL_LANG_KEYS = frozenset({"code"})


def normalize_lang(value: Any, file: str, line: int | None = None) -> str:
    """Return the `lang_Script` key for `value` (a key, or a plain ISO 639-3 code the language table maps).

    Raises `BadInputError("unknown language code")` for anything else.
    """
    if not isinstance(value, str) or not value:
        raise BadInputError("unknown language code", file, line, repr(value))
    if value in SPECIAL_LANG_KEYS or LANG_KEY_RE.match(value):
        return value
    key = _iso3_to_key(value)
    if key is None:
        raise BadInputError(
            "unknown language code",
            file,
            line,
            f"{value!r} (expected a key like 'fra_Latn', or an ISO 639-3 code of a bundled language)",
        )
    return key


def _iso3_to_key(code: str) -> str | None:
    """Map a plain ISO 639-3 code to its `lang_Script` key (the script the bundled corpus uses for it)."""
    from mmbert import languages

    if not re.match(r"^[a-z]{3}$", code):
        return None
    try:
        return languages.to_key(code)
    except ValueError:
        return None


def lang_from_path(path: Path) -> str | None:
    """The deepest `lang_Script` directory in `path` (FineWeb2's layout: `.../fra_Latn/train/000.parquet`)."""
    for part in reversed(path.parts[:-1]):
        if LANG_DIR_RE.match(part):
            return part
    return None


def _safe_uid(text: str) -> str:
    """A file-name-safe, stable unit id: a readable stem plus a short hash of the full name."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text)[-60:].strip("._") or "unit"
    return f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class Source(ABC):
    """A collection of documents, split into units that can be read independently (and in parallel)."""

    kind: str = ""
    pretokenized: bool = False

    @property
    @abstractmethod
    def default_name(self) -> str:
        """The source's name in the manifest when `--name` is not given."""

    @abstractmethod
    def spec(self) -> str:
        """The `--source` string that recreates this source."""

    @abstractmethod
    def units(self) -> list[Unit]:
        """The work units, in a stable order."""

    @abstractmethod
    def read(
        self, unit: Unit, source_name: str, report: SkipReport | None = None
    ) -> Iterator[Document | TokenizedDocument]:
        """Yield the unit's documents; bad records raise, or are counted in `report` when given."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data and the reading options: a changed fingerprint means re-prepare."""


# --------------------------------------------------------------------------------------------------
# The bundled corpus


class BundledSource(Source):
    """The bundled UDHR corpus (`split` train or heldout) or its small code source (`split="code"`).

    The corpus is small and iterating it is cheap next to tokenizing it, so each of the fixed number of
    units walks the whole corpus and keeps every `num_units`-th document.
    """

    kind = "bundled"
    num_units = 8

    def __init__(self, split: str = "train") -> None:
        if split not in {"train", "heldout", "code"}:
            raise ValueError(f"bundled split must be train, heldout or code, not {split!r}")
        self.split = split

    @property
    def default_name(self) -> str:
        return {"train": "udhr", "heldout": "udhr-heldout", "code": "code"}[self.split]

    def spec(self) -> str:
        return "bundled" if self.split == "train" else f"bundled:{self.split}"

    def _iter_all(self) -> Iterator[Document]:
        from mmbert.data import corpus

        if self.split == "code":
            yield from corpus.iter_code_documents()
        else:
            yield from corpus.iter_documents(split=self.split)

    def units(self) -> list[Unit]:
        total = sum(1 for _ in self._iter_all())
        return [Unit(f"part{k:02d}", k, len(range(k, total, self.num_units))) for k in range(self.num_units)]

    def read(self, unit: Unit, source_name: str, report: SkipReport | None = None) -> Iterator[Document]:
        for i, doc in enumerate(self._iter_all()):
            if i % self.num_units == unit.arg:
                yield Document(doc.text, doc.lang, source_name, doc.doc_id, dict(doc.meta))

    def fingerprint(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for doc in self._iter_all():
            for part in (doc.doc_id, doc.lang, doc.text):
                digest.update(part.encode())
                digest.update(b"\0")
        return {"kind": self.kind, "split": self.split, "sha256": digest.hexdigest()}


# --------------------------------------------------------------------------------------------------
# Local files


LOCAL_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet", ".txt")


def _suffix(path: Path) -> str | None:
    name = path.name
    for suffix in LOCAL_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


class LocalFilesSource(Source):
    """A file or a directory (searched recursively) of `.jsonl`, `.jsonl.gz`, `.parquet` or `.txt` files.

    JSON lines and parquet rows hold the text in `text_field` and, optionally, the language in
    `lang_field` and an id in `id_field`. A `.txt` file is one document. Without a language field the
    language is `lang` if given, else the deepest `lang_Script` directory in the file's path.
    """

    kind = "files"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        text_field: str = "text",
        lang_field: str | None = None,
        id_field: str = "id",
        lang: str | None = None,
    ) -> None:
        self.root = Path(path)
        if not self.root.exists():
            raise FileNotFoundError(f"source path does not exist: {self.root}")
        self.text_field, self.lang_field, self.id_field = text_field, lang_field, id_field
        self.lang = normalize_lang(lang, "--lang") if lang is not None else None

    @property
    def default_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.root.resolve().name) or "files"

    def spec(self) -> str:
        return str(self.root)

    def files(self) -> list[Path]:
        if self.root.is_file():
            if _suffix(self.root) is None:
                raise ValueError(f"{self.root}: not a {'/'.join(LOCAL_SUFFIXES)} file")
            return [self.root]
        found = sorted(p for p in self.root.rglob("*") if p.is_file() and _suffix(p) is not None)
        if not found:
            raise ValueError(f"no {'/'.join(LOCAL_SUFFIXES)} files under {self.root}")
        return found

    def _rel(self, path: Path) -> str:
        return path.name if self.root.is_file() else path.relative_to(self.root).as_posix()

    def units(self) -> list[Unit]:
        return [Unit(_safe_uid(self._rel(p)), str(p)) for p in self.files()]

    def fingerprint(self) -> dict[str, Any]:
        files = []
        for p in self.files():
            st = p.stat()
            files.append([self._rel(p), st.st_size, st.st_mtime_ns])
        options = [self.text_field, self.lang_field, self.id_field, self.lang]
        return {"kind": self.kind, "files": len(files), "sha256": _sha256_json([files, options])}

    def _file_lang(self, path: Path, has_fields: bool) -> str | None:
        """The language of every document in the file, or None when each record names its own."""
        if self.lang_field is not None and has_fields:
            return None
        if self.lang is not None:
            return self.lang
        key = lang_from_path(path)
        if key is None:
            how = "no --lang-field" if has_fields else "a .txt file has no fields"
            raise BadInputError(
                "cannot tell the language",
                str(path),
                None,
                f"{how}, no --lang and no lang_Script directory (like fra_Latn/) in the path",
            )
        return key

    def read(self, unit: Unit, source_name: str, report: SkipReport | None = None) -> Iterator[Document]:
        path = Path(unit.arg)
        suffix = _suffix(path)
        try:
            lang = self._file_lang(path, has_fields=suffix != ".txt")
        except BadInputError as err:
            _handle(err, report)
            return
        if path.stat().st_size == 0:
            _handle(BadInputError("empty file", str(path)), report)
            return
        if suffix == ".txt":
            yield from self._read_txt(path, lang, source_name, report)
        elif suffix == ".parquet":
            yield from self._read_records(self._parquet_rows(path), path, lang, source_name, report)
        else:
            yield from self._read_records(self._jsonl_rows(path), path, lang, source_name, report)

    def _read_txt(
        self, path: Path, lang: str | None, source_name: str, report: SkipReport | None
    ) -> Iterator[Document]:
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            _handle(BadInputError("invalid UTF-8", str(path), line, f"byte offset {e.start}"), report)
            return
        if not text.strip():
            _handle(BadInputError("empty file", str(path)), report)
            return
        assert lang is not None  # a .txt file's language comes from --lang or the path
        yield Document(text, lang, source_name, self._rel(path), {"file": str(path)})

    def _jsonl_rows(self, path: Path) -> Iterator[tuple[int, Any]]:
        """(line number, parsed object or a BadInputError) for each non-blank line."""
        opener = gzip.open if path.name.endswith(".gz") else open
        try:
            with opener(path, "rb") as f:
                for lineno, raw in enumerate(f, start=1):
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        yield (
                            lineno,
                            BadInputError("invalid UTF-8", str(path), lineno, f"column {e.start + 1}"),
                        )
                        continue
                    if not line.strip():
                        continue
                    try:
                        yield lineno, json.loads(line)
                    except json.JSONDecodeError as e:
                        yield lineno, BadInputError("broken JSON line", str(path), lineno, e.msg)
        except (OSError, EOFError) as e:  # a truncated or corrupt .gz
            yield -1, BadInputError("unreadable file", str(path), None, str(e))

    def _parquet_rows(self, path: Path) -> Iterator[tuple[int, Any]]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises several types for a bad file
            yield -1, BadInputError("unreadable parquet file", str(path), None, str(e))
            return
        names = pf.schema_arrow.names
        for needed, reason in (
            (self.text_field, "missing text field"),
            (self.lang_field, "missing language field"),
        ):
            if needed is not None and needed not in names:
                # One error for the file, not one per row.
                yield -1, BadInputError(reason, str(path), None, f"no column {needed!r} (has {names})")
                return
        columns = [c for c in (self.text_field, self.lang_field, self.id_field) if c and c in names]
        row = 0
        for batch in pf.iter_batches(batch_size=4096, columns=columns):
            for record in batch.to_pylist():
                row += 1
                yield row, record

    def _read_records(
        self,
        rows: Iterator[tuple[int, Any]],
        path: Path,
        lang: str | None,
        source_name: str,
        report: SkipReport | None,
    ) -> Iterator[Document]:
        seen = 0
        for lineno, record in rows:
            seen += 1
            if isinstance(record, BadInputError):
                _handle(record, report)
                if lineno < 0:  # the file itself is unreadable: nothing more comes
                    return
                continue
            try:
                yield self._record_to_doc(record, lineno, path, lang, source_name)
            except BadInputError as err:
                _handle(err, report)
        if seen == 0:
            where = "rows" if path.suffix == ".parquet" else "non-blank lines"
            _handle(BadInputError("empty file", str(path), None, f"no {where}"), report)

    def _record_to_doc(
        self, record: Any, lineno: int, path: Path, lang: str | None, source_name: str
    ) -> Document:
        if not isinstance(record, dict):
            raise BadInputError("not a JSON object", str(path), lineno, type(record).__name__)
        text = record.get(self.text_field)
        if text is None:
            raise BadInputError("missing text field", str(path), lineno, repr(self.text_field))
        if not isinstance(text, str):
            raise BadInputError("text field is not a string", str(path), lineno, repr(self.text_field))
        if not text.strip():
            raise BadInputError("empty text", str(path), lineno, repr(self.text_field))
        if lang is None:
            value = record.get(self.lang_field)
            if value is None:
                raise BadInputError("missing language field", str(path), lineno, repr(self.lang_field))
            lang = normalize_lang(value, str(path), lineno)
        doc_id = record.get(self.id_field)
        doc_id = str(doc_id) if doc_id is not None else f"{self._rel(path)}:{lineno}"
        return Document(text, lang, source_name, doc_id, {"file": str(path), "line": lineno})


# --------------------------------------------------------------------------------------------------
# Hugging Face datasets


class HFSource(Source):
    """A Hugging Face dataset: `datasets.load_dataset(name, config, split=..., streaming=...)`.

    `name` may be a hub name (loaded from the local cache or downloaded by `datasets`), a local data
    directory (parquet/json files) or a directory written by `save_to_disk`. A non-streaming dataset is
    split into units of `chunk_rows` rows; a streaming one into its underlying file shards.
    """

    kind = "hf"
    chunk_rows = 20_000

    def __init__(
        self,
        name: str,
        *,
        config: str | None = None,
        split: str = "train",
        streaming: bool = False,
        text_field: str = "text",
        lang_field: str | None = None,
        id_field: str = "id",
        lang: str | None = None,
    ) -> None:
        self.name, self.config, self.split, self.streaming = name, config, split, streaming
        self.text_field, self.lang_field, self.id_field = text_field, lang_field, id_field
        self.lang = normalize_lang(lang, "--lang") if lang is not None else None
        if self.lang is None and self.lang_field is None:
            raise ValueError(f"hf:{name}: give the language column (--lang-field) or one --lang for all rows")
        self._ds: Any = None

    @property
    def default_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(self.name).name or self.name)

    def spec(self) -> str:
        return f"hf:{self.name}"

    def __getstate__(self) -> dict[str, Any]:
        # Workers reopen the dataset themselves: a loaded dataset does not pickle cheaply.
        state = dict(self.__dict__)
        state["_ds"] = None
        return state

    def _where(self) -> str:
        return f"hf:{self.name}[{self.split}]"

    def dataset(self) -> Any:
        if self._ds is None:
            import datasets

            path = Path(self.name)
            # `save_to_disk` writes state.json (a Dataset) or dataset_dict.json (a DatasetDict), which
            # `load_dataset` does not read.
            if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
                ds = datasets.load_from_disk(str(path))
                if isinstance(ds, datasets.DatasetDict):
                    if self.split not in ds:
                        raise ValueError(f"{self._where()}: no split {self.split!r} (has {sorted(ds)})")
                    ds = ds[self.split]
                if self.streaming:
                    ds = ds.to_iterable_dataset()
            else:
                ds = datasets.load_dataset(self.name, self.config, split=self.split, streaming=self.streaming)
            columns = ds.column_names
            if columns is not None:
                for col in (self.text_field, self.lang_field):
                    if col is not None and col not in columns:
                        raise BadInputError(
                            "missing column", self._where(), None, f"{col!r} not in {columns}"
                        )
            self._ds = ds
        return self._ds

    def units(self) -> list[Unit]:
        ds = self.dataset()
        if self.streaming:
            n = max(1, ds.num_shards)
            return [Unit(f"shard{k:05d}", k) for k in range(n)]
        total = len(ds)
        return [
            Unit(
                f"rows{start:010d}",
                (start, min(start + self.chunk_rows, total)),
                min(self.chunk_rows, total - start),
            )
            for start in range(0, total, self.chunk_rows)
        ]

    def fingerprint(self) -> dict[str, Any]:
        ds = self.dataset()
        options = [self.config, self.split, self.text_field, self.lang_field, self.id_field, self.lang]
        if not self.streaming:
            return {"kind": self.kind, "sha256": _sha256_json([ds._fingerprint, options])}
        files: list[Any] = []
        path = Path(self.name)
        if path.exists():
            for p in sorted(q for q in path.rglob("*") if q.is_file()):
                st = p.stat()
                files.append([p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns])
        return {"kind": self.kind, "streaming": True, "sha256": _sha256_json([self.name, files, options])}

    def read(self, unit: Unit, source_name: str, report: SkipReport | None = None) -> Iterator[Document]:
        ds = self.dataset()
        if self.streaming:
            part = ds.shard(num_shards=max(1, ds.num_shards), index=unit.arg) if ds.num_shards > 1 else ds
            rows = enumerate(part)
            first = 0
        else:
            first, end = unit.arg
            rows = enumerate(ds.select(range(first, end)), start=first)
        for row, record in rows:
            try:
                yield self._record_to_doc(record, row, source_name, unit.uid if self.streaming else None)
            except BadInputError as err:
                _handle(err, report)

    def _record_to_doc(self, record: dict, row: int, source_name: str, shard: str | None) -> Document:
        where = self._where() + (f"/{shard}" if shard else "")
        text = record.get(self.text_field)
        if text is None:
            raise BadInputError("missing text field", where, row, repr(self.text_field))
        if not isinstance(text, str):
            raise BadInputError("text field is not a string", where, row, repr(self.text_field))
        if not text.strip():
            raise BadInputError("empty text", where, row, repr(self.text_field))
        if self.lang is not None:
            lang = self.lang
        else:
            value = record.get(self.lang_field)
            if value is None:
                raise BadInputError("missing language field", where, row, repr(self.lang_field))
            lang = normalize_lang(value, where, row)
        doc_id = record.get(self.id_field)
        doc_id = str(doc_id) if doc_id is not None else f"{shard or 'row'}:{row}"
        return Document(text, lang, source_name, doc_id, {"row": row})


# --------------------------------------------------------------------------------------------------
# MosaicML streaming (MDS) shards, read without mosaicml-streaming (it does not install beside our torch)
#
# Format (streaming's MDSWriter, index version 2): `index.json` = {"version": 2, "shards": [shard, ...]}
# with each shard {"format": "mds", "column_names", "column_encodings", "column_sizes", "compression",
# "samples", "raw_data": {"basename", "bytes", ...}, "zip_data": {...} | null}; a merged index names
# shards in sub-directories (basename "sub/shard.00000.mds"). A shard file (zstd-compressed when
# zip_data is set) is: uint32 n, uint32 offsets[n + 1] (absolute byte offsets of each sample, the last
# one the file size), the shard's JSON config, then the samples. A sample is a uint32 size for every
# variable-size column (column_sizes null), then each column's bytes in column order. An
# `ndarray[:dtype[:shape]]` column stores a dtype byte when the dtype is not fixed, and an
# (ndim << 2 | shape-dtype code) byte plus the shape when the shape is not fixed, then the raw values.
# Checked against mosaicml-streaming 0.13.0's MDSWriter and merge_index output in a separate environment.

_MDS_VALUE_DTYPES = {
    8: "uint8", 9: "int8", 16: "uint16", 17: "int16", 32: "uint32", 33: "int32", 64: "uint64", 65: "int64",
}  # fmt: skip
_MDS_SHAPE_DTYPES = {0: "uint8", 1: "uint16", 2: "uint32", 3: "uint64"}
_MDS_INT_DTYPES = frozenset(_MDS_VALUE_DTYPES.values())


def _mds_decode_ndarray(encoding: str, data: bytes, where: str, line: int) -> np.ndarray:
    """Decode one `ndarray[:dtype[:shape]]` value into a 1-D integer array."""
    parts = encoding.split(":")
    dtype = parts[1] if len(parts) > 1 and parts[1] else None
    shape = tuple(int(d) for d in parts[2].split(",")) if len(parts) > 2 else None
    pos = 0
    if dtype is None:
        code = data[pos]
        pos += 1
        if code not in _MDS_VALUE_DTYPES:
            raise BadInputError("corrupt MDS sample", where, line, f"not an integer dtype code {code}")
        dtype = _MDS_VALUE_DTYPES[code]
    elif dtype not in _MDS_INT_DTYPES:
        raise BadInputError("unsupported MDS column", where, None, f"{encoding!r} is not integer token ids")
    if shape is None:
        byte = data[pos]
        pos += 1
        ndim, shape_dtype = byte >> 2, _MDS_SHAPE_DTYPES[byte & 3]
        nbytes = ndim * np.dtype(shape_dtype).itemsize
        shape = tuple(int(d) for d in np.frombuffer(data, shape_dtype, ndim, pos))
        pos += nbytes
    if len(shape) != 1:
        raise BadInputError("unsupported MDS column", where, line, f"token array of shape {shape}, not 1-D")
    values = np.frombuffer(data, dtype, offset=pos)
    if values.size != shape[0]:
        raise BadInputError("corrupt MDS sample", where, line, f"{values.size} values for shape {shape}")
    return values


def _mds_decode_str(data: bytes, where: str, line: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInputError("invalid UTF-8", where, line, f"in a str column at byte {e.start}") from None


def read_mds_shard(
    path: Path, shard: dict[str, Any], column: str, lang_column: str | None = None
) -> Iterator[tuple[int, np.ndarray | BadInputError, str | None]]:
    """Yield (sample index, token ids or the error for that sample, language column value) of one shard.

    `path` is the shard file on disk (raw or zstd-compressed, as `shard` says); a corrupt file raises.
    """
    where = str(path)
    data = path.read_bytes()
    compression = shard.get("compression")
    if shard.get("zip_data") and path.name == shard["zip_data"]["basename"].split("/")[-1]:
        if not compression or compression.split(":")[0] != "zstd":
            raise BadInputError("unsupported MDS compression", where, None, repr(compression))
        import zstandard

        try:
            data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        except zstandard.ZstdError as e:
            raise BadInputError("corrupt MDS shard", where, None, f"zstd: {e}") from None
    if len(data) < 8:
        raise BadInputError("corrupt MDS shard", where, None, "shorter than its header")
    n = int(np.frombuffer(data, np.uint32, 1)[0])
    if n != shard.get("samples", n) or 4 * (n + 2) > len(data):
        raise BadInputError(
            "corrupt MDS shard", where, None, f"header says {n} samples, index says {shard.get('samples')}"
        )
    offsets = np.frombuffer(data, np.uint32, n + 1, 4).astype(np.int64)
    if offsets[-1] != len(data) or np.any(np.diff(offsets) < 0):
        raise BadInputError(
            "corrupt MDS shard",
            where,
            None,
            f"sample offsets end at {offsets[-1]}, file has {len(data)} bytes",
        )

    names, encodings = shard["column_names"], shard["column_encodings"]
    sizes = shard.get("column_sizes") or [None] * len(names)
    if column not in names:
        raise BadInputError("missing MDS column", where, None, f"{column!r} not in {names}")
    variable = [i for i, s in enumerate(sizes) if s is None]
    for i in range(n):
        begin, end = int(offsets[i]), int(offsets[i + 1])
        sample = data[begin:end]
        head = 4 * len(variable)
        if len(sample) < head:
            yield i, BadInputError("corrupt MDS sample", where, i, "shorter than its column sizes"), None
            continue
        var_sizes = iter(np.frombuffer(sample, np.uint32, len(variable)).tolist())
        col_sizes = [s if s is not None else next(var_sizes) for s in sizes]
        if head + sum(col_sizes) != len(sample):
            yield i, BadInputError("corrupt MDS sample", where, i, "column sizes do not add up"), None
            continue
        pos, values = head, {}
        for name, size in zip(names, col_sizes, strict=True):
            values[name] = sample[pos : pos + size]
            pos += size
        enc = encodings[names.index(column)]
        try:
            if not enc.startswith("ndarray"):
                raise BadInputError(
                    "unsupported MDS column", where, None, f"{column!r} is {enc!r}, not ndarray"
                )
            tokens = _mds_decode_ndarray(enc, values[column], where, i)
            lang = _mds_decode_str(values[lang_column], where, i) if lang_column else None
        except BadInputError as err:
            if err.line is None:
                raise
            yield i, err, None
            continue
        yield i, tokens, lang


class MdsSource(Source):
    """Pre-tokenized MosaicML streaming (MDS) shards: `index.json` + `shard.NNNNN.mds[.zstd]` files.

    `path` is a dataset directory, or a tree of them (each directory whose `index.json` is not covered by
    an `index.json` above it). Token ids come from `column` (the released mmBERT data: `input_ids`);
    the language from `lang_column`, else `lang`, else the deepest `lang_Script` directory in the path.
    Each sample (a chunk of up to 8192 tokens in the released data) becomes one document.
    """

    kind = "mds"
    pretokenized = True

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        column: str = "input_ids",
        lang_column: str | None = None,
        lang: str | None = None,
    ) -> None:
        self.root = Path(path)
        if not self.root.is_dir():
            raise FileNotFoundError(f"MDS directory does not exist: {self.root}")
        self.column, self.lang_column = column, lang_column
        self.lang = normalize_lang(lang, "--lang") if lang is not None else None

    @property
    def default_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.root.resolve().name) or "mds"

    def spec(self) -> str:
        return f"mds:{self.root}"

    def indexes(self) -> list[Path]:
        if (self.root / "index.json").exists():
            return [self.root / "index.json"]
        found = sorted(self.root.rglob("index.json"))
        tops = [p for p in found if not any(q.parent in p.parents for q in found if q != p)]
        if not tops:
            raise ValueError(f"no MDS index.json under {self.root}")
        return tops

    def _load_index(self, index: Path) -> list[dict[str, Any]]:
        try:
            obj = json.loads(index.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadInputError("corrupt MDS index", str(index), None, str(e)) from None
        if obj.get("version") != 2 or not isinstance(obj.get("shards"), list):
            raise BadInputError(
                "unsupported MDS index", str(index), None, "expected version 2 with a shards list"
            )
        for k, shard in enumerate(obj["shards"]):
            if shard.get("format") != "mds":
                raise BadInputError(
                    "unsupported MDS shard", str(index), None, f"shard {k} format {shard.get('format')!r}"
                )
        return obj["shards"]

    def _shard_file(self, index: Path, shard: dict[str, Any]) -> Path:
        """The raw shard file when present (already decompressed), else the compressed one."""
        raw = index.parent / shard["raw_data"]["basename"]
        if raw.exists() or not shard.get("zip_data"):
            return raw
        return index.parent / shard["zip_data"]["basename"]

    def units(self) -> list[Unit]:
        units = []
        for index in self.indexes():
            for k, shard in enumerate(self._load_index(index)):
                rel = (index.parent / shard["raw_data"]["basename"]).relative_to(self.root).as_posix()
                units.append(Unit(_safe_uid(rel), (str(index), k), int(shard.get("samples", 0)) or None))
        return units

    def fingerprint(self) -> dict[str, Any]:
        parts: list[Any] = []
        for index in self.indexes():
            parts.append(
                [index.relative_to(self.root).as_posix(), hashlib.sha256(index.read_bytes()).hexdigest()]
            )
            for shard in self._load_index(index):
                f = self._shard_file(index, shard)
                st = f.stat() if f.exists() else None
                parts.append([f.name, st.st_size if st else None, st.st_mtime_ns if st else None])
        options = [self.column, self.lang_column, self.lang]
        return {"kind": self.kind, "sha256": _sha256_json([parts, options])}

    def read(
        self, unit: Unit, source_name: str, report: SkipReport | None = None
    ) -> Iterator[TokenizedDocument]:
        index = Path(unit.arg[0])
        shard = self._load_index(index)[unit.arg[1]]
        path = self._shard_file(index, shard)
        if not path.exists():
            raise BadInputError("missing MDS shard", str(path), None, f"listed in {index}")
        lang = self.lang
        if lang is None and self.lang_column is None:
            lang = lang_from_path(path)
            if lang is None:
                raise BadInputError(
                    "cannot tell the language",
                    str(path),
                    None,
                    "no --lang-field, no --lang and no lang_Script directory (like fra_Latn/) in the path",
                )
        rel = path.relative_to(self.root).as_posix()
        for i, tokens, value in read_mds_shard(path, shard, self.column, self.lang_column):
            if isinstance(tokens, BadInputError):
                _handle(tokens, report)
                continue
            try:
                doc_lang = lang if value is None else normalize_lang(value, str(path), i)
            except BadInputError as err:
                _handle(err, report)
                continue
            yield TokenizedDocument(tokens, doc_lang, source_name, f"{rel}:{i}")


# --------------------------------------------------------------------------------------------------


def open_source(
    spec: str,
    *,
    text_field: str = "text",
    lang_field: str | None = None,
    id_field: str = "id",
    lang: str | None = None,
    hf_config: str | None = None,
    hf_split: str = "train",
    streaming: bool = False,
    mds_column: str = "input_ids",
) -> Source:
    """Build a source from a `--source` string: `bundled[:train|heldout|code]`, `PATH`, `hf:NAME`, `mds:PATH`."""
    if spec == "bundled" or spec.startswith("bundled:"):
        return BundledSource(spec.partition(":")[2] or "train")
    if spec.startswith("hf:"):
        return HFSource(
            spec[3:],
            config=hf_config,
            split=hf_split,
            streaming=streaming,
            text_field=text_field,
            lang_field=lang_field,
            id_field=id_field,
            lang=lang,
        )
    if spec.startswith("mds:"):
        return MdsSource(spec[4:], column=mds_column, lang_column=lang_field, lang=lang)
    return LocalFilesSource(spec, text_field=text_field, lang_field=lang_field, id_field=id_field, lang=lang)
