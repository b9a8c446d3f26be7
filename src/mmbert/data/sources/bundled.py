"""The bundled corpus as a document source: `bundled` (UDHR train articles), `bundled:heldout`, `bundled:code`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from mmbert.data import corpus
from mmbert.data.documents import Document
from mmbert.data.sources.base import DocumentSource, SkipReport, Unit


class BundledSource(DocumentSource):
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
