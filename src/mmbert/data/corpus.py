"""The bundled corpus: the UDHR in 532 declarations (448 ISO 639-3 codes) plus a small code source.

It ships inside the package (`mmbert/resources/udhr.json.xz`, `code.json.xz`; rebuilt by
`scripts/build_corpus.py`, sources and licences in `resources/README.md`) so that the demo and the
tests run with nothing downloaded. The articles are parallel across languages, which the evaluation
uses (cross-lingual retrieval, per-language MLM on the same content); `HELDOUT_ARTICLES`, the same in
every language, are never trained on.

A declaration has a unique `key` (`deu_Latn-1996`); its `lang` (`deu_Latn`) drops the variant so that
the orthographies and dialects of one language are one language to the sampler. Documents carry
`lang`; their `meta` carries the key.
"""

from __future__ import annotations

import functools
import json
import lzma
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from mmbert.data.documents import Document

# Articles 5, 10, ..., 30: spread over the text, the same in every declaration, never trained on.
HELDOUT_ARTICLES: frozenset[int] = frozenset({5, 10, 15, 20, 25, 30})

Split = Literal["train", "heldout", "all"]


@dataclass(frozen=True)
class Article:
    """One article; number 0 is the preamble. Paragraphs are separated by newlines."""

    number: int
    text: str


@dataclass(frozen=True)
class Declaration:
    """One UDHR translation with its language metadata and its articles in order."""

    key: str  # unique: lang, or lang-variant where several declarations share a lang
    lang: str  # FineWeb2-style lang_Script
    iso639_3: str
    script: str  # ISO 15924
    name: str
    articles: list[Article]
    title: str = ""
    bcp47: str = ""
    udhr_code: str = ""
    stage: int = 0  # udhr's encoding stage (4-5 = complete and checked)

    def article(self, number: int) -> Article | None:
        return next((a for a in self.articles if a.number == number), None)


def _read_resource(name: str) -> dict:
    path = resources.files("mmbert") / "resources" / name
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"bundled corpus file {name} missing from the mmbert package; rebuild it with "
            "`python scripts/build_corpus.py`"
        ) from e
    return json.loads(lzma.decompress(raw) if name.endswith(".xz") else raw)


@functools.cache
def _udhr() -> tuple[Declaration, ...]:
    data = _read_resource("udhr.json.xz")
    return tuple(
        Declaration(
            key=d["key"],
            lang=d["lang"],
            iso639_3=d["iso639_3"],
            script=d["script"],
            name=d["name"],
            articles=[Article(int(n), text) for n, text in d["articles"]],
            title=d["title"],
            bcp47=d["bcp47"],
            udhr_code=d["udhr_code"],
            stage=int(d["stage"]),
        )
        for d in data["declarations"]
    )


def load_udhr() -> list[Declaration]:
    """All bundled declarations, sorted by key (a new list each call; the data is cached)."""
    return list(_udhr())


def _split_ok(number: int, split: Split) -> bool:
    if split == "all":
        return True
    if split == "heldout":
        return number in HELDOUT_ARTICLES
    if split == "train":
        return number not in HELDOUT_ARTICLES
    raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")


def iter_documents(split: Split = "train", langs: set[str] | None = None) -> Iterator[Document]:
    """One Document per (declaration, article) of `split`; `langs` filters on `lang` or `key`.

    doc_id is `udhr/<key>/<article>`; meta holds key, article, script, name and iso639_3.
    """
    _split_ok(0, split)  # validate even when nothing would be yielded
    for d in _udhr():
        if langs is not None and d.lang not in langs and d.key not in langs:
            continue
        for a in d.articles:
            if not _split_ok(a.number, split):
                continue
            yield Document(
                text=a.text,
                lang=d.lang,
                source="udhr",
                doc_id=f"udhr/{d.key}/{a.number}",
                meta={
                    "key": d.key,
                    "article": a.number,
                    "script": d.script,
                    "name": d.name,
                    "iso639_3": d.iso639_3,
                },
            )


@functools.cache
def _code() -> tuple[tuple[str, str], ...]:
    data = _read_resource("code.json.xz")
    return tuple((d["path"], d["text"]) for d in data["documents"])


def iter_code_documents() -> Iterator[Document]:
    """The code source: one Document per bundled Python standard-library file (lang and source "code")."""
    for path, text in _code():
        yield Document(text=text, lang="code", source="code", doc_id=f"code/{path}", meta={"path": path})
