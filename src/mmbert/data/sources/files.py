"""Local files as a document source: a file or a directory tree of `.jsonl`, `.jsonl.gz`, `.parquet`, `.txt`.

The formats are read by `mmbert.data.records`; this module turns their records into `Document`s (text,
language, id) and decides each file's language: a record field, one `--lang` for all, or FineWeb2's
`lang_Script` directory in the path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmbert.data import records
from mmbert.data.documents import Document
from mmbert.data.records import BadInputError, OnError
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

LOCAL_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet", ".txt")


def _suffix(path: Path) -> str | None:
    name = path.name
    for suffix in LOCAL_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


class LocalFilesSource(DocumentSource):
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
        return safe_name(self.root.resolve().name) or "files"

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
        return [Unit(unit_id(self._rel(p)), str(p)) for p in self.files()]

    def fingerprint(self) -> dict[str, Any]:
        files = []
        for p in self.files():
            st = p.stat()
            files.append([self._rel(p), st.st_size, st.st_mtime_ns])
        options = [self.text_field, self.lang_field, self.id_field, self.lang]
        return {"kind": self.kind, "files": len(files), "sha256": sha256_json([files, options])}

    def _file_lang(self, path: Path, has_fields: bool) -> str | None:
        """The language of every document in the file, or None when each record names its own."""
        if self.lang_field is not None and has_fields:
            return None
        if self.lang is not None:
            return self.lang
        key = lang_from_path(path)
        if key is None:
            raise file_lang_error(path, "no --lang-field" if has_fields else "a .txt file has no fields")
        return key

    def read(self, unit: Unit, source_name: str, report: SkipReport | None = None) -> Iterator[Document]:
        path = Path(unit.arg)
        suffix = _suffix(path)
        handle = error_handler(report)
        try:
            lang = self._file_lang(path, has_fields=suffix != ".txt")
        except BadInputError as err:
            handle(err)
            return
        if path.stat().st_size == 0:
            handle(BadInputError("empty file", str(path)))
            return
        if suffix == ".txt":
            yield from self._read_txt(path, lang, source_name, handle)
        else:
            yield from self._read_records(path, lang, source_name, handle)

    def _read_txt(
        self, path: Path, lang: str | None, source_name: str, handle: OnError
    ) -> Iterator[Document]:
        try:
            text = records.read_text(path)
        except BadInputError as err:
            handle(err)
            return
        if not text.strip():
            handle(BadInputError("empty file", str(path)))
            return
        assert lang is not None  # a .txt file's language comes from --lang or the path
        yield Document(text, lang, source_name, self._rel(path), {"file": str(path)})

    def _read_records(
        self, path: Path, lang: str | None, source_name: str, handle: OnError
    ) -> Iterator[Document]:
        seen = 0  # records and bad lines: a file with only bad lines is not empty

        def bad(err: BadInputError) -> None:
            nonlocal seen
            seen += 1
            handle(err)

        if path.suffix == ".parquet":
            required = {self.text_field: "missing text field"}
            if self.lang_field is not None:
                required[self.lang_field] = "missing language field"
            columns = [c for c in (self.text_field, self.lang_field, self.id_field) if c]
            rows = records.iter_parquet(path, columns, required, bad)
        else:
            rows = records.iter_jsonl(path, bad)
        for lineno, record in rows:
            seen += 1
            try:
                yield self._record_to_doc(record, lineno, path, lang, source_name)
            except BadInputError as err:
                handle(err)
        if seen == 0:
            where = "rows" if path.suffix == ".parquet" else "non-blank lines"
            handle(BadInputError("empty file", str(path), None, f"no {where}"))

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
