"""Hugging Face datasets as a document source (`hf:NAME`): a hub name, a local data directory, or `save_to_disk` output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmbert.data.documents import Document
from mmbert.data.records import BadInputError
from mmbert.data.sources.base import (
    DocumentSource,
    SkipReport,
    Unit,
    error_handler,
    normalize_lang,
    safe_name,
    sha256_json,
)


class HFSource(DocumentSource):
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
        return safe_name(Path(self.name).name or self.name)

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
            import datasets  # optional (the `hf` extra) and slow to import: only hf: sources need it

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
            return {"kind": self.kind, "sha256": sha256_json([ds._fingerprint, options])}
        files: list[Any] = []
        path = Path(self.name)
        if path.exists():
            for p in sorted(q for q in path.rglob("*") if q.is_file()):
                st = p.stat()
                files.append([p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns])
        return {"kind": self.kind, "streaming": True, "sha256": sha256_json([self.name, files, options])}

    def read(self, unit: Unit, source_name: str, report: SkipReport | None = None) -> Iterator[Document]:
        ds = self.dataset()
        handle = error_handler(report)
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
                handle(err)

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
