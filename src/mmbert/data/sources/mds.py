"""MosaicML streaming (MDS) shards as a document source (`mds:PATH`), read without mosaicml-streaming.

mosaicml-streaming does not install beside our torch, so the format is read here from its description
(below). Two kinds of column are read: token ids (`ndarray` encodings; the released mmBERT data, a
chunk of up to 8192 tokens per sample), which arrive as `TokenizedDocument`s whose ids `mmbert prepare`
checks against the tokenizer, and text (`str` encoding; what ModernBERT's own data pipeline writes,
often zstd-compressed), which arrives as `Document`s that `prepare` tokenizes. Without a column name,
a shard's `input_ids` column is read, else its `text` column.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmbert.data.documents import Document, TokenizedDocument
from mmbert.data.records import BadInputError
from mmbert.data.sources.base import (
    DocumentSource,
    SkipReport,
    Unit,
    error_handler,
    file_lang_error,
    lang_from_path,
    normalize_lang,
    safe_name,
    sha256_json,
    unit_id,
)

# Format (streaming's MDSWriter, index version 2): `index.json` = {"version": 2, "shards": [shard, ...]}
# with each shard {"format": "mds", "column_names", "column_encodings", "column_sizes", "compression",
# "samples", "raw_data": {"basename", "bytes", ...}, "zip_data": {...} | null}; a merged index names
# shards in sub-directories (basename "sub/shard.00000.mds"). A shard file (zstd-compressed when
# zip_data is set) is: uint32 n, uint32 offsets[n + 1] (absolute byte offsets of each sample, the last
# one the file size), the shard's JSON config, then the samples. A sample is a uint32 size for every
# variable-size column (column_sizes null), then each column's bytes in column order. An
# `ndarray[:dtype[:shape]]` column stores a dtype byte when the dtype is not fixed, and an
# (ndim << 2 | shape-dtype code) byte plus the shape when the shape is not fixed, then the raw values.
# Checked against mosaicml-streaming 0.13.0's MDSWriter and merge_index output in a separate environment
# by `python scripts/crosscheck.py mds` (scripts/results/crosscheck-mds.json).

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


DEFAULT_COLUMNS = ("input_ids", "text")  # read when no column is named, the first a shard has


def _pick_column(shard: dict[str, Any], column: str | None, where: str) -> tuple[str, str]:
    """The column to read from a shard and its encoding (an `ndarray` one for tokens, `str` for text)."""
    names, encodings = shard["column_names"], shard["column_encodings"]
    wanted = [column] if column else list(DEFAULT_COLUMNS)
    found = next((c for c in wanted if c in names), None)
    if found is None:
        what = repr(column) if column else f"none of {list(DEFAULT_COLUMNS)} (--mds-column names another)"
        raise BadInputError("missing MDS column", where, None, f"{what} not in {names}")
    encoding = encodings[names.index(found)]
    if not (encoding.startswith("ndarray") or encoding == "str"):
        raise BadInputError(
            "unsupported MDS column",
            where,
            None,
            f"{found!r} is {encoding!r}, not ndarray (token ids) or str (text)",
        )
    return found, encoding


def read_mds_shard(
    path: Path, shard: dict[str, Any], column: str | None, lang_column: str | None = None
) -> Iterator[tuple[int, np.ndarray | str | BadInputError, str | None]]:
    """Yield (sample index, token ids or text or the error for that sample, language column value) of
    one shard; `column` None reads its `input_ids`, else its `text` (`DEFAULT_COLUMNS`).

    `path` is the shard file on disk (raw or zstd-compressed, as `shard` says); a corrupt file raises.
    """
    where = str(path)
    data = path.read_bytes()
    compression = shard.get("compression")
    if shard.get("zip_data") and path.name == shard["zip_data"]["basename"].split("/")[-1]:
        if not compression or compression.split(":")[0] != "zstd":
            raise BadInputError("unsupported MDS compression", where, None, repr(compression))
        import zstandard  # optional (only compressed MDS shards need it)

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

    names = shard["column_names"]
    column, enc = _pick_column(shard, column, where)
    sizes = shard.get("column_sizes") or [None] * len(names)
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
        try:
            if enc == "str":
                value: np.ndarray | str = _mds_decode_str(values[column], where, i)
            else:
                value = _mds_decode_ndarray(enc, values[column], where, i)
            lang = _mds_decode_str(values[lang_column], where, i) if lang_column else None
        except BadInputError as err:
            if err.line is None:
                raise
            yield i, err, None
            continue
        yield i, value, lang


@functools.lru_cache(maxsize=4)
def _parsed_index(index: str, mtime_ns: int, size: int) -> list[dict[str, Any]]:
    """An `index.json`'s shard entries (the file's time and size in the key: a changed file is read again)."""
    try:
        obj = json.loads(Path(index).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInputError("corrupt MDS index", index, None, str(e)) from None
    if not isinstance(obj, dict) or obj.get("version") != 2 or not isinstance(obj.get("shards"), list):
        raise BadInputError("unsupported MDS index", index, None, "expected version 2 with a shards list")
    for k, shard in enumerate(obj["shards"]):
        if not isinstance(shard, dict) or shard.get("format") != "mds":
            what = shard.get("format") if isinstance(shard, dict) else shard
            raise BadInputError("unsupported MDS shard", index, None, f"shard {k} format {what!r}")
    return obj["shards"]


class MdsSource(DocumentSource):
    """MosaicML streaming (MDS) shards of token ids or text: `index.json` + `shard.NNNNN.mds[.zstd]` files.

    `path` is a dataset directory, or a tree of them (each directory whose `index.json` is not covered by
    an `index.json` above it). Token ids or text come from `column` (default: `input_ids`, as in the
    released mmBERT data, else `text`, as ModernBERT's pipeline writes); the language from
    `lang_column`, else `lang`, else the deepest `lang_Script` directory in the path. Each sample (a
    chunk of up to 8192 tokens in the released data) becomes one document.
    """

    kind = "mds"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        column: str | None = None,
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
        return safe_name(self.root.resolve().name) or "mds"

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
        """The index's shard entries, parsed once per process while the file is unchanged.

        Every unit of a merged index names the same `index.json` (125k shards: tens of MB of JSON), so
        parsing it per unit would cost O(units^2) over a run; the cache keeps the last few parsed.
        """
        try:
            st = index.stat()
        except FileNotFoundError:
            raise BadInputError("missing MDS index", str(index), None, "the file is gone") from None
        return _parsed_index(str(index), st.st_mtime_ns, st.st_size)

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
                units.append(Unit(unit_id(rel), (str(index), k), int(shard.get("samples", 0)) or None))
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
        return {"kind": self.kind, "sha256": sha256_json([parts, options])}

    def read(
        self, unit: Unit, source_name: str, report: SkipReport | None = None
    ) -> Iterator[Document | TokenizedDocument]:
        index = Path(unit.arg[0])
        shard = self._load_index(index)[unit.arg[1]]
        path = self._shard_file(index, shard)
        if not path.exists():
            raise BadInputError("missing MDS shard", str(path), None, f"listed in {index}")
        lang = self.lang
        if lang is None and self.lang_column is None:
            lang = lang_from_path(path)
            if lang is None:
                raise file_lang_error(path, "no --lang-field")
        handle = error_handler(report)
        rel = path.relative_to(self.root).as_posix()
        for i, content, value in read_mds_shard(path, shard, self.column, self.lang_column):
            if isinstance(content, BadInputError):
                handle(content)
                continue
            try:
                doc_lang = lang if value is None else normalize_lang(value, str(path), i)
            except BadInputError as err:
                handle(err)
                continue
            if isinstance(content, str):
                yield Document(content, doc_lang, source_name, f"{rel}:{i}")
            else:
                yield TokenizedDocument(content, doc_lang, source_name, f"{rel}:{i}")
